"""DDP on CPU (gloo): 2 processes must follow the same trajectory as 1 process with the same
global batch (SPEC "Training", DDP): BCE negatives are drawn for the global batch and split by
rank, the in-batch loss sees every rank's items with gather_negatives, the loss of an optimizer
step is normalised by all ranks' rows; dropout is off; only rank 0 writes.

What is compared: the weights after one epoch of plain SGD (tests/ddp_epoch.py), to 1e-3 of how
far they moved; SGD's update is linear in the gradient, so float summation order (different on
2 ranks) moves them apart by ~1e-7 (measured at most 3e-5 of the distance travelled). The script runs (AdamW) compare the loss and the valid metrics, not the
weights: AdamW divides each gradient element by its running magnitude, so an element whose true
gradient is ~0 steps a full lr in the direction of its rounding noise (seen: 4 of 16384 weights
1.27e-4 apart after one epoch), which says nothing about DDP being right."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, run_in_process, run_script


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = ["--epoch", "1", "--drop_rate", "0", "--runs_dir", str(runs)]
    result = run_script("inbatch_sasrec_e2e_text/train_id.py", *common, "--batch_size", "32",
                        "--gather_negatives", "--nproc_per_node", "2", "--label", "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", *common, "--batch_size", "64",
                                  "--label", "single", capsys=capsys)
    assert code == 0, err
    ddp, single = records(runs / "ddp"), records(runs / "single")
    assert len(ddp) == len(single) == 1
    assert abs(ddp[0]["train_loss"] - single[0]["train_loss"]) < 1e-5
    assert ddp[0]["steps"] == single[0]["steps"] == 15
    for metric, value in single[0]["valid"].items():
        assert abs(ddp[0]["valid"][metric] - value) < 2e-3, metric          # at most 1 user of 943 apart
    # rank 0 alone wrote: one log with one start line, the same files as a single process
    assert sorted(p.name for p in (runs / "ddp").iterdir()) == sorted(p.name for p in (runs / "single").iterdir())
    assert (runs / "ddp" / "train.log").read_text().count(" run ddp:") == 1
    assert "2 rank(s)" in (runs / "ddp" / "train.log").read_text()

    # a run trained on 2 ranks is not resumed on 1 (another world size changes the numbers)
    assert json.loads((runs / "ddp" / "config.json").read_text())["setting"]["world_size"] == 2
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", *common[2:], "--epoch", "2",
                                  "--drop_rate", "0", "--batch_size", "32", "--gather_negatives",
                                  "--label", "ddp", "--resume", capsys=capsys)
    assert code == 2 and "'world_size': 2" in err and "'world_size': 1" in err, err
    assert [r["epoch"] for r in records(runs / "ddp")] == [1]


@pytest.mark.parametrize("extra, message", [
    ([], "this process is one of 2 torchrun ranks (WORLD_SIZE 2), but the values ask for nproc_per_node x nnodes = 1"),
    (["--inbatch_chunk", "64"], "--inbatch_chunk (gradient caching) runs in one process, but this run has 2 ranks"),
])
def test_bare_torchrun_must_agree_with_the_values(extra, message, tmp_path):
    """`torchrun --nproc_per_node 2 SCRIPT` without --nproc_per_node for the script: the ranks are
    refused before anything is written (the label and config.json would say one process), and
    gradient caching is refused on any run of more than one rank. The same launch with the values
    given trains (tests/ddp_epoch.py passes them under a bare torchrun; the script's own launch,
    test_two_gloo_processes_match_one_process, records world size 2)."""
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(REPO / "inbatch_sasrec_e2e_text" / "train_id.py"), "--epoch", "1", "--device", "cpu",
               "--runs_dir", str(runs), *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0 and f"error: {message}" in result.stderr, result.stderr[-3000:]
    assert "--nproc_per_node" in result.stderr.partition(message)[2].splitlines()[0]     # the fix is named
    assert not runs.exists()


def test_vision_run_on_two_gloo_processes_matches_one_process(tmp_path, capsys):
    """The same check with a vision tower (tiny ViT-MAE: no dropout, no BatchNorm): each rank reads
    its own batches' images and encodes its share of the catalogue for evaluation."""
    from vision_helpers import IMAGE_SIZE, TINY_VISION, poster_root, tiny_vision_encoders
    runs = tmp_path / "runs"
    common = ["--epoch", "1", "--drop_rate", "0", "--runs_dir", str(runs), "--root_data_dir", str(poster_root()),
              "--pretrained_dir", str(tiny_vision_encoders()), "--cv_model_load", TINY_VISION["mae"],
              "--image_size", str(IMAGE_SIZE), "--embedding_dim", "32", "--num_workers", "1"]
    script = "inbatch_sasrec_e2e_vision/train_swin_tiny.py"
    result = run_script(script, *common, "--batch_size", "128", "--gather_negatives", "--nproc_per_node", "2",
                        "--label", "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_script(script, *common, "--batch_size", "256", "--label", "single")
    assert result.returncode == 0, result.stderr[-3000:]
    ddp, single = records(runs / "ddp"), records(runs / "single")
    assert abs(ddp[0]["train_loss"] - single[0]["train_loss"]) < 1e-5
    for metric, value in single[0]["valid"].items():
        assert abs(ddp[0]["valid"][metric] - value) < 2e-3, metric          # at most 1 user of 943 apart
    assert "2 rank(s)" in (runs / "ddp" / "train.log").read_text()


SGD_CASES = {
    "bce_sasrec": ["--loss", "bce", "--batch_size", "32", "--lr", "0.05"],
    "bce_dssm": ["--model", "dssm", "--loss", "bce", "--neg_num", "2", "--batch_size", "512", "--lr", "50"],
    "inbatch_gathered": ["--loss", "inbatch", "--gather_negatives", "--batch_size", "32", "--lr", "0.05"],
}


@pytest.mark.parametrize("case", SGD_CASES)
def test_two_gloo_ranks_train_the_weights_of_one_process(case, tmp_path):
    """One epoch (SGD at --lr), 2 micro-batches per optimizer step: 2 ranks x batch b against
    1 process x 2b.
    Same mean loss and the same weights (SGD, see above): the negatives, the split by rank and
    the step's row normalisation over all ranks are those of one process."""
    sys.path.insert(0, str(REPO / "tests"))
    from ddp_epoch import sgd_epoch
    args = [*SGD_CASES[case], "--accumulation_steps", "2"]
    out = tmp_path / "ddp.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(REPO / "tests" / "ddp_epoch.py"), str(out), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    double = args.index("--batch_size") + 1
    args[double] = str(2 * int(args[double]))
    single = sgd_epoch([a for a in args if a != "--gather_negatives"])
    assert ddp["world_size"] == 2 and single["world_size"] == 1 and ddp["steps"] == single["steps"] > 1
    assert abs(ddp["loss"] - single["loss"]) < 1e-6
    moved = max((single["model"][k] - single["initial"][k]).abs().max().item() for k in single["model"])
    assert moved > 1e-3                                                      # the weights trained
    for name, tensor in single["model"].items():                           # measured: <= 3e-5 x moved
        torch.testing.assert_close(ddp["model"][name], tensor, atol=1e-3 * moved, rtol=0)
