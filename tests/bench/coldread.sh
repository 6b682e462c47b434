#!/usr/bin/env bash
# Cold sequential read of 1 GiB (four 256 MiB random files) from the Swift
# fixture through FUSE gateways, rounds alternating, each with the page cache
# dropped and an empty cache: swiftgate's mount; rclone's mount, the peer
# FUSE gateway (its VFS with --vfs-cache-mode off, which streams, and full,
# which keeps a local copy as swiftgate does); and, as references, `rclone
# copy` (no FUSE, 4 files in parallel) and one curl stream per file (the
# socket floor). `cp -r` out of each mount, as Samba reads a file: one
# sequential reader. Release build.
#
#   bash tests/bench/coldread.sh [--bin PATH] [--before PATH] [--rounds 3] [--state DIR]
#
# --before PATH (repeatable) adds a row for another swiftgate binary (an
# earlier build, named by its file name), reading a filesystem it wrote
# itself (the object layout may differ), for a before/after in one run.
#
# Prints MiB/s and the CPU seconds per GiB of each client process (the
# swiftgate mount / the rclone mount from /proc, before it is unmounted;
# rclone copy and curl from time(1)). Needs rclone, curl and time.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }

BIN=
BEFORE=()
ROUNDS=3
STATE=${SWIFTGATE_SWIFT_STATE:-/var/tmp/swiftgate-swift-fixture}
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$(realpath "$2"); shift 2 ;;
        --before) BEFORE+=("$(realpath "$2")"); shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --state) STATE=$2; shift 2 ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done
for t in rclone curl /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "needs $t (apt-get install rclone curl time)"; exit 2; }
done
if [ -z "$BIN" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/swiftgate
fi
bash tests/swift/start "$STATE" >/dev/null
# shellcheck disable=SC1091
. "$STATE/env.keystone"
SWIFT=(env -u PYTHONPATH -u PYTHONHOME /usr/bin/swift)

SGBINS=("$BIN" "${BEFORE[@]}")
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-coldread.XXXXXX")
MP=$WORK/mp
TAG=coldread$$
cleanup() {
    for b in "$BIN" "${BEFORE[@]}"; do "$b" umount "$MP" >/dev/null 2>&1 || true; done
    fusermount3 -u "$MP" 2>/dev/null || umount -l "$MP" 2>/dev/null || true
    for i in "${!SGBINS[@]}"; do "${SWIFT[@]}" delete "$TAG-sg$i" >/dev/null 2>&1 || true; done
    "${SWIFT[@]}" delete "$TAG-rc" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MP" "$WORK/src"
# rclone's remote "sgbench" takes the OS_* variables (Keystone v3).
: > "$WORK/rclone.conf"
export RCLONE_CONFIG=$WORK/rclone.conf RCLONE_CONFIG_SGBENCH_TYPE=swift RCLONE_CONFIG_SGBENCH_ENV_AUTH=true
head -c 32 /dev/urandom | base64 > "$WORK/pass"
chmod 0600 "$WORK/pass"
echo "preparing 1 GiB and uploading it (each swiftgate binary, rclone)..."
for i in 1 2 3 4; do head -c 256M /dev/urandom > "$WORK/src/f$i"; done
sg_mount() { # BINARY INDEX
    "$1" mount "swift://$TAG-sg$2" "$MP" --cache-dir "$WORK/cache" --passphrase-file "$WORK/pass" \
        --cache-size 8G --dirty-limit 4G
}
for i in "${!SGBINS[@]}"; do
    "${SGBINS[$i]}" mkfs "swift://$TAG-sg$i" --passphrase-file "$WORK/pass" >/dev/null
    sg_mount "${SGBINS[$i]}" "$i"
    cp -r "$WORK/src/." "$MP/"
    "${SGBINS[$i]}" umount "$MP" >/dev/null
    rm -rf "$WORK/cache"
done
rclone copy "$WORK/src" "sgbench:$TAG-rc"
SURL=$("${SWIFT[@]}" stat -v | awk '/StorageURL:/ { print $2 }')
TOKEN=$("${SWIFT[@]}" stat -v | awk '/Auth Token:/ { print $3 }')
printf 'X-Auth-Token: %s\n' "$TOKEN" > "$WORK/token"
chmod 0600 "$WORK/token"

HZ=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
declare -A RATE CPU
row() { # round name t0 t1 cpu-seconds
    local r
    r=$(echo "1024 / ($4 - $3)" | bc -l)
    RATE[$2]="${RATE[$2]:-} $(printf '%.0f' "$r")"
    CPU[$2]="${CPU[$2]:-} $(printf '%.2f' "$5")"
    printf '%-6s %-28s %8.0f %10.2f\n' "$1" "$2" "$r" "$5"
}
# copy_out ROUND NAME PID: cp -r out of the mount at $MP, timed.
copy_out() {
    local c0 c1 t0 t1
    mkdir -p "$WORK/out"
    drop_caches
    c0=$(cpu "$3"); t0=$(now)
    cp -r "$MP/." "$WORK/out/"
    t1=$(now); c1=$(cpu "$3")
    cmp -s "$WORK/src/f4" "$WORK/out/f4" || { echo "MISMATCH reading through $2"; exit 1; }
    rm -rf "$WORK/out"
    row "$1" "$2" "$t0" "$t1" "$(echo "($c1 - $c0) / $HZ" | bc -l)"
}
rc_mount() { # MODE
    rclone mount "sgbench:$TAG-rc" "$MP" --read-only --vfs-cache-mode "$1" \
        --cache-dir "$WORK/rccache" --daemon
    for _ in $(seq 100); do [ -e "$MP/f1" ] && return; sleep 0.1; done
    echo "rclone mount did not come up"; exit 1
}
rc_pid() { pgrep -f "rclone mount sgbench:$TAG-rc" | head -n 1; }
timed() { # ROUND NAME COMMAND...: time(1)'s user+sys
    local t0 t1 o
    mkdir -p "$WORK/out"
    drop_caches
    t0=$(now)
    o=$( { /usr/bin/time -f '%U %S' "${@:3}" >/dev/null; } 2>&1 | tail -n 1)
    t1=$(now)
    rm -rf "$WORK/out"
    row "$1" "$2" "$t0" "$t1" "$(echo "${o% *} + ${o#* }" | bc -l)"
}

sg_pid() { "$1" stat --json "$MP" | awk -F'[:,]' '/^  "pid":/ { gsub(/ /, "", $2); print $2 }'; }
# sg_round ROUND NAME BINARY INDEX: a cold read through a fresh mount, and the
# mount's peak RSS (what it holds in memory for the read).
sg_round() {
    local pid
    sg_mount "$3" "$4"
    pid=$(sg_pid "$3")
    copy_out "$1" "$2" "$pid"
    HWM[$2]="${HWM[$2]:-} $(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")"
    "$3" umount "$MP" >/dev/null
    rm -rf "$WORK/cache"
}
declare -A HWM
SG_ROWS=("swiftgate mount")
for b in "${BEFORE[@]}"; do SG_ROWS+=("swiftgate ($(basename "$b"))"); done

printf '%-6s %-28s %8s %10s\n' round "cold read of 1 GiB" "MiB/s" "CPU-s/GiB"
for r in $(seq "$ROUNDS"); do
    sg_round "$r" "swiftgate mount" "$BIN" 0
    for i in "${!BEFORE[@]}"; do
        sg_round "$r" "swiftgate ($(basename "${BEFORE[$i]}"))" "${BEFORE[$i]}" $((i + 1))
    done
    for mode in off full; do
        rc_mount "$mode"
        copy_out "$r" "rclone mount (vfs $mode)" "$(rc_pid)"
        fusermount3 -u "$MP"
        for _ in $(seq 50); do [ -z "$(rc_pid)" ] && break; sleep 0.1; done
        rm -rf "$WORK/rccache"
    done
    timed "$r" "rclone copy (no FUSE)" rclone copy "sgbench:$TAG-rc" "$WORK/out"
    timed "$r" "curl, a stream per file" bash -c \
        'for f in f1 f2 f3 f4; do curl -sf -H @"$1" -o "$2/$f" "$3/$4/$f" || exit 1; done' \
        _ "$WORK/token" "$WORK/out" "$SURL" "$TAG-rc"
done
echo
echo "per round (MiB/s; CPU-s/GiB):"
for k in "${SG_ROWS[@]}" "rclone mount (vfs off)" "rclone mount (vfs full)" "rclone copy (no FUSE)" "curl, a stream per file"; do
    printf '  %-28s %-22s %s\n' "$k" "${RATE[$k]}" "${CPU[$k]}"
done
echo
echo "peak RSS of the mount (MiB, per round):"
for k in "${SG_ROWS[@]}"; do
    printf '  %-28s %s\n' "$k" "${HWM[$k]}"
done
