#!/usr/bin/env bash
# A small Slurm cluster on 127.0.0.1 (one node, or several emulated ones) for tests and for trying
# the job scripts on a laptop.
#
#   scripts/slurm/local_cluster.sh start  DIR   # install Slurm (Debian/Ubuntu, root) if missing, start daemons
#   scripts/slurm/local_cluster.sh status DIR   # daemons' PIDs, node state, queue
#   scripts/slurm/local_cluster.sh env    DIR   # prints `export SLURM_CONF=DIR/etc/slurm.conf`
#   scripts/slurm/local_cluster.sh stop   DIR   # cancel this cluster's jobs, stop its daemons by PID
#
# Everything (slurm.conf, state, spool, logs, PID files) lives under DIR; nothing else is written
# except the apt-get install. `start` and `stop` are idempotent. Point the Slurm commands at the
# cluster with `eval "$(scripts/slurm/local_cluster.sh env DIR)"` (sets SLURM_CONF).
#
# Authentication is off (auth/none, cred/none): the cluster is for one machine and one user only.
#
# Environment (all optional):
#   LOCAL_SLURM_NODES        number of nodes node0..node{N-1}, one slurmd each, all on 127.0.0.1
#                            (default 1; 2 exercises multi-node jobs on one machine)
#   LOCAL_SLURM_CPUS         CPUs each node advertises (default: max(nproc, 4) / nodes, at least 2;
#                            oversubscribing is fine for tests, SlurmdParameters=config_overrides
#                            keeps the node from draining)
#   LOCAL_SLURM_CTLD_PORT    slurmctld port (default: first free port from 6817); slurmd ports follow
#   LOCAL_SLURM_TIMEOUT      seconds to wait for the node to come up or jobs to drain (default 60)
set -euo pipefail

usage() {
    awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"
    exit "${1:-0}"
}

die() { echo "local_cluster: error: $*" >&2; exit 1; }
log() { echo "local_cluster: $*" >&2; }

[[ $# -ge 1 ]] || usage 2
cmd=$1
case "$cmd" in -h|--help|help) usage 0 ;; esac
[[ $# -eq 2 ]] || die "usage: $0 start|stop|status|env DIR"
[[ "$cmd" != start ]] || mkdir -p "$2"
[[ -d "$2" ]] || die "no such directory: $2"
DIR=$(cd "$2" && pwd)
CONF="$DIR/etc/slurm.conf"
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}
PARTITION=debug

export SLURM_CONF="$CONF"

pid_alive() {  # pid_alive PIDFILE NAME -> 0 if the PID in PIDFILE is a running NAME process
    local pidfile=$1 name=$2 pid
    [[ -s "$pidfile" ]] || return 1
    pid=$(<"$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # a stale PID file may point at an unrelated process that reused the PID
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name"* ]]
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {  # free_port FROM -> first port >= FROM nobody listens on
    local p=$1
    while port_in_use "$p"; do p=$((p + 1)); done
    echo "$p"
}

install_slurm() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && return 0
    command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is not available; install slurmctld, slurmd and slurm-client"
    [[ $(id -u) -eq 0 ]] || die "Slurm is not installed; run as root (or: apt-get install slurmctld slurmd slurm-client)"
    log "installing slurmctld slurmd slurm-client with apt-get"
    local apt=(apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client)
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >"$DIR/log/apt.log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$DIR/log/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" >>"$DIR/log/apt.log" 2>&1 \
            || die "apt-get install failed, see $DIR/log/apt.log"
    fi
    command -v slurmctld >/dev/null || die "slurmctld not found after install"
}

write_conf() {
    [[ -s "$CONF" ]] && return 0  # keep the ports and settings of a cluster that already ran here
    local nodes cpus mem_mb user ctld_port port i node_lines=""
    nodes=${LOCAL_SLURM_NODES:-1}
    [[ $nodes =~ ^[1-9][0-9]*$ ]] || die "LOCAL_SLURM_NODES must be a positive integer, got '$nodes'"
    cpus=$(( $(nproc) > 4 ? $(nproc) : 4 ))
    cpus=${LOCAL_SLURM_CPUS:-$(( cpus / nodes > 2 ? cpus / nodes : 2 ))}
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10 / 1024 / nodes ))
    user=$(id -un)
    ctld_port=${LOCAL_SLURM_CTLD_PORT:-$(free_port 6817)}
    port=$ctld_port
    for ((i = 0; i < nodes; i++)); do
        port=$(free_port $((port + 1)))
        node_lines+="NodeName=node$i NodeAddr=127.0.0.1 NodeHostname=$(hostname) Port=$port CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"$'\n'
    done
    cat >"$CONF.tmp" <<EOF
# One-node test cluster written by scripts/slurm/local_cluster.sh; everything lives under $DIR.
ClusterName=restorelab-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/none
CredType=cred/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
PlugStackConfig=$DIR/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobContainerType=job_container/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
${node_lines}PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    : >"$DIR/etc/plugstack.conf"
    mv "$CONF.tmp" "$CONF"
}

node_names() { sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$CONF"; }

wait_nodes_ready() {
    local deadline=$((SECONDS + TIMEOUT)) states="" not_ready
    while ((SECONDS < deadline)); do
        states=$(sinfo -h -N -o '%N %T' 2>/dev/null || true)
        not_ready=$(awk '$2 !~ /^(idle|mixed|allocated|completing)/' <<<"$states")
        [[ -n $states && -z $not_ready ]] && return 0
        if grep -qE ' (drain|down|fail)' <<<"$not_ready"; then
            # nodes drained in an earlier run of this cluster: bring them back
            scontrol update NodeName="$(awk '{print $1}' <<<"$not_ready" | paste -sd,)" State=RESUME >/dev/null 2>&1 || true
        fi
        sleep 0.5
    done
    die "nodes not ready within ${TIMEOUT}s: ${states:-no answer from slurmctld}; logs in $DIR/log"
}

start() {
    mkdir -p "$DIR"/{etc,state,spool,run,log}
    install_slurm
    write_conf
    if ! pid_alive "$DIR/run/slurmctld.pid" slurmctld; then
        slurmctld -f "$CONF" || die "slurmctld failed to start, see $DIR/log/slurmctld.log"
    fi
    local node
    for node in $(node_names); do
        mkdir -p "$DIR/spool/$node"
        if ! pid_alive "$DIR/run/slurmd-$node.pid" slurmd; then
            slurmd -f "$CONF" -N "$node" || die "slurmd for $node failed to start, see $DIR/log/slurmd-$node.log"
        fi
    done
    wait_nodes_ready
    log "cluster up ($(node_names | paste -sd' ')); export SLURM_CONF=$CONF"
}

stop_pid() {  # stop_pid PIDFILE NAME
    local pidfile=$1 name=$2 pid i
    pid_alive "$pidfile" "$name" || { rm -f "$pidfile"; return 0; }
    pid=$(<"$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (PID $pid) ignored SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

stop() {
    [[ -s "$CONF" ]] || { log "no cluster in $DIR"; return 0; }
    if pid_alive "$DIR/run/slurmctld.pid" slurmctld; then
        # Jobs first: their slurmstepd processes outlive slurmd.
        local jobs deadline
        jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')
        if [[ -n "${jobs// /}" ]]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            deadline=$((SECONDS + TIMEOUT))
            while ((SECONDS < deadline)) && [[ -n "$(squeue -h -o '%A' 2>/dev/null)" ]]; do sleep 0.5; done
            [[ -z "$(squeue -h -o '%A' 2>/dev/null)" ]] || log "jobs still listed after ${TIMEOUT}s: $(squeue -h -o '%A %T' | tr '\n' ' ')"
        fi
    fi
    local node
    for node in $(node_names); do
        stop_pid "$DIR/run/slurmd-$node.pid" slurmd
    done
    stop_pid "$DIR/run/slurmctld.pid" slurmctld
    log "cluster in $DIR stopped"
}

status() {
    [[ -s "$CONF" ]] || { echo "no cluster in $DIR"; return 3; }
    local rc=0 name
    for name in slurmctld $(node_names | sed 's/^/slurmd-/'); do
        if pid_alive "$DIR/run/$name.pid" "${name%%-*}"; then
            echo "$name: running (PID $(<"$DIR/run/$name.pid"))"
        else
            echo "$name: stopped"; rc=3
        fi
    done
    if [[ $rc -eq 0 ]]; then
        sinfo -N -o '%N %T %c' || rc=3
        squeue -o '%A %j %T %r' || rc=3
    fi
    return $rc
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) die "unknown command '$cmd' (expected start, stop, status or env)" ;;
esac
