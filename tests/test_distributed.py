"""DDP on CPU (gloo): 2 processes started by the script itself through torchrun must follow the
same trajectory as 1 process with the same global batch, when the in-batch loss sees every
rank's items (gather_negatives) and dropout is off; only rank 0 writes."""
import json

import torch

from conftest import run_in_process, run_script


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
    assert ddp[0]["valid"] == single[0]["valid"]
    weights_ddp = torch.load(runs / "ddp" / "checkpoint_last.pt", weights_only=True)["model"]
    weights_single = torch.load(runs / "single" / "checkpoint_last.pt", weights_only=True)["model"]
    for name, tensor in weights_single.items():
        torch.testing.assert_close(weights_ddp[name], tensor, atol=1e-4, rtol=1e-4)
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
    weights_ddp = torch.load(runs / "ddp" / "checkpoint_last.pt", weights_only=True)["model"]
    weights_single = torch.load(runs / "single" / "checkpoint_last.pt", weights_only=True)["model"]
    for name, tensor in weights_single.items():
        torch.testing.assert_close(weights_ddp[name], tensor, atol=1e-4, rtol=1e-4)
    assert "2 rank(s)" in (runs / "ddp" / "train.log").read_text()
