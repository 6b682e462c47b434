# shellcheck shell=bash
# Most settings below are read only by the scripts that source this file.
# shellcheck disable=SC2034
# Shared by start / stop / proxy-start / proxy-stop / selftest (sourced, not run).
#
# Every service runs in its own session (started through `setsid`), so its
# PID is also its process-group id: stopping it means signalling the whole
# group, which catches the workers it forked. Before any PID from a PID file
# is signalled, /proc/PID/cmdline must contain STATE_DIR, so a PID recycled
# by an unrelated process is never touched. /proc is read directly; procps is
# not needed.

# The caller has set STATE (absolute, resolved) before sourcing this file.
: "${STATE:?STATE must be set before sourcing common.sh}"

# Debian's interpreter, never pyenv's (which can't see dist-packages), and no
# PYTHONPATH/PYTHONHOME from the caller: they would leak into Debian's python3
# and into uwsgi's embedded interpreter.
PY=/usr/bin/python3
unset PYTHONPATH PYTHONHOME

HOST=127.0.0.1
KS_PORT=5000          # Keystone v3, normal token lifetime
KS_SHORT_PORT=5001    # Keystone v3, same DB and keys, short token lifetime
PROXY_PORT=8080
OBJ_PORT=6200 CONT_PORT=6201 ACC_PORT=6202
REGION=tyo1
RESELLER=nc_          # ConoHa-style storage URL: /v1/nc_<project_id>
PASSWORD=secret
KS_URL=http://$HOST:$KS_PORT/v3
KS_SHORT_URL=http://$HOST:$KS_SHORT_PORT/v3
SWIFT_URL=http://$HOST:$PROXY_PORT
SD=$STATE/etc/swift
KD=$STATE/etc/keystone
WAIT=${SWIFT_AIO_WAIT:-180}

# All services, in the order `stop` signals them (front doors first).
ALL_SERVICES="proxy-server keystone keystone-short container-updater object-server container-server account-server"
declare -A PORT_OF=([keystone]=$KS_PORT [keystone-short]=$KS_SHORT_PORT
                    [proxy-server]=$PROXY_PORT [object-server]=$OBJ_PORT
                    [container-server]=$CONT_PORT [account-server]=$ACC_PORT)

_T0=$(date +%s%N)
log() {
    local ms=$(( ($(date +%s%N) - _T0) / 1000000 ))
    printf '[sg-swift %3d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*" >&2
}
die() { echo "sg-swift: ERROR: $*" >&2; exit 1; }
reset_clock() { _T0=$(date +%s%N); }

ours() {  # pid -> 0 if alive and its command line refers to this STATE_DIR
    kill -0 "$1" 2>/dev/null || return 1
    tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$STATE/"
}

pid_alive() {  # service -> 0 if its recorded PID is alive and ours
    local f=$STATE/run/$1.pid
    [ -s "$f" ] && ours "$(cat "$f")"
}

# /proc/PID/stat is "pid (comm) state ppid pgrp ...", and comm may contain
# spaces and parentheses: split after the last ")". Pure bash, no forks:
# these run once per process on the machine.
_stat_fields() {  # pid -> sets _STATE and _PGRP; 1 if there is no such process
    local st
    read -r st 2>/dev/null < "/proc/$1/stat" || return 1   # 2> first: it must cover the < error
    st=${st##*) }
    _STATE=${st%% *}; st=${st#* }; st=${st#* }; _PGRP=${st%% *}
}

pgid_of() {  # pid -> process group id
    _stat_fields "$1" && echo "$_PGRP"
}

# Processes that exit stay zombies until PID 1 reaps them, and this
# machine's PID 1 does that only about once a second; kill -0 still succeeds
# on a zombie. So "is it still running" looks at the process state instead.
group_running() {  # pgid -> 0 if a non-zombie process is in that group
    local d
    for d in /proc/[0-9]*; do
        _stat_fields "${d#/proc/}" || continue
        [ "$_PGRP" = "$1" ] && [ "$_STATE" != Z ] && return 0
    done
    return 1
}

group_leftovers() {  # pgid -> our live processes still in that group
    local d
    for d in /proc/[0-9]*; do
        _stat_fields "${d#/proc/}" || continue
        if [ "$_PGRP" = "$1" ] && [ "$_STATE" != Z ] && ours "${d#/proc/}"; then echo "${d#/proc/}"; fi
    done
    return 0    # callers run under set -e -o pipefail
}

wait_group_gone() {  # pgid tenths-of-seconds -> 0 once no live process is left
    local i
    for ((i = 0; i < $2; i++)); do
        group_running "$1" || return 0
        sleep 0.1
    done
    ! group_running "$1"
}

kill_group_leftovers() {  # service pgid -> SIGKILL what is left of a group whose leader died
    local left
    left=$(group_leftovers "$2" | xargs)
    [ -n "$left" ] || return 1
    log "$1: leader $2 is gone, killing leftover workers: $left"
    kill -KILL -- "-$2" 2>/dev/null || true
    wait_group_gone "$2" 50 || true    # then the port is free again
    return 0
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# A service whose leader died (crash, kill -9) may have left a worker that
# still holds the port. Kill such leftovers and forget the PID file.
reap_dead() {  # service
    local f=$STATE/run/$1.pid
    pid_alive "$1" && return 0
    if [ -s "$f" ]; then
        kill_group_leftovers "$1" "$(cat "$f")" || true
        rm -f "$f" "$STATE/run/$1.uwsgi.pid"
    fi
    local p=${PORT_OF[$1]:-}
    if [ -n "$p" ] && port_busy "$p"; then
        die "port $HOST:$p (for $1) is already in use by another process"
    fi
}

launch() {  # service cmd...
    local name=$1; shift
    if pid_alive "$name"; then
        log "$name already running (pid $(cat "$STATE/run/$name.pid"))"
        return 0
    fi
    # The script runs without job control, so the background child is not a
    # process-group leader and setsid(1) calls setsid() without forking:
    # $! is the service's PID, and PID == PGID == SID.
    setsid "$@" >>"$STATE/log/$name.log" 2>&1 </dev/null &
    echo $! > "$STATE/run/$name.pid"
    log "started $name (pid $!)"
}

# Command lines. Each one must mention "$STATE/" (see ours()).
swift_cmd() {  # kind conf
    echo env SWIFT_AIO_SWIFT_DIR="$SD" SWIFT_AIO_LOG="$STATE/log/$1.log" PYTHONPATH="$STATE/lib" \
        "$PY" "$STATE/lib/swift_launch.py" "$1" "$2"
}
launch_swift() {  # service kind conf
    # shellcheck disable=SC2046
    launch "$1" $(swift_cmd "$2" "$3")
}
launch_keystone() {  # service port conf
    # 1 process x 1 thread: keystone on SQLite under uwsgi threads ends up
    # with "database is locked" (connections closed from the wrong thread),
    # and the in-process dogpile cache is only coherent within one process.
    # "Connection: close": uwsgi's --http-socket answers HTTP/1.1 without it
    # and then closes anyway, so pooling clients would reuse a dead socket.
    # lib/keystone_wsgi.py: the stock keystone-wsgi-public app plus a lock
    # that keeps the two Keystones from writing to SQLite at the same time.
    launch "$1" env OS_KEYSTONE_CONFIG_FILES="$3" \
        SWIFT_AIO_KEYSTONE_LOCK="$STATE/data/keystone.write.lock" \
        /usr/bin/uwsgi-core --plugin python3 \
        --http-socket "$HOST:$2" --wsgi-file "$STATE/lib/keystone_wsgi.py" \
        --master --processes 1 --threads 1 --enable-threads --lazy-apps \
        --need-app --die-on-term --no-orphans --buffer-size 65535 \
        --add-header "Connection: close" \
        --pidfile "$STATE/run/$1.uwsgi.pid"   # (the pidfile itself is unused)
}

wait_http() {  # service url
    local deadline=$(( $(date +%s) + WAIT ))
    until curl -fsS -o /dev/null --max-time 3 "$2" 2>/dev/null; do
        if ! pid_alive "$1"; then
            tail -n 30 "$STATE/log/$1.log" >&2 || true
            die "$1 died during startup (log: $STATE/log/$1.log)"
        fi
        [ "$(date +%s)" -lt "$deadline" ] || die "$1 not answering $2 after ${WAIT}s (log: $STATE/log/$1.log)"
        sleep 0.1
    done
}

# Stop services: SIGTERM all groups at once (each Swift server needs ~2 s to
# exit, so one after another would be slow), wait up to 15 s, then SIGKILL.
# Returns non-zero if something survived.
stop_services() {  # service...
    local name f pid rc=0 pending
    local -a groups=() names=()
    for name in "$@"; do
        f=$STATE/run/$name.pid
        [ -s "$f" ] || continue
        pid=$(cat "$f")
        if ! ours "$pid"; then
            kill_group_leftovers "$name" "$pid" || log "$name (pid $pid) was not running"
            rm -f "$f" "$STATE/run/$name.uwsgi.pid"
            continue
        fi
        # launch() made every service a session (and group) leader
        [ "$(pgid_of "$pid")" = "$pid" ] || { log "$name: pid $pid is not a group leader, not touching it"; rc=1; continue; }
        kill -TERM -- "-$pid" 2>/dev/null
        groups+=("$pid") names+=("$name")
    done
    for _ in $(seq 150); do
        pending=0
        for pid in "${groups[@]}"; do group_running "$pid" && pending=1; done
        [ $pending = 0 ] && break
        sleep 0.1
    done
    for i in "${!groups[@]}"; do
        pid=${groups[$i]} name=${names[$i]}
        if group_running "$pid"; then
            log "$name (group $pid) ignored SIGTERM for 15 s, sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null
            if ! wait_group_gone "$pid" 50; then log "$name (group $pid) is still alive"; rc=1; continue; fi
        fi
        log "stopped $name (pid $pid)"
        rm -f "$STATE/run/$name.pid" "$STATE/run/$name.uwsgi.pid"
    done
    return $rc
}
