#!/usr/bin/env bash
# One node's share of a training job, used by train_1node.sbatch and train_multinode.sbatch:
#
#     run_node.sh SCRIPT [--key value ...]      ->   python SCRIPT --key value ...
#
# The train script restarts itself under torchrun when --nproc_per_node x --nnodes > 1 (morec/launch.py).
# This wrapper turns a stop request into exactly ONE SIGTERM for the process that checkpoints:
#   - the torchrun agent when there is one (it passes one SIGTERM to each worker and gives them
#     TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds; the workers finish the current step, rank 0 writes
#     checkpoint_last.pt, then all exit), or
#   - the training process itself (one process per node: no torchrun).
# A second SIGTERM makes the training loop stop at once, without that checkpoint; that is why the
# early warning is SIGUSR2 (sbatch --signal=USR2@120) and not SIGTERM: a job-wide SIGTERM would reach
# each worker twice, directly and through the agent.
#
# Signals:  SIGUSR2 -> stop request (forwarded once, as above).
#           SIGTERM / SIGINT -> ignored by this wrapper: Slurm sends them to every process of the
#           job (preemption, scancel), so the training processes get them themselves.
# The python command starts with SIGUSR2 and SIGTERM ignored (inherited): the launcher process and
# the torchrun agent survive a job-wide SIGUSR2, and the launcher a job-wide SIGTERM, while the
# training loop installs its own SIGTERM handler. A request before training has started is lost
# (the process still ignores SIGTERM then).
# Exit status: the command's, or 143 when a stop request ended it before it finished.
# PYTHON: the interpreter (default: `python` from PATH, i.e. the activated environment).
set -u

if [ "$#" -lt 1 ]; then
    echo "usage: run_node.sh SCRIPT [--key value ...]" >&2
    exit 2
fi

( trap '' USR2 TERM; exec "${PYTHON:-python}" "$@" ) &
child=$!
stop_requested=0

request_stop() {
    [ "$stop_requested" = 1 ] && return
    stop_requested=1
    local agent what
    agent=$(ps -o pid=,args= --ppid "$child" 2>/dev/null | awk '/torch[.]distributed[.]run/ {print $1; exit}')
    what=${agent:+torchrun agent}
    echo "run_node.sh ($(hostname)): stop requested; SIGTERM to ${what:-the training process} (pid ${agent:-$child})" >&2
    kill -TERM "${agent:-$child}" 2>/dev/null || true
}

trap request_stop USR2
trap ':' TERM INT

while true; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
done
if [ "$stop_requested" = 1 ] && [ "$rc" -ne 0 ]; then
    rc=143
fi
exit "$rc"
