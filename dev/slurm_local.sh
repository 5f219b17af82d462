#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the `slurm` tests (tests/integration/test_sweep_slurm.py) and for
# trying `sftgo sweep --executor slurm` without a cluster. Idempotent: run it again and it only starts what is not
# running. Needs root and Debian's packages (`apt-get install slurm-wlm munge`; `--install` does that first).
#
#   dev/slurm_local.sh [--install]     start munged, slurmctld, slurmd; wait until `sinfo` shows the node idle
#   dev/slurm_local.sh --stop          stop the three daemons this script started
#
# What the configuration chooses, and why:
# - no slurmdbd: no accounting, so `sacct` fails; sftgo reads job states from `squeue` and the run directories, not
#   from sacct (submitit's own state watcher would report UNKNOWN).
# - SelectTypeParameters=CR_Core_Memory: memory is a consumable; a job that does not ask for memory (--mem) takes the
#   whole node, so the sweep always passes --mem (--slurm_mem_gb).
# - AuthInfo cred_expire=30: a requeued job becomes eligible again after cred_expire seconds (120 by default).
# - KillWait=5: a requeued / cancelled job gets SIGKILL 5 s after SIGTERM (30 s by default).
# - proctrack/linuxproc, task/none: no cgroups needed (containers, CI machines); addresses 127.0.0.1: no DNS needed.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by sftgo dev/slurm_local.sh"
LOG_DIR=/var/log/slurm

die() { echo "slurm_local: $*" >&2; exit 1; }

if [ "${1:-}" = "--stop" ]; then
    for d in slurmd slurmctld; do
        pid=$(cat "/run/$d.pid" 2>/dev/null || true)
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    done
    pid=$(cat /run/munge/munged.pid 2>/dev/null || true)
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (it starts munged, slurmctld and slurmd)"
if [ "${1:-}" = "--install" ] && ! command -v slurmctld >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi
command -v slurmctld >/dev/null && command -v munged >/dev/null \
    || die "slurm-wlm / munge not installed: apt-get install slurm-wlm munge (or run with --install)"

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
mem_mb=$((mem_mb - 1024 > 1024 ? mem_mb - 1024 : mem_mb))  # leave 1 GiB to the daemons and the sweep itself

# Configuration: ours is rewritten (the host name or CPU count may have changed); somebody else's is left alone.
mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
if [ ! -f "$CONF" ] || head -1 "$CONF" | grep -qF "$MARK"; then
    tmp=$(mktemp "$CONF_DIR/.slurm.conf.XXXXXX")
    cat > "$tmp" <<EOF
$MARK
ClusterName=sftgo
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=30
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then rm -f "$tmp"; else mv "$tmp" "$CONF"; changed=1; fi
    chmod 644 "$CONF"
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# munge: the key comes with the package (Debian creates it at install time); make one if it is missing.
if ! running /run/munge/munged.pid; then
    [ -s /etc/munge/munge.key ] || { mungekey --create --force 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
    chmod 400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
fi
if [ "${changed:-0}" = 1 ]; then
    # A new configuration: restart what runs with the old one.
    for d in slurmd slurmctld; do
        if running "/run/$d.pid"; then kill "$(cat /run/$d.pid)"; sleep 1; fi
    done
fi
running /run/slurmctld.pid || slurmctld || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
running /run/slurmd.pid || slurmd || die "slurmd did not start (see $LOG_DIR/slurmd.log)"

# Ready when the node is idle (or mixed / allocated: jobs already running); a node left DOWN by an earlier start is
# resumed once.
for i in $(seq 1 60); do
    state=$(sinfo -h -n "$host" -o %t 2>/dev/null || true)
    case "$state" in
        idle*|mix*|alloc*|comp*) echo "slurm_local: $host ready ($cpus CPUs, ${mem_mb} MB, state $state)"; exit 0 ;;
        down*|drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
die "the node did not come up within 60 s (sinfo: '${state:-no answer}'; logs in $LOG_DIR)"
