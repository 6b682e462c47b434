#!/usr/bin/env bash
# The whole test suite: unit and integration tests (real FUSE mounts), then
# pjdfstest against a real mount. Run as root (FUSE mounts, chown, mknod).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run the tests as root (they mount FUSE filesystems)"; exit 1; }

bash tests/setup.sh
cargo build --quiet
# A hung mount must fail the run, not eat CI's whole time budget.
timeout 2400 cargo test --quiet 2>&1 | tee /tmp/swiftgate-cargo-test.$$.log
grep -q "test result: FAILED" /tmp/swiftgate-cargo-test.$$.log && exit 1
rm -f /tmp/swiftgate-cargo-test.$$.log

echo "== pjdfstest against a swiftgate mount"
work=$(mktemp -d /tmp/swiftgate-pjd.XXXXXX)
bin=target/debug/swiftgate
cleanup() {
    "$bin" umount "$work/mp" >/dev/null 2>&1 || umount -l "$work/mp" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# pjdfstest switches to other users: they must be able to reach the mount.
chmod 755 "$work"
mkdir -p "$work/mp"
"$bin" mkfs "local://$work/store" --plain --block-size 64K >/dev/null
"$bin" mount "local://$work/store" "$work/mp" --cache-dir "$work/cache" --allow-other
chmod 0777 "$work/mp"
bash tests/pjdfstest.sh "$work/mp"
