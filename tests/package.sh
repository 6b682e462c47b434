#!/usr/bin/env bash
# The Debian package: build it (provisioning/build-deb.sh), then check what
# it holds: control fields (Depends), conffiles, maintainer scripts, every
# file with its mode, the unit's settings, and that the packaged binary and
# default config work. With SWIFTGATE_TEST_INSTALL=1 it also installs the
# package on this machine (apt-get), checks the result, reinstalls it (an
# upgrade keeps an edited config), removes and purges it, and cleans up
# what it created. SWIFTGATE_DEB_ARGS go to `cargo deb` (e.g. --no-build).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dpkg-deb >/dev/null; then
    echo "SKIP: dpkg-deb is missing (not a Debian system): the package cannot be built or inspected"
    exit 0
fi

fails=0
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@" >/dev/null 2>&1; then echo "ok    $what"; else echo "FAIL  $what"; fails=$((fails + 1)); fi
}
has() { grep -qE -- "$2" <<<"$1"; }

# shellcheck disable=SC2086 # SWIFTGATE_DEB_ARGS is a list of words
bash provisioning/build-deb.sh ${SWIFTGATE_DEB_ARGS:-}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
deb="target/debian/swiftgate_${version}_${arch}.deb"
echo "package: $deb"

info=$(dpkg-deb -I "$deb")
files=$(dpkg-deb -c "$deb")
depends=$(dpkg-deb -f "$deb" Depends)
check "Package: swiftgate" has "$(dpkg-deb -f "$deb" Package)" '^swiftgate$'
check "Version $version" has "$(dpkg-deb -f "$deb" Version)" "^$version"
for d in samba samba-vfs-modules samba-common-bin smbclient fuse3 libpam0g ca-certificates 'libc6 '; do
    check "Depends: $d" has "$depends" "(^|, )$d"
done
for s in postinst prerm postrm conffiles; do
    check "control: $s" has "$info" " $s "
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/DEBIAN"
dpkg-deb -x "$deb" "$work/root"
check "conffile /etc/swiftgate/gateway.toml" grep -qx /etc/swiftgate/gateway.toml "$work/DEBIAN/conffiles"
check "conffile /etc/pam.d/swiftgate" grep -qx /etc/pam.d/swiftgate "$work/DEBIAN/conffiles"
# Owner as dpkg-deb shows it: root/root or 0/0.
mode() { awk -v f="./$1" '$6 == f { sub("^0/0$", "root/root", $2); print $1 " " $2 }' <<<"$files"; }
check "/usr/bin/swiftgate 0755 root" test "$(mode usr/bin/swiftgate)" = "-rwxr-xr-x root/root"
check "/etc/swiftgate/gateway.toml 0600 root" test "$(mode etc/swiftgate/gateway.toml)" = "-rw------- root/root"
check "/etc/pam.d/swiftgate 0644" test "$(mode etc/pam.d/swiftgate)" = "-rw-r--r-- root/root"
check "/lib/systemd/system/swiftgate.service" test -n "$(mode lib/systemd/system/swiftgate.service)"
check "/usr/share/doc/swiftgate/README.md" test -n "$(mode usr/share/doc/swiftgate/README.md)"
unit="$work/root/lib/systemd/system/swiftgate.service"
check "unit: ExecStart=/usr/bin/swiftgate serve" grep -q '^ExecStart=/usr/bin/swiftgate serve --config /etc/swiftgate/gateway.toml$' "$unit"
check "unit: Before=smbd.service" grep -q '^Before=smbd.service' "$unit"
check "unit: Restart=on-failure" grep -q '^Restart=on-failure' "$unit"
check "unit: TimeoutStopSec" grep -qE '^TimeoutStopSec=[0-9]+min' "$unit"
check "unit: host mount namespace (no PrivateMounts/ProtectSystem/PrivateTmp/ProtectHome)" \
    bash -c "! grep -qE '^(PrivateMounts|ProtectSystem|PrivateTmp|ProtectHome|MountFlags)=' '$unit'"
if command -v systemd-analyze >/dev/null; then
    # verify wants ExecStart's binary to exist: point it at the extracted one.
    sed "s|^ExecStart=/usr/bin/swiftgate|ExecStart=$work/root/usr/bin/swiftgate|" "$unit" > "$work/swiftgate.service"
    check "unit: systemd-analyze verify" systemd-analyze verify "$work/swiftgate.service"
fi
size=$(stat -c %s "$work/root/usr/bin/swiftgate")
check "binary stripped (under 60 MB; $((size >> 20)) MB)" test "$size" -lt $((60 << 20))
bin="$work/root/usr/bin/swiftgate"
check "packaged binary: --version is $version" has "$("$bin" --version)" "^swiftgate $version$"
check "packaged binary: doctor in --help" has "$("$bin" --help)" 'doctor'
# The default config parses (samba-config loads it) and names every section.
check "default gateway.toml parses" "$bin" samba-config --config "$work/root/etc/swiftgate/gateway.toml"
for sec in store store.swift mounts cache fs users control samba console shares; do
    check "default gateway.toml: [$sec]" grep -q "^\[$sec\]" "$work/root/etc/swiftgate/gateway.toml"
done
if command -v shellcheck >/dev/null; then
    check "shellcheck: maintainer scripts, build-deb.sh, this test" \
        shellcheck "$work/DEBIAN/postinst" "$work/DEBIAN/prerm" "$work/DEBIAN/postrm" provisioning/build-deb.sh tests/package.sh
else
    echo "note: shellcheck not installed, scripts not linted (apt install shellcheck)"
fi

if [ "${SWIFTGATE_TEST_INSTALL:-}" = 1 ]; then
    echo "--- installing on this machine (SWIFTGATE_TEST_INSTALL=1)"
    for p in /etc/swiftgate /var/cache/swiftgate /var/log/swiftgate /var/lib/swiftgate /usr/bin/swiftgate; do
        if [ -e "$p" ]; then
            echo "FAIL  $p exists already: refusing to install over a gateway on this machine"
            exit 1
        fi
    done
    had_group=0
    getent group swiftgate-admin >/dev/null && had_group=1
    cleanup_install() {
        dpkg --purge swiftgate >/dev/null 2>&1 || true
        rm -rf /etc/swiftgate /var/cache/swiftgate /var/log/swiftgate /var/lib/swiftgate "$work"
        [ "$had_group" = 1 ] || groupdel swiftgate-admin 2>/dev/null || true
    }
    trap cleanup_install EXIT
    out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 "./$deb" 2>&1) || { echo "$out"; exit 1; }
    echo "$out" | grep -E '^swiftgate:' || true
    check "installed: dpkg says ii" has "$(dpkg -l swiftgate | tail -n 1)" '^ii +swiftgate'
    check "installed: swiftgate --version" has "$(swiftgate --version)" "^swiftgate $version$"
    check "installed: /usr/bin/swiftgate" test -x /usr/bin/swiftgate
    for d in /etc/swiftgate /var/cache/swiftgate /var/log/swiftgate /var/lib/swiftgate; do
        check "installed: $d 0700 root" test "$(stat -c '%a %U' $d)" = "700 root"
    done
    check "installed: gateway.toml 0600" test "$(stat -c '%a' /etc/swiftgate/gateway.toml)" = 600
    check "installed: group swiftgate-admin" getent group swiftgate-admin
    check "installed: /etc/pam.d/swiftgate" test -f /etc/pam.d/swiftgate
    check "installed: unit file" test -f /lib/systemd/system/swiftgate.service
    # An upgrade (the same package again) keeps the admin's edit.
    echo '# edited by the admin' >> /etc/swiftgate/gateway.toml
    out=$(DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" 2>&1) || { echo "$out"; exit 1; }
    check "reinstall: edited gateway.toml kept" grep -q '^# edited by the admin' /etc/swiftgate/gateway.toml
    out=$(DEBIAN_FRONTEND=noninteractive apt-get remove -y -q swiftgate 2>&1) || { echo "$out"; exit 1; }
    check "removed: /usr/bin/swiftgate gone" test ! -e /usr/bin/swiftgate
    check "removed: gateway.toml kept" test -f /etc/swiftgate/gateway.toml
    check "removed: cache and logs kept" test -d /var/cache/swiftgate -a -d /var/log/swiftgate
    touch /etc/swiftgate/secret.key
    out=$(dpkg --purge swiftgate 2>&1) || { echo "$out"; exit 1; }
    echo "$out" | grep -E 'swiftgate:' || true
    check "purged: gateway.toml removed" test ! -e /etc/swiftgate/gateway.toml
    check "purged: state kept (secret.key)" test -f /etc/swiftgate/secret.key
    check "purged: says what it kept" has "$out" 'purge kept the gateway.s state: /etc/swiftgate /var/cache/swiftgate' 
fi

if [ $fails -gt 0 ]; then
    echo "package: $fails checks failed"
    exit 1
fi
echo "package: all checks passed"
