#!/usr/bin/env bash
# Build the Debian package: target/debian/swiftgate_<version>_<arch>.deb
# (`cargo deb`, configured in Cargo.toml [package.metadata.deb]). Installs
# the cargo-deb tool first if it is missing. Extra arguments go to
# `cargo deb` (e.g. --no-build to package an existing release build).
# Install the result with: apt install ./target/debian/swiftgate_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dpkg-deb >/dev/null || need+=(dpkg-dev)
# The console's PAM login links libpam (headers and the .so link names).
ls /usr/lib/*-linux-gnu/libpam_misc.so >/dev/null 2>&1 || need+=(libpam0g-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "build-deb: installing ${need[*]} (apt-get)"
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null
fi

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"
if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: cargo-deb is missing: installing it into $cargo_bin (cargo install --locked cargo-deb; a few minutes, once)"
    cargo install --locked cargo-deb
fi

echo "build-deb: building the release binary and the package ($(cargo deb --version))"
# --strip: the release profile keeps line tables for backtraces in
# benchmarks; the package ships the program without them (5x smaller).
deb=$(cargo deb --strip "$@" | tail -n 1)
if [ ! -f "$deb" ]; then
    echo "build-deb: cargo deb did not report a package file (got: $deb)" >&2
    exit 1
fi
echo "build-deb: $deb"
echo "install it with: apt install ./target/debian/$(basename "$deb")"
