"""SASRec, DSSM and the ID tower behave as SPEC says."""
import torch

from morec.config import Config
from morec.models.build import build_model
from morec.models.sasrec import SASRec
from morec.resolve import model_spec


def sasrec(dropout=0.0):
    torch.manual_seed(0)
    return SASRec(dim=16, max_seq_len=6, blocks=2, heads=2, dropout=dropout).eval()


def test_sasrec_is_causal():
    model = sasrec()
    x = torch.randn(2, 6, 16)
    real = torch.ones(2, 6, dtype=torch.bool)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 2, 16)                         # change only the future
    torch.testing.assert_close(model(x, real)[:, :4], model(changed, real)[:, :4])
    assert not torch.allclose(model(x, real)[:, 5], model(changed, real)[:, 5])


def test_sasrec_ignores_padding_content():
    model = sasrec()
    x = torch.randn(1, 6, 16)
    real = torch.tensor([[False, False, True, True, True, True]])
    garbage = x.clone()
    garbage[:, :2] = 100 * torch.randn(1, 2, 16)                   # left padding changes
    out, out_garbage = model(x, real), model(garbage, real)
    torch.testing.assert_close(out[:, 2:], out_garbage[:, 2:])
    assert torch.isfinite(out).all()


def test_sasrec_init_follows_spec():
    model = sasrec()
    block = model.blocks[0]
    assert block.attention.w_q.bias is None and block.attention.w_o.bias is None
    assert torch.count_nonzero(block.w_1.bias) == 0
    assert model.norm.eps == 1e-6
    # xavier normal: std = sqrt(2 / (fan_in + fan_out)) = sqrt(2 / 32) for a 16x16 weight
    weights = torch.cat([b.attention.w_q.weight.flatten() for b in model.blocks])
    assert abs(weights.std().item() - (2 / 32) ** 0.5) < 0.05


def test_dropout_only_in_training():
    model = sasrec(dropout=0.5)
    x, real = torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool)
    torch.testing.assert_close(model(x, real), model(x, real))
    model.train()
    assert not torch.allclose(model(x, real), model(x, real))


def test_recommenders_score_with_dot_products():
    popularity = torch.full((11,), 0.1)
    for model_name in ("sasrec", "dssm"):
        cfg = Config(model=model_name, embedding_dim=8, max_seq_len=4, dnn_layers=1, drop_rate=0.0)
        model = build_model(model_spec(cfg), num_items=10, num_users=3, popularity=popularity).eval()
        items = model.all_item_vectors()
        assert items.shape == (11, 8)
        inputs = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]) if model_name == "sasrec" else torch.tensor([0, 2])
        users = model.user_vectors(inputs)
        assert users.shape == (2, 8)
        for loss in ("inbatch", "bce"):
            model.loss = loss
            batch = ({"seqs": torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]),
                      "negatives": torch.tensor([[9, 9, 9, 9], [1, 2, 3, 4]])} if model_name == "sasrec" else
                     {"users": torch.tensor([0, 1]), "items": torch.tensor([3, 4]),
                      "user_items": torch.tensor([[1, 3], [4, 0]]), "negatives": torch.tensor([[5], [6]])})
            value = model.calculate_loss(batch)
            assert value.ndim == 0 and torch.isfinite(value) and value > 0
