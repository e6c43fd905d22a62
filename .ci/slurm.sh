#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py (CI, as root, no systemd).
#
#   bash .ci/slurm.sh start   # install (if missing) and start munged, slurmctld, slurmd; wait until the node is idle
#   bash .ci/slurm.sh stop    # stop the daemons this script started, by their pid files
#   bash .ci/slurm.sh status  # print sinfo / scontrol ping
#
# Node "localhost" (NodeHostname = `hostname -s`) with CPUs=$(nproc) and two fake GPUs
# (gres on /dev/null and /dev/zero) in partition "debug". No slurmdbd: there is no
# sacct accounting, so the Snakemake profile must use `slurm-status-command: squeue`.
# Every wait is a bounded polling loop; every failure says what and where to look.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
PACKAGES=(slurmctld slurmd slurm-client munge)
WAIT_S=${SLURM_WAIT_S:-60}   # upper bound of each wait below

say() { echo "[slurm.sh] $*"; }
die() { echo "[slurm.sh] ERROR: $*" >&2; exit 1; }

alive() {  # alive PIDFILE: the pid file names a running process
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.5 s until COMMAND succeeds
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 2; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    say "gave up after ${limit}s waiting for: $what"
    return 1
}

installed() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null
}

install_packages() {
    if installed; then
        say "SLURM and munge already installed (slurm $(dpkg-query -W -f '${Version}' slurmctld 2>/dev/null || echo "?"))"
        return
    fi
    say "installing ${PACKAGES[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null \
        || die "apt-get install ${PACKAGES[*]} failed"
    installed || die "packages installed but slurmctld/slurmd/sinfo/sbatch/munged not on PATH"
    say "installed slurm $(dpkg-query -W -f '${Version}' slurmctld)"
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "writing /etc/munge/munge.key"
        mkdir -p /etc/munge
        (umask 077 && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none)
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    if alive "$MUNGE_PID"; then
        say "munged already running (pid $(cat "$MUNGE_PID"))"
    else
        rm -f "$MUNGE_PID"
        runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
        wait_for "$WAIT_S" "munged pid file $MUNGE_PID" alive "$MUNGE_PID" || die "munged did not stay up"
        say "munged started (pid $(cat "$MUNGE_PID"))"
    fi
    munge -n | unmunge >/dev/null || die "munge round trip failed (munge -n | unmunge)"
}

write_conf() {
    local host cpus tmp
    host=$(hostname -s)
    cpus=$(nproc)
    mkdir -p "$CONF_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR"
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Written by .ci/slurm.sh: a one-node test cluster. Do not use in production.
ClusterName=specalign-ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=localhost NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=4000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    install -m 0644 "$tmp" "$CONF_DIR/slurm.conf"
    cat >"$tmp" <<EOF
# Two fake GPUs for scheduling tests: jobs asking --gpus=1 get CUDA_VISIBLE_DEVICES=0 or 1.
NodeName=localhost Name=gpu File=/dev/null
NodeName=localhost Name=gpu File=/dev/zero
EOF
    install -m 0644 "$tmp" "$CONF_DIR/gres.conf"
    rm -f "$tmp"
    say "wrote $CONF_DIR/slurm.conf (node localhost = $host, CPUs=$cpus, 2 fake GPUs) and gres.conf"
}

ctld_up() { scontrol ping 2>/dev/null | grep -q "is UP"; }
node_state() { sinfo -h -N -n localhost -o %T 2>/dev/null | head -1; }
node_idle() { [[ "$(node_state)" == idle* || "$(node_state)" == mixed* || "$(node_state)" == allocated* ]]; }

start_slurmd() {
    rm -f "$SLURMD_PID"
    /usr/sbin/slurmd -N localhost || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
    wait_for "$WAIT_S" "slurmd pid file $SLURMD_PID" alive "$SLURMD_PID" \
        || die "slurmd did not stay up; tail of $LOG_DIR/slurmd.log: $(tail -5 "$LOG_DIR/slurmd.log" 2>/dev/null)"
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, wait (bounded), then KILL
    local pidfile=$1 name=$2 pid i
    if ! alive "$pidfile"; then
        say "$name not running"
        rm -f "$pidfile"
        return 0
    fi
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    say "stopped $name (pid $pid)"
}

cmd_start() {
    [[ $EUID -eq 0 ]] || die "must run as root (installs packages, writes /etc/slurm, starts daemons)"
    if alive "$CTLD_PID" && alive "$SLURMD_PID" && ctld_up && node_idle; then
        say "already up: $(sinfo -h -o '%P %a %D %T')"
        return 0
    fi
    install_packages
    start_munge
    write_conf
    if alive "$CTLD_PID"; then
        say "slurmctld already running (pid $(cat "$CTLD_PID")): reconfigure"
        scontrol reconfigure || true
    else
        rm -f "$CTLD_PID"
        # -i: ignore state left by an earlier run (stale jobs/nodes from another config)
        /usr/sbin/slurmctld -i || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
    fi
    wait_for "$WAIT_S" "scontrol ping: slurmctld UP" ctld_up \
        || die "slurmctld not UP; tail of $LOG_DIR/slurmctld.log: $(tail -5 "$LOG_DIR/slurmctld.log" 2>/dev/null)"
    say "slurmctld UP (pid $(cat "$CTLD_PID"))"
    alive "$SLURMD_PID" || start_slurmd
    if ! wait_for 20 "node localhost idle" node_idle; then
        # a slurmd that registered before the controller was ready leaves the node "unknown": restart it once
        say "node is '$(node_state)': restarting slurmd once"
        stop_pid "$SLURMD_PID" slurmd
        start_slurmd
        scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
        wait_for "$WAIT_S" "node localhost idle" node_idle \
            || die "node stays '$(node_state)'; see $LOG_DIR/slurmd.log and $LOG_DIR/slurmctld.log"
    fi
    say "SLURM up: slurmd pid $(cat "$SLURMD_PID"); $(sinfo -h -o 'partition %P %a, %D node(s) %T, gres %G')"
}

no_jobs() { [[ -z "$(squeue -h -o %i 2>/dev/null)" ]]; }

cmd_stop() {
    # Jobs left by an interrupted test run keep running under slurmstepd after slurmd stops:
    # cancel them through SLURM first (bounded wait), then stop the daemons.
    if alive "$CTLD_PID" && ctld_up && ! no_jobs; then
        say "cancelling jobs still queued or running: $(squeue -h -o %i | tr '\n' ' ')"
        scancel --full $(squeue -h -o %i) 2>/dev/null || true
        wait_for 30 "cancelled jobs to end" no_jobs || say "jobs still listed: $(squeue -h -o '%i %T' | tr '\n' ' ')"
    fi
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
    stop_pid "$MUNGE_PID" munged
}

cmd_status() {
    scontrol ping || true
    sinfo || true
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: bash .ci/slurm.sh start|stop|status" >&2; exit 2 ;;
esac
