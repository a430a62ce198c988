#!/usr/bin/env bash
# A real single-node Slurm on this machine (munged, slurmctld, slurmd), for trying jobs/slurm/*.sbatch and for
# tests/test_slurm.py. Everything lives in one temp folder (config, state, spool, logs, munge key and socket);
# the daemons run in the background under this script's control (pid files), on free ports, as root, without
# cgroups or systemd (proctrack/linuxproc), so a container can run it. Tasks are bound to their CPUs by
# task/affinity, binding to cores as many sites do: a job step that asks for fewer CPUs than the job holds
# really gets fewer. Needs `make system-deps` (Debian's slurm-wlm and munge).
#
#   scripts/slurm-local.sh start            start; prints the folder (its slurm.conf is $DIR/slurm.conf)
#   scripts/slurm-local.sh stop DIR         cancel its jobs, stop its daemons, remove DIR
#   scripts/slurm-local.sh run CMD ARGS...  start, run CMD with SLURM_CONF set, stop (also on failure)
#
# With `start`, point the Slurm commands at it: export SLURM_CONF=$DIR/slurm.conf
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons, for users whose PATH lacks them

need_tools() {
    local tool
    for tool in munged slurmctld slurmd sinfo sbatch scontrol scancel; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "slurm-local: $tool not found; run \`make system-deps\` (installs slurm-wlm and munge)" >&2
            exit 2
        fi
    done
}

free_ports() {  # N free TCP ports on this machine
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

start() {
    need_tools
    local dir ctld_port slurmd_port cpus mem
    dir="$(mktemp -d /tmp/slurm-local.XXXXXX)"  # short: the munge socket path must fit a unix socket name
    chmod 700 "$dir"
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    read -r ctld_port slurmd_port < <(free_ports 2)
    # The node as slurmd itself measures it (slurmd refuses a node larger than the machine).
    cpus="$(slurmd -C | sed -n 's/.* CPUs=\([0-9]*\).*/\1/p')"
    mem="$(slurmd -C | sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p')"

    dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge.key"
    cat >"$dir/slurm.conf" <<EOF
ClusterName=rlhf-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
TaskPluginParam=Cores
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"

    munged --foreground --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
        --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed" \
        >>"$dir/log/munged.out" 2>&1 &
    echo $! >"$dir/munged.pids"  # *.pids: the processes this script started (stop kills exactly these)
    wait_for "munged" 20 test -S "$dir/munge.socket" || fail "$dir" munged
    slurmctld -D -i -f "$SLURM_CONF" >>"$dir/log/slurmctld.out" 2>&1 &
    echo $! >"$dir/slurmctld.pids"
    wait_for "slurmctld" 30 scontrol ping || fail "$dir" slurmctld
    slurmd -D -N localhost -f "$SLURM_CONF" >>"$dir/log/slurmd.out" 2>&1 &
    echo $! >"$dir/slurmd.pids"
    wait_for "node localhost idle" 60 node_idle || fail "$dir" slurmd
    echo "$dir"
}

node_idle() { [[ "$(sinfo -h -n localhost -o %t 2>/dev/null)" == idle ]]; }

wait_for() {  # wait_for WHAT SECONDS CMD...: poll CMD every 0.2 s
    local what="$1" deadline=$((SECONDS + $2))
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            echo "slurm-local: timed out waiting for $what" >&2
            return 1
        fi
        sleep 0.2
    done
}

fail() {  # fail DIR DAEMON: show its log, tear everything down, exit non-zero
    echo "slurm-local: $2 did not come up; its log:" >&2
    tail -n 30 "$1/log/$2.log" "$1/log/$2.out" >&2 2>/dev/null || true
    stop "$1"
    exit 1
}

stop() {
    local dir="$1" daemon pid
    [[ -f "$dir/slurm.conf" ]] || { echo "slurm-local: $dir is not a slurm-local folder" >&2; exit 2; }
    export SLURM_CONF="$dir/slurm.conf"
    if [[ -f "$dir/slurmctld.pids" ]] && scontrol ping >/dev/null 2>&1; then
        # Cancel what runs and give slurmd the time to kill the job steps it launched.
        scancel --full --quiet --partition=local 2>/dev/null || true
        wait_for "jobs to end" 30 no_jobs || true
        wait_for "job steps to end" 30 no_stepd "$dir" || true
    fi
    for daemon in slurmd slurmctld munged; do
        [[ -f "$dir/$daemon.pids" ]] || continue
        pid="$(cat "$dir/$daemon.pids")"
        kill "$pid" 2>/dev/null || true
        wait_for "$daemon to exit" 20 not_running "$pid" || kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}

no_jobs() { [[ -z "$(squeue -h -o %i 2>/dev/null)" ]]; }

not_running() { ! kill -0 "$1" 2>/dev/null; }

no_stepd() { ! ls "$1"/spool/localhost_* >/dev/null 2>&1; }  # slurmstepd sockets: NODE_JOB.STEP

case "${1:-}" in
    start) start ;;
    stop) stop "${2:?usage: slurm-local.sh stop DIR}" ;;
    run)
        shift
        [[ $# -gt 0 ]] || { echo "usage: slurm-local.sh run CMD [ARGS...]" >&2; exit 2; }
        dir="$(start)"
        trap 'stop "$dir"' EXIT
        SLURM_CONF="$dir/slurm.conf" "$@"
        ;;
    *) echo "usage: slurm-local.sh start | stop DIR | run CMD [ARGS...]" >&2; exit 2 ;;
esac
