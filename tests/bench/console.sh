#!/usr/bin/env bash
# Console benchmark: each page's server time with 1,000 users and 20
# mounted homes, and a /metrics scrape, next to the floor of the same run
# (/healthz: the cheapest route, the HTTP stack's own cost). Release build,
# local store, as root.
#
#   bash tests/bench/console.sh [--users 1000] [--mounted 20] [--requests 50]
#
# Time to first byte (curl's time_starttransfer) on loopback over one kept
# connection per route, so process start and TCP setup are not counted.
# Targets: pages < 100 ms and /metrics < 50 ms, judged on the p95.
# Every account, group, file and process it makes is removed at the end,
# also on error or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }
USERS=1000
MOUNTED=20
REQS=50
while [ $# -gt 0 ]; do
    case "$1" in
        --users) USERS=$2; shift 2 ;;
        --mounted) MOUNTED=$2; shift 2 ;;
        --requests) REQS=$2; shift 2 ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done
cargo build --release --quiet
BIN=$PWD/target/release/swiftgate
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-consolebench.XXXXXX")
chmod 700 "$WORK"
CFG=$WORK/gateway.toml
TAG=$(printf '%05x' $(( $$ & 0xfffff )))
PREFIX=sgcb$TAG                       # the bench's users: PREFIX0000..
ADMIN=sgcba$TAG
ADMIN_GROUP=sgcbg$TAG
PAM_SVC=swiftgate-bench-$TAG
PAM_FILE=/etc/pam.d/$PAM_SVC
CURL=(curl -sS --max-time 60)
getent group swiftgate >/dev/null && HAD_GROUP=yes || HAD_GROUP=no
# Called by the EXIT trap only; shellcheck 0.9 takes it for unreachable
# code because the script ends with an explicit `exit`.
# shellcheck disable=SC2317
cleanup() {
    trap - EXIT INT TERM
    echo "cleaning up..."
    if [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null; then
        wait "$DPID" 2>/dev/null || true
    fi
    for mp in "$WORK"/home/*; do
        mountpoint -q "$mp" 2>/dev/null && umount -l "$mp"
    done
    # Every account of this run, whether the daemon made it or not (the
    # user map, Samba's passdb and the homes are all under $WORK).
    local n=0
    while IFS=: read -r name _; do
        case "$name" in "$PREFIX"[0-9]*) userdel "$name" 2>/dev/null && n=$((n + 1)) ;; esac
    done < <(getent passwd)
    userdel "$ADMIN" 2>/dev/null || true
    groupdel "$ADMIN_GROUP" 2>/dev/null || true
    rm -f "$PAM_FILE"
    # The users' group, if this run made it and nobody else is in it.
    if [ "$HAD_GROUP" = no ] && getent group swiftgate >/dev/null &&
        ! getent passwd | awk -F: -v g="$(getent group swiftgate | cut -d: -f3)" '$4 == g' | grep -q .; then
        groupdel swiftgate 2>/dev/null || true
    fi
    rm -rf "$WORK"
    echo "removed $n bench accounts, the admin, its group, the PAM service and $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK"/samba/{private,lock,state,cache,pid,ncalrpc,log} "$WORK/log" "$WORK/etc"
cat > "$CFG" <<EOT
[store]
url = "local://$WORK/store/{user}"
[fs]
# The fast path for making 1,000 homes (no Argon2id per home); the pages
# cost the same either way.
encrypt = false
[mounts]
root = "$WORK/home"
# The 20 homes stay mounted with no session.
idle_unmount = "24h"
[cache]
dir = "$WORK/cache"
size = "4G"
dirty_limit = "1G"
[users]
db = "$WORK/etc/users.json"
key_file = "$WORK/etc/secret.key"
[control]
socket = "$WORK/gw.sock"
[samba]
config = "$WORK/smb.conf"
[console]
listen = "127.0.0.1:0"
pam_service = "$PAM_SVC"
admin_group = "$ADMIN_GROUP"
audit_log = "$WORK/log/audit.log"
tokens_file = "$WORK/etc/api-tokens.json"
[shares]
root = "$WORK/shares"
EOT
# shellcheck source=tests/bench/smbdirs.sh
. tests/bench/smbdirs.sh
samba_dir_args "$WORK"
"$BIN" samba-config --config "$CFG" --global "smb ports = $port" --global "interfaces = lo" \
    --global "bind interfaces only = yes" --global "log file = $WORK/samba/log/log.%m" "${SAMBA_DIR_ARGS[@]}" > "$WORK/smb.conf"

# The console admin: a PAM account in the bench's admin group.
cp provisioning/pam.d/swiftgate "$PAM_FILE"
groupadd "$ADMIN_GROUP"
useradd -M -s /usr/sbin/nologin -c "swiftgate console bench" -G "$ADMIN_GROUP" "$ADMIN"
ADMIN_PW=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
echo "$ADMIN:$ADMIN_PW" | chpasswd

SWIFTGATE_LOG=swiftgate=warn "$BIN" serve --config "$CFG" > "$WORK/ready" 2> "$WORK/daemon.log" &
DPID=$!
for _ in $(seq 300); do grep -q ready "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$WORK/ready" || { echo "the daemon did not start:"; cat "$WORK/daemon.log"; exit 1; }
URL=$(grep -o 'http[s]*://[0-9.:]*' "$WORK/ready" | head -1)
AUTHF=$WORK/etc/auth-header
( umask 077; printf 'Authorization: Bearer %s\n' "$("$BIN" token create bench --config "$CFG")" > "$AUTHF" )
AUTH=(-H @"$AUTHF")

# ---- Setup: the users through the API (the password in the body, from
# stdin), two at a time (2 cores); then 20 homes mounted.
echo "setup: $USERS users (${PREFIX}0000..), $MOUNTED mounted homes, console at $URL"
t0=$(date +%s.%N)
# The token and passwords never in argv: the header from a file, the JSON
# bodies from stdin.
seq -f "$PREFIX%04g" 0 $((USERS - 1)) |
    AUTHF=$AUTHF TAG=$TAG URL=$URL xargs -P 2 -I{} sh -c 'printf "{\"user\":\"%s\",\"password\":\"bench-pw-%s\"}" "$1" "$TAG" |
        curl -sS --max-time 120 -o /dev/null -w "%{http_code}\n" -H @"$AUTHF" \
            -H "Content-Type: application/json" --data-binary @- "$URL/api/v1/users"' sh {} > "$WORK/add-codes"
made=$(grep -c '^201$' "$WORK/add-codes" || true)
[ "$made" = "$USERS" ] || { echo "only $made of $USERS users made:"; sort "$WORK/add-codes" | uniq -c; tail -5 "$WORK/daemon.log"; exit 1; }
t1=$(date +%s.%N)
for i in $(seq 0 $((MOUNTED - 1))); do
    u=$(printf "$PREFIX%04d" "$i")
    code=$("${CURL[@]}" -o "$WORK/mount.out" -w '%{http_code}' "${AUTH[@]}" -X POST "$URL/api/v1/users/$u/mount")
    [ "$code" = 200 ] || { echo "mount $u: HTTP $code: $(cat "$WORK/mount.out")"; exit 1; }
done
t2=$(date +%s.%N)
mounted=$(grep -c " $WORK/home/" /proc/mounts || true)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v u="$USERS" -v m="$MOUNTED" -v seen="$mounted" 'BEGIN {
    printf "setup: %d users in %.1f s (%.0f ms each), %d homes mounted in %.1f s (%d mounts seen)\n",
        u, b - a, (b - a) * 1000 / u, m, c - b, seen }'
[ "$mounted" -ge "$MOUNTED" ] || { echo "expected $MOUNTED mounts"; exit 1; }

# ---- Log in as the admin (pages need a session, not a token).
JAR=$WORK/cookies
"${CURL[@]}" -c "$JAR" -o "$WORK/login.html" "$URL/login"
CSRF=$(grep -o 'name="csrf" value="[0-9a-f]*"' "$WORK/login.html" | head -1 | sed 's/.*value="//; s/"//')
code=$(printf 'user=%s&password=%s&csrf=%s&next=/' "$ADMIN" "$ADMIN_PW" "$CSRF" |
    "${CURL[@]}" -b "$JAR" -c "$JAR" -o /dev/null -w '%{http_code}' --data-binary @- "$URL/login")
[ "$code" = 303 ] || { echo "login failed: HTTP $code"; exit 1; }

# ---- Measure: REQS requests per route over one connection; the first is
# a warm-up and not counted.
MID=$(printf "$PREFIX%04d" 5)          # a mounted user
SEARCH=$(printf "$PREFIX%04d" $((USERS / 2)))
measure() { # NAME PATH [curl args]: prints "NAME median p95 bytes" (ms)
    local name=$1 path=$2; shift 2
    local args=()
    for _ in $(seq 0 "$REQS"); do args+=(-o /dev/null "$URL$path"); done
    local out
    out=$("${CURL[@]}" "$@" -w '%{http_code} %{time_starttransfer} %{size_download}\n' "${args[@]}")
    local bad
    bad=$(echo "$out" | awk '$1 != 200' | head -1)
    [ -z "$bad" ] || { echo "$name ($path): HTTP $bad" >&2; exit 1; }
    local size
    size=$(echo "$out" | tail -1 | awk '{print $3}')
    echo "$out" | tail -n +2 | awk '{print $2 * 1000}' | sort -n |
        awk -v n="$name" -v sz="$size" '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2;
            p = v[int(NR * 0.95 + 0.999)]; printf "%s %.2f %.2f %d\n", n, m, p, sz}'
}
RESULTS=$WORK/results
{
    measure floor /healthz
    measure dashboard / -b "$JAR"
    measure users "/users" -b "$JAR"
    measure users-search "/users?q=$SEARCH" -b "$JAR"
    measure user-detail "/users/$MID" -b "$JAR"
    measure shares /shares -b "$JAR"
    measure cache /cache -b "$JAR"
    measure jobs /jobs -b "$JAR"
    measure audit /audit -b "$JAR"
    measure metrics /metrics
} > "$RESULTS"
# The pages really are the logged-in ones, with the users in them.
grep -q "data-user=\"${PREFIX}0000\"" <<< "$("${CURL[@]}" -b "$JAR" "$URL/users")" ||
    { echo "the users page does not list the bench users"; exit 1; }
grep -q "data-user=\"$SEARCH\"" <<< "$("${CURL[@]}" -b "$JAR" "$URL/users?q=$SEARCH")" ||
    { echo "the search does not find $SEARCH"; exit 1; }

floor=$(awk '$1 == "floor" {print $2}' "$RESULTS")
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $USERS users, $MOUNTED mounted homes; $REQS requests per route, time to first byte on loopback"
printf '%-14s %-16s %8s %9s %9s %8s %8s  %s\n' route path bytes "median ms" "p95 ms" "x floor" target verdict
fail=0
while read -r name med p95 size; do
    case $name in
        floor) path=/healthz; target=- ;;
        metrics) path=/metrics; target=50 ;;
        dashboard) path=/; target=100 ;;
        users) path=/users; target=100 ;;
        users-search) path="/users?q=..."; target=100 ;;
        user-detail) path="/users/NAME"; target=100 ;;
        *) path=/$name; target=100 ;;
    esac
    ratio=$(awk -v a="$med" -v b="$floor" 'BEGIN {printf "%.1f", a / b}')
    if [ "$target" = - ]; then
        verdict="(floor)"
    elif awk -v p="$p95" -v t="$target" 'BEGIN {exit !(p < t)}'; then
        verdict=PASS
    else
        verdict=FAIL; fail=1
    fi
    printf '%-14s %-16s %8s %9s %9s %8s %8s  %s\n' "$name" "$path" "$size" "$med" "$p95" "$ratio" "$target" "$verdict"
done < "$RESULTS"
echo
[ "$fail" = 0 ] && echo "all targets met (p95)" || echo "some targets missed (p95)"
exit "$fail"
