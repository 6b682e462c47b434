#!/usr/bin/env bash
# The whole gateway on this machine, on the local object store (no cloud
# account needed): installs FUSE and Samba if missing, builds swiftgate,
# starts the daemon and smbd (with the web console), creates the user
# "demo" and a console admin "sgadmin", and prints how to connect. Run again to restart it; `--stop` stops it.
#
#   bash provisioning/demo.sh [--stop]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (it mounts FUSE filesystems and runs smbd)"; exit 1; }

DEMO=${SWIFTGATE_DEMO_DIR:-/var/lib/swiftgate-demo}
CFG=$DEMO/gateway.toml
BIN=$PWD/target/release/swiftgate

stop() {
    for p in "$DEMO/samba/pid/smbd.pid" "$DEMO/daemon.pid"; do
        pid=$(cat "$p" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$p"
    done
}
if [ "${1:-}" = "--stop" ]; then
    stop
    echo "demo stopped (data kept in $DEMO)"
    exit 0
fi

say() { echo "==> $*"; }

say "checking the packages the gateway needs (FUSE, Samba); a first run installs them, which takes a few minutes"
bash provisioning/deps.sh
say "building swiftgate (release; the first build takes several minutes)"
cargo build --release
say "stopping a previous demo, if any"
stop
mkdir -p "$DEMO"/samba/{private,lock,state,cache,pid,ncalrpc,log}
# smbd's sessions run as the user: they must reach the mountpoints.
mkdir -p /srv/swiftgate/home && chmod 755 /srv/swiftgate /srv/swiftgate/home

CONSOLE_LISTEN=${SWIFTGATE_DEMO_CONSOLE:-127.0.0.1:8443}
port=445
if (exec 3<>/dev/tcp/127.0.0.1/445) 2>/dev/null; then port=4450; fi

say "writing $CFG and the Samba configuration (SMB port $port)"
cat > "$CFG" <<EOF
# The demo gateway: homes on the local store under $DEMO/homes.
[store]
url = "local://$DEMO/homes/{user}"
[mounts]
root = "/srv/swiftgate/home"
idle_unmount = "15m"
[cache]
dir = "$DEMO/cache"
size = "4G"
dirty_limit = "1G"
[users]
db = "$DEMO/users.json"
key_file = "$DEMO/secret.key"
[control]
socket = "/run/swiftgate/demo.sock"
[samba]
config = "$DEMO/smb.conf"
[console]
listen = "$CONSOLE_LISTEN"
audit_log = "$DEMO/audit.log"
tokens_file = "$DEMO/api-tokens.json"
EOF

"$BIN" samba-config --config "$CFG" \
    --global "smb ports = $port" \
    --global "private dir = $DEMO/samba/private" \
    --global "lock directory = $DEMO/samba/lock" \
    --global "state directory = $DEMO/samba/state" \
    --global "cache directory = $DEMO/samba/cache" \
    --global "pid directory = $DEMO/samba/pid" \
    --global "ncalrpc dir = $DEMO/samba/ncalrpc" \
    --global "log file = $DEMO/samba/log/log.%m" > "$DEMO/smb.conf"
testparm -s "$DEMO/smb.conf" >/dev/null 2>&1 || { testparm -s "$DEMO/smb.conf"; exit 1; }

# The console logs in through PAM (service "swiftgate"), members of the
# group swiftgate-admin only: a Unix account for it with a generated
# password.
[ -e /etc/pam.d/swiftgate ] || install -m 644 provisioning/pam.d/swiftgate /etc/pam.d/swiftgate
getent group swiftgate-admin >/dev/null || groupadd --system swiftgate-admin
if ! id sgadmin >/dev/null 2>&1; then
    say "creating the console admin account sgadmin (group swiftgate-admin)"
    useradd --no-create-home --shell /usr/sbin/nologin --groups swiftgate-admin sgadmin
fi
usermod -aG swiftgate-admin sgadmin
if [ ! -s "$DEMO/admin-password" ]; then
    (umask 077; head -c 12 /dev/urandom | base64 | tr -d '/+=' > "$DEMO/admin-password")
    # chpasswd reads stdin: the password never appears in argv.
    printf 'sgadmin:%s\n' "$(cat "$DEMO/admin-password")" | chpasswd
fi
chmod 600 "$DEMO/admin-password"
adminpw=$(cat "$DEMO/admin-password")

say "starting the gateway daemon (log: $DEMO/daemon.log)"
SWIFTGATE_LOG=swiftgate=info setsid "$BIN" serve --config "$CFG" > "$DEMO/daemon.log" 2>&1 < /dev/null &
echo $! > "$DEMO/daemon.pid"
for _ in $(seq 1 100); do [ -S /run/swiftgate/demo.sock ] && break; sleep 0.1; done
[ -S /run/swiftgate/demo.sock ] || { cat "$DEMO/daemon.log"; exit 1; }

if ! "$BIN" user list --config "$CFG" | grep -q '^demo .*active'; then
    [ -s "$DEMO/demo-password" ] || (head -c 9 /dev/urandom | base64 | tr -d '/+=' > "$DEMO/demo-password")
    chmod 600 "$DEMO/demo-password"
    say "creating the user demo and its home filesystem"
    "$BIN" user add demo --config "$CFG" < "$DEMO/demo-password"
fi
pw=$(cat "$DEMO/demo-password")

say "starting smbd"
smbd -D -s "$DEMO/smb.conf"
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
# Prove it end to end before saying it works. The greeting is put there
# once: a later start must not overwrite what the user made of it.
say "checking the share end to end"
smb() { smbclient //127.0.0.1/home -p "$port" -U "demo%$pw" -c "$1"; }
listing=$(smb "ls hello.txt" 2>&1 || true)
case $listing in
*NT_STATUS_NO_SUCH_FILE*)
    echo "hello from swiftgate" > "$DEMO/hello.txt"
    smb "lcd $DEMO; put hello.txt" >/dev/null ;;
esac
smb "ls" >/dev/null

host=$(hostname -I 2>/dev/null | awk '{print $1}')
console=$(grep -o 'console https\?://[^ )]*' "$DEMO/daemon.log" | tail -1 | cut -d' ' -f2)
cat <<EOF

swiftgate gateway demo is running (local object store in $DEMO/homes).

  share:     \\\\${host:-127.0.0.1}\\home$( [ "$port" = 445 ] || echo "   (SMB port $port)")
  user:      demo
  password:  $pw

console: ${console:-http://$CONSOLE_LISTEN/}
  login:     sgadmin / $adminpw
             (from another machine: ssh -L 8443:$CONSOLE_LISTEN root@${host:-gateway}, then http://127.0.0.1:8443/)

  Windows:   net use H: \\\\${host:-127.0.0.1}\\home /user:demo $pw
  Linux:     smbclient //127.0.0.1/home -p $port -U demo%$pw
  status:    $BIN status --config $CFG
  more users: $BIN user add NAME --config $CFG
  logs:      $DEMO/daemon.log, $DEMO/samba/log/
  stop:      bash provisioning/demo.sh --stop
EOF
