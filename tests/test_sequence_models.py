"""GRU4Rec and NextItNet user encoders: exact under left padding, causal, and
trained end to end through the unchanged recommender, losses and evaluation."""
import json

import pytest
import torch

from conftest import REPO, run_in_process
from test_text_scripts import train_then_test
from text_helpers import TINY, tiny_encoders
from morec.config import Config, run_label
from morec.models.build import build_model
from morec.models.gru4rec import GRU4Rec
from morec.models.nextitnet import NextItNet
from morec.resolve import model_spec

DIM, LENGTH = 8, 7


def encoder(name: str, dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    model = GRU4Rec(DIM, dropout) if name == "gru4rec" else NextItNet(DIM, blocks=2, dropout=dropout)
    return model.eval()


def left_padded(items: torch.Tensor, length: int, padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """items (n, d) -> ((1, length, d) with `padding` rows (length - n, d) in front, real (1, length))."""
    x = torch.cat([padding, items])[None]
    real = torch.arange(length) >= length - len(items)
    return x, real[None]


@pytest.mark.parametrize("name", ["gru4rec", "nextitnet"])
def test_states_do_not_depend_on_the_left_padding(name):
    """The same 4 items under 0, 1 and 3 padded positions, whose vectors are garbage: the states
    at the real positions are those of the unpadded sequence."""
    model = encoder(name)
    items = torch.randn(4, DIM)
    alone = model(items[None], torch.ones(1, 4, dtype=torch.bool))[0]                   # (4, d)
    for pad in (1, 3):
        x, real = left_padded(items, 4 + pad, 50 * torch.randn(pad, DIM))
        torch.testing.assert_close(model(x, real)[0, pad:], alone, rtol=1e-5, atol=1e-6)
    # a batch mixing paddings gives each row its own unpadded states
    x = torch.stack([left_padded(items, 6, torch.randn(2, DIM))[0][0], torch.randn(6, DIM)])
    real = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    torch.testing.assert_close(model(x, real)[0, 2:], alone, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(model(x, real)).all()


@pytest.mark.parametrize("name", ["gru4rec", "nextitnet"])
def test_state_at_t_does_not_see_later_items(name):
    model = encoder(name)
    x = torch.randn(2, LENGTH, DIM)
    real = torch.tensor([[False, False] + [True] * (LENGTH - 2), [True] * LENGTH])
    changed = x.clone()
    changed[:, 5:] = torch.randn(2, LENGTH - 5, DIM)                  # change only positions 5, 6
    out, out_changed = model(x, real), model(changed, real)
    torch.testing.assert_close(out[:, :5], out_changed[:, :5])
    assert not torch.allclose(out[:, 5:], out_changed[:, 5:])        # and the later states do see them


def test_nextitnet_sees_far_enough_back():
    """One repeat of the dilations 1, 2, 4, 8 (kernel 3) sees 31 positions: the first item of a
    length-20 sequence changes the last state."""
    torch.manual_seed(0)
    model = NextItNet(DIM, blocks=1, dropout=0.0).eval()
    x, real = torch.randn(1, 20, DIM), torch.ones(1, 20, dtype=torch.bool)
    changed = x.clone()
    changed[0, 0] = torch.randn(DIM)
    assert not torch.allclose(model(x, real)[0, -1], model(changed, real)[0, -1])


@pytest.mark.parametrize("name", ["gru4rec", "nextitnet"])
def test_dropout_only_in_training(name):
    model = encoder(name, dropout=0.5)
    x, real = torch.randn(2, LENGTH, DIM), torch.ones(2, LENGTH, dtype=torch.bool)
    torch.testing.assert_close(model(x, real), model(x, real))
    model.train()
    assert not torch.allclose(model(x, real), model(x, real))


@pytest.mark.parametrize("name", ["gru4rec", "nextitnet"])
def test_the_recommender_uses_the_chosen_encoder(name):
    cfg = Config(model=name, embedding_dim=DIM, max_seq_len=4, drop_rate=0.0)
    model = build_model(model_spec(cfg), num_items=10, num_users=3, popularity=torch.full((11,), 0.1)).eval()
    assert type(model.encoder) is (GRU4Rec if name == "gru4rec" else NextItNet)
    # the user vector is the encoder's last state over the item tower's vectors
    inputs = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    vecs = model.item_tower.encode_items(inputs)
    torch.testing.assert_close(model.user_vectors(inputs), model.encoder(vecs, inputs != 0)[:, -1])


@pytest.mark.parametrize("name,loss", [("gru4rec", "inbatch"), ("gru4rec", "bce"),
                                       ("nextitnet", "inbatch"), ("nextitnet", "bce")])
def test_one_epoch_then_test_on_ml100k(name, loss, tmp_path, capsys):
    """Train one epoch with the in-batch script (and its BCE loss), then its test script."""
    runs = str(tmp_path / "runs")
    args = ("--model", name, "--loss", loss, "--runs_dir", runs, "--label", "run")
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", "--epoch", "1", *args, capsys=capsys)
    assert code == 0, err
    code, out, err = run_in_process("inbatch_sasrec_e2e_text", "test", *args, capsys=capsys)
    assert code == 0, err
    run = tmp_path / "runs" / "run"
    assert json.loads((run / "config.json").read_text())["model"] == name
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["num_users"] == 943 and metrics["best_epoch"] == 1
    # better than chance after one epoch (10 of 1409 items: HR@10 0.71 %; metrics are fractions)
    assert metrics["test"]["HR@10"] > 0.012, metrics["test"]


def test_gru4rec_with_a_tiny_text_tower(tmp_path):
    """A text MoRec script with `--model gru4rec` (tiny random BERT): one epoch, then its test."""
    common = ["--model", "gru4rec", "--runs_dir", str(tmp_path / "runs"), "--label", "smoke", "--device", "cpu",
              "--pretrained_dir", str(tiny_encoders()), "--bert_model_load", TINY["bert"],
              "--cache_dir", str(tmp_path / "cache")]
    speed = ["--epoch", "1", "--num_words_title", "12", "--embedding_dim", "32", "--batch_size", "128"]
    saved, log = train_then_test(REPO / "inbatch_sasrec_e2e_text", "minilm", common + speed, common,
                                 tmp_path / "runs" / "smoke")
    assert saved["model"] == "gru4rec" and saved["item_tower"] == "text"
    assert "trainable encoder tensors" in log


def test_label_ignores_the_values_an_encoder_does_not_read():
    gru = run_label(Config(model="gru4rec"))
    assert run_label(Config(model="gru4rec", transformer_block=3, num_attention_heads=4)) == gru
    assert run_label(Config(model="gru4rec", drop_rate=0.2)) != gru
    nextitnet = run_label(Config(model="nextitnet"))
    assert run_label(Config(model="nextitnet", num_attention_heads=4)) == nextitnet
    assert run_label(Config(model="nextitnet", transformer_block=3)) != nextitnet
    assert run_label(Config(transformer_block=3)) != run_label(Config())              # SASRec reads both
    assert run_label(Config(num_attention_heads=4)) != run_label(Config())
