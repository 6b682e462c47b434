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
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq -o DPkg::Lock::Timeout=600
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null
fi
# A Windows-like SMB client for the gateway tests (PyPI smbprotocol).
if ! python3 -c 'import smbclient' 2>/dev/null; then
    python3 -m pip --version >/dev/null 2>&1 || {
        apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends python3-pip >/dev/null
    }
    # Debian's own python refuses pip installs without this flag (PEP 668).
    python3 -m pip install --quiet smbprotocol 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages smbprotocol
fi
