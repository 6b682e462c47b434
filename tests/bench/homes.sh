#!/usr/bin/env bash
# Homes benchmark (issue 14, "300 homes mounted in one daemon"): one gateway
# daemon on the local store, N users, each home mounted by the Samba hook
# (`hook connect`, as smbd's root preexec runs it) and left idle. Measures
#   - the hook: cold (first mount) latency as the mounted count grows, the
#     last 10 with ~N mounted, and warm (already mounted) on a sample;
#   - the daemon: RSS, PSS, threads and open files before any home and with
#     N mounted (per idle home), its idle CPU and wakeups with N mounted;
#   - idle unmount: after `hook disconnect` of every session, the time until
#     every home is unmounted (with a short idle_unmount), and the RSS after.
#
#   bash tests/bench/homes.sh [--homes 300] [--bin PATH] [--idle-unmount 20s]
#                             [--no-encrypt]
#
# Without --bin, a release build (cargo build --release). Encryption is on,
# as the package installs it (one Argon2id per cold mount); --no-encrypt
# makes the set-up faster. Every account, mount, process and file it makes
# is removed at the end, also on error or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }
HOMES=300
BIN=
IDLE_UNMOUNT=20s
ENCRYPT=true
WARM_SAMPLE=50
IDLE_WINDOW=10
while [ $# -gt 0 ]; do
    case "$1" in
        --homes) HOMES=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --idle-unmount) IDLE_UNMOUNT=$2; shift 2 ;;
        --no-encrypt) ENCRYPT=false; shift ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done
case "$HOMES" in ''|*[!0-9]*|0) echo "--homes takes a positive number"; exit 2 ;; esac
if [ -z "$BIN" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/swiftgate
fi
[ -x "$BIN" ] || { echo "$BIN is not an executable"; exit 2; }
BIN=$(realpath "$BIN")
T_START=$EPOCHREALTIME
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-homesbench.XXXXXX")
chmod 700 "$WORK"
CFG=$WORK/gateway.toml
PREFIX=sgh$$-                          # the bench's users: PREFIX0001..
user_of() { printf '%s%04d' "$PREFIX" "$1"; }
getent group swiftgate >/dev/null && HAD_GROUP=yes || HAD_GROUP=no
# The homes mounted now (the mount table, not the daemon's word).
mounted() { awk -v r="$WORK/home/" 'index($2, r) == 1 {n++} END {print n + 0}' /proc/mounts; }
# Called by the EXIT trap only; shellcheck 0.9 takes it for unreachable
# code because the script ends with an explicit `exit`.
# shellcheck disable=SC2317
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    echo "cleaning up..."
    if [ "$rc" != 0 ] && [ -s "$WORK/daemon.log" ]; then
        echo "--- last lines of the daemon's log"
        tail -n 30 "$WORK/daemon.log"
    fi
    if [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null; then
        # SIGTERM flushes and unmounts every home; a hung one gets SIGKILL.
        local i
        for i in $(seq 1 600); do
            kill -0 "$DPID" 2>/dev/null || break
            [ "$i" = 600 ] && kill -9 "$DPID" 2>/dev/null
            sleep 0.2
        done
        wait "$DPID" 2>/dev/null || true
    fi
    local mp
    awk -v r="$WORK/home/" 'index($2, r) == 1 {print $2}' /proc/mounts | while read -r mp; do
        umount -l "$mp" 2>/dev/null || true
    done
    # Every account of this run, whether `user add` finished or not (the
    # user map, Samba's passdb and the stores are all under $WORK).
    local n=0 name
    while IFS=: read -r name _; do
        case "$name" in "$PREFIX"[0-9]*) userdel "$name" 2>/dev/null && n=$((n + 1)) ;; esac
    done < <(getent passwd)
    # The users' group, if this run made it and nobody else is in it.
    if [ "$HAD_GROUP" = no ] && getent group swiftgate >/dev/null &&
        ! getent passwd | awk -F: -v g="$(getent group swiftgate | cut -d: -f3)" '$4 == g' | grep -q .; then
        groupdel swiftgate 2>/dev/null || true
    fi
    rm -rf "$WORK"
    echo "removed $n bench accounts and $WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK"/samba/{private,lock,state,cache,pid,ncalrpc,log} "$WORK/etc" "$WORK/log" "$WORK/out"
cat > "$CFG" <<EOT
[store]
url = "local://$WORK/store/{user}"
[fs]
encrypt = $ENCRYPT
[mounts]
root = "$WORK/home"
# Short, so the bench sees the idle homes go.
idle_unmount = "$IDLE_UNMOUNT"
[cache]
dir = "$WORK/cache"
size = "20G"
[users]
db = "$WORK/etc/users.json"
key_file = "$WORK/etc/secret.key"
[control]
socket = "$WORK/gw.sock"
[samba]
config = "$WORK/smb.conf"
[console]
# As installed (on), on a free port.
listen = "127.0.0.1:0"
audit_log = "$WORK/log/audit.log"
tokens_file = "$WORK/etc/api-tokens.json"
[shares]
root = "$WORK/shares"
[recovery]
# None here (a warning at start): nothing of this machine's is read.
key_file = "$WORK/etc/recovery.key"
EOT
# shellcheck source=tests/bench/smbdirs.sh
. tests/bench/smbdirs.sh
samba_dir_args "$WORK"
"$BIN" samba-config --config "$CFG" --global "interfaces = lo" --global "bind interfaces only = yes" \
    --global "log file = $WORK/samba/log/log.%m" "${SAMBA_DIR_ARGS[@]}" > "$WORK/smb.conf"

"$BIN" serve --config "$CFG" > "$WORK/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 1 100); do [ -S "$WORK/gw.sock" ] && break; sleep 0.1; done
[ -S "$WORK/gw.sock" ] || { echo "the daemon did not start"; exit 1; }

# --- figures of the daemon process
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
pss_kib() { # "Pss Pss_Anon" in KiB, or "- -" without smaps_rollup
    if [ -r "/proc/$1/smaps_rollup" ]; then
        awk '$1 == "Pss:" {p = $2} $1 == "Pss_Anon:" {a = $2} END {print p + 0, a + 0}' "/proc/$1/smaps_rollup"
    else
        echo "- -"
    fi
}
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
snapshot() { # LABEL: one line of RSS, PSS, threads, fds into $WORK/out/snap.LABEL
    local pss
    read -r -a pss < <(pss_kib "$DPID")
    echo "$(kib "$DPID" VmRSS) $(kib "$DPID" RssAnon) ${pss[0]} ${pss[1]} $(kib "$DPID" Threads) $(fds "$DPID")" > "$WORK/out/snap.$1"
}
snap() { # LABEL FIELD (rss anon pss pss_anon threads fds)
    local f
    case $2 in rss) f=1 ;; anon) f=2 ;; pss) f=3 ;; pss_anon) f=4 ;; threads) f=5 ;; fds) f=6 ;; esac
    cut -d' ' -f"$f" "$WORK/out/snap.$1"
}
# p50 p95 max mean (ms) of the numbers in a file, nearest rank.
stats() {
    python3 - "$1" <<'PY'
import math, sys
v = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
if not v:
    print("- - - -"); sys.exit()
r = lambda p: v[max(0, math.ceil(p / 100 * len(v)) - 1)]
print("%.1f %.1f %.1f %.1f" % (r(50), r(95), v[-1], sum(v) / len(v)))
PY
}
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f\n", (b - a) * 1000}'; }
secs_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'; }

# --- set-up: N gateway users (Unix + Samba account, home filesystem), two
# at a time (the machine's cores); the password goes on stdin.
PW=$(head -c 18 /dev/urandom | base64)
add_one() {
    printf '%s\n' "$PW" | "$BIN" user add "$1" --config "$CFG" > "$WORK/log/add.$1" 2>&1 ||
        { echo "user add $1 failed:"; cat "$WORK/log/add.$1"; return 1; }
}
echo "adding $HOMES users (encrypt = $ENCRYPT)..."
t0=$EPOCHREALTIME
running=()
for i in $(seq 1 "$HOMES"); do
    add_one "$(user_of "$i")" &
    running+=("$!")
    if [ "${#running[@]}" -ge 2 ]; then
        wait -n -p done_pid "${running[@]}"
        left=()
        for p in "${running[@]}"; do [ "$p" = "$done_pid" ] || left+=("$p"); done
        running=("${left[@]}")
    fi
done
for p in "${running[@]}"; do wait "$p"; done
ADD_S=$(secs_since "$t0")
ADD_MS=$(awk -v s="$ADD_S" -v n="$HOMES" 'BEGIN {printf "%.0f", s * 1000 / n}')
echo "set-up: $HOMES users in $ADD_S s ($ADD_MS ms each, two at a time)"
[ "$(mounted)" = 0 ] || { echo "homes are mounted before any hook connect: $(mounted)"; exit 1; }
sleep 2
snapshot before

# --- cold: the first `hook connect` of each user mounts the home.
STEP=$(( HOMES >= 300 ? 50 : (HOMES + 5) / 6 ))
[ "$STEP" -ge 1 ] || STEP=1
: > "$WORK/out/cold"
echo "mounting $HOMES homes (hook connect, cold)..."
t_cold=$EPOCHREALTIME
for i in $(seq 1 "$HOMES"); do
    u=$(user_of "$i")
    t0=$EPOCHREALTIME
    "$BIN" hook connect "$u" --config "$CFG" > /dev/null 2> "$WORK/log/hook.err" ||
        { echo "hook connect $u (with $((i - 1)) mounted) failed:"; cat "$WORK/log/hook.err"; exit 1; }
    ms_since "$t0" >> "$WORK/out/cold"
    if [ $((i % STEP)) = 0 ] || [ "$i" = "$HOMES" ]; then
        snapshot "m$i"
        echo "$i" >> "$WORK/out/steps"
        echo "  $i mounted, $(mib "$(snap "m$i" rss)") MiB RSS, $(snap "m$i" threads) threads"
    fi
done
COLD_S=$(secs_since "$t_cold")
n=$(mounted)
[ "$n" = "$HOMES" ] || { echo "$n homes in the mount table after $HOMES connects"; exit 1; }

# --- warm: a sample of users connect again (a second session each).
: > "$WORK/out/warm"
NW=$(( HOMES < WARM_SAMPLE ? HOMES : WARM_SAMPLE ))
declare -A SESSIONS
for i in $(seq 1 "$HOMES"); do SESSIONS[$i]=1; done
for k in $(seq 0 $((NW - 1))); do
    i=$(( 1 + k * HOMES / NW ))
    t0=$EPOCHREALTIME
    "$BIN" hook connect "$(user_of "$i")" --config "$CFG" > /dev/null
    ms_since "$t0" >> "$WORK/out/warm"
    SESSIONS[$i]=2
done

# --- the daemon with N homes mounted and idle.
t0=$EPOCHREALTIME
"$BIN" status --json --config "$CFG" > "$WORK/out/status.json"
STATUS_MS=$(ms_since "$t0")
read -r ST_HOMES ST_CONN CACHE_MIN CACHE_MAX < <(python3 - "$WORK/out/status.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
h = r["homes"] if isinstance(r, dict) else r
c = [x["cache"]["cache_size"] / 2**20 for x in h] or [0]
print(len(h), sum(x["connections"] for x in h), "%.0f" % min(c), "%.0f" % max(c))
PY
)
# Settle past one snapshot check (60 s by default): each newly mounted home
# gets its first scheduled snapshot at the next check, a one-time cost that
# otherwise lands in the idle window or not by chance.
echo "letting the daemon settle for 65 s (one snapshot check), then $IDLE_WINDOW s of idle..."
sleep 65
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$DPID/stat"; }
# voluntary and involuntary context switches per thread name (the user's
# part of a name folded), in $WORK/out/csw.LABEL
csw() {
    python3 - "$DPID" > "$WORK/out/csw.$1" <<'PY'
import collections, glob, re, sys
c = collections.Counter(); n = collections.Counter()
for t in glob.glob("/proc/%s/task/*" % sys.argv[1]):
    try:
        name = open(t + "/comm").read().strip()
        st = dict(l.split(":", 1) for l in open(t + "/status"))
    except OSError:
        continue
    k = re.sub(r"\d+", "N", re.sub(r"sgh\d*-?\d*", "U", name))
    c[k] += int(st["voluntary_ctxt_switches"]) + int(st["nonvoluntary_ctxt_switches"])
    n[k] += 1
for k in c:
    print(k, n[k], c[k])
PY
}
c0=$(cpu_ticks); csw a; t0=$EPOCHREALTIME
sleep "$IDLE_WINDOW"
c1=$(cpu_ticks); csw b; win=$(secs_since "$t0")
IDLE_CPU=$(awk -v a="$c0" -v b="$c1" -v t="$TICK" -v w="$win" 'BEGIN {printf "%.2f", (b - a) / t / w * 100}')
read -r WAKE TOP_WAKE THREAD_MIX < <(python3 - "$WORK/out/csw.a" "$WORK/out/csw.b" "$win" <<'PY'
import sys
def load(p):
    d = {}
    for l in open(p):
        k, n, c = l.split()
        d[k] = (int(n), int(c))
    return d
a, b, w = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
rate = {k: (b[k][1] - a.get(k, (0, 0))[1]) / w for k in b}
top = sorted(rate.items(), key=lambda x: -x[1])[:4]
mix = sorted(b.items(), key=lambda x: -x[1][0])[:6]
print("%.1f" % sum(rate.values()), ",".join("%s=%.1f" % t for t in top) or "-",
      ",".join("%s=%d" % (k, v[0]) for k, v in mix))
PY
)
snapshot idle
LIMIT_FDS=$(awk '/^Max open files/ {print $4}' "/proc/$DPID/limits")

# --- disconnect every session; the idle homes go after idle_unmount.
: > "$WORK/out/disc"
for i in $(seq 1 "$HOMES"); do
    for _ in $(seq 1 "${SESSIONS[$i]}"); do
        t0=$EPOCHREALTIME
        "$BIN" hook disconnect "$(user_of "$i")" --config "$CFG" > /dev/null
        ms_since "$t0" >> "$WORK/out/disc"
    done
done
t_disc=$EPOCHREALTIME
FIRST_GONE=-
ALL_GONE=-
UNMOUNT_LIMIT=$(( $(awk -v d="$IDLE_UNMOUNT" 'BEGIN {
    n = d + 0; u = substr(d, length(n "") + 1)
    print (u == "m" || u == "min") ? n * 60 : (u == "h") ? n * 3600 : n }') + 600 ))
echo "disconnected every session; waiting for the idle unmounts (idle_unmount = $IDLE_UNMOUNT)..."
while true; do
    n=$(mounted)
    [ "$FIRST_GONE" = - ] && [ "$n" -lt "$HOMES" ] && FIRST_GONE=$(secs_since "$t_disc")
    if [ "$n" = 0 ]; then ALL_GONE=$(secs_since "$t_disc"); break; fi
    if [ "$(awk -v a="$t_disc" -v b="$EPOCHREALTIME" 'BEGIN {print int(b - a)}')" -ge "$UNMOUNT_LIMIT" ]; then
        echo "still $n homes mounted ${UNMOUNT_LIMIT} s after the last disconnect"
        break
    fi
    sleep 0.5
done
snapshot unmounted
sleep 10
snapshot unmounted10
ERRS=$(grep -c -E ' (ERROR|WARN) ' "$WORK/daemon.log" || true)

# --- the figures
echo
echo "== $HOMES homes in one daemon (local store, encrypt = $ENCRYPT, $(nproc) cores)"
echo "set-up: $HOMES users in $ADD_S s ($ADD_MS ms each, two at a time); cold mounts of all: $COLD_S s"
printf '%-10s %9s %9s %9s %8s %6s   %-28s\n' mounted "RSS MiB" "anon MiB" "PSS MiB" threads fds "cold hook ms p50/p95/max"
printf '%-10s %9s %9s %9s %8s %6s\n' 0 "$(mib "$(snap before rss)")" "$(mib "$(snap before anon)")" \
    "$(mib "$(snap before pss)")" "$(snap before threads)" "$(snap before fds)"
prev=0
while read -r m; do
    sed -n "$((prev + 1)),${m}p" "$WORK/out/cold" > "$WORK/out/bucket"
    read -r p50 p95 mx _ < <(stats "$WORK/out/bucket")
    printf '%-10s %9s %9s %9s %8s %6s   %s/%s/%s (mounts %d-%d)\n' "$m" "$(mib "$(snap "m$m" rss)")" \
        "$(mib "$(snap "m$m" anon)")" "$(mib "$(snap "m$m" pss)")" "$(snap "m$m" threads)" "$(snap "m$m" fds)" \
        "$p50" "$p95" "$mx" "$((prev + 1))" "$m"
    prev=$m
done < "$WORK/out/steps"
printf '%-10s %9s %9s %9s %8s %6s\n' "$HOMES idle" "$(mib "$(snap idle rss)")" "$(mib "$(snap idle anon)")" \
    "$(mib "$(snap idle pss)")" "$(snap idle threads)" "$(snap idle fds)"
printf '%-10s %9s %9s %9s %8s %6s\n' "0 (unmnt)" "$(mib "$(snap unmounted10 rss)")" "$(mib "$(snap unmounted10 anon)")" \
    "$(mib "$(snap unmounted10 pss)")" "$(snap unmounted10 threads)" "$(snap unmounted10 fds)"
echo
read -r cp50 cp95 cmax cmean < <(stats "$WORK/out/cold")
tail -n 10 "$WORK/out/cold" > "$WORK/out/last10"
read -r lp50 lp95 lmax _ < <(stats "$WORK/out/last10")
read -r wp50 wp95 wmax _ < <(stats "$WORK/out/warm")
read -r dp50 dp95 dmax _ < <(stats "$WORK/out/disc")
per_home() { # FIELD: (idle - before) / N in MiB, 2 decimals
    awk -v a="$(snap before "$1")" -v b="$(snap idle "$1")" -v n="$HOMES" 'BEGIN {printf "%.2f", (b - a) / 1024 / n}'
}
pss_row="-"
[ "$(snap idle pss)" != - ] && pss_row="$(mib "$(snap before pss)") -> $(mib "$(snap idle pss)") MiB, $(per_home pss) MiB/home"
thr_per=$(awk -v a="$(snap before threads)" -v b="$(snap idle threads)" -v n="$HOMES" 'BEGIN {printf "%.2f", (b - a) / n}')
fd_per=$(awk -v a="$(snap before fds)" -v b="$(snap idle fds)" -v n="$HOMES" 'BEGIN {printf "%.2f", (b - a) / n}')
{
printf '%-44s %s\n' "figure" "value"
printf '%-44s %s\n' "hook connect cold, all $HOMES (p50/p95/max)" "$cp50 / $cp95 / $cmax ms (mean $cmean)"
printf '%-44s %s\n' "hook connect cold, last 10 (~$HOMES mounted)" "$lp50 / $lp95 / $lmax ms"
printf '%-44s %s\n' "hook connect warm, $NW sampled (p50/p95/max)" "$wp50 / $wp95 / $wmax ms"
printf '%-44s %s\n' "hook disconnect (p50/p95/max)" "$dp50 / $dp95 / $dmax ms"
printf '%-44s %s\n' "RSS before -> $HOMES idle" "$(mib "$(snap before rss)") -> $(mib "$(snap idle rss)") MiB"
printf '%-44s %s\n' "memory per idle mounted home (RSS)" "$(per_home rss) MiB (anon $(per_home anon) MiB)"
printf '%-44s %s\n' "PSS before -> $HOMES idle" "$pss_row"
printf '%-44s %s\n' "threads before -> $HOMES idle" "$(snap before threads) -> $(snap idle threads) ($thr_per per home)"
printf '%-44s %s\n' "thread names (most common)" "$THREAD_MIX"
printf '%-44s %s\n' "open files before -> $HOMES idle" "$(snap before fds) -> $(snap idle fds) ($fd_per per home; limit $LIMIT_FDS)"
printf '%-44s %s\n' "idle CPU, $HOMES homes, ${IDLE_WINDOW} s" "$IDLE_CPU % of one core"
printf '%-44s %s\n' "context switches/s, all threads" "$WAKE (top: $TOP_WAKE)"
printf '%-44s %s\n' "status --json with $HOMES mounted" "$STATUS_MS ms ($ST_HOMES homes, $ST_CONN sessions)"
printf '%-44s %s\n' "cache budget per home (min/max)" "$CACHE_MIN / $CACHE_MAX MiB of 20480"
printf '%-44s %s\n' "idle unmount ($IDLE_UNMOUNT): first / all gone" "$FIRST_GONE / $ALL_GONE s after the last disconnect"
printf '%-44s %s\n' "RSS after all unmounted (+10 s)" "$(mib "$(snap unmounted rss)") -> $(mib "$(snap unmounted10 rss)") MiB, $(snap unmounted10 threads) threads"
printf '%-44s %s\n' "daemon log ERROR/WARN lines" "$ERRS"
printf '%-44s %s\n' "bench run time" "$(secs_since "$T_START") s"
} | tee "$WORK/out/table"
if [ "$ERRS" != 0 ]; then
    echo "daemon log ERROR/WARN lines, the user folded to U (count, line):"
    grep -E ' (ERROR|WARN) ' "$WORK/daemon.log" | sed -E 's/^[^ ]+ +//; s/'"$PREFIX"'[0-9]+/U/g; s/[0-9]+(\.[0-9]+)?(ms|s|µs)?/N/g' |
        sort | uniq -c | sort -rn | head -n 8
fi
exit 0
