"""What a first-time user meets: the README's vision smoke run works as printed from a
fresh clone, `--resume` with nothing to resume says so, a test script names the values it ignores,
and a run without a terminal logs its progress."""
import json
import shlex
import shutil

from conftest import REPO, run_in_process, run_script


def readme_smoke_commands() -> list[list[str]]:
    """The indented command block after "A smoke run on a CPU:" in README.md, as argv lists."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("A smoke run on a CPU:") + 1
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line.strip())
    commands = " ".join(block).replace("\\ ", " ").split("python ")[1:]
    return [shlex.split(command) for command in commands]


def test_readme_vision_smoke_run_works_on_a_fresh_clone(tmp_path):
    """A data folder without posters.lmdb (as in a fresh clone, where *.lmdb is not tracked): the
    run draws the posters itself. Only the folders are redirected into tmp_path, and 1 epoch."""
    data = tmp_path / "data" / "ml-100k"
    data.mkdir(parents=True)
    for name in ("users.tsv", "items.tsv"):
        shutil.copy(REPO / "dataset" / "ml-100k" / name, data / name)
    make_tiny, train = readme_smoke_commands()
    assert make_tiny[0] == "pretrained_models/make_tiny.py"
    result = run_script(make_tiny[0], *make_tiny[1:], "--out", str(tmp_path / "encoders"))
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_script(train[0], *train[1:], "--root_data_dir", str(tmp_path / "data"), "--pretrained_dir",
                        str(tmp_path / "encoders"), "--runs_dir", str(tmp_path / "runs"), "--epoch", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (data / "posters.lmdb").is_file()
    assert "drawing the generated ml-100k posters" in result.stderr
    [run] = (tmp_path / "runs").iterdir()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_without_a_checkpoint_says_it_starts_a_new_run(tmp_path, capsys):
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", "--epoch", "1", "--runs_dir", str(tmp_path),
                                  "--label", "fresh", "--resume", capsys=capsys)
    assert code == 0, err
    log = (tmp_path / "fresh" / "train.log").read_text()
    assert f"no checkpoint_last.pt in {tmp_path / 'fresh'}: starting a new run" in log


def test_test_script_warns_about_values_it_ignores(tmp_path, capsys):
    common = ["--runs_dir", str(tmp_path), "--label", "run"]
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", "--epoch", "1", *common, capsys=capsys)
    assert code == 0, err
    code, out, err = run_in_process("inbatch_sasrec_e2e_text", "test", *common, "--embedding_dim", "32",
                                    capsys=capsys)
    assert code == 0, err
    assert "warning: --embedding_dim 32 is ignored: run run was trained with embedding_dim 64" in err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["embedding_dim"] == 64
    code, out, err = run_in_process("inbatch_sasrec_e2e_text", "test", *common, capsys=capsys)
    assert "warning" not in err                       # the script's own values: nothing to say


def test_a_run_without_terminal_logs_progress_lines(tmp_path, capsys):
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", "--epoch", "1", "--runs_dir", str(tmp_path),
                                  "--label", "logged", "--log_every", "5", capsys=capsys)
    assert code == 0, err
    lines = [line for line in (tmp_path / "logged" / "train.log").read_text().splitlines() if " step " in line]
    assert [line.split(" step ")[1].split()[0] for line in lines] == ["5/15", "10/15", "15/15"]
    assert all("items/s" in line and "loss" in line for line in lines)
