#!/usr/bin/env bash
# Stop the throw-away cluster that start-slurm.sh started in $SLURM_CI_DIR.
#
# Cancels all jobs and waits for the queue to drain, kills job processes of this cluster that are
# still left (slurmstepd and job tasks whose environment names this cluster's slurm.conf), then
# stops the recorded daemons in reverse start order: SIGTERM, and SIGKILL after a deadline.
# Only PIDs recorded in $SLURM_CI_DIR/pids are signalled, and only while /proc/<pid>/comm still
# names the recorded daemon (a recycled PID is left alone). A zombie counts as stopped.
# Logs stay in $SLURM_CI_DIR/log; the bulky database and spool files are removed
# (SLURM_CI_KEEP=1 keeps everything). Exit status 0 unless a daemon survived SIGKILL.
set -uo pipefail

D=${SLURM_CI_DIR:-${TMPDIR:-/tmp}/slurm-ci}
TIMEOUT=${SLURM_CI_STOP_TIMEOUT:-15}
T0=${EPOCHREALTIME/./}
log() {
    local dt=$(( (${EPOCHREALTIME/./} - T0) / 1000 ))
    printf '[stop-slurm %d.%03ds] %s\n' $((dt / 1000)) $((dt % 1000)) "$*" >&2
}

if [[ ! -s $D/pids ]]; then
    log "nothing to stop in $D (no pids file)"
    exit 0
fi
export SLURM_CONF=$D/slurm.conf

alive() {
    [[ -r /proc/$1/stat ]] || return 1
    local stat
    stat=$(<"/proc/$1/stat") || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}
# ours <pid> <name>: alive and still the daemon we recorded (guards against PID reuse).
ours() {
    local comm
    # Several slurmd are recorded as slurmd-<node>; their process name is slurmd.
    alive "$1" && { comm=$(<"/proc/$1/comm"); } 2>/dev/null && [[ $comm == "${2%%-*}" ]]
}
pid_of() { awk -v n="$1" '$1 == n { print $2 }' "$D/pids"; }

# 1. Cancel jobs while the controller still runs, so slurmd cleans up their processes.
ctld=$(pid_of slurmctld)
if [[ -n $ctld ]] && ours "$ctld" slurmctld && [[ -f $SLURM_CONF ]]; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null)
    if [[ -n $jobs ]]; then
        log "cancelling $(wc -w <<<"$jobs") job(s)"
        timeout 10 scancel $jobs 2>/dev/null
        end=$((SECONDS + TIMEOUT))
        while [[ -n $(timeout 10 squeue -h -o %A 2>/dev/null) ]] && ((SECONDS < end)); do
            sleep 0.3
        done
    fi
fi

# 2. Job processes of this cluster that outlived the cancel: slurmstepd (inherits slurmd's
#    SLURM_CONF) and job tasks (SLURM_JOB_ID plus our SLURM_CONF; the test process itself has no
#    SLURM_JOB_ID, so it never matches).
leftovers=()
while read -r env_file; do
    pid=${env_file#/proc/}
    pid=${pid%/environ}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    { comm=$(<"/proc/$pid/comm"); } 2>/dev/null || continue
    if [[ $comm == slurmstepd ]] || grep -qz '^SLURM_JOB_ID=' "$env_file" 2>/dev/null; then
        alive "$pid" && leftovers+=("$pid")
    fi
done < <(grep -lzxF "SLURM_CONF=$SLURM_CONF" /proc/[0-9]*/environ 2>/dev/null)
if ((${#leftovers[@]})); then
    log "killing ${#leftovers[@]} leftover job process(es): ${leftovers[*]}"
    kill -KILL "${leftovers[@]}" 2>/dev/null
fi

# 3. Daemons, newest first: slurmd, slurmctld, slurmdbd, mariadbd, munged.
status=0
mapfile -t lines < <(tac "$D/pids")
for line in "${lines[@]}"; do
    read -r name pid <<<"$line"
    ours "$pid" "$name" || continue
    kill -TERM "$pid" 2>/dev/null
    end=$((SECONDS + TIMEOUT))
    while ours "$pid" "$name" && ((SECONDS < end)); do sleep 0.1; done
    if ours "$pid" "$name"; then
        log "$name (pid $pid) ignored SIGTERM for ${TIMEOUT}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
        if ours "$pid" "$name"; then
            log "ERROR: $name (pid $pid) survived SIGKILL"
            status=1
        fi
    fi
    log "$name stopped"
done

if ((status == 0)); then
    mv "$D/pids" "$D/pids.stopped"
    rm -f "$D/env.sh"
    [[ ${SLURM_CI_KEEP:-0} == 1 ]] || rm -rf "$D/mysql" "$D/spool" "$D/state"
fi
log "stopped the cluster in $D"
exit "$status"
