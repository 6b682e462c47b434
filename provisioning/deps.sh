#!/usr/bin/env bash
# Debian/Ubuntu packages the gateway needs: FUSE and Samba (with the VFS
# modules the home share uses) at run time, PAM's development files to
# build it (the console's login links libpam). Idempotent.
set -euo pipefail
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v smbd >/dev/null || need+=(samba)
command -v smbclient >/dev/null || need+=(smbclient)
command -v testparm >/dev/null || need+=(samba-common-bin)
# acl_xattr, streams_xattr, fruit, catia for the home share.
ls /usr/lib/*-linux-gnu/samba/vfs/acl_xattr.so >/dev/null 2>&1 || need+=(samba-vfs-modules)
# libpam.so + libpam_misc.so, the names the linker looks for.
ls /usr/lib/*-linux-gnu/libpam_misc.so >/dev/null 2>&1 || need+=(libpam0g-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} (apt-get; this can take a few minutes)"
    export DEBIAN_FRONTEND=noninteractive
    # Packages must not start their own smbd here: swiftgate's smb.conf
    # decides how Samba runs.
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
if [ ! -c /dev/fuse ]; then
    mknod -m 666 /dev/fuse c 10 229
fi
