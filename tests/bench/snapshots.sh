#!/usr/bin/env bash
# Snapshot benchmark on the local object store (release build): what taking
# a snapshot costs with many files (time, metadata bytes in the store), and
# reading a file from a snapshot against reading it live, hot (from the
# cache) and cold (from the store), next to a plain directory of the same
# disk as the floor.
#
#   bash tests/bench/snapshots.sh [--size 1G] [--files 100000] [--million]
#
# --million adds a 1,000,000-file filesystem (about 3 minutes to create).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }

SIZE_MB=1024
COUNTS=(100000)
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE_MB=$(( $(numfmt --from=iec "$2") / 1048576 )); shift 2 ;;
        --files) COUNTS=("$2"); shift 2 ;;
        --million) COUNTS+=(1000000); shift ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done

cargo build --release --quiet
BIN=$PWD/target/release/swiftgate
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-snapbench.XXXXXX")
MP=$WORK/mp
cleanup() {
    "$BIN" umount "$MP" >/dev/null 2>&1 || umount -l "$MP" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MP" "$WORK/plain"
umask 077
head -c 32 /dev/urandom | base64 > "$WORK/pass"

now() { date +%s.%N; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
secs() { echo "$2 - $1" | bc -l; }
mibs() { echo "$SIZE_MB / $1" | bc -l; }
fmt() { printf '%.2f' "$1"; }
read_s() { drop_caches; local t0; t0=$(now); dd if="$1" of=/dev/null bs=1M status=none; secs "$t0" "$(now)"; }

new_fs() { # $1 = name
    rm -rf "$WORK/store-$1" "$WORK/cache-$1"
    "$BIN" mkfs "local://$WORK/store-$1" --passphrase-file "$WORK/pass" >/dev/null
    "$BIN" mount "local://$WORK/store-$1" "$MP" --cache-dir "$WORK/cache-$1" \
        --passphrase-file "$WORK/pass" --cache-size 8G
}
snap() { "$BIN" snapshot create --mountpoint "$MP" | sed -n 's/^snapshot \(@GMT-[^ ]*\) .*/\1/p'; }

echo "== reading a ${SIZE_MB} MiB file: live, from a snapshot, and from a plain directory"
head -c $((SIZE_MB * 1048576)) /dev/urandom > "$WORK/plain/big"
new_fs read
cp "$WORK/plain/big" "$MP/big"
"$BIN" ctl "$MP" flush >/dev/null
NAME=$(snap)
# The live file is overwritten: the snapshot's blocks are its own now.
head -c $((SIZE_MB * 1048576)) /dev/urandom > "$MP/big"
"$BIN" ctl "$MP" flush >/dev/null
PLAIN=$(read_s "$WORK/plain/big")
HOT_LIVE=$(read_s "$MP/big")
"$BIN" ctl "$MP" drop-cache >/dev/null
COLD_LIVE=$(read_s "$MP/big")
"$BIN" ctl "$MP" drop-cache >/dev/null
COLD_SNAP=$(read_s "$MP/.snapshots/$NAME/big")
# A snapshot file whose blocks the live file shares (unchanged since):
# read from the cache the live file filled.
cp "$MP/big" "$MP/same"; "$BIN" ctl "$MP" flush >/dev/null
sleep 1; NAME2=$(snap)
dd if="$MP/same" of=/dev/null bs=1M status=none
HOT_SNAP=$(read_s "$MP/.snapshots/$NAME2/same")
HOT_LIVE2=$(read_s "$MP/same")
"$BIN" umount "$MP"
printf '%-44s %8s %10s %8s\n' "read" "s" "MiB/s" "x plain"
row() { printf '%-44s %8s %10s %8s\n' "$1" "$(fmt "$2")" "$(fmt "$(mibs "$2")")" "$(fmt "$(echo "$PLAIN / $2" | bc -l)")"; }
row "plain directory (floor)" "$PLAIN"
row "live, hot (cache)" "$HOT_LIVE"
row "live, hot (cache), second file" "$HOT_LIVE2"
row "snapshot, hot (blocks the live file cached)" "$HOT_SNAP"
row "live, cold (from the store)" "$COLD_LIVE"
row "snapshot, cold (from the store)" "$COLD_SNAP"

for N in "${COUNTS[@]}"; do
    echo "== taking snapshots of $N files (100 bytes each, 100,000 per directory)"
    new_fs "n$N"
    t0=$(now)
    python3 - "$MP" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    if i % 100000 == 0:
        d = os.path.join(root, f"d{i // 100000}")
        os.mkdir(d)
    fd = os.open(os.path.join(d, f"f{i:07d}"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, os.urandom(100))
    os.close(fd)
PY
    t1=$(now)
    "$BIN" ctl "$MP" flush >/dev/null
    t2=$(now); NAME=$(snap); t3=$(now)
    echo x > "$MP/d0/changed"; sleep 1
    t4=$(now); NAME2=$(snap); t5=$(now)
    LIST=$("$BIN" snapshot list --json --mountpoint "$MP")
    META=$(echo "$LIST" | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshots"][0]["meta_bytes"])')
    DB=$(stat -c %s "$(find "$WORK/cache-n$N" -name meta.db | head -1)")
    drop_caches
    t6=$(now)
    # shellcheck disable=SC2012
    ls -f "$MP/.snapshots/$NAME/d0" | wc -l >/dev/null
    t7=$(now)
    # shellcheck disable=SC2012
    ls -f "$MP/.snapshots/$NAME/d0" | wc -l >/dev/null
    t9=$(now); t8=$t7
    t10=$(now); "$BIN" snapshot delete "$NAME" --mountpoint "$MP" >/dev/null; t11=$(now)
    "$BIN" umount "$MP"
    echo "created $N files in $(fmt "$(secs "$t0" "$t1")") s"
    echo "snapshot: $(fmt "$(secs "$t2" "$t3")") s (a second one: $(fmt "$(secs "$t4" "$t5")") s); delete: $(fmt "$(secs "$t10" "$t11")") s"
    echo "metadata: database $(( DB / 1048576 )) MiB on the cache disk, $(( META / 1048576 )) MiB per snapshot in the store (encoded)"
    echo "first listing of a 100,000-entry snapshot directory (fetches its database): $(fmt "$(secs "$t6" "$t7")") s; again: $(fmt "$(secs "$t8" "$t9")") s"
done
