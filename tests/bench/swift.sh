#!/usr/bin/env bash
# Swift benchmark: swiftgate against python-swiftclient (`swift upload` /
# `swift download`, default concurrency) and rclone (`rclone copy`, default
# flags; large files only) moving the same data to and from the same Swift.
# Release build. Needs the fixture (started if absent).
#
#   bash tests/bench/swift.sh [--large 1G] [--files 20000] [--state DIR]
#                             [--bin PATH] [--only large|small]
#
# --bin: use this swiftgate binary instead of building target/release.
# --only: run one half of the benchmark.
#
# Upload: swiftgate = copy into a fresh mount, then `umount` (which waits
# until the store has everything); swift = `swift upload`; rclone = `rclone
# copy` to a new container. Download: swiftgate = copy out of a mount with an
# empty cache (every block from Swift); swift = `swift download`; rclone =
# `rclone copy` to a new directory. Large = 4 random files; small = N files
# of 1-32 KiB (random sizes, text-like content).
#
# Besides the rates, each transfer's CPU: the client's (the swiftgate mount
# process: utime+stime from /proc, read after `ctl flush` and before umount
# for uploads; swift/rclone: /usr/bin/time of the client), the fixture's
# (every process of the Swift + Keystone fixture, by server: proxy, object,
# the rest of Swift, Keystone), and the requests the Swift proxy logged for
# the benchmark's containers.
#
# The floor, large files only, in the same run: what moving the bytes costs
# with no work on them, so CPU per GiB has something to be read against.
# FUSE: bindfs (a pass-through FUSE) over a plain directory, the same copy in
# and out, bindfs's CPU. Socket: curl PUT and GET of the same files to the
# same Swift, curl's CPU. A FUSE gateway to Swift needs both: their sum is
# the least any such daemon spends per GiB on this machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }

LARGE_MB=1024
FILES=20000
STATE=${SWIFTGATE_SWIFT_STATE:-/var/tmp/swiftgate-swift-fixture}
BIN=
KINDS="large small"
while [ $# -gt 0 ]; do
    case "$1" in
        --large) LARGE_MB=$(( $(numfmt --from=iec "$2") / 1048576 )); shift 2 ;;
        --files) FILES=$2; shift 2 ;;
        --state) STATE=$2; shift 2 ;;
        --bin) BIN=$(realpath "$2"); shift 2 ;;
        --only)
            case "$2" in large|small) KINDS=$2 ;; *) echo "--only takes large or small"; exit 2 ;; esac
            shift 2 ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done

if [ -z "$BIN" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/swiftgate
fi
[ -x "$BIN" ] || { echo "$BIN is not an executable"; exit 2; }
bash tests/swift/start "$STATE" >/dev/null
STATE=$(cd "$STATE" && pwd -P)    # as the fixture's command lines spell it
PROXY_LOG=$STATE/log/proxy-server.log
# The swift CLI must not see ST_* (it would pick tempauth): env.keystone.
# shellcheck disable=SC1091
. "$STATE/env.keystone"
SWIFT=(env -u PYTHONPATH -u PYTHONHOME /usr/bin/swift)
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "needs $TIME (apt-get install time)"; exit 2; }

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-swiftbench.XXXXXX")
MP=$WORK/mp
TAG=bench$$
RCLONE=
if command -v rclone >/dev/null; then
    RCLONE=$(command -v rclone)
    # rclone's remote "sgbench" takes the OS_* variables (Keystone v3) from
    # env.keystone: no secret on any command line, no config file.
    : > "$WORK/rclone.conf"
    export RCLONE_CONFIG=$WORK/rclone.conf RCLONE_CONFIG_SGBENCH_TYPE=swift RCLONE_CONFIG_SGBENCH_ENV_AUTH=true
else
    echo "rclone not installed (apt-get install rclone): no rclone rows"
fi
cleanup() {
    "$BIN" umount "$MP" >/dev/null 2>&1 || umount -l "$MP" 2>/dev/null || true
    umount "$WORK/bf" 2>/dev/null || true
    "${SWIFT[@]}" delete "$TAG-curl-large" >/dev/null 2>&1 || true
    for k in large small; do
        for t in cli sg rc; do
            "${SWIFT[@]}" delete "$TAG-$t-$k" >/dev/null 2>&1 || true
        done
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MP" "$WORK/large" "$WORK/small"
echo benchmark-passphrase > "$WORK/pass"

now() { date +%s.%N; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
secs() { echo "$2 - $1" | bc -l; }
HZ=$(getconf CLK_TCK)
declare -A T CC SC RQ

# /proc/PID/stat after "pid (comm) ": [11] utime [12] stime [13] cutime
# [14] cstime, in clock ticks. comm may hold spaces: split after the last ")".
stat_fields() { # pid -> F
    local st
    read -r st 2>/dev/null < "/proc/$1/stat" || return 1
    st=${st##*) }
    read -ra F <<< "$st"
}
pid_cpu() { # pid -> utime+stime, ticks
    stat_fields "$1" || { echo "process $1 is gone" >&2; return 1; }
    echo $(( F[11] + F[12] ))
}
# Every process of the fixture (its command lines name STATE_DIR), by part:
# Swift's proxy; object server; container + account servers and the
# container-updater; both Keystones. Children they reaped count too
# (cutime/cstime).
fixture_cpu() { # -> "proxy object container keystone", ticks
    local d args cmd t i
    local -a sum=(0 0 0 0)
    for d in /proc/[0-9]*; do
        mapfile -d '' args 2>/dev/null < "$d/cmdline" || continue
        cmd=${args[*]:-}
        case "$cmd" in *"$STATE/"*) ;; *) continue ;; esac
        stat_fields "${d#/proc/}" || continue
        t=$(( F[11] + F[12] + F[13] + F[14] ))
        case "$cmd" in
            *proxy-server*) i=0 ;;
            *object-server*) i=1 ;;
            *keystone*) i=3 ;;
            *) i=2 ;;
        esac
        sum[i]=$(( sum[i] + t ))
    done
    echo "${sum[*]}"
}
log_size() { stat -c %s "$PROXY_LOG"; }
# Requests the proxy logged since byte OFFSET for this run's containers:
# "total (METHOD n ...)".
requests() { # offset
    tail -c +"$(( $1 + 1 ))" "$PROXY_LOG" | awk -v tag="/$TAG-" '
        $2 == "proxy-server:" && $7 ~ /^\/v1\// && index($7, tag) { n++; m[$6]++ }
        END { s = ""; for (k in m) s = s sprintf(" %s %d", k, m[k]); printf "%d (%s)", n, substr(s, 2) }'
}

# One measured transfer: begin (caches already dropped), run it, end KEY
# with the client's CPU seconds.
begin() {
    read -ra S0 < <(fixture_cpu)
    L0=$(log_size)
    t0=$(now)
}
end() { # key client-cpu-seconds
    local t1 i
    local -a s1
    t1=$(now)
    T[$1]=$(secs "$t0" "$t1")
    read -ra s1 < <(fixture_cpu)
    CC[$1]=$2
    for i in 0 1 2 3; do
        SC[$1.$i]=$(echo "(${s1[i]} - ${S0[i]}) / $HZ" | bc -l)
    done
    RQ[$1]=$(requests "$L0")
}
timed() { # key dir cmd... (cmd runs in dir; its CPU from time(1))
    local key=$1 dir=$2; shift 2
    begin
    (cd "$dir" && exec "$TIME" -f '%U %S' -o "$WORK/time" "$@" >/dev/null)
    end "$key" "$(awk 'END { print $1 + $2 }' "$WORK/time")"
}
sg_pid() { "$BIN" stat --json "$MP" | awk -F'[:,]' '/^  "pid":/ { gsub(/ /, "", $2); print $2 }'; }

echo "preparing data (${KINDS})..."
case " $KINDS " in *" large "*)
    for i in 1 2 3 4; do
        head -c $((LARGE_MB * 1048576 / 4)) /dev/urandom > "$WORK/large/big$i.bin"
    done ;;
esac
case " $KINDS " in *" small "*)
    /usr/bin/python3 - "$WORK/small" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(5000)]
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 200))
    os.makedirs(d, exist_ok=True)
    size = rnd.randint(1024, 32768)
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words) + b" "
    with open(os.path.join(d, "file%05d.txt" % i), "wb") as f:
        f.write(out[:size])
EOF
    ;;
esac
SMALL_MB=$(du -sm "$WORK/small" | cut -f1)

mount_sg() { # container cache
    "$BIN" mount "swift://$1" "$MP" --cache-dir "$WORK/$2" --passphrase-file "$WORK/pass" \
        --cache-size 8G --dirty-limit 4G
}

for kind in $KINDS; do
    echo "== $kind: swift upload / download"
    drop_caches
    timed "cli.$kind.up" "$WORK/$kind" "${SWIFT[@]}" upload "$TAG-cli-$kind" .
    mkdir -p "$WORK/out-cli-$kind"
    drop_caches
    timed "cli.$kind.down" "$WORK/out-cli-$kind" "${SWIFT[@]}" download "$TAG-cli-$kind"
    rm -rf "$WORK/out-cli-$kind"

    if [ "$kind" = large ] && [ -n "$RCLONE" ]; then
        echo "== $kind: rclone copy up / down"
        drop_caches
        timed "rc.$kind.up" "$WORK" "$RCLONE" copy "$WORK/$kind" "sgbench:$TAG-rc-$kind"
        drop_caches
        timed "rc.$kind.down" "$WORK" "$RCLONE" copy "sgbench:$TAG-rc-$kind" "$WORK/out-rc-$kind"
        diff -r -q "$WORK/$kind" "$WORK/out-rc-$kind" >/dev/null || { echo "MISMATCH after the rclone round trip"; exit 1; }
        rm -rf "$WORK/out-rc-$kind"
    fi

    if [ "$kind" = large ] && command -v bindfs >/dev/null; then
        echo "== $kind: floor: bindfs copy in / out"
        mkdir -p "$WORK/bf-src" "$WORK/bf" "$WORK/out-bf"
        bindfs "$WORK/bf-src" "$WORK/bf"
        bpid=$(pgrep -n -x bindfs)
        drop_caches
        c0=$(pid_cpu "$bpid")
        begin
        cp -r "$WORK/$kind/." "$WORK/bf/"
        sync -f "$WORK/bf"
        end "fuse.$kind.up" "$(echo "($(pid_cpu "$bpid") - $c0) / $HZ" | bc -l)"
        drop_caches
        c0=$(pid_cpu "$bpid")
        begin
        cp -r "$WORK/bf/." "$WORK/out-bf/"
        end "fuse.$kind.down" "$(echo "($(pid_cpu "$bpid") - $c0) / $HZ" | bc -l)"
        umount "$WORK/bf"
        rm -rf "$WORK/bf-src" "$WORK/out-bf"
    elif [ "$kind" = large ]; then
        echo "bindfs not installed (apt-get install bindfs): no FUSE floor"
    fi
    if [ "$kind" = large ]; then
        echo "== $kind: floor: curl PUT / GET"
        # The token goes in a header file, not on curl's command line.
        auth=$("${SWIFT[@]}" auth | tr -d "'\"")
        SURL=$(sed -n 's/^export OS_STORAGE_URL=//p' <<< "$auth")
        ( umask 077; sed -n 's/^export OS_AUTH_TOKEN=/X-Auth-Token: /p' <<< "$auth" > "$WORK/curl-headers" )
        unset auth
        CURL=(curl -sSf -H "@$WORK/curl-headers")
        "${CURL[@]}" -X PUT "$SURL/$TAG-curl-$kind" >/dev/null
        mkdir -p "$WORK/out-curl"
        drop_caches
        timed "curl.$kind.up" "$WORK/$kind" env U="$SURL/$TAG-curl-$kind" bash -c \
            'for f in *; do "$@" -T "$f" "$U/$f" >/dev/null || exit 1; done' _ "${CURL[@]}"
        drop_caches
        timed "curl.$kind.down" "$WORK/out-curl" \
            env U="$SURL/$TAG-curl-$kind" S="$WORK/$kind" bash -c \
            'for f in "$S"/*; do f=${f##*/}; "$@" -o "$f" "$U/$f" || exit 1; done' _ "${CURL[@]}"
        diff -r -q "$WORK/$kind" "$WORK/out-curl" >/dev/null || { echo "MISMATCH after the curl round trip"; exit 1; }
        rm -rf "$WORK/out-curl"
    fi

    echo "== $kind: swiftgate write+umount / cold read"
    "$BIN" mkfs "swift://$TAG-sg-$kind" --passphrase-file "$WORK/pass" >/dev/null
    mount_sg "$TAG-sg-$kind" "cache-$kind-1"
    pid=$(sg_pid)
    drop_caches
    c0=$(pid_cpu "$pid")
    begin
    cp -r "$WORK/$kind/." "$MP/"
    "$BIN" ctl "$MP" flush >/dev/null
    c1=$(pid_cpu "$pid")    # umount ends the process
    "$BIN" umount "$MP" >/dev/null
    end "sg.$kind.up" "$(echo "($c1 - $c0) / $HZ" | bc -l)"

    mount_sg "$TAG-sg-$kind" "cache-$kind-2"
    pid=$(sg_pid)
    mkdir -p "$WORK/out-sg-$kind"
    drop_caches
    c0=$(pid_cpu "$pid")
    begin
    cp -r "$MP/." "$WORK/out-sg-$kind/"
    c1=$(pid_cpu "$pid")
    end "sg.$kind.down" "$(echo "($c1 - $c0) / $HZ" | bc -l)"
    diff -r -q "$WORK/$kind" "$WORK/out-sg-$kind" >/dev/null || { echo "MISMATCH after the round trip"; exit 1; }
    "$BIN" umount "$MP" >/dev/null
    rm -rf "$WORK/out-sg-$kind" "$WORK/cache-$kind-1" "$WORK/cache-$kind-2"
done

rate() { echo "scale=0; $1 / $2" | bc -l; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
row() { # label cli-key sg-key unit-count
    printf '%-44s %12s %12s %7s\n' "$1" "$(rate "$4" "${T[$2]}")" "$(rate "$4" "${T[$3]}")" "$(ratio "${T[$2]}" "${T[$3]}")"
}
echo
echo "Swift on loopback; swiftgate with AES-256-GCM + zstd, 4 MiB blocks."
printf '%-44s %12s %12s %7s\n' workload "swift CLI" swiftgate ratio
for kind in $KINDS; do
    if [ "$kind" = large ]; then
        row "upload $LARGE_MB MiB, 4 files (MiB/s)" cli.large.up sg.large.up "$LARGE_MB"
        row "download $LARGE_MB MiB, cold (MiB/s)" cli.large.down sg.large.down "$LARGE_MB"
    else
        row "upload $FILES files, $SMALL_MB MiB (files/s)" cli.small.up sg.small.up "$FILES"
        row "download $FILES files, cold (files/s)" cli.small.down sg.small.down "$FILES"
    fi
done
echo "(ratio = swift CLI time / swiftgate time; above 1 means swiftgate is faster)"

echo
echo "CPU seconds per GiB moved. client: the swiftgate mount process / swift / rclone;"
echo "Swift: proxy, object server, ctr = container+account servers+updater, total;"
echo "keystone (not in total: the swift CLI and rclone log in on every run)."
echo "requests: proxy log lines for this run's containers."
printf '%-22s %6s %6s %6s %6s %6s %6s %6s  %s\n' transfer "MiB/s" client proxy object ctr total keyst "requests"
per_gib() { echo "$1 * 1024 / $2" | bc -l; }
for kind in $KINDS; do
    if [ "$kind" = large ]; then mb=$LARGE_MB; else mb=$SMALL_MB; fi
    for dir in up down; do
        for t in sg cli rc fuse curl; do
            k=$t.$kind.$dir
            [ -n "${T[$k]:-}" ] || continue
            case $t in
                sg) name=swiftgate ;; cli) name="swift CLI" ;; rc) name=rclone ;;
                fuse) name="floor bindfs" ;; curl) name="floor curl" ;;
            esac
            printf '%-22s %6.0f %6.2f %6.2f %6.2f %6.2f %6.2f %6.2f  %s\n' "$kind $dir $name" \
                "$(echo "$mb / ${T[$k]}" | bc -l)" "$(per_gib "${CC[$k]}" "$mb")" \
                "$(per_gib "${SC[$k.0]}" "$mb")" "$(per_gib "${SC[$k.1]}" "$mb")" \
                "$(per_gib "${SC[$k.2]}" "$mb")" \
                "$(per_gib "(${SC[$k.0]} + ${SC[$k.1]} + ${SC[$k.2]})" "$mb")" \
                "$(per_gib "${SC[$k.3]}" "$mb")" "${RQ[$k]}"
        done
    done
done
if [ -n "${T[fuse.large.up]:-}" ] && [ -n "${T[curl.large.up]:-}" ]; then
    echo
    echo "Daemon CPU per GiB against the floor (bindfs's + curl's, this run):"
    for dir in up down; do
        f=$(per_gib "(${CC[fuse.large.$dir]} + ${CC[curl.large.$dir]})" "$LARGE_MB")
        g=$(per_gib "${CC[sg.large.$dir]}" "$LARGE_MB")
        printf '  large %-5s floor %5.2f  swiftgate %5.2f  (%.2fx the floor)\n' "$dir" "$f" "$g" "$(echo "$g / $f" | bc -l)"
    done
fi
