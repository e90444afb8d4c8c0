"""Submit one SLURM job per grid point of a train script (scripts/slurm/*.sbatch).

    python scripts/submit_grid.py SCRIPT [options] [--key value ...]

SCRIPT comes first. Its `params` (its folder's common.py plus the script's own values) are merged
with the `--key value` overrides exactly as running the script would (a list, or commas on the
command line, is a grid), and every grid point becomes one `sbatch` job whose arguments are that
point's values plus `--label <its run label>`, so each job writes the run folder that `python
SCRIPT` with the same values would (and that its test_*.py finds). Options:

    --template 1node|multinode  default: 1node for --nodes 1, else multinode
    --gpus N                    GPUs (= training processes) per node, default 1; batch_size is per GPU
    --nodes M                   nodes per job (multinode), default 1
    --time T, --partition P     passed to sbatch (--time=T, --partition=P)
    --sbatch=ARG                any other sbatch option, repeatable: --sbatch=--account=abc
    --resume                    add --resume to every job: needed for requeue (preemption or the
                                template's self-requeue), harmless for a fresh run
    --dry_run                   print the sbatch commands without submitting

Example: python scripts/submit_grid.py bce_text/main-end2end/train_id.py --gpus 8 --time 24:00:00 \\
             --resume --dry_run --lr 1e-4,5e-5 --embedding_dim 512
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import runpy
import shlex
import shutil
import subprocess
from pathlib import Path

from morec.config import parse_overrides
from morec.errors import InputError
from morec.launch import expand_grid, run_dirs

SLURM_DIR = Path(__file__).resolve().parent / "slurm"
TEMPLATES = {"1node": SLURM_DIR / "train_1node.sbatch", "multinode": SLURM_DIR / "train_multinode.sbatch"}
SET_BY_TEMPLATE = ("nproc_per_node", "nnodes", "rdzv_endpoint")   # the templates pass these themselves


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the rest: the train script's --key value overrides."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], usage=__doc__.split("\n")[2].strip())
    parser.add_argument("script", help="a train_*.py script (first argument)")
    parser.add_argument("--template", choices=sorted(TEMPLATES), default=None)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--time", default="")
    parser.add_argument("--partition", default="")
    parser.add_argument("--sbatch", action="append", default=[], metavar="ARG")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--dry_run", action="store_true")
    return parser.parse_known_args(argv)


def format_value(value) -> str:
    """A value as the command line spells it (parse_overrides reads it back to the same value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def build_jobs(script: Path, argv: list[str], resume: bool) -> list[dict]:
    """One entry per grid point: its run folder and the argument list of its job."""
    params = runpy.run_path(str(script), run_name="params_only").get("params")
    if not isinstance(params, dict):
        raise InputError(f"{script} defines no `params` dict; pass a train_*.py experiment script")
    overrides = parse_overrides(argv)
    for key in SET_BY_TEMPLATE:
        if key in overrides:
            raise InputError(f"--{key} is set by the sbatch template; use --gpus / --nodes instead")
    overrides.pop("resume", None)                    # --resume is ours (it means the same)
    runs = run_dirs(params, str(script), argv)       # the labels, exactly as the script computes them
    points = expand_grid({**params, **overrides})
    assert len(points) == len(runs)
    # the values each job must be given: command-line overrides and the script's grid fields
    keys = [k for k in {**params, **overrides} if k in overrides or isinstance(params.get(k), list)]
    jobs = []
    for point, (cfg, run_dir) in zip(points, runs):
        args = []
        for key in keys:
            if key != "label":
                args += [f"--{key}", format_value(point[key])]
        args += ["--label", run_dir.name] + (["--resume"] if resume else [])
        check = run_dirs(params, str(script), args)       # the job's own view: one run, same folder, same values
        same = {**check[0][0].to_dict(), "label": "", "resume": False} == {**cfg.to_dict(), "label": "", "resume": False}
        if len(check) != 1 or check[0][1] != run_dir or not same:
            raise AssertionError(f"job arguments {args} do not reproduce run {run_dir}")
        jobs.append({"run_dir": run_dir, "args": args, "batch_size": cfg.batch_size})
    return jobs


def sbatch_command(opts: argparse.Namespace, template: str, script: Path, job: dict) -> list[str]:
    cmd = ["sbatch", f"--job-name={job['run_dir'].name}", f"--nodes={opts.nodes}", "--ntasks-per-node=1",
           f"--gpus-per-node={opts.gpus}", f"--export=ALL,GPUS_PER_NODE={opts.gpus}"]
    cmd += [f"--time={opts.time}"] if opts.time else []
    cmd += [f"--partition={opts.partition}"] if opts.partition else []
    return cmd + opts.sbatch + [str(TEMPLATES[template]), str(script), *job["args"]]


def main(argv: list[str] | None = None) -> int:
    opts, rest = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        script = Path(opts.script).resolve()
        if script.suffix != ".py" or not script.is_file():
            raise InputError(f"train script {opts.script} not found (give it first: submit_grid.py SCRIPT [options])")
        if opts.gpus < 1 or opts.nodes < 1:
            raise InputError("--gpus and --nodes must be >= 1")
        template = opts.template or ("1node" if opts.nodes == 1 else "multinode")
        if template == "1node" and opts.nodes != 1:
            raise InputError(f"--template 1node runs on one node, not --nodes {opts.nodes}; use --template multinode")
        jobs = build_jobs(script, rest, opts.resume)
        sbatch = shutil.which("sbatch")
        if not opts.dry_run and sbatch is None:
            raise InputError("sbatch not found on PATH: run this on a SLURM login node, "
                             "or pass --dry_run to print the commands only")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    world = opts.nodes * opts.gpus
    sizes = sorted({job["batch_size"] for job in jobs})
    print(f"# {len(jobs)} job(s) of {opts.nodes} node(s) x {opts.gpus} GPU(s); batch_size {sizes} per GPU, "
          f"global {[b * world for b in sizes]}; run folders in {jobs[0]['run_dir'].parent}", file=sys.stderr)
    for job in jobs:
        cmd = sbatch_command(opts, template, script, job)
        print(shlex.join(cmd), flush=True)
        if opts.dry_run:
            continue
        done = subprocess.run([sbatch, *cmd[1:]], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"error: sbatch failed for {job['run_dir'].name} (exit {done.returncode}): "
                  f"{done.stderr.strip() or done.stdout.strip()}", file=sys.stderr)
            return 1
        print(f"#   {done.stdout.strip()} -> {job['run_dir']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
