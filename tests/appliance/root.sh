# shellcheck shell=bash
# Fresh Debian 12 roots for the appliance test (sourced by tests/appliance.sh).
#
# A root is a copy of a plain `debootstrap --variant=minbase` tree (made
# once and kept read-only as the base), run in its own mount and PID
# namespaces (and its own host name, as a VM has): /dev, /sys bound, its own /proc and /run, nothing of it
# visible on the host. It shares the host's network, so the Swift +
# Keystone of the test setup on loopback is reachable as on a real VM.
# Killing the namespace's first process (root_destroy) ends every process
# in it and drops every mount in it (FUSE mounts included), whatever
# state the test left it in.

appliance_dir=${SWIFTGATE_APPLIANCE_DIR:-/var/tmp/swiftgate-appliance}
codename=bookworm

# The machine's own mirrors (tests/appliance/mirror.sh): "SUITE URI".
mirror_for() { # mirror_for SUITE
    bash "$(dirname "${BASH_SOURCE[0]}")/mirror.sh" | awk -v s="$1" '$1 == s { print $2; exit }'
}

# The base tree, bootstrapped once (a few minutes) and reused.
root_base() {
    local base=$appliance_dir/base-$codename
    if [ -f "$base/.complete" ]; then
        echo "$base"
        return
    fi
    command -v debootstrap >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 debootstrap >/dev/null
    }
    local mirror security updates
    mirror=$(mirror_for "$codename")
    [ -n "$mirror" ] || { echo "appliance: no apt source for $codename on this machine: cannot bootstrap" >&2; return 1; }
    security=$(mirror_for "$codename-security")
    updates=$(mirror_for "$codename-updates")
    mkdir -p "$appliance_dir"
    chmod 0700 "$appliance_dir"
    rm -rf "$base"
    echo "appliance: debootstrap --variant=minbase $codename from $mirror (once; kept in $base)" >&2
    if ! debootstrap --variant=minbase "$codename" "$base" "$mirror" > "$appliance_dir/debootstrap.log" 2>&1; then
        tail -n 20 "$appliance_dir/debootstrap.log" >&2
        return 1
    fi
    {
        echo "deb $mirror $codename main"
        [ -z "$updates" ] || echo "deb $updates $codename-updates main"
        [ -z "$security" ] || echo "deb $security $codename-security main"
    } > "$base/etc/apt/sources.list"
    # Package downloads shared by every root (bound in at start).
    rm -rf "$base/var/cache/apt/archives"/*.deb
    touch "$base/.complete"
    echo "$base"
}

# root_create NAME: a fresh copy of the base; sets $root to its path.
root_create() {
    local base
    base=$(root_base) || return 1
    root=${work:?the caller sets work, its scratch directory}/$1
    cp -a "$base" "$root"
    rm -f "$root/.complete"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    echo "$1" > "$root/etc/hostname"
    # As in any container image: package scripts start no services while
    # installing (the test starts what it needs, as setup would on a VM).
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    mkdir -p "$appliance_dir/archives/partial"
}

# root_start: the namespaces; sets $root_pid (the namespace's PID 1 as
# seen from the host) and $root_holder (the unshare process).
root_start() {
    local ready=$work/.ready.$$.$RANDOM
    unshare --mount --pid --uts --fork --propagation private bash -c '
        set -e
        r=$1
        echo "$4" > /proc/sys/kernel/hostname
        mount --rbind /dev "$r/dev"
        mount --rbind /sys "$r/sys"
        mount -t proc proc "$r/proc"
        mount -t tmpfs -o mode=0755 tmpfs "$r/run"
        mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
        mount --bind "$2" "$r/var/cache/apt/archives"
        touch "$3"
        exec sleep infinity' bash "$root" "$appliance_dir/archives" "$ready" "$(cat "$root/etc/hostname")" 9>&- &
    root_holder=$!
    local _
    for _ in $(seq 100); do
        [ -e "$ready" ] && break
        kill -0 "$root_holder" 2>/dev/null || { echo "appliance: the root's namespace did not start" >&2; return 1; }
        sleep 0.1
    done
    rm -f "$ready"
    root_pid=$(cat "/proc/$root_holder/task/$root_holder/children")
    root_pid=${root_pid%% *}
    [ -n "$root_pid" ] || { echo "appliance: no process in the root's namespace" >&2; return 1; }
}

# in_root CMD...: runs a command inside the root (its namespaces, chrooted),
# as root with a clean login-like environment. The caller's open files
# beyond stdio (its run lock on fd 9) stay out: daemons started in the
# root would hold them.
in_root() {
    local enter=(nsenter --target "$root_pid" --mount --pid --uts -- chroot "$root")
    if [ -n "${root_booted:-}" ]; then
        enter=(nsenter --target "$root_pid" --mount --pid --uts --ipc --root --wd)
    fi
    "${enter[@]}" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@" 9>&-
}

# root_boot NAME: a fresh root with systemd installed, booted with systemd
# as its PID 1 (systemd-nspawn, host network, /dev/fuse bound in): the
# package's systemd paths run as on a VM. Sets $root, $root_pid (the
# container's systemd), $root_holder (systemd-nspawn).
root_boot() {
    command -v systemd-nspawn >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 systemd-container >/dev/null
    }
    root_create "$1"
    root_start
    in_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd systemd-sysv dbus >/dev/null
    kill -KILL "$root_pid" "$root_holder" 2>/dev/null || true
    wait "$root_holder" 2>/dev/null || true
    # A booted VM starts what packages install; no policy-rc.d here.
    rm -f "$root/usr/sbin/policy-rc.d"
    # --register=no --keep-unit: no systemd on the host to ask for a scope.
    systemd-nspawn -D "$root" --boot --machine="$1" --register=no --keep-unit --console=passive \
        --resolv-conf=off --bind=/dev/fuse --bind="$appliance_dir/archives:/var/cache/apt/archives" \
        > "$work/$1.console.log" 2>&1 9>&- &
    root_holder=$!
    root_booted=1
    local _ state
    for _ in $(seq 120); do
        root_pid=$(cat "/proc/$root_holder/task/$root_holder/children" 2>/dev/null || true)
        root_pid=${root_pid%% *}
        if [ -n "$root_pid" ]; then
            state=$(in_root systemctl is-system-running 2>/dev/null || true)
            case "$state" in running|degraded) return 0 ;; esac
        fi
        kill -0 "$root_holder" 2>/dev/null || break
        sleep 0.5
    done
    tail -n 20 "$work/$1.console.log" >&2
    echo "appliance: $1 did not boot (systemd state: ${state:-none})" >&2
    return 1
}

# root_destroy: every process of the root killed, its mounts gone, its
# files deleted ("the VM is lost").
root_destroy() {
    [ -n "${root_holder:-}" ] || return 0
    kill -KILL "$root_pid" 2>/dev/null || true
    kill -KILL "$root_holder" 2>/dev/null || true
    wait "$root_holder" 2>/dev/null || true
    root_holder=
    root_booted=
    # The mounts lived in the namespace only; refuse to delete through
    # one that somehow reached the host.
    if findmnt -rn -o TARGET | grep -q "^$root/"; then
        echo "appliance: mounts under $root on the host: not deleting it" >&2
        return 1
    fi
    rm -rf "$root"
}
