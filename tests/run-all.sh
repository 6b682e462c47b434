#!/usr/bin/env bash
# The whole test suite: unit and integration tests (real FUSE mounts) on the
# local store, the Swift tests and the same filesystem tests again against a
# real Swift + Keystone on loopback (tests/swift/start), then pjdfstest
# against a real mount. Run as root (FUSE mounts, chown, mknod, packages).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run the tests as root (they mount FUSE filesystems)"; exit 1; }

bash tests/setup.sh
cargo build --quiet

# The real Swift + Keystone (installed from Debian's packages on first use).
swift_state=${SWIFTGATE_SWIFT_STATE:-/var/tmp/swiftgate-swift-fixture}
bash tests/swift/start "$swift_state" >/dev/null
stop_swift() {
    [ -n "${SWIFTGATE_KEEP_SWIFT:-}" ] || bash tests/swift/stop "$swift_state" >/dev/null 2>&1 || true
}
trap stop_swift EXIT
# shellcheck disable=SC1091
. "$swift_state/env"
export SWIFTGATE_REQUIRE_SWIFT=1

check() { # a hung mount must fail the run, not eat CI's whole time budget
    local log=/tmp/swiftgate-cargo-test.$$.log
    timeout 2400 "$@" 2>&1 | tee "$log"
    if grep -q "test result: FAILED" "$log" || ! grep -q "test result" "$log"; then
        rm -f "$log"; exit 1
    fi
    rm -f "$log"
}
echo "== cargo test (local store; Swift tests against the fixture)"
check cargo test --quiet
echo "== the filesystem tests again, against the real Swift"
SWIFTGATE_TEST_STORE=swift PROPTEST_CASES=16 check cargo test --quiet --test engine --test posix --test model --test snapshots

echo "== every shell script (shellcheck), cloud-init's runcmd snippets too"
bash tests/lint-scripts.sh
echo "== the Debian package: contents, modes, unit, maintainer scripts"
# From the test build (the release build is provisioning/build-deb.sh's).
SWIFTGATE_DEB_ARGS="--profile dev --no-build --fast" bash tests/package.sh
echo "== the appliance: the package in fresh Debian 12 roots, setup, upgrade, recovery, cloud-init"
bash tests/appliance.sh

echo "== pjdfstest against a swiftgate mount"
work=$(mktemp -d /tmp/swiftgate-pjd.XXXXXX)
bin=target/debug/swiftgate
cleanup() {
    "$bin" umount "$work/mp" >/dev/null 2>&1 || umount -l "$work/mp" 2>/dev/null || true
    rm -rf "$work"
}
trap 'cleanup; stop_swift' EXIT
# pjdfstest switches to other users: they must be able to reach the mount.
chmod 755 "$work"
mkdir -p "$work/mp"
"$bin" mkfs "local://$work/store" --plain --block-size 64K >/dev/null
"$bin" mount "local://$work/store" "$work/mp" --cache-dir "$work/cache" --allow-other
chmod 0777 "$work/mp"
bash tests/pjdfstest.sh "$work/mp"
