"""MISSRec's own terms in the pre-run memory estimate (morec/memory.py): its parameter count is
the model's, and its training-batch estimate is within a factor 2 of the peak RSS a real
forward + backward step adds (measured as results_table's peak memory is: morec.cost's peak RSS
window, in a fresh process whose large allocations go back to the system when freed), where
counting it as SASRec (what the estimate did before) misses most of it."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from morec.config import Config
from morec.memory import estimate, parameter_count, training_activation_bytes
from morec.models.build import build_model
from morec.resolve import memory_spec, model_spec

FEATURES = {"text": 24, "vision": 16}
NUM_ITEMS = 300


def built(cfg: Config):
    """MISSRec over random cached features of NUM_ITEMS items (the heads' input widths FEATURES)."""
    torch.manual_seed(0)
    text, vision = (torch.randn(NUM_ITEMS + 1, FEATURES[m]) for m in ("text", "vision"))
    inputs = {"features": text} if cfg.item_tower == "text" else {"features": text, "vision_features": vision}
    return build_model(model_spec(cfg), NUM_ITEMS, 3, torch.full((NUM_ITEMS + 1,), 1.0 / NUM_ITEMS), inputs)


def missrec(**values) -> Config:
    return Config(**{**dict(model="missrec", item_tower="text", two_stage=True, device="cpu"), **values})


@pytest.mark.parametrize("values", [
    dict(),
    dict(item_tower="text+vision", missrec_ids=True, transformer_block=3, embedding_dim=16, max_seq_len=7),
    dict(missrec_fusion="static", missrec_ids=True),
])
def test_parameter_count_is_the_models_but_the_feature_heads(values):
    """The heads over the cached features are left out (their input width is known only once the
    cache is read); everything else is counted exactly."""
    cfg = missrec(**values)
    model = built(cfg)
    real = sum(p.numel() for name, p in model.named_parameters()
               if p.requires_grad and not name.startswith("item_tower.modalities."))
    assert parameter_count(model_spec(cfg), NUM_ITEMS, 943) == real


def measure_step(values: dict) -> None:
    """(run in a fresh process) Print the peak RSS one MISSRec training step (loss, backward)
    adds above the RSS before it, in bytes."""
    from morec.cost import peak_memory_mb, reset_peak_memory
    cfg = missrec(**values)
    model = built(cfg).train()
    torch.manual_seed(1)
    batch = {"seqs": torch.randint(1, NUM_ITEMS + 1, (cfg.batch_size, cfg.max_seq_len + 1))}
    if cfg.loss == "bce":
        batch["negatives"] = torch.randint(1, NUM_ITEMS + 1, (cfg.batch_size, cfg.max_seq_len))
    cpu = torch.device("cpu")
    assert reset_peak_memory(cpu) == "max_rss"
    with open("/proc/self/status", encoding="ascii") as status:
        before = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
    model.calculate_loss(batch).backward()
    print(json.dumps({"added": (peak_memory_mb(cpu) - before) * 2 ** 20}))


def measured(values: dict) -> float:
    code = (f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]; "
            f"from test_missrec_memory import measure_step; measure_step({values!r})")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}   # freed tensors leave the RSS
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])["added"]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's resettable peak RSS")
@pytest.mark.parametrize("values", [
    # the clustering's pairwise distances dominate: 2 modalities x L 30 = 60 tokens per window
    dict(item_tower="text+vision", max_seq_len=30, batch_size=256, embedding_dim=32, loss="bce",
         transformer_block=1, missrec_interests=4),
    # the interest encoder dominates: B x L sequences of K = 10 interest tokens, d 128, 2 blocks
    dict(max_seq_len=20, batch_size=256, embedding_dim=128, loss="bce", transformer_block=2, missrec_interests=10),
])
def test_training_estimate_is_within_a_factor_2_of_the_measured_peak(values):
    cfg = missrec(**values)
    spec = memory_spec(cfg)
    added = measured(values)
    assert added > 50 * 2 ** 20                                                  # the step is what is measured
    ours = training_activation_bytes(spec)
    assert added / 2 <= ours <= 2 * added, (ours / 2 ** 20, added / 2 ** 20)
    as_sasrec = training_activation_bytes(dataclasses.replace(spec, model=dataclasses.replace(spec.model,
                                                                                               user_encoder="sasrec")))
    assert as_sasrec < added / 2, (as_sasrec / 2 ** 20, added / 2 ** 20)       # what the old count missed


def test_evaluation_counts_the_wider_candidates():
    """Evaluation: the catalogue's vectors are P x d wide (text + image + ID: 3 d, not d)."""
    one, three = missrec(), missrec(item_tower="text+vision", missrec_ids=True)
    grown = (estimate(memory_spec(three), NUM_ITEMS, 0, training=False)["evaluation"]
             - estimate(memory_spec(one), NUM_ITEMS, 0, training=False)["evaluation"])
    assert grown >= 4 * (NUM_ITEMS + 1) * 2 * one.embedding_dim
