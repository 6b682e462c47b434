#!/usr/bin/env bash
# Engine benchmark on the local object store: each figure next to the same
# workload on a plain directory of the same disk, as a ratio. Release build.
#
#   bash tests/bench/engine.sh [--size 2G] [--files 50000] [--block-size 4M] [--million]
#
# Workloads: sequential write (dd 1 MiB, fsync), hot read (from the local
# cache / the disk, kernel caches dropped), cold read (swiftgate: cache
# emptied, blocks fetched from the store), untar of a real source tree,
# stat of every file, rm -rf, and a sustained write of 4x the cache size.
# --million also creates 1,000,000 files and reports the mount's RSS and
# the time to list a 100,000-entry directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }

SIZE_MB=2048
FILES=50000
MILLION=0
BLOCK=4M
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE_MB=$(( $(numfmt --from=iec "$2") / 1048576 )); shift 2 ;;
        --files) FILES=$2; shift 2 ;;
        --million) MILLION=1; shift ;;
        --block-size) BLOCK=$2; shift 2 ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done

cargo build --release --quiet
BIN=$PWD/target/release/swiftgate
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-bench.XXXXXX")
MP=$WORK/mp
cleanup() {
    "$BIN" umount "$MP" >/dev/null 2>&1 || umount -l "$MP" 2>/dev/null || true
    umount "$WORK/bmp" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MP" "$WORK/plain"

now() { date +%s.%N; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
secs() { echo "$2 - $1" | bc -l; }
declare -A RES

mount_fs() {
    "$BIN" mount "local://$WORK/store" "$MP" --cache-dir "$WORK/cache" --allow-other "$@"
}

# Source data: random (incompressible, undeduplicable) so nothing is free.
echo "preparing ${SIZE_MB} MiB of random data and a source tree of ~${FILES} files..."
head -c $((SIZE_MB * 1048576)) /dev/urandom > /dev/shm/swiftgate-bench-src.$$
SRC=/dev/shm/swiftgate-bench-src.$$
trap 'cleanup; rm -f $SRC /dev/shm/swiftgate-bench-tree.$$.tar' EXIT
# A real source tree: the crates cargo fetched (tens of thousands of files).
TREE_ROOT="$HOME/.cargo/registry/src"
TAR=/dev/shm/swiftgate-bench-tree.$$.tar
(cd "$TREE_ROOT" && find . -type f > "$WORK/list" && head -n "$FILES" "$WORK/list" > "$WORK/list.n" && tar -cf "$TAR" -T "$WORK/list.n")
NFILES=$(tar -tf "$TAR" | wc -l)
TARMB=$(( $(stat -c %s "$TAR") / 1048576 ))
echo "tree: $NFILES files, $TARMB MiB (from $TREE_ROOT)"

run_suite() { # $1 = label, $2 = target dir, $3 = cold-read preparation command
    local label=$1 dir=$2 t0 t1
    drop_caches
    t0=$(now); dd if="$SRC" of="$dir/big" bs=1M conv=fsync status=none; t1=$(now)
    RES[$label.write]=$(secs "$t0" "$t1")
    drop_caches
    t0=$(now); dd if="$dir/big" of=/dev/null bs=1M status=none; t1=$(now)
    RES[$label.hotread]=$(secs "$t0" "$t1")
    # Again with the page cache warm (a file reopened: Office, Samba).
    t0=$(now); dd if="$dir/big" of=/dev/null bs=1M status=none; t1=$(now)
    RES[$label.warmread]=$(secs "$t0" "$t1")
    eval "$3"
    drop_caches
    t0=$(now); dd if="$dir/big" of=/dev/null bs=1M status=none; t1=$(now)
    RES[$label.coldread]=$(secs "$t0" "$t1")
    mkdir -p "$dir/tree"
    t0=$(now); tar -xf "$TAR" -C "$dir/tree"; sync -f "$dir/tree" 2>/dev/null || sync; t1=$(now)
    RES[$label.untar]=$(secs "$t0" "$t1")
    drop_caches
    t0=$(now); find "$dir/tree" -printf '%s %m\n' > /dev/null; t1=$(now)
    RES[$label.stat]=$(secs "$t0" "$t1")
    t0=$(now); rm -rf "$dir/tree" "$dir/big"; t1=$(now)
    RES[$label.rm]=$(secs "$t0" "$t1")
}

echo "== plain directory"
run_suite plain "$WORK/plain" "true"

# The floor FUSE itself sets on this machine: the same untar through
# bindfs, a minimal passthrough FUSE filesystem in C, over a plain
# directory (every file costs a dozen kernel round trips to the daemon).
if command -v bindfs >/dev/null || apt-get install -y -q bindfs >/dev/null 2>&1; then
    echo "== bindfs passthrough (the FUSE floor)"
    mkdir -p "$WORK/bsrc" "$WORK/bmp"
    bindfs --multithreaded "$WORK/bsrc" "$WORK/bmp"
    drop_caches
    t0=$(now); tar -xf "$TAR" -C "$WORK/bmp"; sync -f "$WORK/bmp"; t1=$(now)
    RES[fuse.untar]=$(secs "$t0" "$t1")
    umount "$WORK/bmp"
fi

echo "== swiftgate (local store, block size $BLOCK, zstd, AES-256-GCM)"
printf 'benchmark-passphrase\n' > "$WORK/pass"
"$BIN" mkfs "local://$WORK/store" --passphrase-file "$WORK/pass" --block-size "$BLOCK" >/dev/null
mount_fs --passphrase-file "$WORK/pass" --cache-size 8G --dirty-limit 4G
run_suite sg "$MP" '"$BIN" ctl "$MP" flush >/dev/null; "$BIN" ctl "$MP" drop-cache >/dev/null'
PID=$("$BIN" stat --json "$MP" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
RSS_SMALL=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
t0=$(now); "$BIN" umount "$MP"; t1=$(now)
RES[sg.umount]=$(secs "$t0" "$t1")

echo "== sustained write of 4x the cache size (cache 512 MiB, dirty limit 256 MiB)"
rm -rf "$WORK/cache"
mount_fs --passphrase-file "$WORK/pass" --cache-size 512M --dirty-limit 256M
SUST_MB=2048
seg=256
t_start=$(now)
python3 - "$SRC" "$MP/sustained" "$SUST_MB" "$seg" <<'PY' > "$WORK/segs"
import os, sys, time
src, dst, total, seg = sys.argv[1], int(0) or sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
buf = open(src, 'rb').read(seg << 20)
fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range(total // seg):
    t = time.time()
    view = memoryview(buf)
    # Vary each segment so dedup cannot help.
    os.write(fd, i.to_bytes(8, 'little'))
    off = 0
    while off < len(view) - 8:
        off += os.write(fd, view[off:off + (1 << 20)])
    print(f"{seg / (time.time() - t):.0f}")
os.fsync(fd); os.close(fd)
PY
t_end=$(now)
RES[sg.sustained]=$(secs "$t_start" "$t_end")
"$BIN" umount "$MP"

ratio() { echo "scale=2; $1 / $2" | bc -l; }
mbps() { echo "scale=0; $1 / $2" | bc -l; }
fps() { echo "scale=0; $1 / $2" | bc -l; }
printf '\n%-34s %14s %14s %8s\n' "workload" "plain dir" "swiftgate" "ratio"
row() { printf '%-34s %14s %14s %8s\n' "$1" "$2" "$3" "$4"; }
row "sequential write ${SIZE_MB} MiB (MiB/s)" "$(mbps $SIZE_MB "${RES[plain.write]}")" "$(mbps $SIZE_MB "${RES[sg.write]}")" "$(ratio "${RES[plain.write]}" "${RES[sg.write]}")"
row "hot read (MiB/s)" "$(mbps $SIZE_MB "${RES[plain.hotread]}")" "$(mbps $SIZE_MB "${RES[sg.hotread]}")" "$(ratio "${RES[plain.hotread]}" "${RES[sg.hotread]}")"
row "re-read, page cache warm (MiB/s)" "$(mbps $SIZE_MB "${RES[plain.warmread]}")" "$(mbps $SIZE_MB "${RES[sg.warmread]}")" "$(ratio "${RES[plain.warmread]}" "${RES[sg.warmread]}")"
row "cold read, from the store (MiB/s)" "$(mbps $SIZE_MB "${RES[plain.coldread]}")" "$(mbps $SIZE_MB "${RES[sg.coldread]}")" "$(ratio "${RES[plain.coldread]}" "${RES[sg.coldread]}")"
row "untar $NFILES files (files/s)" "$(fps "$NFILES" "${RES[plain.untar]}")" "$(fps "$NFILES" "${RES[sg.untar]}")" "$(ratio "${RES[plain.untar]}" "${RES[sg.untar]}")"
if [ -n "${RES[fuse.untar]:-}" ]; then
    row "  same untar through bindfs" "" "$(fps "$NFILES" "${RES[fuse.untar]}")" "$(ratio "${RES[plain.untar]}" "${RES[fuse.untar]}")"
fi
row "stat all files (files/s)" "$(fps "$NFILES" "${RES[plain.stat]}")" "$(fps "$NFILES" "${RES[sg.stat]}")" "$(ratio "${RES[plain.stat]}" "${RES[sg.stat]}")"
row "rm -rf (files/s)" "$(fps "$NFILES" "${RES[plain.rm]}")" "$(fps "$NFILES" "${RES[sg.rm]}")" "$(ratio "${RES[plain.rm]}" "${RES[sg.rm]}")"
echo
echo "umount after the suite (waits for all uploads): ${RES[sg.umount]} s"
echo "sustained write of ${SUST_MB} MiB through a 512 MiB cache: $(mbps $SUST_MB "${RES[sg.sustained]}") MiB/s overall"
echo "  per ${seg} MiB segment (MiB/s): $(tr '\n' ' ' < "$WORK/segs")"
echo "  vs the cached sequential write: $(ratio "$(mbps $SUST_MB "${RES[sg.sustained]}")" "$(mbps $SIZE_MB "${RES[sg.write]}")")x"
echo "mount process peak RSS after the suite: $((RSS_SMALL / 1024)) MiB"

if [ "$MILLION" = 1 ]; then
    echo "== 1,000,000 files (10 directories of 100,000)"
    rm -rf "$WORK/cache"
    mount_fs --passphrase-file "$WORK/pass"
    t0=$(now)
    python3 - "$MP" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(10):
    p = os.path.join(root, f"d{d}")
    os.mkdir(p)
    for i in range(100000):
        os.close(os.open(os.path.join(p, f"f{i:06d}"), os.O_CREAT | os.O_WRONLY, 0o644))
PY
    t1=$(now)
    PID=$("$BIN" stat --json "$MP" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
    drop_caches
    # Times `ls -f` itself (an unsorted readdir of 100,000 names); the names
    # are only counted, never parsed.
    t2=$(now)
    # shellcheck disable=SC2012
    ls -f "$MP/d3" | wc -l > /dev/null
    t3=$(now)
    echo "created 1,000,000 files in $(secs "$t0" "$t1") s; listing 100,000 entries: $(secs "$t2" "$t3") s"
    echo "mount process RSS: peak $(( $(awk '/VmHWM/ {print $2}' "/proc/$PID/status") / 1024 )) MiB, now $(( $(awk '/VmRSS/ {print $2}' "/proc/$PID/status") / 1024 )) MiB"
    "$BIN" umount "$MP"
fi
