#!/usr/bin/env bash
# Installs what the test suite needs on Debian/Ubuntu (idempotent: quick
# when everything is there already).
set -euo pipefail
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v python3 >/dev/null || need+=(python3)
command -v cc >/dev/null || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -c /dev/fuse ]; then
    mknod -m 666 /dev/fuse c 10 229
fi
