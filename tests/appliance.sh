#!/usr/bin/env bash
# The appliance test: the Debian package installed into freshly
# bootstrapped Debian 12 roots (tests/appliance/root.sh), as on new VMs,
# against the real Swift + Keystone of the test setup on loopback.
#
#   gw1  apt install ./swiftgate.deb (dependencies from the mirror); setup
#        refuses bad input leaving nothing behind (wrong Keystone password,
#        unreachable auth URL, cache on a full / read-only disk, a
#        conflicting [homes]); setup with an openrc; daemon running, doctor
#        green; two users and a team share; smbclient round trips; a second
#        setup changes nothing; a package upgrade keeps everything and
#        restarts the daemon into the new binary. Then the VM is lost.
#   gw2  cloud-init (NoCloud datasource) runs cloud-init/user-data-restore.yaml:
#        both users log in with their old passwords and read their files,
#        the team share is back.
#   gw3  a wrong recovery key is refused leaving nothing behind;
#        `setup --demo`; a second run changes nothing.
#   gw4  cloud-init runs cloud-init/user-data.yaml: a new gateway.
#   gw5  systemd as PID 1 (systemd-nspawn): the package's and setup's
#        systemd paths; the unit restarts a killed daemon, an upgrade
#        restarts it, `systemctl stop` flushes and unmounts every home.
#
# Run as root (tests/run-all.sh runs it after the cargo tests). It uses the
# Swift fixture of tests/swift/start (started here if OS_AUTH_URL is unset).
# The package is built from the test build (cargo deb --profile dev;
# SWIFTGATE_APPLIANCE_DEB=path tests a given package instead, e.g. the
# release one of provisioning/build-deb.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "appliance: run as root (chroots, namespaces, FUSE)"; exit 1; }
# shellcheck source=tests/appliance/root.sh
. tests/appliance/root.sh

if [ -z "${OS_AUTH_URL:-}" ]; then
    swift_state=${SWIFTGATE_SWIFT_STATE:-/var/tmp/swiftgate-swift-fixture}
    bash tests/swift/start "$swift_state" >/dev/null
    # shellcheck disable=SC1091
    . "$swift_state/env"
fi

mkdir -p "$appliance_dir"
chmod 0700 "$appliance_dir"
# One run at a time: the roots share the host's ports and Swift project.
exec 9>"$appliance_dir/lock"
flock -w 3600 9

work=$(mktemp -d "$appliance_dir/run.XXXXXX")
t0=$(date +%s)
# Containers this test creates in the fixture's project (deleted before
# and after: the test starts from an empty project, as a new customer).
containers=(home-sgalice home-sgbob home-sgcarol home-sgdave share-sgteam swiftgate-state)
swift_cli() { env -u ST_AUTH -u ST_USER -u ST_KEY swift "$@"; }
drop_containers() {
    local c
    for c in "${containers[@]}"; do
        swift_cli delete "$c" >/dev/null 2>&1 || true
    done
}
cleanup() {
    local rc=$?
    if [ $rc != 0 ] && [ -n "${SWIFTGATE_APPLIANCE_KEEP:-}" ] && [ -n "${root_holder:-}" ]; then
        echo "appliance: kept for a look (SWIFTGATE_APPLIANCE_KEEP): nsenter -t $root_pid -m -p -u chroot $root bash; then kill $root_holder; rm -rf $work" >&2
        exit $rc
    fi
    root_destroy || true
    drop_containers
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
drop_containers

say() { printf '\n== [%4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
ok() { echo "ok    $*"; }
die() {
    echo "FAIL  $*" >&2
    if [ -n "${root:-}" ] && [ -d "$root/var/log/swiftgate" ]; then
        echo "--- daemon log (last 40 lines)" >&2
        tail -n 40 "$root/var/log/swiftgate/daemon.log" >&2 2>/dev/null || true
    fi
    exit 1
}
# run DESC CMD...: must succeed; output in $out (shown on failure).
run() {
    local what=$1; shift
    local rc=0
    out=$("$@" 2>&1) || rc=$?
    [ $rc = 0 ] || { echo "$out" >&2; die "$what (exit $rc)"; }
    ok "$what"
}
# refuse DESC PATTERN CMD...: must fail with a message matching PATTERN.
refuse() {
    local what=$1 pat=$2; shift 2
    if out=$("$@" 2>&1); then echo "$out" >&2; die "$what: succeeded, should have been refused"; fi
    grep -qiE -- "$pat" <<<"$out" || { echo "$out" >&2; die "$what: refused without a message matching /$pat/"; }
    ok "$what: $(grep -iE -- "$pat" <<<"$out" | head -n 1 | cut -c1-150)"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_root() { in_root env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 "$@"; }
# The gateway's configuration as files: what a failed setup must leave
# exactly as it was (paths, modes, owners, contents), plus its groups.
state_of_root() {
    in_root sh -c 'for d in /etc/swiftgate /etc/samba /var/cache/swiftgate /var/lib/swiftgate; do
            [ -e "$d" ] && find "$d" -printf "%p %m %u %s\n" -type f -exec sha256sum {} +
        done; getent group | cut -d: -f1 | sort; ls /run/swiftgate 2>/dev/null; true' | sort
}
# The PID (as the root sees it) of the `swiftgate serve` daemon, if one runs.
serve_pid() {
    in_root sh -c 'for p in /proc/[0-9]*; do
            set -- $(tr "\0" " " < "$p/cmdline" 2>/dev/null)
            if [ "${1##*/}" = swiftgate ] && [ "${2:-}" = serve ]; then echo "${p#/proc/}"; exit 0; fi
        done'
}
# An smbclient credentials file in the root (no password in argv).
authfile() { # authfile USER PASSWORD
    printf 'username = %s\npassword = %s\n' "$1" "$2" > "$root/root/auth-$1"
    chmod 0600 "$root/root/auth-$1"
}
smb() { # smb PORT SHARE USER COMMANDS
    in_root smbclient "//127.0.0.1/$2" -p "$1" -A "/root/auth-$3" -c "$4"
}
# console_login PORT USER PASSWORD: a PAM login through the console's form
# (password in the environment, not argv); fails unless it lands logged in.
console_login() {
    PORT=$1 U=$2 P=$3 python3 -c '
import http.cookiejar, os, re, sys, urllib.error, urllib.parse, urllib.request
base = "http://127.0.0.1:%s" % os.environ["PORT"]
class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None
jar = http.cookiejar.CookieJar()
web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), Stay)
page = web.open(base + "/login").read().decode()
csrf = re.search(r"name=\"csrf\" value=\"([^\"]*)\"", page).group(1)
form = urllib.parse.urlencode({"user": os.environ["U"], "password": os.environ["P"], "csrf": csrf, "next": "/"}).encode()
try:
    r = web.open(base + "/login", form)
    code, to = r.status, r.headers.get("Location")
except urllib.error.HTTPError as e:
    code, to = e.code, e.headers.get("Location")
if code not in (302, 303) or not to or to.startswith("/login"):
    sys.exit("login refused: HTTP %s to %s" % (code, to))
home = web.open(base + "/").read().decode()
if "logout" not in home.lower():
    sys.exit("logged in, but the dashboard has no logout")
'
}
doctor_green() {
    run "doctor: all checks passed" in_root swiftgate doctor
    grep -qE '^all [0-9]+ checks passed' <<<"$out" || { echo "$out" >&2; die "doctor is not all green"; }
}
fill_placeholders() { # fill_placeholders SRC DST NAME=VALUE...
    local src=$1 dst=$2 kv text
    shift 2
    text=$(cat "$src")
    for kv in "$@"; do
        text=$(NAME=${kv%%=*} VALUE=${kv#*=} python3 -c '
import os, re, sys
print(re.sub(r"<<" + os.environ["NAME"] + r"( [^>]*)?>>", lambda m: os.environ["VALUE"], sys.stdin.read()), end="")' <<<"$text")
    done
    # (Comments may mention <<PLACEHOLDER>>s; cloud-init ignores them.)
    if grep -v '^[[:space:]]*#' <<<"$text" | grep -q '<<'; then
        die "$src has a placeholder this test does not fill: $(grep -v '^[[:space:]]*#' <<<"$text" | grep -o '<<[^>]*>>' | head -n 1)"
    fi
    printf '%s\n' "$text" > "$dst"
    chmod 0600 "$dst"
}

say "the package"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
mkdir -p "$work/pkg"
if [ -n "${SWIFTGATE_APPLIANCE_DEB:-}" ]; then
    deb=$SWIFTGATE_APPLIANCE_DEB
    version=$(dpkg-deb -f "$deb" Version)
else
    cargo build --quiet
    run "built from the test build (cargo deb --profile dev)" bash provisioning/build-deb.sh --profile dev --no-build --fast --output "$work/pkg/"
    deb=$(ls "$work/pkg/"*.deb)
fi
upgrade_version="$version+appliance1"
# The upgrade: the same program as a newer version of the package.
run "an upgrade package $upgrade_version" cargo deb --profile dev --strip --no-build --fast --deb-version "$upgrade_version" --output "$work/pkg/upgrade.deb"
dpkg-deb -f "$work/pkg/upgrade.deb" Version | grep -qx "$upgrade_version" || die "upgrade package version"

# Keystone of the test setup, as an openrc file from Horizon would give it.
openrc() { # openrc PASSWORD AUTH_URL
    printf 'export OS_AUTH_URL=%s\nexport OS_REGION_NAME=%s\nexport OS_USERNAME=%s\nexport OS_PASSWORD=%s\nexport OS_PROJECT_ID=%s\nexport OS_USER_DOMAIN_NAME=Default\n' \
        "$2" "$OS_REGION_NAME" "$OS_USERNAME" "$1" "$SWIFT_AIO_PROJECT_ID"
}

new_root() { # new_root NAME: fresh root with the package installed
    say "$1: a fresh Debian 12 root"
    root_create "$1"
    root_start
    run "apt-get update" apt_root update
    cp "$deb" "$root/root/swiftgate.deb"
    run "apt-get install ./swiftgate.deb (pulls its dependencies)" apt_root install /root/swiftgate.deb
    run "installed: swiftgate --version" in_root swiftgate --version
    grep -q "swiftgate" <<<"$out" || die "no version"
}

###########################################################################
new_root gw1
for b in smbd smbclient testparm fusermount3 pdbedit; do
    in_root sh -c "command -v $b" >/dev/null || die "the package did not pull in $b"
done
ok "dependencies: smbd smbclient testparm fusermount3 pdbedit"
smb_port=$(free_port)
console_port=$(free_port)
openrc secret "$OS_AUTH_URL" > "$root/root/openrc"
chmod 0600 "$root/root/openrc"
setup_args=(--store-url 'swift://home-{user}' --cache-size 2G
    --smb-global "smb ports = $smb_port" --console-listen "127.0.0.1:$console_port")

say "gw1: bad input leaves nothing behind"
before=$(state_of_root)
unchanged() {
    local now
    now=$(state_of_root)
    [ "$now" = "$before" ] || { diff <(echo "$before") <(echo "$now") >&2; die "$1 left something behind"; }
    [ -z "$(serve_pid)" ] || die "$1 left a daemon running"
    ok "$1: nothing written, no daemon"
}
openrc wrong-password "$OS_AUTH_URL" > "$root/root/openrc-wrong"
refuse "wrong Keystone password" "credential|password|401|unauthori" \
    in_root swiftgate setup "${setup_args[@]}" --openrc /root/openrc-wrong
unchanged "wrong Keystone password"
openrc secret "http://127.0.0.1:$(free_port)/v3" > "$root/root/openrc-unreachable"
refuse "unreachable auth URL" "reach|connect|refused" \
    in_root swiftgate setup "${setup_args[@]}" --openrc /root/openrc-unreachable
unchanged "unreachable auth URL"
in_root mkdir -p /mnt/full /mnt/ro
in_root mount -t tmpfs -o size=1m,mode=0700 tmpfs /mnt/full
in_root sh -c 'dd if=/dev/zero of=/mnt/full/filler bs=64k 2>/dev/null; true'
before=$(state_of_root)
refuse "cache directory on a full disk" "full|space" \
    in_root swiftgate setup "${setup_args[@]}" --openrc /root/openrc --cache-dir /mnt/full/cache
unchanged "cache directory on a full disk"
in_root mount -t tmpfs -o ro,size=1m tmpfs /mnt/ro
refuse "cache directory on a read-only disk" "read-only" \
    in_root swiftgate setup "${setup_args[@]}" --openrc /root/openrc --cache-dir /mnt/ro/cache
unchanged "cache directory on a read-only disk"
in_root umount /mnt/full /mnt/ro
cp "$root/etc/samba/smb.conf" "$work/smb.conf.orig"
printf '\n[homes]\n   comment = the admin'"'"'s own home shares\n   browseable = no\n' >> "$root/etc/samba/smb.conf"
before=$(state_of_root)
refuse "an smb.conf with its own [homes]" "\[homes\]" \
    in_root swiftgate setup "${setup_args[@]}" --openrc /root/openrc
unchanged "an smb.conf with its own [homes]"
cp "$work/smb.conf.orig" "$root/etc/samba/smb.conf"

say "gw1: setup against the real Swift + Keystone"
# An admin's own share and global setting: setup must keep them.
printf '\n[scans]\n   path = /srv/scans\n   read only = yes\n' >> "$root/etc/samba/smb.conf"
in_root mkdir -p /srv/scans
in_root useradd --create-home opsadmin
run "setup (openrc, Keystone v3)" in_root swiftgate setup "${setup_args[@]}" --openrc /root/openrc --admin-user opsadmin
echo "$out" | sed 's/^/      /'
grep -qE '^all [0-9]+ checks passed' <<<"$out" || die "setup did not end with a green doctor"
grep -qi "supervise" <<<"$out" || die "setup did not say how the daemon runs (no systemd here)"
[ -n "$(serve_pid)" ] || die "no daemon after setup"
ok "daemon running (pid $(serve_pid) in the root)"
grep -q '^\[scans\]' "$root/etc/samba/smb.conf" || die "setup dropped the admin's [scans] share"
ok "the admin's [scans] share kept"
in_root id -nG opsadmin | grep -qw swiftgate-admin || die "opsadmin is not in swiftgate-admin"
ok "opsadmin in swiftgate-admin"
in_root chpasswd <<<'opsadmin:Ops-pw-9'
run "opsadmin logs in to the console (PAM)" console_login "$console_port" opsadmin Ops-pw-9
opsadmin_hash=$(in_root getent shadow opsadmin | cut -d: -f2)
! grep -q "\"$OS_PASSWORD\"" "$root/etc/swiftgate/gateway.toml" || die "the Keystone password is in gateway.toml"
[ "$(stat -c %a "$root/etc/swiftgate/keystone-password")" = 600 ] || die "keystone-password is not 0600"
ok "Keystone password in a 0600 file, not in the config"
doctor_green

say "gw1: users, a team share, SMB round trips"
printf 'Alice-pw-1\n' | run "user add sgalice" in_root swiftgate user add sgalice
printf 'Bob-pw-2\n' | run "user add sgbob" in_root swiftgate user add sgbob
run "share add sgteam" in_root swiftgate share add sgteam --member sgalice --member sgbob
authfile sgalice Alice-pw-1
authfile sgbob Bob-pw-2
# The users' files, kept outside the root to compare after its loss.
mkdir -p "$work/data"
head -c 300000 /dev/urandom > "$work/data/alice.bin"
head -c 5000 /dev/urandom > "$work/data/bob.bin"
head -c 70000 /dev/urandom > "$work/data/team.bin"
cp "$work/data/"*.bin "$root/root/"
run "sgalice: put into \\\\gw1\\home" smb "$smb_port" home sgalice 'mkdir reports; put /root/alice.bin reports\alice.bin'
run "sgbob: put into \\\\gw1\\home" smb "$smb_port" home sgbob 'put /root/bob.bin bob.bin'
run "sgalice: put into \\\\gw1\\sgteam" smb "$smb_port" sgteam sgalice 'put /root/team.bin plan.bin'
run "sgbob: get from \\\\gw1\\sgteam" smb "$smb_port" sgteam sgbob 'get plan.bin /root/team.back'
cmp "$root/root/team.bin" "$root/root/team.back" || die "the team share gave other bytes"
run "sgalice: get back" smb "$smb_port" home sgalice 'get reports\alice.bin /root/alice.back'
cmp "$root/root/alice.bin" "$root/root/alice.back" || die "alice's home gave other bytes"
ok "round trips: bytes equal"
refuse "sgbob cannot log in with alice's password" "LOGON_FAILURE|NT_STATUS" \
    in_root smbclient //127.0.0.1/home -p "$smb_port" -U sgbob --password=Alice-pw-1 -c ls

say "gw1: a second setup with the same input changes nothing"
snap=$(in_root sh -c 'find /etc/swiftgate /etc/samba -maxdepth 1 -type f ! -name gateway-state.json ! -name "*.log" -printf "%p %m %T@ %s\n" | sort')
pid_before=$(serve_pid)
run "setup again" in_root swiftgate setup "${setup_args[@]}" --openrc /root/openrc --admin-user opsadmin
grep -q "nothing to change" <<<"$out" || { echo "$out" >&2; die "the second setup changed something"; }
[ "$snap" = "$(in_root sh -c 'find /etc/swiftgate /etc/samba -maxdepth 1 -type f ! -name gateway-state.json ! -name "*.log" -printf "%p %m %T@ %s\n" | sort')" ] \
    || die "the second setup touched files"
[ "$(serve_pid)" = "$pid_before" ] || die "the second setup restarted the daemon"
ok "no file touched, daemon not restarted"

say "gw1: package upgrade to $upgrade_version"
conf_sums() { in_root sh -c 'cd /etc/swiftgate && sha256sum gateway.toml users.json secret.key recovery.key shares.json keystone-password; sha256sum /etc/samba/smb.conf'; }
sums=$(conf_sums)
cp "$work/pkg/upgrade.deb" "$root/root/swiftgate-upgrade.deb"
run "apt-get install ./swiftgate-upgrade.deb" apt_root install /root/swiftgate-upgrade.deb
echo "$out" | grep -E '^swiftgate' | sed 's/^/      /'
[ "$(in_root dpkg-query -W -f '${Version}' swiftgate)" = "$upgrade_version" ] || die "not upgraded"
ok "dpkg: swiftgate $upgrade_version"
[ "$(conf_sums)" = "$sums" ] || die "the upgrade changed the configuration"
ok "configuration, user map, keys, smb.conf unchanged"
for _ in $(seq 60); do
    new_pid=$(serve_pid)
    [ -n "$new_pid" ] && [ "$new_pid" != "$pid_before" ] && in_root swiftgate status >/dev/null 2>&1 && break
    sleep 1
done
{ [ -n "$new_pid" ] && [ "$new_pid" != "$pid_before" ]; } || die "the daemon was not restarted by the upgrade (pid $pid_before, now '$new_pid')"
in_root sh -c "readlink /proc/$new_pid/exe" | grep -q deleted && die "the daemon still runs the old binary"
ok "daemon restarted into the new binary (pid $pid_before -> $new_pid)"
doctor_green
run "sgalice after the upgrade: same password, same bytes" smb "$smb_port" home sgalice 'get reports\alice.bin /root/alice.back2'
cmp "$root/root/alice.bin" "$root/root/alice.back2" || die "alice's file changed in the upgrade"

say "gw1: state backed up, homes flushed, then the VM is lost"
run "recovery backup" in_root swiftgate recovery backup
key=$(in_root swiftgate recovery show-key | grep -oE '[0-9A-Z]{4}(-[0-9A-Z]{4}){7}' | head -n 1)
[ -n "$key" ] || die "recovery show-key printed no key"
ok "recovery key read (show-key)"
mounts=$(in_root awk '$3 == "fuse" || $3 ~ /^fuse\./ { print $2 }' /proc/mounts)
for mp in $mounts; do
    run "data and metadata of $mp in the store" in_root swiftgate ctl "$mp" backup-metadata
done
# Killed, not stopped: the homes' leases stay behind, as after a real crash.
root_destroy
ok "gw1 destroyed: processes killed, state and cache deleted"

# cloud_init NAME USER_DATA: runs cloud-init's stages in the root, as a VM's
# boot would, with the NoCloud datasource seeded with USER_DATA.
cloud_init() {
    local name=$1 user_data=$2
    run "apt-get install cloud-init (the image's own)" apt_root install cloud-init
    mkdir -p "$root/var/lib/cloud/seed/nocloud"
    cp "$user_data" "$root/var/lib/cloud/seed/nocloud/user-data"
    printf 'instance-id: %s-%s\nlocal-hostname: %s\n' "$name" "$(basename "$work")" "$name" \
        > "$root/var/lib/cloud/seed/nocloud/meta-data"
    # The image's own settings: the datasource is the seed directory; the
    # root has no NIC of its own to configure (it shares the host's
    # network); minbase has no `locales` to generate en_US from, so the
    # image's locale is the built-in C.UTF-8.
    printf 'datasource_list: [ NoCloud, None ]\nnetwork: {config: disabled}\nlocale: C.UTF-8\n' \
        > "$root/etc/cloud/cloud.cfg.d/99-swiftgate-test.cfg"
    local stage
    for stage in "init --local" "init" "modules --mode=config" "modules --mode=final"; do
        # shellcheck disable=SC2086 # the stage is two words
        if ! in_root cloud-init $stage > "$work/cloud-init-$name.log" 2>&1; then
            tail -n 30 "$work/cloud-init-$name.log" >&2
            tail -n 60 "$root/var/log/cloud-init-output.log" >&2 2>/dev/null || true
            die "cloud-init $stage"
        fi
    done
    run "cloud-init status" in_root cloud-init status --long
    echo "$out" | sed 's/^/      /'
    if ! grep -q '^status: done' <<<"$out" || grep -qiE '^errors: *\[.+' <<<"$out" || grep -qiE 'recoverable_errors:' <<<"$out"; then
        tail -n 60 "$root/var/log/cloud-init-output.log" >&2 2>/dev/null || true
        die "cloud-init reported errors"
    fi
    sed 's/^/      | /' "$root/var/log/cloud-init-output.log" | grep -iE 'swiftgate|setup|restor|checks|doctor' | head -n 40 || true
}

###########################################################################
say "gw2: a new VM restores the lost gateway (cloud-init, user-data-restore.yaml)"
root_create gw2
root_start
run "apt-get update" apt_root update
cp "$deb" "$root/root/swiftgate.deb"
port_free 445 || die "port 445 is taken on this machine: the cloud-init roots use the default SMB port"
fill_placeholders cloud-init/user-data-restore.yaml "$work/user-data-restore" \
    KEYSTONE_AUTH_URL="$OS_AUTH_URL" API_USER="$OS_USERNAME" API_PASSWORD=secret \
    TENANT_ID="$SWIFT_AIO_PROJECT_ID" RECOVERY_KEY="$key" \
    SWIFTGATE_DEB_URL=file:///root/swiftgate.deb RECOVERY_STORE=swift://swiftgate-state
cloud_init gw2 "$work/user-data-restore"
[ ! -e "$root/root/swiftgate-recovery-key" ] || die "the recovery key file is still on the VM"
ok "recovery key file shredded"
[ -n "$(serve_pid)" ] || die "no daemon after the restore"
doctor_green
authfile sgalice Alice-pw-1
authfile sgbob Bob-pw-2
# gw1 died holding the homes' and the share's leases (60 s): the restored
# gateway takes them over once they expire, refusing sessions until then.
smb_retry() { # smb_retry DESC ARGS...: smb, tried again for up to 120 s
    local what=$1 _
    shift
    for _ in $(seq 40); do
        if out=$(smb "$@" 2>&1); then ok "$what"; return; fi
        sleep 3
    done
    echo "$out" >&2
    die "$what"
}
smb_retry "sgalice logs in with her old password, reads her file" 445 home sgalice 'get reports\alice.bin /root/alice.back'
smb_retry "sgbob logs in with his old password, reads his file" 445 home sgbob 'get bob.bin /root/bob.back'
smb_retry "the team share is back (sgbob reads alice's plan)" 445 sgteam sgbob 'get plan.bin /root/team.back'
run "share list" in_root swiftgate share list
grep -q sgteam <<<"$out" || die "sgteam not in the share list"
run "user list" in_root swiftgate user list
{ grep -q sgalice <<<"$out" && grep -q sgbob <<<"$out"; } || die "users missing after the restore"
for f in alice bob team; do
    cmp "$work/data/$f.bin" "$root/root/$f.back" || die "$f's file differs after the restore"
done
ok "every file as gw1 wrote it"
[ "$(in_root getent shadow opsadmin | cut -d: -f2)" = "$opsadmin_hash" ] || die "the console admin's password did not come back"
in_root id -nG opsadmin | grep -qw swiftgate-admin || die "opsadmin is not a console admin after the restore"
run "opsadmin logs in to the restored console with the old password" console_login "$console_port" opsadmin Ops-pw-9
root_destroy

###########################################################################
new_root gw3
say "gw3: a wrong recovery key is refused, leaving nothing behind"
openrc secret "$OS_AUTH_URL" > "$root/root/openrc"
chmod 0600 "$root/root/openrc"
before=$(state_of_root)
refuse "restore with a wrong recovery key" "recovery key|wrong key|decrypt" \
    in_root sh -c 'set -a && . /root/openrc && set +a && echo 0123-4567-89AB-CDEF-0123-4567-89AB-CDEF | swiftgate setup --restore swift://swiftgate-state'
unchanged "restore with a wrong recovery key"

say "gw3: setup --demo"
smb_port=$(free_port)
console_port=$(free_port)
demo_args=(--demo --smb-global "smb ports = $smb_port" --console-listen "127.0.0.1:$console_port")
run "setup --demo" in_root sh -c "echo Demo-pw-3 | swiftgate setup $(printf '%q ' "${demo_args[@]}")"
echo "$out" | sed 's/^/      /'
[ -n "$(serve_pid)" ] || die "no daemon after setup --demo"
doctor_green
authfile demo Demo-pw-3
head -c 100000 /dev/urandom > "$root/root/demo.bin"
run "demo: put and get through \\\\gw3\\home" smb "$smb_port" home demo 'put /root/demo.bin demo.bin; get demo.bin /root/demo.back'
cmp "$root/root/demo.bin" "$root/root/demo.back" || die "demo round trip: bytes differ"
snap=$(in_root sh -c 'find /etc/swiftgate /etc/samba -maxdepth 1 -type f ! -name gateway-state.json -printf "%p %m %T@ %s\n" | sort')
pid_before=$(serve_pid)
run "setup --demo again" in_root sh -c "swiftgate setup $(printf '%q ' "${demo_args[@]}") </dev/null"
grep -q "nothing to change" <<<"$out" || { echo "$out" >&2; die "the second setup --demo changed something"; }
[ "$snap" = "$(in_root sh -c 'find /etc/swiftgate /etc/samba -maxdepth 1 -type f ! -name gateway-state.json -printf "%p %m %T@ %s\n" | sort')" ] \
    || die "the second setup --demo touched files"
[ "$(serve_pid)" = "$pid_before" ] || die "the second setup --demo restarted the daemon"
ok "second setup --demo: nothing touched"
run "console answers" in_root bash -c "exec 3<>/dev/tcp/127.0.0.1/$console_port && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && cat <&3"
grep -q "200" <<<"$out" || die "console /healthz"
sums=$(in_root sh -c 'cd /etc/swiftgate && sha256sum gateway.toml users.json secret.key recovery.key; sha256sum /etc/samba/smb.conf')
cp "$work/pkg/upgrade.deb" "$root/root/swiftgate-upgrade.deb"
run "demo: apt-get install ./swiftgate-upgrade.deb" apt_root install /root/swiftgate-upgrade.deb
[ "$sums" = "$(in_root sh -c 'cd /etc/swiftgate && sha256sum gateway.toml users.json secret.key recovery.key; sha256sum /etc/samba/smb.conf')" ] \
    || die "the upgrade changed the demo's configuration"
for _ in $(seq 60); do
    new_pid=$(serve_pid)
    [ -n "$new_pid" ] && [ "$new_pid" != "$pid_before" ] && in_root swiftgate status >/dev/null 2>&1 && break
    sleep 1
done
{ [ -n "$new_pid" ] && [ "$new_pid" != "$pid_before" ]; } || die "the upgrade did not restart the demo's daemon"
run "demo after the upgrade: same password, same bytes" smb "$smb_port" home demo 'get demo.bin /root/demo.back2'
cmp "$root/root/demo.bin" "$root/root/demo.back2" || die "the demo's file changed in the upgrade"
ok "demo upgraded: configuration kept, daemon restarted (pid $pid_before -> $new_pid)"
root_destroy

###########################################################################
say "gw4: a new gateway from cloud-init/user-data.yaml"
drop_containers
root_create gw4
root_start
run "apt-get update" apt_root update
cp "$deb" "$root/root/swiftgate.deb"
# Debian's cloud images have the default user `debian` (cloud-init's
# users module makes it from the image's cloud.cfg): the console admin.
fill_placeholders cloud-init/user-data.yaml "$work/user-data" \
    KEYSTONE_AUTH_URL="$OS_AUTH_URL" API_USER="$OS_USERNAME" API_PASSWORD=secret \
    TENANT_ID="$SWIFT_AIO_PROJECT_ID" SWIFTGATE_DEB_URL=file:///root/swiftgate.deb \
    ADMIN_UNIX_USER=debian CACHE_SIZE=2G
cloud_init gw4 "$work/user-data"
[ -n "$(serve_pid)" ] || die "no daemon after cloud-init"
in_root id -nG debian | grep -qw swiftgate-admin || die "the default user is not a console admin"
ok "the image's default user is a console admin"
doctor_green
printf 'Carol-pw-4\n' | run "user add sgcarol" in_root swiftgate user add sgcarol
authfile sgcarol Carol-pw-4
run "sgcarol: put and get through \\\\gw4\\home" smb 445 home sgcarol 'put /root/swiftgate.deb pkg.deb; get pkg.deb /root/pkg.back'
cmp "$root/root/swiftgate.deb" "$root/root/pkg.back" || die "gw4 round trip: bytes differ"
grep -q 'swift://home-' "$root/etc/swiftgate/gateway.toml" || die "gw4 is not on Swift"
root_destroy

###########################################################################
say "gw5: a VM with systemd as PID 1 (systemd-nspawn)"
drop_containers
port_free 445 || die "port 445 is taken on this machine: gw5 uses the default SMB port"
root_boot gw5 || die "gw5 did not boot"
ok "booted: systemd $(in_root systemctl is-system-running || true)"
cp "$deb" "$root/root/swiftgate.deb"
run "apt-get install ./swiftgate.deb (under systemd)" apt_root install /root/swiftgate.deb
echo "$out" | grep -E '^swiftgate' | sed 's/^/      /'
[ "$(in_root systemctl is-enabled swiftgate 2>/dev/null || true)" = disabled ] || die "the package enabled the daemon before setup"
ok "installed, not enabled before setup"
in_root systemctl is-active smbd >/dev/null || die "samba's smbd is not running after its install"
openrc secret "$OS_AUTH_URL" > "$root/root/openrc"
chmod 0600 "$root/root/openrc"
gw5_args=(--openrc /root/openrc --store-url 'swift://home-{user}' --cache-size 2G)
run "setup (systemd)" in_root swiftgate setup "${gw5_args[@]}"
echo "$out" | grep '^setup:' | sed 's/^/      /'
grep -q "systemd" <<<"$out" || die "setup did not say the daemon runs under systemd"
grep -qE '^all [0-9]+ checks passed' <<<"$out" || { echo "$out" >&2; die "setup did not end with a green doctor"; }
[ "$(in_root systemctl is-enabled swiftgate)" = enabled ] || die "swiftgate.service not enabled"
[ "$(in_root systemctl is-active swiftgate)" = active ] || die "swiftgate.service not active"
ok "swiftgate.service enabled and active (Type=notify: ready)"
main_pid() { in_root systemctl show -p MainPID --value swiftgate; }
printf 'Dave-pw-5\n' | run "user add sgdave" in_root swiftgate user add sgdave
authfile sgdave Dave-pw-5
head -c 200000 /dev/urandom > "$work/data/dave.bin"
cp "$work/data/dave.bin" "$root/root/dave.bin"
run "sgdave: put and get through \\\\gw5\\home" smb 445 home sgdave 'put /root/dave.bin dave.bin; get dave.bin /root/dave.back'
cmp "$work/data/dave.bin" "$root/root/dave.back" || die "gw5 round trip: bytes differ"
pid_before=$(main_pid)
run "setup again" in_root swiftgate setup "${gw5_args[@]}"
grep -q "nothing to change" <<<"$out" || { echo "$out" >&2; die "the second setup changed something"; }
[ "$(main_pid)" = "$pid_before" ] || die "the second setup restarted swiftgate.service"
ok "second setup: nothing changed, not restarted"
cp "$work/pkg/upgrade.deb" "$root/root/swiftgate-upgrade.deb"
run "upgrade (under systemd)" apt_root install /root/swiftgate-upgrade.deb
for _ in $(seq 60); do
    [ "$(main_pid)" != "$pid_before" ] && [ "$(in_root systemctl is-active swiftgate)" = active ] && break
    sleep 1
done
[ "$(main_pid)" != "$pid_before" ] || die "the upgrade did not restart swiftgate.service"
ok "upgrade restarted swiftgate.service (pid $pid_before -> $(main_pid))"
doctor_green
pid_before=$(main_pid)
in_root kill -KILL "$pid_before"
for _ in $(seq 60); do
    now=$(main_pid)
    [ "$now" != 0 ] && [ "$now" != "$pid_before" ] && in_root swiftgate status >/dev/null 2>&1 && break
    sleep 1
done
{ [ "$now" != 0 ] && [ "$now" != "$pid_before" ]; } || die "systemd did not restart the killed daemon"
ok "daemon killed (-9): systemd restarted it (pid $now)"
run "sgdave after the restart: same bytes" smb 445 home sgdave 'get dave.bin /root/dave.back2'
cmp "$work/data/dave.bin" "$root/root/dave.back2" || die "bytes differ after the restart"
run "systemctl stop swiftgate" in_root systemctl stop swiftgate
[ "$(in_root systemctl show -p Result --value swiftgate)" = success ] || die "the daemon did not stop cleanly"
[ -z "$(in_root awk '$3 == "fuse" || $3 ~ /^fuse\./ { print $2 }' /proc/mounts)" ] || die "homes still mounted after stop"
ok "stopped cleanly, every home unmounted"
root_destroy

say "appliance: all checks passed ($(($(date +%s) - t0)) s)"
