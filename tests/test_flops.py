"""morec.flops: the matmul FLOPs of a transformer encoder's step, against a hand count and against
torch.utils.flop_counter.FlopCounterMode on a tiny BERT (eager attention: every matmul seen)."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

from morec.flops import block_forward_flops, encoder_step_flops, matmul_flops


def test_hand_count():
    """h = 8, i = 16, T = 3: Q, K, V, output 4 x 2 x 3 x 8 x 8 = 1536; scores and weights x V
    2 x 2 x 9 x 8 = 288; feed-forward 2 x 2 x 3 x 8 x 16 = 1536; 3360 per sequence forward."""
    assert block_forward_flops(3, 8, 16) == 3360
    assert encoder_step_flops(2, 3, 8, 16, 1, backward=False) == 6720
    assert encoder_step_flops(2, 3, 8, 16, 1) == 3 * 6720                   # everything trains
    assert encoder_step_flops(2, 3, 8, 16, 1, trainable_layers=1) == 2 * (3 * 3360 - 6 * 3 * 64)
    assert encoder_step_flops(2, 3, 8, 16, 1, trainable_layers=0) == 6720
    assert matmul_flops(2, 3, 4) == 48


def tiny_bert(layers: int) -> BertModel:
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=40, max_position_embeddings=32, attn_implementation="eager")
    return BertModel(config, add_pooling_layer=False)


@pytest.mark.parametrize("trainable_layers", [-1, 2, 1, 0])
def test_matches_flop_counter_on_tiny_bert(trainable_layers):
    torch.manual_seed(0)
    model = tiny_bert(layers=3)
    if trainable_layers >= 0:                               # as morec.models.text.freeze_encoder
        for name, param in model.named_parameters():
            top = [f"encoder.layer.{k}." for k in range(3 - trainable_layers, 3)]
            param.requires_grad_(any(name.startswith(prefix) for prefix in top))
    input_ids = torch.randint(1, 50, (5, 7))
    with FlopCounterMode(display=False) as counter:
        hidden = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).last_hidden_state
        if trainable_layers != 0:
            hidden.sum().backward()
    assert counter.get_total_flops() == encoder_step_flops(5, 7, 16, 40, 3, trainable_layers)
