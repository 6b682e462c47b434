#!/usr/bin/env bash
# Swift benchmark: swiftgate against python-swiftclient (`swift upload` /
# `swift download`, default concurrency) moving the same data to and from
# the same Swift. Release build. Needs the fixture (started if absent).
#
#   bash tests/bench/swift.sh [--large 1G] [--files 20000] [--state DIR]
#
# Upload: swiftgate = copy into a fresh mount, then `umount` (which waits
# until the store has everything); swift = `swift upload`. Download:
# swiftgate = copy out of a mount with an empty cache (every block from
# Swift); swift = `swift download`. Large = 4 random files; small = N files
# of 1-32 KiB (random sizes, text-like content).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }

LARGE_MB=1024
FILES=20000
STATE=${SWIFTGATE_SWIFT_STATE:-/var/tmp/swiftgate-swift-fixture}
while [ $# -gt 0 ]; do
    case "$1" in
        --large) LARGE_MB=$(( $(numfmt --from=iec "$2") / 1048576 )); shift 2 ;;
        --files) FILES=$2; shift 2 ;;
        --state) STATE=$2; shift 2 ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done

cargo build --release --quiet
BIN=$PWD/target/release/swiftgate
bash tests/swift/start "$STATE" >/dev/null
# The swift CLI must not see ST_* (it would pick tempauth): env.keystone.
# shellcheck disable=SC1091
. "$STATE/env.keystone"
SWIFT="env -u PYTHONPATH -u PYTHONHOME /usr/bin/swift"

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-swiftbench.XXXXXX")
MP=$WORK/mp
TAG=bench$$
cleanup() {
    "$BIN" umount "$MP" >/dev/null 2>&1 || umount -l "$MP" 2>/dev/null || true
    for c in "$TAG-cli-large" "$TAG-cli-small" "$TAG-sg-large" "$TAG-sg-small"; do
        $SWIFT delete "$c" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MP" "$WORK/large" "$WORK/small"
echo benchmark-passphrase > "$WORK/pass"

now() { date +%s.%N; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
secs() { echo "$2 - $1" | bc -l; }
declare -A T

echo "preparing ${LARGE_MB} MiB in 4 large files and ${FILES} small files..."
for i in 1 2 3 4; do
    head -c $((LARGE_MB * 1048576 / 4)) /dev/urandom > "$WORK/large/big$i.bin"
done
/usr/bin/python3 - "$WORK/small" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(5000)]
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 200))
    os.makedirs(d, exist_ok=True)
    size = rnd.randint(1024, 32768)
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words) + b" "
    with open(os.path.join(d, "file%05d.txt" % i), "wb") as f:
        f.write(out[:size])
EOF
SMALL_MB=$(du -sm "$WORK/small" | cut -f1)

mount_sg() { # container cache
    "$BIN" mount "swift://$1" "$MP" --cache-dir "$WORK/$2" --passphrase-file "$WORK/pass" \
        --cache-size 8G --dirty-limit 4G
}

for kind in large small; do
    echo "== $kind: swift upload / download"
    drop_caches
    t0=$(now)
    (cd "$WORK/$kind" && $SWIFT upload "$TAG-cli-$kind" . >/dev/null)
    t1=$(now); T[cli.$kind.up]=$(secs "$t0" "$t1")
    mkdir -p "$WORK/out-cli-$kind"
    drop_caches
    t0=$(now)
    (cd "$WORK/out-cli-$kind" && $SWIFT download "$TAG-cli-$kind" >/dev/null)
    t1=$(now); T[cli.$kind.down]=$(secs "$t0" "$t1")
    rm -rf "$WORK/out-cli-$kind"

    echo "== $kind: swiftgate write+umount / cold read"
    "$BIN" mkfs "swift://$TAG-sg-$kind" --passphrase-file "$WORK/pass" >/dev/null
    mount_sg "$TAG-sg-$kind" "cache-$kind-1"
    drop_caches
    t0=$(now)
    cp -r "$WORK/$kind/." "$MP/"
    "$BIN" umount "$MP" >/dev/null
    t1=$(now); T[sg.$kind.up]=$(secs "$t0" "$t1")
    mount_sg "$TAG-sg-$kind" "cache-$kind-2"
    mkdir -p "$WORK/out-sg-$kind"
    drop_caches
    t0=$(now)
    cp -r "$MP/." "$WORK/out-sg-$kind/"
    t1=$(now); T[sg.$kind.down]=$(secs "$t0" "$t1")
    diff -r -q "$WORK/$kind" "$WORK/out-sg-$kind" >/dev/null || { echo "MISMATCH after the round trip"; exit 1; }
    "$BIN" umount "$MP" >/dev/null
    rm -rf "$WORK/out-sg-$kind" "$WORK/cache-$kind-1" "$WORK/cache-$kind-2"
done

rate() { echo "scale=0; $1 / $2" | bc -l; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
echo
echo "Swift on loopback; swiftgate with AES-256-GCM + zstd, 4 MiB blocks."
printf '%-44s %12s %12s %7s\n' workload "swift CLI" swiftgate ratio
printf '%-44s %12s %12s %7s\n' "upload $LARGE_MB MiB, 4 files (MiB/s)" \
    "$(rate $LARGE_MB "${T[cli.large.up]}")" "$(rate $LARGE_MB "${T[sg.large.up]}")" "$(ratio "${T[cli.large.up]}" "${T[sg.large.up]}")"
printf '%-44s %12s %12s %7s\n' "download $LARGE_MB MiB, cold (MiB/s)" \
    "$(rate $LARGE_MB "${T[cli.large.down]}")" "$(rate $LARGE_MB "${T[sg.large.down]}")" "$(ratio "${T[cli.large.down]}" "${T[sg.large.down]}")"
printf '%-44s %12s %12s %7s\n' "upload $FILES files, $SMALL_MB MiB (files/s)" \
    "$(rate "$FILES" "${T[cli.small.up]}")" "$(rate "$FILES" "${T[sg.small.up]}")" "$(ratio "${T[cli.small.up]}" "${T[sg.small.up]}")"
printf '%-44s %12s %12s %7s\n' "download $FILES files, cold (files/s)" \
    "$(rate "$FILES" "${T[cli.small.down]}")" "$(rate "$FILES" "${T[sg.small.down]}")" "$(ratio "${T[cli.small.down]}" "${T[sg.small.down]}")"
echo "(ratio = swift CLI time / swiftgate time; above 1 means swiftgate is faster)"
