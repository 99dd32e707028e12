#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster for tests and CI, without systemd.
#
# Daemons: a private munged, optionally MariaDB + slurmdbd (accounting, needed for job state,
# cancel and requeue in submitit), slurmctld and slurmd, all as background processes whose PIDs
# are recorded in $SLURM_CI_DIR/pids so that stop-slurm.sh stops exactly these and nothing else.
# All config, state, spool, logs and database files live in $SLURM_CI_DIR.
# On success it writes $SLURM_CI_DIR/env.sh (exports SLURM_CONF); `source` it before using the cluster.
#
# Knobs (environment variables, defaults in brackets):
#   SLURM_CI_DIR          cluster folder [${TMPDIR:-/tmp}/slurm-ci]; wiped on start
#   SLURM_CI_ACCT         1: run MariaDB + slurmdbd so that sacct works [1]
#   SLURM_CI_PREEMPT      1: add partition `urgent` that preempts `debug` with REQUEUE [1]
#   SLURM_CI_CPUS         CPUs each node advertises (more than the box has is fine: nothing is enforced) [4]
#   SLURM_CI_NODES        node names on this machine: 1 is the host itself; N >= 2 runs one slurmd per
#                         name n1..nN (multiple-slurmd mode), node i on port SLURMD_PORT + 100 (i - 1) [1]
#   SLURM_CI_INSTALL      1: apt-get install missing packages; 0: fail if any is missing [1]
#   SLURM_CI_TIMEOUT      deadline in seconds for each wait [90]
#   SLURM_CI_CRED_EXPIRE  AuthInfo cred_expire; also the delay before a requeued job restarts [10]
#   SLURM_CI_SCHED_PARAMS SchedulerParameters [sched_interval=2,bf_interval=1]
#   SLURM_CI_GRACE        GraceTime (s) of `debug` jobs between USR2 and the kill on preemption [20]
#   SLURM_CI_FIRST_JOB_ID FirstJobId [derived from the clock, so ids differ between clusters]
#   SLURM_CI_CTLD_PORT, SLURM_CI_SLURMD_PORT, SLURM_CI_DBD_PORT, SLURM_CI_DB_PORT [6817 6818 6819 3307]
#
# Exit status: 0 ready; 1 a daemon failed or a wait timed out; 2 bad setting;
# 3 this machine cannot run it (not root, packages missing and not installable, port busy).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
D=${SLURM_CI_DIR:-${TMPDIR:-/tmp}/slurm-ci}
ACCT=${SLURM_CI_ACCT:-1}
PREEMPT=${SLURM_CI_PREEMPT:-1}
CPUS=${SLURM_CI_CPUS:-4}
NODES=${SLURM_CI_NODES:-1}
INSTALL=${SLURM_CI_INSTALL:-1}
TIMEOUT=${SLURM_CI_TIMEOUT:-90}
CRED_EXPIRE=${SLURM_CI_CRED_EXPIRE:-10}
SCHED_PARAMS=${SLURM_CI_SCHED_PARAMS:-sched_interval=2,bf_interval=1}
GRACE=${SLURM_CI_GRACE:-20}
CTLD_PORT=${SLURM_CI_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_CI_SLURMD_PORT:-6818}
DBD_PORT=${SLURM_CI_DBD_PORT:-6819}
DB_PORT=${SLURM_CI_DB_PORT:-3307}
# Ids 100 per second of wall clock, wrapping every ~7.5 days below MaxJobId (67043328): a fresh
# cluster never reuses the ids of a recent one, so a reused submitit folder cannot hand back a
# stale result pickle.
FIRST_JOB_ID=${SLURM_CI_FIRST_JOB_ID:-$(( ($(date +%s) % 650000) * 100 + 1000 ))}
DB_PASS=slurmci
CLUSTER=ci

T0=${EPOCHREALTIME/./}
log() {
    local dt=$(( (${EPOCHREALTIME/./} - T0) / 1000 ))
    printf '[start-slurm %d.%03ds] %s\n' $((dt / 1000)) $((dt % 1000)) "$*" >&2
}
fail() { # fail <status> <message>
    log "ERROR: $2"
    exit "$1"
}

for knob in ACCT PREEMPT INSTALL; do
    [[ ${!knob} == [01] ]] || fail 2 "SLURM_CI_$knob = ${!knob}: must be 0 or 1"
done
for knob in CPUS NODES TIMEOUT CRED_EXPIRE GRACE CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT FIRST_JOB_ID; do
    [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || fail 2 "SLURM_CI_$knob = ${!knob}: must be a positive integer"
done
[[ $D == /?* && $D != *..* ]] || fail 2 "SLURM_CI_DIR = $D: must be an absolute path without '..'"

# Unix socket paths (munge, MariaDB) must fit in 108 bytes.
((${#D} <= 80)) || fail 2 "SLURM_CI_DIR = $D: longer than 80 characters (socket paths would not fit)"

# --- Pre-flight: things that make a start impossible here (exit 3, so tests can skip). ---
[[ $(id -u) == 0 ]] || fail 3 "must run as root (apt-get, munge/mysql users, setpriv); uid is $(id -u)"

# A stale cluster from an earlier run in the same folder is stopped first.
if [[ -s $D/pids ]]; then
    log "stopping the earlier cluster recorded in $D/pids"
    SLURM_CI_DIR=$D "$HERE/stop-slurm.sh" || true
fi

# From here on, a failure shows the log tails and stops whatever was started.
started=0
made_policy=0
cleanup() {
    local status=$? f
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
    ((status == 0)) && return
    for f in "$D"/log/*.log "$D"/log/*.stderr; do
        # A daemon's stderr repeats its log file; it matters only when the log stayed empty.
        [[ -s $f && ! ($f == *.stderr && -s ${f%.stderr}.log) ]] || continue
        printf '%s\n' "--- last lines of $f ---" >&2
        tail -n 8 "$f" >&2
    done
    if ((started)); then
        log "start failed (status $status): stopping the daemons it started"
        SLURM_CI_DIR=$D "$HERE/stop-slurm.sh" >&2 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wipe only a folder that is ours (has the marker) or is empty.
if [[ -e $D ]]; then
    if [[ -e $D/.slurm-ci ]] || [[ -d $D && -z $(ls -A "$D") ]]; then
        rm -rf "$D"
    else
        fail 2 "SLURM_CI_DIR = $D: exists and is not a cluster folder of this script; refusing to wipe it"
    fi
fi
install -d -m 755 "$D" "$D/log" "$D/run" "$D/state" "$D/spool"
touch "$D/.slurm-ci"

needed=(slurmctld slurmd slurm-client munge)
binaries=(slurmctld slurmd sinfo munged)
if [[ $ACCT == 1 ]]; then
    needed+=(slurmdbd mariadb-server)
    binaries+=(slurmdbd mariadbd mariadb-install-db)
fi
missing=()
for b in "${binaries[@]}"; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
if ((${#missing[@]})); then
    [[ $INSTALL == 1 ]] || fail 3 "missing ${missing[*]} and SLURM_CI_INSTALL=0"
    command -v apt-get >/dev/null || fail 3 "missing ${missing[*]} and no apt-get to install them"
    log "installing ${needed[*]} (missing: ${missing[*]})"
    # The package scripts must not try to start services (there is no systemd/init here).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        made_policy=1
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -o DPkg::Lock::Timeout=300 \
            install -y -q --no-install-recommends "${needed[@]}" >>"$D/log/apt.log" 2>&1
    }
    # Retry once after `apt-get update`: stale package lists give 404s.
    if ! apt_install; then
        timeout 300 apt-get -o DPkg::Lock::Timeout=300 update -q >>"$D/log/apt.log" 2>&1 && apt_install \
            || fail 3 "apt-get install ${needed[*]} failed; see $D/log/apt.log"
    fi
    if ((made_policy)); then
        rm -f /usr/sbin/policy-rc.d
        made_policy=0
    fi
    log "packages installed"
fi
for b in "${binaries[@]}"; do command -v "$b" >/dev/null 2>&1 || fail 3 "$b still missing after install"; done
id munge >/dev/null 2>&1 || fail 3 "no 'munge' user (the munge package creates it)"
[[ $ACCT == 0 ]] || id mysql >/dev/null 2>&1 || fail 3 "no 'mysql' user (mariadb-server creates it)"

port_busy() {
    if command -v ss >/dev/null; then
        [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
((NODES <= 16)) || fail 2 "SLURM_CI_NODES = $NODES: at most 16 node names on one machine"
# Node names and their slurmd ports: the host itself, or n1..nN, each with its own slurmd.
if ((NODES == 1)); then
    node_names=("$(hostname -s)")
    node_ports=("$SLURMD_PORT")
else
    node_names=() node_ports=()
    for ((i = 1; i <= NODES; i++)); do
        node_names+=("n$i")
        node_ports+=($((SLURMD_PORT + 100 * (i - 1))))
    done
fi
ports=("$CTLD_PORT" "${node_ports[@]}")
[[ $ACCT == 0 ]] || ports+=("$DBD_PORT" "$DB_PORT")
for p in "${ports[@]}"; do
    port_busy "$p" && fail 3 "port $p already in use (another cluster?); set SLURM_CI_*_PORT"
done
: >"$D/pids"
started=1
export SLURM_CONF=$D/slurm.conf

# alive <pid>: a zombie counts as dead (PID 1 here may reap re-parented processes late).
alive() {
    [[ -r /proc/$1/stat ]] || return 1
    local stat
    stat=$(<"/proc/$1/stat") || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}
check_daemons() {
    local name pid
    while read -r name pid; do
        alive "$pid" || fail 1 "$name (pid $pid) died; see $D/log/$name.*"
    done <"$D/pids"
}
# wait_until <what> <command...>: poll with a wall-clock deadline, checking the daemons live.
wait_until() {
    local what=$1 end=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        check_daemons
        ((SECONDS < end)) || fail 1 "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.2
    done
}
record() { echo "$1 $2" >>"$D/pids"; }

host=$(hostname -s)
mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n 1)
[[ $mem =~ ^[0-9]+$ ]] || mem=4096
mem=$((mem * 9 / 10))

# --- munge: a private daemon, key and socket, so no system munge or /run/munge is involved. ---
M=$D/munge
install -d -o munge -g munge -m 755 "$M"
head -c 1024 /dev/urandom >"$M/munge.key"
chown munge:munge "$M/munge.key"
chmod 400 "$M/munge.key"
# setpriv execs without forking, so $! is munged itself. In the foreground munged logs to stderr.
setpriv --reuid=munge --regid=munge --init-groups munged --foreground \
    --socket="$M/munge.socket" --key-file="$M/munge.key" --pid-file="$M/munged.pid" \
    --seed-file="$M/munged.seed" </dev/null >"$D/log/munged.log" 2>&1 &
record munged $!
munge_ok() { munge -S "$M/munge.socket" -n | unmunge -S "$M/munge.socket"; }
wait_until munged munge_ok
log "munged up"

# --- slurm.conf (and slurmdbd.conf): clients, slurmdbd and the daemons all read these. ---
auth_info="socket=$M/munge.socket,cred_expire=$CRED_EXPIRE"
if [[ $ACCT == 1 ]]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# With slurmdbd this names the munge socket for talking to it (AuthInfo is not used for that).
AccountingStoragePass=$M/munge.socket"
else
    accounting="AccountingStorageType=accounting_storage/none"
fi
# One slurmd per node name: with several on one machine, each needs its own spool, pid and log
# file (%n is the node name) and port.
if ((NODES == 1)); then
    slurmd_files="SlurmdSpoolDir=$D/spool
SlurmdPidFile=$D/run/slurmd.pid
SlurmdLogFile=$D/log/slurmd.log"
    node_lines="NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$CPUS RealMemory=$mem State=UNKNOWN"
    nodelist=$host
else
    slurmd_files="SlurmdSpoolDir=$D/spool/%n
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmdLogFile=$D/log/slurmd-%n.log"
    node_lines=""
    for i in "${!node_names[@]}"; do
        install -d -m 755 "$D/spool/${node_names[$i]}"
        node_lines+="NodeName=${node_names[$i]} NodeAddr=127.0.0.1 NodeHostname=$host Port=${node_ports[$i]} CPUs=$CPUS RealMemory=$mem State=UNKNOWN"$'\n'
    done
    node_lines=${node_lines%$'\n'}
    nodelist=$(IFS=,; echo "${node_names[*]}")
fi
if [[ $PREEMPT == 1 ]]; then
    # preempt_send_user_signal: the preempted job gets its --signal (USR2 from submitit) at once,
    # so submitit checkpoints and requeues; without it Slurm sends SIGTERM, which submitit ignores.
    partitions="PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
PartitionName=debug Nodes=$nodelist Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=$GRACE
PartitionName=urgent Nodes=$nodelist MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF"
else
    partitions="PartitionName=debug Nodes=$nodelist Default=YES MaxTime=INFINITE State=UP"
fi
cat >"$SLURM_CONF" <<EOF
# Generated by tests/slurm/start-slurm.sh; throw-away cluster in $D.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also the delay before a requeued job may start again (default 120 s).
AuthInfo=$auth_info
SlurmctldPort=$CTLD_PORT
SlurmdPort=${node_ports[0]}
StateSaveLocation=$D/state
$slurmd_files
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmctldLogFile=$D/log/slurmctld.log
# No cgroups: nothing is confined or enforced, which is what a 2-core test box wants.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Default intervals (60 s / 30 s) leave array tasks and requeued jobs pending for seconds.
SchedulerParameters=$SCHED_PARAMS
SlurmdParameters=config_overrides
ReturnToService=2
JobCompType=jobcomp/none
MailProg=/bin/true
$accounting
MinJobAge=300
KillWait=5
InactiveLimit=0
FirstJobId=$FIRST_JOB_ID
$node_lines
$partitions
EOF

# --- Accounting: a private MariaDB (ignores /etc/mysql entirely) and slurmdbd. ---
if [[ $ACCT == 1 ]]; then
    install -d -o mysql -g mysql -m 750 "$D/mysql"
    db_opts=(--datadir="$D/mysql" --innodb-log-file-size=8M --innodb-buffer-pool-size=32M)
    timeout "$TIMEOUT" mariadb-install-db --no-defaults --user=mysql "${db_opts[@]}" --skip-test-db \
        --auth-root-authentication-method=socket >"$D/log/mariadb-install.log" 2>&1 \
        || fail 1 "mariadb-install-db failed; see $D/log/mariadb-install.log"
    mariadbd --no-defaults --user=mysql "${db_opts[@]}" --socket="$D/mysql/mysqld.sock" \
        --pid-file="$D/mysql/mariadbd.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --skip-name-resolve --innodb-flush-log-at-trx-commit=0 \
        </dev/null >"$D/log/mariadbd.log" 2>&1 &
    record mariadbd $!
    sql() { mariadb --no-defaults --socket="$D/mysql/mysqld.sock" -u root "$@"; }
    wait_until mariadbd sql -e 'SELECT 1'
    sql <<EOF || fail 1 "could not create the accounting database and its user"
CREATE DATABASE slurm_acct_db;
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
    log "mariadbd up"
    # slurmdbd has no -f option: it reads slurmdbd.conf next to \$SLURM_CONF.
    install -m 600 /dev/null "$D/slurmdbd.conf"
    cat >"$D/slurmdbd.conf" <<EOF
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$M/munge.socket
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.pid
EOF
    slurmdbd -D </dev/null >"$D/log/slurmdbd.stderr" 2>&1 &
    record slurmdbd $!
    wait_until slurmdbd timeout 10 sacctmgr -n list cluster
    # Registering the cluster before slurmctld starts avoids its start-up race with slurmdbd.
    timeout 20 sacctmgr -i add cluster "$CLUSTER" >/dev/null || fail 1 "sacctmgr add cluster failed"
    log "slurmdbd up"
fi

# --- slurmctld and slurmd; with -D they stay in the foreground, so $! is the daemon. ---
slurmctld -D -i -f "$SLURM_CONF" </dev/null >"$D/log/slurmctld.stderr" 2>&1 &
record slurmctld $!
for name in "${node_names[@]}"; do
    suffix=$([[ $NODES == 1 ]] || echo "-$name")
    slurmd -D -f "$SLURM_CONF" -N "$name" </dev/null >"$D/log/slurmd$suffix.stderr" 2>&1 &
    record "slurmd$suffix" $!
done
# sinfo prints each node once per partition.
node_idle() {
    local states
    states=$(timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u) || return 1
    [[ $(wc -l <<<"$states") == "$NODES" && $(awk '{print $2}' <<<"$states" | sort -u) == idle ]]
}
wait_until "${NODES} node(s) to be idle" node_idle
if [[ $ACCT == 1 ]]; then
    # ControlHost is filled in once slurmctld has registered with slurmdbd.
    registered() {
        [[ -n $(timeout 10 sacctmgr -n -P list cluster "$CLUSTER" format=ControlHost 2>/dev/null) ]] \
            && timeout 10 sacct -n -X -o JobID
    }
    wait_until "slurmctld to register with slurmdbd" registered
fi

cat >"$D/env.sh" <<EOF
# Source this to use the throw-away cluster in $D.
export SLURM_CONF=$SLURM_CONF
export SLURM_CI_DIR=$D
EOF
log "cluster ready: SLURM_CONF=$SLURM_CONF (nodes ${node_names[*]}, accounting=$ACCT, preempt=$PREEMPT, cpus=$CPUS each, first job id $FIRST_JOB_ID)"
