#!/usr/bin/env bash
# Listing benchmark: `ls -l` of one directory of N files, right after a
# mount (nothing cached by the kernel) and again once the kernel's
# attributes have expired, through swiftgate and, in the same run, the
# floors and a peer over the same N empty files:
#   - the plain directory (caches dropped): no FUSE at all,
#   - bindfs: a pass-through FUSE filesystem in C,
#   - rclone mount of that directory: a FUSE gateway in Go (its VFS).
# With --before PATH a second swiftgate binary runs over the same
# filesystem, each binary mounted fresh, alternating, for a before/after
# in one run.
#
#   bash tests/bench/listing.sh [--files 100000] [--bin PATH] [--before PATH] [--rounds 2]
#
# Without --bin, a release build. The swiftgate filesystem is made through
# its own mount (N creates), on the local store; listing touches only
# metadata, so it is made unencrypted.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }

FILES=100000
BIN=
BEFORE=
ROUNDS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --files) FILES=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --before) BEFORE=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done
if [ -z "$BIN" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/swiftgate
fi
for tool in bindfs rclone bc; do
    command -v "$tool" >/dev/null || apt-get install -y -q "$tool" >/dev/null
done

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-listing.XXXXXX")
MP=$WORK/mp
cleanup() {
    for m in "$MP" "$WORK/bmp" "$WORK/rmp"; do
        mountpoint -q "$m" 2>/dev/null && { fusermount -u "$m" 2>/dev/null || umount -l "$m"; }
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MP" "$WORK/bmp" "$WORK/rmp" "$WORK/plain/big"

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }
wait_mounted() {
    for _ in $(seq 100); do mountpoint -q "$1" && return 0; sleep 0.1; done
    echo "$1 did not mount"; exit 1
}

# One row: ls -l right after mounting, then again after the kernel's
# attributes (1 s for swiftgate, bindfs and rclone alike) expired.
row() {
    local what=$1 dir=$2 t0 t1 t2 t3 t4 t5 n
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now); ls -l "$dir" > /dev/null; t1=$(now)
    sleep 1.5
    t2=$(now); ls -l "$dir" > /dev/null; t3=$(now)
    t4=$(now); n=$(find "$dir" -mindepth 1 -maxdepth 1 | wc -l); t5=$(now)
    [ "$n" = "$FILES" ] || { echo "$what lists $n entries, not $FILES"; exit 1; }
    printf '%-28s %8s s %8s s %8s s %10.0f\n' "$what" "$(secs "$t0" "$t1")" \
        "$(secs "$t2" "$t3")" "$(secs "$t4" "$t5")" \
        "$(echo "$FILES / ($t1 - $t0)" | bc -l)"
}

echo "== $FILES files: making them (plain directory, and through swiftgate)"
(cd "$WORK/plain/big" && seq -f 'f%07g' 1 "$FILES" | xargs touch)
"$BIN" mkfs "local://$WORK/store" --plain >/dev/null
"$BIN" mount "local://$WORK/store" "$MP" --cache-dir "$WORK/cache"
mkdir "$MP/big"
t0=$(now)
python3 - "$MP/big" "$FILES" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(1, n + 1):
    os.close(os.open(f"{d}/f{i:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
EOF
t1=$(now)
echo "created through swiftgate: $(secs "$t0" "$t1") s"
"$BIN" umount "$MP"

echo
printf '%-28s %10s %10s %10s %10s\n' "ls -l of $FILES" "first" "again" "names" "entries/s"
for round in $(seq "$ROUNDS"); do
    echo "-- round $round"
    row "plain directory (floor)" "$WORK/plain/big"
    bindfs --multithreaded "$WORK/plain" "$WORK/bmp"
    row "bindfs (FUSE floor)" "$WORK/bmp/big"
    fusermount -u "$WORK/bmp"
    rclone mount "$WORK/plain" "$WORK/rmp" --daemon -q
    wait_mounted "$WORK/rmp"
    row "rclone mount (peer)" "$WORK/rmp/big"
    fusermount -u "$WORK/rmp"
    for b in "$BIN" ${BEFORE:+"$BEFORE"}; do
        label=swiftgate
        [ -n "$BEFORE" ] && { [ "$b" = "$BIN" ] && label="swiftgate (after)" || label="swiftgate (before)"; }
        "$b" mount "local://$WORK/store" "$MP" --cache-dir "$WORK/cache"
        row "$label" "$MP/big"
        "$b" umount "$MP"
    done
done
