#!/usr/bin/env bash
# Scale benchmark (release build, local object store): a filesystem of N
# files built straight through the metadata layer (FUSE would take hours at
# ten million), then
#   - metadata uploaded per hour under a steady office workload, shipped by
#     change, against a full snapshot per interval (the previous scheme),
#   - the mount: its time and RSS, listing a 100,000-entry directory,
#   - a new host: mounting from the store alone (restore), its time and
#     peak RSS, and fsck's time and peak RSS.
#
#   bash tests/bench/scale.sh [--files 1000000] [--seconds 120] [--interval 10]
#                             [--before OLD_BINARY]   (its statfs, same filesystem)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }

FILES=1000000
SECONDS_RUN=120
INTERVAL=10
BEFORE=
while [ $# -gt 0 ]; do
    case "$1" in
        --files) FILES=$2; shift 2 ;;
        --seconds) SECONDS_RUN=$2; shift 2 ;;
        --interval) INTERVAL=$2; shift 2 ;;
        --before) BEFORE=$(realpath "$2"); shift 2 ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done

cargo build --release --quiet --example meta_ship_bench
cargo build --release --quiet
BIN=$PWD/target/release/swiftgate
BENCH=$PWD/target/release/examples/meta_ship_bench
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-scale.XXXXXX")
MP=$WORK/mp
cleanup() {
    "$BIN" umount "$MP" >/dev/null 2>&1 || umount -l "$MP" 2>/dev/null || true
    umount "$WORK/bmp" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MP"

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }
rss_mib() { awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$1/status"; }
peak_mib() { awk -F: '/Maximum resident/ {printf "%d", $2/1024}' "$1"; }

echo "== building $FILES files and shipping under a steady workload"
"$BENCH" --files "$FILES" --seconds "$SECONDS_RUN" --interval "$INTERVAL" --dir "$WORK/fs" --keep | tee "$WORK/ship.txt"
STORE="local://$WORK/fs/store"
CACHE=$WORK/fs/cache

echo "== this host (local metadata current)"
t0=$(now); "$BIN" mount "$STORE" "$MP" --cache-dir "$CACHE"; t1=$(now)
echo "mount                     $(secs "$t0" "$t1") s"
PID=$("$BIN" stat --json "$MP" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
echo "RSS after mount           $(rss_mib "$PID") MiB"
if [ -d "$MP/big" ]; then
    t0=$(now); n=$(find "$MP/big" -mindepth 1 -maxdepth 1 | wc -l); t1=$(now)
    echo "readdir big/ ($n names)  $(secs "$t0" "$t1") s"
    t0=$(now); ls -l "$MP/big" > /dev/null; t1=$(now)
    echo "ls -l big/                $(secs "$t0" "$t1") s"
    t0=$(now); ls -l "$MP/big" > /dev/null; t1=$(now)
    echo "ls -l big/ again          $(secs "$t0" "$t1") s"
    # The floors, same run: as many empty files in a plain directory, and
    # that directory through bindfs (a pass-through FUSE filesystem in C).
    # Through bindfs `ls -l` costs a stat and two getxattrs per entry (ACL,
    # SELinux label), each a round trip to its daemon; swiftgate answers
    # the stats with the listing and holds neither ACLs nor labels.
    command -v bindfs >/dev/null || apt-get install -y -q bindfs >/dev/null
    mkdir -p "$WORK/plain/big" "$WORK/bmp"
    (cd "$WORK/plain/big" && seq -f 'f%07g' 1 "$n" | xargs touch)
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now); ls -l "$WORK/plain/big" > /dev/null; t1=$(now)
    echo "ls -l, plain directory    $(secs "$t0" "$t1") s  (floor)"
    bindfs --multithreaded "$WORK/plain" "$WORK/bmp"
    t0=$(now); ls -l "$WORK/bmp/big" > /dev/null; t1=$(now)
    echo "ls -l, through bindfs     $(secs "$t0" "$t1") s  (FUSE floor)"
    umount "$WORK/bmp"
fi
# statfs: Samba asks for the free space all the time. Binaries before the
# kept totals counted the database and kept that 2 s: 2.1 s apart, each
# call here reads afresh on either.
statfs_worst() {
    local worst=0 t0 t1
    for _ in 1 2 3 4 5; do
        sleep 2.1
        t0=$(now); stat -f "$1" > /dev/null; t1=$(now)
        worst=$(echo "w=($t1 - $t0) * 1000; if (w > $worst) w else $worst" | bc -l)
    done
    printf '%.1f' "$worst"
}
echo "statfs, worst of 5        $(statfs_worst "$MP") ms"
t0=$(now); find "$MP/d00000" -maxdepth 1 | wc -l > /dev/null; t1=$(now)
echo "find in a 10,000-file dir $(secs "$t0" "$t1") s"
echo "RSS after listing         $(rss_mib "$PID") MiB"
"$BIN" umount "$MP"
if [ -n "$BEFORE" ]; then
    "$BEFORE" mount "$STORE" "$MP" --cache-dir "$CACHE"
    echo "statfs, worst of 5, before binary  $(statfs_worst "$MP") ms"
    "$BEFORE" umount "$MP"
fi

echo "== a new host (metadata from the store alone)"
/usr/bin/time -v "$BIN" mount "$STORE" "$MP" --cache-dir "$WORK/cache2" --foreground \
    > /dev/null 2> "$WORK/mount2.time" &
TPID=$!
t0=$(now)
until mountpoint -q "$MP"; do
    sleep 0.2
    kill -0 "$TPID" 2>/dev/null || { cat "$WORK/mount2.time"; exit 1; }
done
t1=$(now)
echo "restore + mount           $(secs "$t0" "$t1") s"
PID=$("$BIN" stat --json "$MP" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
echo "RSS after restore         $(rss_mib "$PID") MiB"
"$BIN" umount "$MP"
wait "$TPID" || true
echo "peak RSS of that mount    $(peak_mib "$WORK/mount2.time") MiB"

echo "== fsck (its own restore, every table checked)"
t0=$(now)
/usr/bin/time -v "$BIN" fsck "$STORE" > "$WORK/fsck.out" 2> "$WORK/fsck.time" || true
t1=$(now)
echo "fsck                      $(secs "$t0" "$t1") s, peak RSS $(peak_mib "$WORK/fsck.time") MiB ($(tail -1 "$WORK/fsck.out"))"
