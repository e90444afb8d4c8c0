"""The one item-encoding path, gradient caching (--inbatch_chunk) and extra
in-batch negatives (--extra_negatives, --filter_false_negatives), on tiny encoders and ml-100k
batches or on inputs whose right answer is known."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import run_in_process
from morec.config import make_config
from morec.data.batches import PairBatches, SequenceBatches
from morec.errors import InputError
from morec.losses import candidate_log_q, inbatch_debiased_loss, ExtraNegatives
from morec.models.towers import IdTower
from morec.resolve import model_spec
from morec.parts import make_batches
from test_text_tower import build, config, no_dropout
from text_helpers import ml100k


def first_batch(cfg, batch_size: int = 8) -> dict:
    cfg.batch_size = batch_size
    return next(iter(make_batches(cfg, ml100k()).epoch(cfg.seed)))


def loss_and_grads(model, batch: dict, chunk: int) -> tuple[float, dict[str, torch.Tensor]]:
    model.item_tower.grad_cache_chunk = chunk
    model.zero_grad()
    torch.manual_seed(7)                          # the dropout stream of the step
    loss = model(batch)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def max_grad_difference(a: dict, b: dict) -> float:
    """The largest absolute difference over all gradients; each gradient must also agree to 1e-3
    of its own largest entry (gradients can be far below an absolute bound)."""
    assert a.keys() == b.keys() and a
    for name in a:
        assert float((a[name] - b[name]).abs().max()) <= 1e-3 * float(a[name].abs().max()) + 1e-9, name
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def assert_chunked_step_equals_the_plain_step(model, batch: dict) -> dict[str, torch.Tensor]:
    """The gradient-caching step in chunks of 2 equals the plain step (float32, dropout off): the
    loss to 1e-6 and every gradient to 1e-5 (max_grad_difference); against the plain step in the
    same chunks of 2 (model.item_tower.chunk_size, left at 2) every gradient to 1e-6. Returns the
    cached step's gradients, by parameter name."""
    plain_loss, plain = loss_and_grads(model, batch, 0)
    cached_loss, cached = loss_and_grads(model, batch, 2)
    assert cached_loss == pytest.approx(plain_loss, abs=1e-6)
    assert max_grad_difference(plain, cached) <= 1e-5
    model.item_tower.chunk_size = 2                           # the plain step in the same chunks of 2
    _, plain_in_chunks = loss_and_grads(model, batch, 0)
    assert max_grad_difference(plain_in_chunks, cached) <= 1e-6
    return cached


@pytest.mark.parametrize("family,model_name,extra", [
    ("bert", "sasrec", {}), ("opt", "sasrec", {}), ("bert", "dssm", {}),
    ("llama", "sasrec", {}), ("llama", "sasrec", {"peft": "lora"})])
def test_gradient_caching_equals_the_full_batch_step(family, model_name, extra, tmp_path):
    """Loss and every gradient of a chunked gradient-caching step equal the plain step's (dropout
    off), on a tiny BERT, OPT and Llama (+ LoRA): in float32 to 1e-6 against the plain step in the
    same chunks; against the plain step in one chunk to 1e-10 in float64 (the same computation up
    to the order of the sums) and in float32 to 1e-3 of each gradient's scale and 1e-5 absolute (the
    gradients that sum over every token, e.g. BERT's token-type embedding, are summed in another
    order: up to 1.3e-6 on these models, 2.7e-7 on MiniLM in scripts/bench_grad_cache.py)."""
    from text_helpers import TINY, TINY_DECODERS, tiny_decoders
    folders = {**TINY, **TINY_DECODERS}
    where = {"pretrained_dir": str(tiny_decoders())} if family in TINY_DECODERS else {}
    cfg = config(tmp_path, bert_model_load=folders[family], model=model_name, **where, **extra)
    model = no_dropout(build(cfg)).train()
    batch = first_batch(cfg)
    items = int(torch.unique(batch["seqs" if model_name == "sasrec" else "items"]).numel())
    assert items > 3 * 2                                      # several chunks of 2
    cached = assert_chunked_step_equals_the_plain_step(model, batch)
    assert any(name.startswith("item_tower.encoder.") for name in cached)   # the encoder got gradients
    model.item_tower.chunk_size = 0
    model.double()
    plain_loss, plain = loss_and_grads(model, batch, 0)
    cached_loss, cached = loss_and_grads(model, batch, 2)
    assert cached_loss == pytest.approx(plain_loss, abs=1e-12)
    assert max(float((plain[k] - cached[k]).abs().max()) for k in plain) <= 1e-10


def test_gradient_caching_replays_each_chunks_dropout(tmp_path):
    """With dropout on, the re-encoding draws the same masks as the first pass: the step equals a
    plain step encoded in chunks of the same size, and the random stream ends where it would."""
    model = build(config(tmp_path)).train()
    batch = first_batch(config(tmp_path))
    model.item_tower.chunk_size = 4
    plain_loss, plain = loss_and_grads(model, batch, 0)
    after_plain = torch.rand(1)
    cached_loss, cached = loss_and_grads(model, batch, 4)
    after_cached = torch.rand(1)
    assert cached_loss == pytest.approx(plain_loss, abs=1e-6)
    assert max_grad_difference(plain, cached) <= 1e-6
    assert after_plain == after_cached


def test_gradient_caching_keeps_only_a_chunk_of_encoder_activations(tmp_path):
    """The point of it: the encoder's saved activations at the peak are one chunk's, not the batch's."""
    model = no_dropout(build(config(tmp_path))).train()
    batch = first_batch(config(tmp_path), batch_size=16)

    def peak_saved(chunk: int) -> int:
        model.item_tower.grad_cache_chunk = chunk
        saved, peak = [0], [0]

        def pack(tensor):
            saved[0] += tensor.numel()
            peak[0] = max(peak[0], saved[0])
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(batch)
        return peak[0]
    assert peak_saved(8) < 0.5 * peak_saved(0)


def test_one_path_serves_batches_and_the_catalogue(tmp_path):
    """The catalogue (evaluation) and a training batch give an item the same vector."""
    model = no_dropout(build(config(tmp_path))).eval()
    ids = torch.tensor([[0, 3, 3, 1200], [5, 0, 9, 3]])
    with torch.no_grad():
        catalogue = model.all_item_vectors()
        batch_vecs = model.item_tower.encode_items(ids)
    torch.testing.assert_close(batch_vecs, catalogue[ids], atol=1e-5, rtol=1e-4)
    assert (catalogue[0] == 0).all() and (batch_vecs[ids == 0] == 0).all()


# ----------------------------------------------------------------------------- extra negatives

def test_candidate_log_q_is_the_expected_share_of_the_candidate_set():
    pop = torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64)
    torch.testing.assert_close(candidate_log_q(pop, 10, 0, 100), pop.log())
    # 10 slots, 20 uniform draws over 100 items: item j appears 10 p_j + 20/100 times in expectation
    torch.testing.assert_close(candidate_log_q(pop, 10, 20, 100), ((10 * pop + 0.2) / 10).log())


def test_extra_negatives_join_the_softmax_with_their_correction():
    """Two rows, two slots, two extra items: the loss by hand."""
    states = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    slot_vecs, slot_items = torch.tensor([[2.0, 0.0], [0.0, 3.0]]), torch.tensor([4, 6])
    extra = ExtraNegatives(torch.tensor([[1.0, 1.0], [-1.0, 0.5]]), torch.tensor([6, 9]),
                           torch.tensor([-1.0, -2.0]))
    slot_log_q = torch.tensor([-0.5, -0.25])
    labels, users = torch.tensor([0, 1]), torch.tensor([0, 1])
    user_items = torch.tensor([[4, 0], [6, 0]])                # row 1 owns item 6 (its label)

    def by_hand(row_logits, label):
        return -(row_logits[label] - torch.logsumexp(row_logits, 0))
    logits = states @ torch.cat([slot_vecs, extra.vecs]).T - torch.cat([slot_log_q, extra.log_q])
    # row 0 sees slot 1 (item 6 is not its own) and both extras; row 1 sees slot 0 (item 4 is not
    # its own) and extra item 9: its extra column holding item 6, its own target, is an accidental hit
    kept = torch.ones(2, 4, dtype=torch.bool)
    kept[1, 2] = False
    expected = torch.stack([by_hand(logits[r][kept[r]], labels[r]) for r in range(2)]).mean()
    got = inbatch_debiased_loss(states, slot_vecs, slot_items, slot_log_q, labels, users, user_items, extra=extra)
    torch.testing.assert_close(got, expected)
    # --filter_false_negatives adds the equal-vector rule only (no vector repeats a target's here)
    got = inbatch_debiased_loss(states, slot_vecs, slot_items, slot_log_q, labels, users, user_items,
                                extra=extra, filter_false_negatives=True)
    torch.testing.assert_close(got, expected)


def test_filter_drops_columns_whose_vector_equals_the_targets():
    """A duplicate title: another item with exactly the target's vector is no negative."""
    states = torch.tensor([[1.0, 2.0]])
    slot_vecs = torch.tensor([[1.0, 1.0], [0.5, 0.0], [1.0, 1.0]])      # slot 2 duplicates the label slot 0
    slot_items, user_items = torch.tensor([3, 5, 8]), torch.tensor([[3, 0]])
    args = (states, slot_vecs, slot_items, torch.zeros(3), torch.tensor([0]), torch.tensor([0]), user_items)
    logits = states @ slot_vecs.T
    torch.testing.assert_close(inbatch_debiased_loss(*args), -(logits[0, 0] - torch.logsumexp(logits[0], 0)))
    torch.testing.assert_close(inbatch_debiased_loss(*args, filter_false_negatives=True),
                               -(logits[0, 0] - torch.logsumexp(logits[0, :2], 0)))


def test_extra_negatives_are_drawn_per_step_and_shared_by_rows_and_ranks():
    train = torch.from_numpy(ml100k().train)
    n = ml100k().num_items
    one = list(SequenceBatches(train, 32, n, False, extra_negatives=50).epoch(3, epoch=2))
    again = list(SequenceBatches(train, 32, n, False, extra_negatives=50).epoch(3, epoch=2))
    ranks = [list(SequenceBatches(train, 16, n, False, extra_negatives=50).epoch(3, rank, 2, epoch=2))
             for rank in (0, 1)]
    assert all(b["extra_negatives"].shape == (50,) for b in one)
    assert all(((b["extra_negatives"] >= 1) & (b["extra_negatives"] <= n)).all() for b in one)
    assert all(torch.equal(a["extra_negatives"], b["extra_negatives"]) for a, b in zip(one, again))
    assert not torch.equal(one[0]["extra_negatives"], one[1]["extra_negatives"])
    for r0, r1, whole in zip(*ranks, one):          # 2 ranks x 16 draw what one process x 32 draws
        assert torch.equal(r0["extra_negatives"], whole["extra_negatives"])
        assert torch.equal(r1["extra_negatives"], whole["extra_negatives"])
    plain = list(SequenceBatches(train, 32, n, False).epoch(3, epoch=2))
    assert all(torch.equal(a["seqs"], b["seqs"]) and "extra_negatives" not in b for a, b in zip(one, plain))
    pairs = next(iter(PairBatches(train, 32, n, 0, extra_negatives=7).epoch(3)))
    assert pairs["extra_negatives"].shape == (7,)


@pytest.mark.parametrize("model_name", ["sasrec", "dssm"])
def test_extra_negatives_train_on_ml100k(model_name, tmp_path):
    """An ID run's step with extra negatives: the candidates grow, the loss rises (more negatives)
    and every extra item's vector gets a gradient."""
    cfg = make_config(dict(model=model_name, device="cpu", extra_negatives=200, filter_false_negatives=True,
                           cache_dir=str(tmp_path)))
    data = ml100k()
    torch.manual_seed(0)
    from morec.models.build import build_model
    model = no_dropout(build_model(model_spec(cfg), data.num_items, data.num_users,
                                   torch.from_numpy(data.popularity()).clamp_min(1e-30)))
    batch = first_batch(cfg, 16)
    with_extra = model(batch)
    with_extra.backward()
    grad_rows = model.item_tower.embedding.weight.grad.abs().sum(1) > 0
    assert grad_rows[batch["extra_negatives"]].all()
    assert with_extra > model({k: v for k, v in batch.items() if k != "extra_negatives"})
    assert isinstance(model.item_tower, IdTower)


# ----------------------------------------------------------------------------- refused values

@pytest.mark.parametrize("values,needle", [
    (dict(loss="bce", inbatch_chunk=32), "--inbatch_chunk belongs to the in-batch loss"),
    (dict(loss="bce", extra_negatives=10), "--extra_negatives belongs to the in-batch loss"),
    (dict(loss="bce", filter_false_negatives=True), "--filter_false_negatives belongs to the in-batch loss"),
    (dict(inbatch_chunk=32, nproc_per_node=2), "runs in one process"),
    (dict(inbatch_chunk=-1), "--inbatch_chunk -1 must be at least 0"),
])
def test_refused_values(values, needle):
    with pytest.raises(InputError, match=needle):
        make_config(dict(values))


def test_inbatch_chunk_with_bce_exits_2_before_writing(tmp_path, capsys):
    code, _, err = run_in_process("bce_text/main-end2end", "train", "--inbatch_chunk", "16",
                                  "--runs_dir", str(tmp_path / "runs"), capsys=capsys)
    assert code == 2 and "--inbatch_chunk belongs to the in-batch loss" in err
    assert not (tmp_path / "runs").exists()


def test_gradient_caching_trains_an_epoch_and_tests(tmp_path, capsys):
    """A text run end to end with gradient caching and extra negatives (tiny BERT, 1 epoch)."""
    from text_helpers import TINY, tiny_encoders
    args = ["--item_tower", "text", "--bert_model_load", TINY["bert"], "--pretrained_dir", str(tiny_encoders()),
            "--embedding_dim", "16", "--epoch", "1", "--batch_size", "128", "--inbatch_chunk", "64",
            "--extra_negatives", "32", "--runs_dir", str(tmp_path / "runs"), "--cache_dir", str(tmp_path / "c"),
            "--progress", "false"]
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", *args, capsys=capsys)
    assert code == 0, err
    code, out, err = run_in_process("inbatch_sasrec_e2e_text", "test", *args, capsys=capsys)
    assert code == 0, err
    hr = float(out.split("test HR@10")[1].split()[0])
    assert 0 <= hr <= 100 and math.isfinite(hr)
