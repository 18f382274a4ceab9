# Shared by train.sbatch, eval.sbatch and generate_dataset.sbatch (sourced, not run).
#
# Site-specific settings come from the environment (sbatch exports the submitting shell's
# environment by default), never from paths written here:
#   RESTORELAB_SETUP         a shell file sourced first on the compute node (module load ..., conda activate ...)
#   RESTORELAB_VENV          a virtualenv to activate (default: ROOT/.venv when no virtualenv is active)
#   RESTORELAB_PYTHON        the interpreter (default: python from PATH after the above)
#   NPROC_PER_NODE           processes per node (default: GPUs allocated on the node, else 1;
#                            set it for CPU runs: NPROC_PER_NODE=4 runs 4 gloo processes)
#   MASTER_ADDR, MASTER_PORT rendezvous address (default: the first node's NodeAddr, 20000 + job id % 20000)
#   ACCELERATE_ARGS          extra `accelerate launch` options, e.g. "--mixed_precision bf16"
#   RESTORELAB_SHUTDOWN_TIMEOUT  seconds the launcher waits for workers to checkpoint after a signal
#                            before killing them (default 240; keep it below the --signal lead time)
#   RESTORELAB_MAX_RESTARTS  stop requeueing after this many restarts (default 50)

RESTORELAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export RESTORELAB_ROOT

rl_log() { echo "[restorelab-slurm $(date '+%F %T')] $*" >&2; }
rl_die() { echo "error: $*" >&2; exit 2; }

# Activate the software environment and pick the interpreter.
rl_setup_env() {
    if [[ -n ${RESTORELAB_SETUP:-} ]]; then
        [[ -f $RESTORELAB_SETUP ]] || rl_die "RESTORELAB_SETUP=$RESTORELAB_SETUP is not a file"
        # shellcheck disable=SC1090
        source "$RESTORELAB_SETUP"
    fi
    if [[ -n ${RESTORELAB_VENV:-} ]]; then
        [[ -f $RESTORELAB_VENV/bin/activate ]] || rl_die "RESTORELAB_VENV=$RESTORELAB_VENV has no bin/activate"
        # shellcheck disable=SC1091
        source "$RESTORELAB_VENV/bin/activate"
    elif [[ -z ${VIRTUAL_ENV:-} && -f $RESTORELAB_ROOT/.venv/bin/activate ]]; then
        # shellcheck disable=SC1091
        source "$RESTORELAB_ROOT/.venv/bin/activate"
    fi
    PYTHON=${RESTORELAB_PYTHON:-python}
    command -v "$PYTHON" >/dev/null || rl_die "python interpreter '$PYTHON' not found (set RESTORELAB_VENV or RESTORELAB_PYTHON)"
}

rl_nproc_per_node() {
    if [[ -n ${NPROC_PER_NODE:-} ]]; then
        [[ $NPROC_PER_NODE =~ ^[1-9][0-9]*$ ]] || rl_die "NPROC_PER_NODE must be a positive integer, got '$NPROC_PER_NODE'"
        echo "$NPROC_PER_NODE"
    elif [[ ${SLURM_GPUS_ON_NODE:-0} =~ ^[1-9][0-9]*$ ]]; then
        echo "$SLURM_GPUS_ON_NODE"
    elif [[ -n ${CUDA_VISIBLE_DEVICES:-} && ${CUDA_VISIBLE_DEVICES} != NoDevFiles ]]; then
        local devices
        IFS=, read -ra devices <<<"$CUDA_VISIBLE_DEVICES"
        echo "${#devices[@]}"
    else
        echo 1
    fi
}

# rl_build_launch SCRIPT ARGS... -> fills the array RL_CMD with the command that runs SCRIPT on every
# process of the job: `srun` starts one launcher per node, the launcher (`accelerate launch`, i.e.
# torchrun) starts NPROC_PER_NODE processes; a single process is started as plain `python SCRIPT`.
# Outside Slurm the launcher runs directly (a laptop or workstation run).
rl_build_launch() {
    local script=$1
    shift
    local nproc nnodes total
    nproc=$(rl_nproc_per_node) || exit 2
    nnodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
    total=$((nproc * nnodes))

    if [[ -z ${OMP_NUM_THREADS:-} ]]; then
        # torchrun would force 1 thread per process; share the task's CPUs instead
        local cpus=${SLURM_CPUS_PER_TASK:-$(nproc)}
        export OMP_NUM_THREADS=$(((cpus / nproc) > 0 ? cpus / nproc : 1))
    fi

    local -a launch
    if ((total == 1)); then
        launch=("$PYTHON" "$script" "$@")
    else
        local port=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-$$} % 20000))}
        local addr=${MASTER_ADDR:-}
        if [[ -z $addr ]]; then
            if [[ -n ${SLURM_JOB_NODELIST:-} ]]; then
                # the first node, by the address Slurm itself uses to reach it
                local first
                first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
                addr=$(scontrol show node "$first" 2>/dev/null | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')
                addr=${addr:-$first}
            else
                addr=127.0.0.1
            fi
        fi
        # torchrun forwards these signals to its workers and waits for them (then SIGKILL);
        # SIGUSR1 is not in its default list and would otherwise kill the launcher outright.
        export PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1
        export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${RESTORELAB_SHUTDOWN_TIMEOUT:-240}
        local -a extra=()
        # shellcheck disable=SC2206
        if [[ -n ${ACCELERATE_ARGS:-} ]]; then extra=($ACCELERATE_ARGS); fi
        # --multi_gpu selects the torchrun launcher; on CPU-only nodes Accelerate uses gloo.
        local -a opts=(--multi_gpu --num_processes "$total" --num_machines "$nnodes"
            --main_process_ip "$addr" --main_process_port "$port" "${extra[@]}")
        if [[ -n ${SLURM_JOB_ID:-} ]]; then
            # each node's launcher has its own rank: expand $SLURM_NODEID inside the srun task
            launch=(bash -c 'exec "$1" -m accelerate.commands.launch --machine_rank "$SLURM_NODEID" "${@:2}"'
                bash "$PYTHON" "${opts[@]}" "$script" "$@")
        else
            launch=("$PYTHON" -m accelerate.commands.launch --machine_rank 0 "${opts[@]}" "$script" "$@")
        fi
    fi

    if [[ -n ${SLURM_JOB_ID:-} ]]; then
        local -a srun_opts=(--nodes="$nnodes" --ntasks="$nnodes" --ntasks-per-node=1 --kill-on-bad-exit=1)
        # Slurm 22.05 no longer passes the job's --cpus-per-task on to srun
        if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then srun_opts+=(--cpus-per-task="$SLURM_CPUS_PER_TASK"); fi
        RL_CMD=(srun "${srun_opts[@]}" "${launch[@]}")
    else
        RL_CMD=("${launch[@]}")
    fi
    rl_log "job ${SLURM_JOB_ID:-local} restart ${SLURM_RESTART_COUNT:-0}: $nnodes node(s) x $nproc process(es)"
    rl_log "running: ${RL_CMD[*]}"
}

# rl_run_requeueable: run RL_CMD; when the time-limit warning arrives (SIGUSR1 to the batch shell,
# `#SBATCH --signal=B:USR1@SECONDS`) pass it on so the trainer checkpoints, then requeue the job so
# that `--resume auto` continues it. The trainer exits with 75 (EX_TEMPFAIL) after such a
# checkpoint; `accelerate launch` reports any worker failure as 1, so the signal decides as well.
# SIGTERM means Slurm itself is ending the job (scancel, preemption, hard time limit): every process
# of the job already got it, and requeueing here would undo a user's scancel, so Slurm decides
# (a preempted job with --requeue is requeued by Slurm).
rl_run_requeueable() {
    RL_GOT_WARNING=0
    RL_GOT_TERM=0
    RL_CHILD=
    trap '_rl_on_warning' USR1
    trap '_rl_on_term' TERM
    "${RL_CMD[@]}" &
    RL_CHILD=$!
    if ((RL_GOT_WARNING)); then kill -USR1 "$RL_CHILD" 2>/dev/null || true; fi  # warning came before the launch
    while kill -0 "$RL_CHILD" 2>/dev/null; do
        wait "$RL_CHILD" || true  # returns early when a trapped signal arrives
    done
    local rc=0
    wait "$RL_CHILD" || rc=$?  # bash keeps the status of a reaped child
    trap - USR1 TERM
    rl_log "job command exited with $rc"

    if ((rc == 0)); then
        return 0
    elif ((RL_GOT_TERM)); then
        rl_log "terminated by Slurm: not requeueing from the job (Slurm requeues preempted jobs that allow it)"
        return "$rc"
    elif ((RL_GOT_WARNING || rc == 75)); then
        local restarts=${SLURM_RESTART_COUNT:-0} max=${RESTORELAB_MAX_RESTARTS:-50}
        if [[ -z ${SLURM_JOB_ID:-} ]]; then
            rl_log "interrupted; run the same command again to resume from the last checkpoint"
            return 75
        elif ((restarts >= max)); then
            rl_log "not requeueing: job already restarted $restarts times (RESTORELAB_MAX_RESTARTS=$max)"
            return 75
        fi
        rl_log "checkpoint written; requeueing job $SLURM_JOB_ID (restart $((restarts + 1)))"
        if ! scontrol requeue "$SLURM_JOB_ID"; then
            rl_log "scontrol requeue failed; resubmit the same command to resume"
            return 75
        fi
        return 0
    fi
    return "$rc"
}

_rl_on_warning() {
    RL_GOT_WARNING=1
    rl_log "SIGUSR1: time limit near, asking the job to checkpoint and stop"
    # srun passes the signal to every process of the step (launchers and workers)
    if [[ -n $RL_CHILD ]]; then kill -USR1 "$RL_CHILD" 2>/dev/null || true; fi
}

_rl_on_term() {
    RL_GOT_TERM=1
    rl_log "SIGTERM: waiting for the job to checkpoint and exit"
    # Under Slurm every process of the job got SIGTERM already; a second one would cut short the
    # launcher's wait for its workers. Outside Slurm only this shell got it.
    if [[ -z ${SLURM_JOB_ID:-} && -n $RL_CHILD ]]; then kill -TERM "$RL_CHILD" 2>/dev/null || true; fi
}
