#!/usr/bin/env bash
# Gateway benchmark: smbclient put/get of one large file and of many small
# files into a swiftgate home, next to the same smbd sharing a plain
# directory on the same disk; and the Samba hook's connect times. Release
# build, local store (the Swift figures are in tests/bench/swift.sh).
#
#   bash tests/bench/gateway.sh [--size 1G] [--files 5000] [--only large|small]
#
# Two baselines: "plain" is a share of a plain directory with Samba's
# defaults; "plain+vfs" is the same directory exported with the home share's
# VFS modules (catia recycle fruit streams_xattr shadow_copy2 acl_xattr,
# the recycle bin's settings too), so its ratio measures the filesystem
# alone and the other one also Samba's per-file cost of those modules. "bindfs+vfs" is that share again through bindfs, a minimal
# passthrough FUSE filesystem in C (installed if missing): the floor of
# FUSE itself under smbd's calls.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }
SIZE_MB=1024
FILES=5000
ONLY=all
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE_MB=$(( $(numfmt --from=iec "$2") / 1048576 )); shift 2 ;;
        --files) FILES=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done
bash provisioning/deps.sh
cargo build --release --quiet
BIN=$PWD/target/release/swiftgate
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-gwbench.XXXXXX")
chmod 755 "$WORK"
CFG=$WORK/gateway.toml
USER_NAME=sgbench$$
PW=bench-pw-$$
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    mountpoint -q "$WORK/bmp" && umount "$WORK/bmp"
    if [ -s "$WORK/samba/pid/smbd.pid" ]; then
        kill "$(cat "$WORK/samba/pid/smbd.pid")" 2>/dev/null || true
    fi
    if [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null; then
        wait "$DPID" 2>/dev/null || true
    fi
    "$BIN" user remove "$USER_NAME" --purge --config "$CFG" >/dev/null 2>&1 || true
    userdel "$USER_NAME" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK"/samba/{private,lock,state,cache,pid,ncalrpc,log} "$WORK/plain" "$WORK/plainvfs" "$WORK/bsrc" "$WORK/bmp" "$WORK/src/small" "$WORK/out"
cat > "$CFG" <<EOT
[store]
url = "local://$WORK/homes/{user}"
[mounts]
root = "$WORK/home"
[cache]
dir = "$WORK/cache"
size = "8G"
dirty_limit = "4G"
[users]
db = "$WORK/users.json"
key_file = "$WORK/secret.key"
[control]
socket = "$WORK/gw.sock"
[samba]
config = "$WORK/smb.conf"
EOT
# shellcheck source=tests/bench/smbdirs.sh
. tests/bench/smbdirs.sh
samba_dir_args "$WORK"
"$BIN" samba-config --config "$CFG" --global "smb ports = $port" --global "interfaces = lo" \
    --global "bind interfaces only = yes" --global "log file = $WORK/samba/log/log.%m" "${SAMBA_DIR_ARGS[@]}" > "$WORK/smb.conf"
# The home share's settings that shape smbd's work per file.
HOME_VFS=$(sed -n '/^\[home\]/,$p' "$WORK/smb.conf" | grep -E '^ *(vfs objects|acl_xattr|recycle:[a-z_]+|create mask|directory mask) ')
cat >> "$WORK/smb.conf" <<EOT

[plain]
   path = $WORK/plain
   valid users = $USER_NAME
   read only = no

[plainvfs]
   path = $WORK/plainvfs
   valid users = $USER_NAME
   read only = no
$HOME_VFS

[bindfs]
   path = $WORK/bmp
   valid users = $USER_NAME
   read only = no
$HOME_VFS
EOT
"$BIN" serve --config "$CFG" > "$WORK/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 1 100); do [ -S "$WORK/gw.sock" ] && break; sleep 0.1; done
echo "$PW" | "$BIN" user add "$USER_NAME" --config "$CFG" >/dev/null
command -v bindfs >/dev/null || apt-get install -y -q bindfs >/dev/null
chown "$USER_NAME" "$WORK/plain" "$WORK/plainvfs" "$WORK/bsrc"
bindfs --multithreaded -o allow_other "$WORK/bsrc" "$WORK/bmp"
smbd -D -s "$WORK/smb.conf"
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

echo "preparing a ${SIZE_MB} MiB file and $FILES small files (1-64 KiB)..."
head -c $((SIZE_MB * 1048576)) /dev/urandom > "$WORK/src/big.bin"
python3 - "$WORK/src/small" "$FILES" <<'EOT'
import os, random, sys
rnd = random.Random(7)
for i in range(int(sys.argv[2])):
    with open(os.path.join(sys.argv[1], "f%05d.dat" % i), "wb") as f:
        f.write(os.urandom(rnd.randint(1024, 65536)))
EOT
now() { date +%s.%N; }
# Before each timed step: the previous step's writes reach their storage
# (sync for the plain shares; for the home, the uploads the daemon does in
# the background, as the kernel's writeback is for a plain directory), then
# cold caches.
settle() {
    for _ in $(seq 1200); do
        "$BIN" status --json --config "$CFG" | python3 -c '
import json, sys
r = json.load(sys.stdin)
h = r["homes"] if isinstance(r, dict) else r
sys.exit(0 if all(x["cache"]["dirty_blocks"] == 0 and x["cache"]["uploads_in_flight"] == 0 for x in h) else 1)' && return 0
        sleep 0.1
    done
}
drop() { settle; sync; echo 3 > /proc/sys/vm/drop_caches; }
smb() { smbclient "//127.0.0.1/$1" -p "$port" -U "$USER_NAME%$PW" -c "$2" >/dev/null; }
declare -A T
for share in plain plainvfs bindfs home; do
    if [ "$ONLY" != small ]; then
        drop; t0=$(now); smb $share "lcd $WORK/src; put big.bin"; t1=$(now); T[$share.put]=$(echo "$t1 - $t0" | bc -l)
        drop; t0=$(now); smb $share "lcd $WORK/out; get big.bin"; t1=$(now); T[$share.get]=$(echo "$t1 - $t0" | bc -l)
        cmp -s "$WORK/src/big.bin" "$WORK/out/big.bin" || { echo "MISMATCH on $share"; exit 1; }
        rm -f "$WORK/out/big.bin"
        # Again, hot: what a second reader of the file gets from the page
        # cache (swiftgate keeps its pages across opens).
        t0=$(now); smb $share "lcd $WORK/out; get big.bin"; t1=$(now); T[$share.get2]=$(echo "$t1 - $t0" | bc -l)
        rm -f "$WORK/out/big.bin"
    fi
    if [ "$ONLY" != large ]; then
        drop; t0=$(now); smb $share "mkdir s; cd s; lcd $WORK/src/small; prompt off; mput *"; t1=$(now); T[$share.mput]=$(echo "$t1 - $t0" | bc -l)
        mkdir -p "$WORK/out/s-$share"
        drop; t0=$(now); smb $share "cd s; lcd $WORK/out/s-$share; prompt off; mget *"; t1=$(now); T[$share.mget]=$(echo "$t1 - $t0" | bc -l)
        # As many names as ls would list (not the hidden ones), one dot each.
        got=$(find "$WORK/out/s-$share" -mindepth 1 -maxdepth 1 ! -name '.*' -printf . | wc -c)
        [ "$got" = "$FILES" ] || { echo "missing files on $share"; exit 1; }
    fi
done
# Hook times: cold = the home is not mounted but its metadata is cached
# locally (a returning user); warm = already mounted (another session).
"$BIN" hook disconnect "$USER_NAME" --config "$CFG" >/dev/null 2>&1 || true
python3 - "$WORK/gw.sock" "$USER_NAME" <<'EOT'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall((json.dumps({"op": "unmount", "user": sys.argv[2]}) + "\n").encode()); s.recv(4096)
EOT
t0=$(now); "$BIN" hook connect "$USER_NAME" --config "$CFG"; t1=$(now); COLD=$(echo "($t1 - $t0) * 1000" | bc -l)
t0=$(now); for _ in $(seq 1 20); do "$BIN" hook connect "$USER_NAME" --config "$CFG"; done; t1=$(now)
WARM=$(echo "($t1 - $t0) * 1000 / 20" | bc -l)

rate() { echo "scale=0; $1 / $2" | bc -l; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
row() { # label, key, amount
    printf '%-32s %7s %9s %10s %9s %6s %9s %10s\n' "$1" "$(rate "$3" "${T[plain.$2]}")" "$(rate "$3" "${T[plainvfs.$2]}")" \
        "$(rate "$3" "${T[bindfs.$2]}")" "$(rate "$3" "${T[home.$2]}")" "$(ratio "${T[plain.$2]}" "${T[home.$2]}")" \
        "$(ratio "${T[plainvfs.$2]}" "${T[home.$2]}")" "$(ratio "${T[plain.$2]}" "${T[bindfs.$2]}")"
}
echo
echo "ratio: swiftgate against plain; ratio+vfs: against plain+vfs; bindfs: bindfs+vfs against plain"
printf '%-32s %7s %9s %10s %9s %6s %9s %10s\n' workload plain plain+vfs bindfs+vfs swiftgate ratio ratio+vfs "bindfs"
if [ "$ONLY" != small ]; then
    row "put ${SIZE_MB} MiB file (MiB/s)" put "$SIZE_MB"
    row "get ${SIZE_MB} MiB file (MiB/s)" get "$SIZE_MB"
    row "get it again, hot (MiB/s)" get2 "$SIZE_MB"
fi
if [ "$ONLY" != large ]; then
    row "put $FILES small files (files/s)" mput "$FILES"
    row "get $FILES small files (files/s)" mget "$FILES"
fi
printf 'hook connect, cold (mount with cached metadata): %.0f ms\n' "$COLD"
printf 'hook connect, warm (already mounted), mean of 20: %.1f ms\n' "$WARM"
