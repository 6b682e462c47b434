#!/usr/bin/env bash
# Write CPU over http and over https, against the floor of each: 1 GiB (four
# 256 MiB random files) copied into a fresh swiftgate mount and flushed to
# the Swift fixture, once straight to its proxy (http) and once through a
# TLS terminator in front of it (stunnel, https, as every provider's Swift
# is reached). Over http the mount sends an MD5 ETag (nothing else guards
# the bytes on the way); over https it does not. In the same round, the
# floors: bindfs (a pass-through FUSE) taking the same copy, and curl PUT of
# the same files over the same transport. Release build.
#
#   bash tests/bench/https.sh [--bin PATH] [--rounds 3] [--state DIR]
#
# Prints, per round and transport, the rate and the CPU seconds per GiB of
# the mount, of curl and of bindfs (utime+stime from /proc or time(1)), and
# stunnel's (the server side of TLS, not the client's). Needs stunnel4,
# bindfs, curl, openssl and time (apt-get install stunnel4 bindfs curl time).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }

BIN=
ROUNDS=3
STATE=${SWIFTGATE_SWIFT_STATE:-/var/tmp/swiftgate-swift-fixture}
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$(realpath "$2"); shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --state) STATE=$2; shift 2 ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done
for t in stunnel4 bindfs curl openssl /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "needs $t (apt-get install stunnel4 bindfs curl openssl time)"; exit 2; }
done
if [ -z "$BIN" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/swiftgate
fi
bash tests/swift/start "$STATE" >/dev/null
# shellcheck disable=SC1091
. "$STATE/env.keystone"
SWIFT=(env -u PYTHONPATH -u PYTHONHOME /usr/bin/swift)

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-httpsbench.XXXXXX")
MP=$WORK/mp
BF=$WORK/bf
cleanup() {
    "$BIN" umount "$MP" >/dev/null 2>&1 || umount -l "$MP" 2>/dev/null || true
    umount "$BF/mp" 2>/dev/null || true
    if [ -s "$WORK/stunnel.pid" ]; then kill "$(cat "$WORK/stunnel.pid")" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MP" "$WORK/src"

# A CA and a leaf for 127.0.0.1 (rustls refuses a self-signed leaf), both
# for this run only; the mount trusts the CA through SSL_CERT_FILE.
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -days 1 -subj /CN=swiftgate-bench-ca
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/leaf.key" -out "$WORK/leaf.csr" -subj /CN=127.0.0.1
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$WORK/ext"
ossl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -out "$WORK/leaf.pem" -days 1 -extfile "$WORK/ext"
chmod 0600 "$WORK"/*.key

HTTP=$("${SWIFT[@]}" stat -v | awk '/StorageURL:/ { print $2 }')
TOKEN=$("${SWIFT[@]}" stat -v | awk '/Auth Token:/ { print $3 }')
if [ -z "$HTTP" ] || [ -z "$TOKEN" ]; then echo "no storage URL or token from the fixture"; exit 1; fi
proxy=${HTTP#http://}
proxy=${proxy%%/*}
TLS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HTTPS=https://127.0.0.1:$TLS_PORT/${HTTP#http://*/}
cat > "$WORK/stunnel.conf" <<EOF
pid = $WORK/stunnel.pid
foreground = no
[swift]
accept = 127.0.0.1:$TLS_PORT
connect = $proxy
cert = $WORK/leaf.pem
key = $WORK/leaf.key
EOF
stunnel4 "$WORK/stunnel.conf"
for _ in $(seq 50); do [ -s "$WORK/stunnel.pid" ] && break; sleep 0.1; done
[ -s "$WORK/stunnel.pid" ] || { echo "stunnel did not start"; exit 1; }
printf 'X-Auth-Token: %s\n' "$TOKEN" > "$WORK/token"
chmod 0600 "$WORK/token"
head -c 32 /dev/urandom | base64 > "$WORK/pass"
chmod 0600 "$WORK/pass"
echo "preparing 1 GiB..."
for i in 1 2 3 4; do head -c 256M /dev/urandom > "$WORK/src/f$i"; done

HZ=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
tls_cpu() { cpu "$(cat "$WORK/stunnel.pid")"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
per_gib() { echo "($2 - $1) / $HZ" | bc -l; }
rate() { echo "1024 / ($2 - $1)" | bc -l; }
now() { date +%s.%N; }
declare -A SUM
add() { SUM[$1]=$(echo "${SUM[$1]:-0} + $2" | bc -l); }

printf '%-7s %-10s %-6s %8s %10s %9s\n' round what via "MiB/s" "CPU-s/GiB" stunnel
for r in $(seq "$ROUNDS"); do
    # The FUSE floor: the same copy through bindfs onto the same disk.
    mkdir -p "$BF/src" "$BF/mp"
    bindfs "$BF/src" "$BF/mp"
    bpid=$(pgrep -f "bindfs $BF/src" | head -n 1)
    drop_caches
    c0=$(cpu "$bpid"); t0=$(now)
    cp -r "$WORK/src/." "$BF/mp/"
    sync
    t1=$(now); c1=$(cpu "$bpid")
    umount "$BF/mp"
    rm -rf "$BF"
    b=$(per_gib "$c0" "$c1"); add bindfs "$b"
    printf '%-7s %-10s %-6s %8.0f %10.2f\n' "$r" bindfs - "$(rate "$t0" "$t1")" "$b"
    for via in http https; do
        url=$HTTP
        [ "$via" = https ] && url=$HTTPS
        tag=httpsbench$$-$r-$via
        sg() { env OS_STORAGE_URL="$url" SSL_CERT_FILE="$WORK/ca.pem" "$BIN" "$@"; }
        sg mkfs "swift://$tag" --passphrase-file "$WORK/pass" >/dev/null
        sg mount "swift://$tag" "$MP" --cache-dir "$WORK/cache" --passphrase-file "$WORK/pass" \
            --cache-size 8G --dirty-limit 4G
        pid=$("$BIN" stat --json "$MP" | awk -F'[:,]' '/^  "pid":/ { gsub(/ /, "", $2); print $2 }')
        drop_caches
        c0=$(cpu "$pid"); s0=$(tls_cpu); t0=$(now)
        cp -r "$WORK/src/." "$MP/"
        "$BIN" ctl "$MP" flush >/dev/null
        t1=$(now); c1=$(cpu "$pid"); s1=$(tls_cpu)
        "$BIN" umount "$MP" >/dev/null
        rm -rf "$WORK/cache"
        m=$(per_gib "$c0" "$c1"); add "sg.$via" "$m"
        printf '%-7s %-10s %-6s %8.0f %10.2f %9.2f\n' "$r" swiftgate "$via" "$(rate "$t0" "$t1")" "$m" "$(per_gib "$s0" "$s1")"
        # The socket floor: curl PUT of the same files, same transport.
        curl -sf -H @"$WORK/token" --cacert "$WORK/ca.pem" -X PUT "$url/$tag-curl"
        drop_caches
        s0=$(tls_cpu)
        read -r cu cs ce < <({ /usr/bin/time -f '%U %S %e' bash -c \
            'for f in "$1"/*; do curl -sf -H @"$2" --cacert "$3" -T "$f" "$4/${f##*/}" >/dev/null || exit 1; done' \
            _ "$WORK/src" "$WORK/token" "$WORK/ca.pem" "$url/$tag-curl"; } 2>&1)
        s1=$(tls_cpu)
        c=$(echo "$cu + $cs" | bc -l); add "curl.$via" "$c"
        printf '%-7s %-10s %-6s %8.0f %10.2f %9.2f\n' "$r" curl "$via" "$(echo "1024 / $ce" | bc -l)" "$c" "$(per_gib "$s0" "$s1")"
        "${SWIFT[@]}" delete "$tag" >/dev/null 2>&1 || true
        "${SWIFT[@]}" delete "$tag-curl" >/dev/null 2>&1 || true
    done
done
echo
echo "mean CPU-s per GiB written over $ROUNDS rounds (floor = bindfs + curl over the same transport):"
for via in http https; do
    f=$(echo "(${SUM[bindfs]} + ${SUM[curl.$via]}) / $ROUNDS" | bc -l)
    s=$(echo "${SUM[sg.$via]} / $ROUNDS" | bc -l)
    printf '  %-6s floor %5.2f  swiftgate %5.2f  (%.2fx the floor)\n' "$via" "$f" "$s" "$(echo "$s / $f" | bc -l)"
done
