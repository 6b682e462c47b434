#!/usr/bin/env bash
# Installs what the test suite needs on Debian/Ubuntu (idempotent: quick
# when everything is there already). The Swift + Keystone fixture installs
# its own packages (tests/swift/start).
set -euo pipefail
cd "$(dirname "$0")/.."
bash provisioning/deps.sh
need=()
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v python3 >/dev/null || need+=(python3 python3-pip)
command -v cc >/dev/null || need+=(gcc)
command -v runuser >/dev/null || need+=(util-linux)
# The console's browser tests: Debian's Chromium, driven through chromedriver.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# Fonts with Japanese glyphs, for the console's Japanese pages in screenshots.
fc-list 2>/dev/null | grep -qi 'noto.*cjk' || need+=(fonts-noto-cjk)
# `cloud-init schema` validates the user-data files (tests/setup.rs).
command -v cloud-init >/dev/null || need+=(cloud-init)
# tests/lint-scripts.sh: shellcheck, and PyYAML for the cloud-init snippets.
command -v shellcheck >/dev/null || need+=(shellcheck)
# tests/appliance.sh: fresh Debian roots to install the package into.
command -v debootstrap >/dev/null || need+=(debootstrap)
# Debian's interpreter (the one python3-yaml is for), not a pyenv shim's.
/usr/bin/python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq -o DPkg::Lock::Timeout=600
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null
fi
# A Windows-like SMB client for the gateway tests (PyPI smbprotocol), in a
# virtual environment of its own: the system Python stays untouched. The
# tests find it at this path (or SWIFTGATE_TEST_VENV).
venv=${SWIFTGATE_TEST_VENV:-/opt/swiftgate-test-venv}
if ! "$venv/bin/python" -c 'import smbclient' 2>/dev/null; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq -o DPkg::Lock::Timeout=600
        apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends python3-venv >/dev/null
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet smbprotocol
fi
