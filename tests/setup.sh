#!/usr/bin/env bash
# Installs what the test suite needs on Debian/Ubuntu (idempotent: quick
# when everything is there already). The Swift + Keystone fixture installs
# its own packages (tests/swift/start).
set -euo pipefail
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v python3 >/dev/null || need+=(python3)
command -v cc >/dev/null || need+=(gcc)
command -v smbd >/dev/null || need+=(samba)
command -v smbclient >/dev/null || need+=(smbclient)
command -v testparm >/dev/null || need+=(samba-common-bin)
# acl_xattr, streams_xattr, fruit, catia for the home share.
[ -e /usr/lib/x86_64-linux-gnu/samba/vfs/acl_xattr.so ] || [ -e /usr/lib/aarch64-linux-gnu/samba/vfs/acl_xattr.so ] || need+=(samba-vfs-modules)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Packages must not start their daemons (smbd on port 445) here: the
    # tests start their own on private ports.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    apt-get update -qq -o DPkg::Lock::Timeout=600
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null
    [ $created_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
fi
# A Windows-like SMB client for the gateway tests (PyPI smbprotocol).
if ! python3 -c 'import smbclient' 2>/dev/null; then
    python3 -m pip install --quiet smbprotocol
fi
if [ ! -c /dev/fuse ]; then
    mknod -m 666 /dev/fuse c 10 229
fi
