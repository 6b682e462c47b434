#!/usr/bin/env bash
# FUSE passthrough experiment (issue 14, "Past the FUSE floor for reads"):
# does letting the kernel read the backing file itself (Linux 6.9+) bring
# hot reads and large SMB gets to >= 0.9x of a plain directory? Uses ptfs
# (tests/bench/passthrough/), a minimal pass-through FUSE filesystem with
# swiftgate's mount options, in three modes over the same backing dir:
#   classic     reads served by the daemon (pread into the reply), as
#               swiftgate does today (no FOPEN_KEEP_CACHE, writeback cache)
#   keepcache   classic plus FOPEN_KEEP_CACHE (the FUSE page cache survives
#               open/close; for comparison)
#   passthrough read-only opens get a backing id and FOPEN_PASSTHROUGH;
#               the writeback cache is off (the kernel refuses passthrough
#               on a connection that negotiated it)
# next to the plain directory and bindfs. Reads are hot: the backing
# file's page cache is warm (one untimed read first); one extra section
# drops the page cache before each read, as tests/bench/engine.sh does.
# Each figure is the median of 3 runs. Also: which writer/reader mixes the
# kernel accepts in passthrough mode, and what it costs to assemble a whole
# file from 4 MiB cache blocks (passthrough needs one backing file).
#
#   bash tests/bench/passthrough.sh [--size 2G] [--files 1000] [--runs 3]
#
# Results and conclusions: tests/bench/passthrough/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (mounts, smbd, backing ids need CAP_SYS_ADMIN)"; exit 1; }
SIZE_MB=2048
FILES=1000
RUNS=3
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE_MB=$(( $(numfmt --from=iec "$2") / 1048576 )); shift 2 ;;
        --files) FILES=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        *) echo "unknown option $1"; exit 2 ;;
    esac
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/pt-target}
(cd tests/bench/passthrough && cargo build --release --quiet)
PTFS=$CARGO_TARGET_DIR/release/ptfs
command -v bindfs >/dev/null || apt-get install -y -q bindfs >/dev/null
for c in smbd smbclient smbpasswd; do
    command -v $c >/dev/null || { echo "needs $c (bash provisioning/deps.sh)"; exit 1; }
done

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/swiftgate-ptbench.XXXXXX")
chmod 700 "$WORK"
MOUNTS=(bindfs classic keepcache passthrough)
declare -A PID
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    if [ -s "$WORK/samba/pid/smbd.pid" ]; then
        kill "$(cat "$WORK/samba/pid/smbd.pid")" 2>/dev/null || true
        sleep 0.5
    fi
    for m in "${MOUNTS[@]}" probe; do
        mountpoint -q "$WORK/m-$m" 2>/dev/null && { umount "$WORK/m-$m" 2>/dev/null || umount -l "$WORK/m-$m"; }
    done
    for p in "${PID[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
rate() { echo "scale=0; $1 / $2" | bc -l; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
# CPU seconds (user+system) a process has used so far.
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }

start_ptfs() { # name, mode, extra args...
    local name=$1 mode=$2
    shift 2
    mkdir -p "$WORK/m-$name"
    "$PTFS" "$mode" "$WORK/plain" "$WORK/m-$name" "$@" 2> "$WORK/ptfs-$name.log" &
    PID[$name]=$!
    for _ in $(seq 1 100); do mountpoint -q "$WORK/m-$name" && return; sleep 0.05; done
    echo "ptfs $mode did not mount:"; cat "$WORK/ptfs-$name.log"; exit 1
}

echo "kernel $(uname -r); $WORK is on $(df --output=fstype "$WORK" | tail -1); $(nproc) CPUs"
echo "preparing a ${SIZE_MB} MiB file and $FILES files of 1 MiB (random)..."
mkdir -p "$WORK/plain/small" "$WORK/m-bindfs"
head -c $((SIZE_MB * 1048576)) /dev/urandom > "$WORK/plain/big.bin"
for i in $(seq -w 1 "$FILES"); do head -c 1048576 /dev/urandom > "$WORK/plain/small/f$i"; done
sync -f "$WORK/plain"

bindfs --multithreaded -o allow_other "$WORK/plain" "$WORK/m-bindfs"
start_ptfs classic classic
start_ptfs keepcache keepcache
start_ptfs passthrough passthrough --no-writeback-cache

declare -A R S
# Samples are stored as space-separated seconds; the figure is the median.
add() { S[$1]="${S[$1]:-} $2"; }
med() { local -a v; read -ra v <<< "${S[$1]}"; median "${v[@]}"; }
timed() { # key, command...: runs the command, adds its seconds to key
    local key=$1 t0 t1
    shift
    t0=$(now); "$@"; t1=$(now)
    add "$key" "$(echo "$t1 - $t0" | bc -l)"
}
readbig() { dd if="$1/big.bin" of=/dev/null bs=1M status=none; }
readsmall() { cat "$1"/small/* > /dev/null; }
dir_of() { if [ "$1" = plain ]; then echo "$WORK/plain"; else echo "$WORK/m-$1"; fi; }
# Hot sequential read of the big file and of all small files through each
# path: one untimed pass that also checks the bytes, then $RUNS timed
# rounds, each round over every path in turn (the machine is shared; a
# slow spell then hits all paths alike rather than one).
for t in plain "${MOUNTS[@]}"; do
    d=$(dir_of "$t")
    cmp "$WORK/plain/big.bin" "$d/big.bin" || { echo "MISMATCH through $t"; exit 1; }
    readsmall "$d"
done
declare -A CPU0
for t in "${!PID[@]}"; do CPU0[$t]=$(cpu "${PID[$t]}"); done
for _ in $(seq 1 "$RUNS"); do
    for t in plain "${MOUNTS[@]}"; do
        d=$(dir_of "$t")
        timed "$t.big" readbig "$d"
        timed "$t.small" readsmall "$d"
    done
done
for t in plain "${MOUNTS[@]}"; do
    R[$t.big]=$(med "$t.big")
    R[$t.small]=$(med "$t.small")
done
for t in "${!PID[@]}"; do
    # Daemon CPU per GiB read over the timed runs (big + small files).
    R[$t.cpu]=$(printf '%.2f' "$(echo "($(cpu "${PID[$t]}") - ${CPU0[$t]}) * 1024 / ($RUNS * ($SIZE_MB + $FILES))" | bc -l)")
done

# The same big-file read with the page cache dropped before each one, as
# tests/bench/engine.sh measures swiftgate's "hot read" (from the local
# disk cache): keeping the FUSE page cache cannot help here, reading the
# backing file directly can.
for _ in $(seq 1 "$RUNS"); do
    for t in plain classic keepcache passthrough; do
        sync; echo 3 > /proc/sys/vm/drop_caches
        timed "$t.cold" readbig "$(dir_of "$t")"
    done
done
for t in plain classic keepcache passthrough; do
    R[$t.cold]=$(med "$t.cold")
done

# A throwaway smbd on a free port, one share per path, all read-only.
mkdir -p "$WORK"/samba/{private,lock,state,cache,pid,ncalrpc,log}
{
    cat <<EOT
[global]
   smb ports = $port
   interfaces = lo
   bind interfaces only = yes
   private dir = $WORK/samba/private
   lock directory = $WORK/samba/lock
   state directory = $WORK/samba/state
   cache directory = $WORK/samba/cache
   pid directory = $WORK/samba/pid
   ncalrpc dir = $WORK/samba/ncalrpc
   log file = $WORK/samba/log/log.%m
   load printers = no
   disable spoolss = yes
   server min protocol = SMB2
EOT
    printf '\n[plain]\n   path = %s\n   read only = yes\n' "$WORK/plain"
    for m in "${MOUNTS[@]}"; do
        printf '\n[%s]\n   path = %s\n   read only = yes\n' "$m" "$WORK/m-$m"
    done
} > "$WORK/smb.conf"
PW=pt-bench-$$
# A Samba password for root in this smbd's own private dir only.
printf '%s\n%s\n' "$PW" "$PW" | smbpasswd -c "$WORK/smb.conf" -s -a root >/dev/null
smbd -D -s "$WORK/smb.conf"
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
smbget() { # share, local file
    local out
    out=$(smbclient "//127.0.0.1/$1" -p "$port" -U "root%$PW" -c "get big.bin $2" 2>&1) || { echo "$out"; return 1; }
}
for t in plain "${MOUNTS[@]}"; do
    smbget "$t" "$WORK/got.bin"
    cmp "$WORK/plain/big.bin" "$WORK/got.bin" || { echo "SMB MISMATCH through $t"; exit 1; }
    rm -f "$WORK/got.bin"
done
for _ in $(seq 1 "$RUNS"); do
    for t in plain "${MOUNTS[@]}"; do
        timed "$t.smb" smbget "$t" /dev/null
    done
done
for t in plain "${MOUNTS[@]}"; do
    R[$t.smb]=$(med "$t.smb")
done

# Which opens the kernel accepts on one inode in passthrough mode (readers
# passthrough, writers on the daemon path), for the writer caveat.
probe() { # label, ptfs args...
    local label=$1
    shift
    start_ptfs probe passthrough "$@"
    head -c 65536 /dev/urandom > "$WORK/plain/probe"
    python3 - "$WORK/m-probe/probe" "$label" <<'PY'
import mmap, os, sys
p, label = sys.argv[1], sys.argv[2]
def op(flags):
    try:
        return os.open(p, flags), "ok"
    except OSError as e:
        return None, e.strerror
r, a = op(os.O_RDONLY)
m = "-"
if r is not None:
    try:
        mm = mmap.mmap(r, 0, prot=mmap.PROT_READ)
        m = "ok" if mm[:16] == open(p.replace("/m-probe/", "/plain/"), "rb").read(16) else "WRONG BYTES"
        mm.close()
    except OSError as e:
        m = e.strerror
w, b = op(os.O_WRONLY)
for fd in (r, w):
    if fd is not None:
        os.close(fd)
w, c = op(os.O_WRONLY)
r, d = op(os.O_RDONLY)
for fd in (r, w):
    if fd is not None:
        os.close(fd)
print(f"{label:<44} {a:<24} {b:<24} {d:<24} {m}")
PY
    umount "$WORK/m-probe"
    wait "${PID[probe]}" || true
    unset "PID[probe]"
}
PROBES=$(
    printf '%-44s %-24s %-24s %-24s %s\n' "passthrough mount" "reader alone" "writer after reader" "reader after writer" "mmap (reader alone)"
    probe "with FUSE_WRITEBACK_CACHE (as swiftgate)"
    probe "no writeback cache, max_stack_depth 0" --no-writeback-cache --stack-depth-0
    probe "no writeback cache (cached writers)" --no-writeback-cache
    probe "no writeback cache, FOPEN_DIRECT_IO writers" --no-writeback-cache --direct-writers
)

# What a whole-file backing file costs when the cache holds 4 MiB blocks:
# assemble the big file from its blocks (hot in the page cache), until the
# copy is in the page cache and until it is durable.
mkdir -p "$WORK/blocks"
(cd "$WORK/blocks" && split -b 4M -a 4 -d "$WORK/plain/big.bin" b)
sync -f "$WORK/blocks"
cat "$WORK"/blocks/* > /dev/null
if cp --reflink=always "$WORK/blocks/b0000" "$WORK/reflink-probe" 2>/dev/null; then REFLINK=yes; else REFLINK=no; fi
rm -f "$WORK/reflink-probe"
assemble() { # method: cat | cfr
    case $1 in
        cat) cat "$WORK"/blocks/* > "$WORK/whole" ;;
        cfr) python3 - "$WORK/blocks" "$WORK/whole" <<'PY'
import os, sys
src, dst = sys.argv[1], sys.argv[2]
out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
for name in sorted(os.listdir(src)):
    fd = os.open(os.path.join(src, name), os.O_RDONLY)
    n = os.fstat(fd).st_size
    while n > 0:
        n -= os.copy_file_range(fd, out, n)
    os.close(fd)
os.close(out)
PY
        ;;
    esac
}
for m in cat cfr; do
    a=() s=()
    for _ in $(seq 1 "$RUNS"); do
        t0=$(now); assemble $m; t1=$(now); sync -f "$WORK/whole"; t2=$(now)
        cmp -s "$WORK/plain/big.bin" "$WORK/whole" || { echo "assembly $m is wrong"; exit 1; }
        a+=("$(echo "$t1 - $t0" | bc -l)")
        s+=("$(echo "$t2 - $t0" | bc -l)")
        rm -f "$WORK/whole"
    done
    R[asm.$m]=$(median "${a[@]}")
    R[asm.$m.durable]=$(median "${s[@]}")
done

echo
echo "hot reads (backing page cache warm), median of $RUNS; ratio against the plain directory"
printf '%-28s %10s %6s %12s %6s %10s %6s %12s\n' path "${SIZE_MB}MiB MiB/s" ratio "${FILES}x1MiB MiB/s" ratio "SMB get" ratio "daemon CPU-s/GiB"
for t in plain "${MOUNTS[@]}"; do
    printf '%-28s %10s %6s %12s %6s %10s %6s %12s\n' "$t" \
        "$(rate "$SIZE_MB" "${R[$t.big]}")" "$(ratio "${R[plain.big]}" "${R[$t.big]}")" \
        "$(rate "$FILES" "${R[$t.small]}")" "$(ratio "${R[plain.small]}" "${R[$t.small]}")" \
        "$(rate "$SIZE_MB" "${R[$t.smb]}")" "$(ratio "${R[plain.smb]}" "${R[$t.smb]}")" "${R[$t.cpu]:--}"
done
echo
echo "${SIZE_MB} MiB read with the page cache dropped first (engine.sh's hot read), median of $RUNS"
for t in plain classic keepcache passthrough; do
    printf '  %-12s %6s MiB/s  ratio %s\n' "$t" "$(rate "$SIZE_MB" "${R[$t.cold]}")" "$(ratio "${R[plain.cold]}" "${R[$t.cold]}")"
done
echo
echo "all samples (MiB/s, in run order):"
for t in plain "${MOUNTS[@]}"; do
    for k in big small smb cold; do
        [ -n "${S[$t.$k]:-}" ] || continue
        amount=$SIZE_MB
        [ $k = small ] && amount=$FILES
        read -ra v <<< "${S[$t.$k]}"
        printf '  %-12s %-6s' "$t" "$k"
        for x in "${v[@]}"; do printf ' %6s' "$(rate "$amount" "$x")"; done
        echo
    done
done
echo
echo "opens of one inode on a passthrough mount (readers passthrough, writers via the daemon)"
echo "$PROBES"
echo
echo "assembling a ${SIZE_MB} MiB backing file from $((SIZE_MB / 4)) blocks of 4 MiB (hot), median of $RUNS"
echo "  filesystem $(df --output=fstype "$WORK" | tail -1), reflink supported: $REFLINK"
for m in cat cfr; do
    label="cat blocks > whole"
    [ $m = cfr ] && label="copy_file_range per block"
    printf '  %-28s %6.2f s to the page cache (%s MiB/s), %6.2f s durable (%s MiB/s)\n' "$label" \
        "${R[asm.$m]}" "$(rate "$SIZE_MB" "${R[asm.$m]}")" "${R[asm.$m.durable]}" "$(rate "$SIZE_MB" "${R[asm.$m.durable]}")"
done
