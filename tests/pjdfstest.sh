#!/usr/bin/env bash
# POSIX conformance check with pjdfstest (the Rust rewrite, crates.io `pjdfstest`).
#
# Usage:  sudo bash tests/pjdfstest.sh DIR [EXPECTED_FAILURES_FILE]
#
# Runs the whole pjdfstest suite twice: first on a fresh tmpfs (the baseline of
# what a plain Linux filesystem passes on this kernel), then on DIR (e.g. a
# swiftgate mount point).  A test counts as an unexpected failure when it passes
# on tmpfs, does not pass on DIR, and is not listed in the expected-failures file
# (default: tests/pjdfstest-expected-failures.txt next to this script; one test
# name or shell glob per line, `#` comments).
#
# The last line printed is always `pjdfstest: N passed, M failed`, where N is the
# number of tests passing on DIR and M the number of unexpected failures.
# Exit status: 0 if M == 0, 1 if M > 0, 2 on usage/setup errors.
#
# Requirements: root (tests switch users and create device nodes), the users
# `nobody` and `tests` (created here if missing), and cargo if pjdfstest is not
# installed yet.  DIR and all its ancestors must be searchable by those users
# (a FUSE mount therefore needs allow_other).
#
# Environment knobs:
#   PJDFSTEST_ROOT      install prefix            (default /opt/pjdfstest)
#   PJDFSTEST_NAPTIME   seconds between timestamp-sensitive steps (default 0.05;
#                       0.001 is flaky, kernel timestamps are jiffy-grained)
#   PJDFSTEST_TIMEOUT   timeout for each run, in seconds          (default 1800)
#   PJDFSTEST_FILTER    space-separated test-name substrings to run only some tests
#   PJDFSTEST_KEEP=1    keep the temp dir (raw outputs, config) for inspection
#   PJDFSTEST_ALLOW_REMOUNT=1  also run the 13 EROFS tests, which remount the
#                       filesystem holding DIR read-only and back (`mount -o
#                       remount,ro`); only for a throwaway mount, never for a
#                       dir on / or on a shared filesystem

set -euo pipefail

PJDFSTEST_VERSION=0.2.2
PJDFSTEST_ROOT=${PJDFSTEST_ROOT:-/opt/pjdfstest}
PJDFSTEST_BIN=$PJDFSTEST_ROOT/bin/pjdfstest
NAPTIME=${PJDFSTEST_NAPTIME:-0.05}
RUN_TIMEOUT=${PJDFSTEST_TIMEOUT:-1800}
ALLOW_REMOUNT=false
[[ ${PJDFSTEST_ALLOW_REMOUNT:-0} == 1 ]] && ALLOW_REMOUNT=true
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# Setup errors after the target is known still end with the summary line, so
# that anything reading the closing line sees a failure.
die() {
    echo "pjdfstest.sh: error: $*" >&2
    echo "pjdfstest: 0 passed, 1 failed"
    exit 2
}

[[ $# -ge 1 && $# -le 2 && $1 != -h && $1 != --help ]] || usage
[[ $EUID -eq 0 ]] || die "must run as root (pjdfstest switches users and creates device nodes)"
[[ -d $1 ]] || die "$1: not a directory"
TARGET=$(realpath -- "$1")
EXPECTED_FILE=${2:-$SCRIPT_DIR/pjdfstest-expected-failures.txt}
if [[ $# -ge 2 && ! -f $EXPECTED_FILE ]]; then
    die "$EXPECTED_FILE: no such file"
fi

# ---------------------------------------------------------------- install ----
installed_version() {
    [[ -x $PJDFSTEST_BIN ]] && "$PJDFSTEST_BIN" --version 2>/dev/null | awk '{print $2}'
}
if [[ $(installed_version || true) != "$PJDFSTEST_VERSION" ]]; then
    command -v cargo >/dev/null || die "cargo not found; needed to install pjdfstest $PJDFSTEST_VERSION"
    echo "== installing pjdfstest $PJDFSTEST_VERSION into $PJDFSTEST_ROOT" >&2
    build_dir=$(mktemp -d /tmp/pjdfstest-build.XXXXXX)
    # A private target dir, so that no project's target/ is touched.
    if ! CARGO_TARGET_DIR=$build_dir cargo install --locked pjdfstest \
            --version "$PJDFSTEST_VERSION" --root "$PJDFSTEST_ROOT" --force >&2; then
        rm -rf "$build_dir"
        die "cargo install pjdfstest $PJDFSTEST_VERSION failed"
    fi
    rm -rf "$build_dir"
    [[ $(installed_version || true) == "$PJDFSTEST_VERSION" ]] || die "pjdfstest install did not produce $PJDFSTEST_BIN"
fi

# ----------------------------------------------------------- dummy users -----
# pjdfstest switches to two unprivileged users; by default `nobody` (with its
# primary group) and `tests`.
getent passwd nobody >/dev/null || die "user nobody does not exist"
if ! getent passwd tests >/dev/null; then
    echo "== creating dummy user 'tests' for pjdfstest" >&2
    if getent group tests >/dev/null; then
        useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin \
            --gid tests --comment "Dummy user for pjdfstest" tests
    else
        useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin \
            --user-group --comment "Dummy user for pjdfstest" tests
    fi
fi

# The dummy users must be able to reach the target, or every user-switching
# test fails with EACCES for reasons unrelated to the filesystem.
for u in nobody tests; do
    if ! setpriv --reuid="$u" --regid="$(id -g "$u")" --clear-groups -- test -x "$TARGET"; then
        die "user '$u' cannot search $TARGET: make it and all its ancestors world-searchable (e.g. chmod 755 on a mktemp -d parent) and mount FUSE filesystems with allow_other"
    fi
done

# ---------------------------------------------------------------- temp dir ---
WORK=$(mktemp -d /tmp/pjdfstest.XXXXXX)
chmod 755 "$WORK"
MOUNTS=()
cleanup() {
    local m
    for m in "${MOUNTS[@]}"; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    if [[ ${PJDFSTEST_KEEP:-0} == 1 ]]; then
        echo "pjdfstest.sh: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -m 755 "$WORK/baseline" "$WORK/secondary"
mount -t tmpfs -o mode=0755,size=256m pjdfstest-baseline "$WORK/baseline" || die "cannot mount tmpfs"
MOUNTS+=("$WORK/baseline")
# A distinct filesystem for the EXDEV tests (rename/link across filesystems).
mount -t tmpfs -o mode=0755,size=16m pjdfstest-secondary "$WORK/secondary" || die "cannot mount tmpfs"
MOUNTS+=("$WORK/secondary")

# Features that Linux filesystems (tmpfs, ext4) provide; see `pjdfstest -l`.
cat >"$WORK/pjdfstest.toml" <<EOF
[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}
rename_ctime = {}
secondary_fs = "$WORK/secondary"

[settings]
naptime = $NAPTIME
# The EROFS tests remount the filesystem read-only (PJDFSTEST_ALLOW_REMOUNT=1).
allow_remount = $ALLOW_REMOUNT

[dummy_auth]
entries = [
  ["nobody", "$(id -gn nobody)"],
  ["tests", "$(id -gn tests)"],
]
EOF

# ------------------------------------------------------------------- runs ----
# shellcheck disable=SC2206
FILTER=(${PJDFSTEST_FILTER:-})

run_suite() { # DIR OUTFILE
    local rc=0
    NO_COLOR=1 RUST_BACKTRACE=0 timeout --kill-after=30 "$RUN_TIMEOUT" \
        "$PJDFSTEST_BIN" -c "$WORK/pjdfstest.toml" -p "$1" -- "${FILTER[@]}" \
        >"$2" 2>&1 </dev/null || rc=$?
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        echo "   !! pjdfstest timed out after ${RUN_TIMEOUT}s on $1" >&2
    fi
    if ! grep -q '^Summary: ' "$2"; then
        echo "   !! pjdfstest did not finish on $1 (exit $rc); last lines:" >&2
        tail -n 5 "$2" | sed 's/^/      /' >&2
    fi
}

# "NAME STATUS" for every test result line; status is ok, FAILED, skipped,
# xfail or xpass.
parse_results() {
    sed -E 's/\x1b\[[0-9;]*m//g' "$1" | awk '
        /^[^[:space:]]+ +ok$/                 { print $1, "ok"; next }
        /^[^[:space:]]+ +FAILED$/             { print $1, "FAILED"; next }
        /^[^[:space:]]+ +skipped$/            { print $1, "skipped"; next }
        /^[^[:space:]]+ +failed as expected$/ { print $1, "xfail"; next }
        /^[^[:space:]]+ +PASSED UNEXPECTEDLY$/ { print $1, "xpass"; next }'
}

# The message lines printed after NAME's result line (panic message, skip reason).
result_message() { # OUTFILE NAME
    sed -E 's/\x1b\[[0-9;]*m//g' "$1" | awk -v name="$2" '
        # (no early exit: it would SIGPIPE sed and trip pipefail)
        done { next }
        $1 == name && /(ok|FAILED|skipped|failed as expected|PASSED UNEXPECTEDLY)$/ { on = 1; next }
        on && (/^[^[:space:]]+ +(ok|FAILED|skipped|failed as expected|PASSED UNEXPECTEDLY)$/ || /^Summary: / || /^$/) { done = 1; next }
        on { sub(/^\t/, ""); print "        " $0 }'
}

echo "== pjdfstest $PJDFSTEST_VERSION: baseline run on a fresh tmpfs"
run_suite "$WORK/baseline" "$WORK/baseline.out"
parse_results "$WORK/baseline.out" | sort -u >"$WORK/baseline.res"
echo "== pjdfstest $PJDFSTEST_VERSION: run on $TARGET ($(findmnt -no FSTYPE,SOURCE -T "$TARGET" 2>/dev/null || stat -f -c %T "$TARGET"))"
run_suite "$TARGET" "$WORK/target.out"
parse_results "$WORK/target.out" | sort -u >"$WORK/target.res"

count() { awk -v s="$2" '$2 == s' "$1" | wc -l; }
b_pass=$(count "$WORK/baseline.res" ok)
b_fail=$(count "$WORK/baseline.res" FAILED)
b_skip=$(count "$WORK/baseline.res" skipped)
[[ $b_pass -gt 0 ]] || die "baseline tmpfs run passed no test; see above"

# ------------------------------------------------------ expected failures ----
PATTERNS=()
if [[ -f $EXPECTED_FILE ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%%#*}
        line=$(echo "$line" | xargs)   # trim
        if [[ -n $line ]]; then PATTERNS+=("$line"); fi
    done <"$EXPECTED_FILE"
fi
is_expected() {
    local p
    for p in "${PATTERNS[@]}"; do
        # shellcheck disable=SC2053  # patterns are globs on purpose
        [[ $1 == $p ]] && return 0
    done
    return 1
}

# ---------------------------------------------------------------- compare ----
declare -A TSTATUS=()
while read -r name st; do TSTATUS[$name]=$st; done <"$WORK/target.res"

t_pass=0 t_skip=0 t_fail=0
unexpected=() allowed=() baseline_failures=() newly_skipped=()
while read -r name st; do
    case $st in
        ok) t_pass=$((t_pass + 1)) ;;
        skipped) t_skip=$((t_skip + 1)) ;;
        FAILED | xfail | xpass) t_fail=$((t_fail + 1)) ;;
    esac
done <"$WORK/target.res"

while read -r name bst; do
    tst=${TSTATUS[$name]:-missing}
    case $tst in
        ok) continue ;;
        skipped)
            if [[ $bst == ok ]]; then newly_skipped+=("$name"); fi
            continue ;;
    esac
    # tst is FAILED (or the run died before reaching the test).
    if [[ $bst != ok ]]; then
        if [[ $tst != missing ]]; then baseline_failures+=("$name"); fi
    elif is_expected "$name"; then
        allowed+=("$name $tst")
    else
        unexpected+=("$name $tst")
    fi
done <"$WORK/baseline.res"

stale=()
for p in "${PATTERNS[@]}"; do
    hit=0
    while read -r name st; do
        # shellcheck disable=SC2053
        if [[ $name == $p && $st != ok ]]; then hit=1; break; fi
    done <"$WORK/target.res"
    [[ $hit == 1 ]] || stale+=("$p")
done

# ---------------------------------------------------------------- summary ----
echo
echo "baseline tmpfs: $b_pass passed, $b_fail failed, $b_skip skipped"
echo "target $TARGET: $t_pass passed, $t_fail failed, $t_skip skipped (of $(wc -l <"$WORK/target.res") reported)"

if [[ ${#baseline_failures[@]} -gt 0 ]]; then
    echo
    echo "Failing on tmpfs too (ignored):"
    printf '    %s\n' "${baseline_failures[@]}"
fi
if [[ ${#newly_skipped[@]} -gt 0 ]]; then
    echo
    echo "Passed on tmpfs but skipped on target (not counted as failures):"
    for name in "${newly_skipped[@]}"; do
        echo "    $name"
        result_message "$WORK/target.out" "$name"
    done
fi
if [[ ${#allowed[@]} -gt 0 ]]; then
    echo
    echo "Expected failures (listed in $(basename "$EXPECTED_FILE")):"
    for entry in "${allowed[@]}"; do echo "    ${entry% *}"; done
fi
if [[ ${#stale[@]} -gt 0 ]]; then
    echo
    echo "Entries in $(basename "$EXPECTED_FILE") that no longer fail (consider removing):"
    printf '    %s\n' "${stale[@]}"
fi
if [[ ${#unexpected[@]} -gt 0 ]]; then
    echo
    echo "UNEXPECTED FAILURES (pass on tmpfs, fail on target):"
    for entry in "${unexpected[@]}"; do
        name=${entry% *} st=${entry##* }
        if [[ $st == missing ]]; then
            echo "    $name    (not run: pjdfstest did not get to it on the target)"
        else
            echo "    $name"
            result_message "$WORK/target.out" "$name"
        fi
    done
fi

M=${#unexpected[@]}
echo
echo "pjdfstest: $t_pass passed, $M failed"
[[ $M -eq 0 ]]
