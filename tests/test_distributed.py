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

    # a run trained on 2 ranks resumes on 1
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", *common[2:], "--epoch", "2",
                                  "--drop_rate", "0", "--batch_size", "32", "--gather_negatives",
                                  "--label", "ddp", "--resume", capsys=capsys)
    assert code == 0, err
    assert [r["epoch"] for r in records(runs / "ddp")] == [1, 2]
