#!/usr/bin/env bash
# Runs shellcheck on every shell script tracked by git, and on the shell
# snippets of the cloud-init user-data files (their runcmd/bootcmd entries
# run through `sh -c`). Prints each file "ok" or "FAIL" (with the findings),
# and exits 1 on any finding. The settings are the repository's .shellcheckrc.
#
#   bash tests/lint-scripts.sh
#
# A shell script is a tracked file with a `#!` line naming sh/bash/dash
# (directly or through env), a `.sh` name, or a `# shellcheck shell=` line
# (a library that is sourced, not run).
set -euo pipefail
cd "$(dirname "$0")/.."
git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
    { echo "lint-scripts: $PWD is not a git checkout: run it in a clone of the repository" >&2; exit 2; }

need=()
command -v shellcheck >/dev/null || need+=(shellcheck)
# Debian's python3 and its python3-yaml; a pyenv python3 on PATH may lack it.
PY=/usr/bin/python3
[ -x "$PY" ] || need+=(python3)
"$PY" -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] ||
        { echo "lint-scripts: ${need[*]} missing: install it (apt-get install ${need[*]}) or run as root" >&2; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq -o DPkg::Lock::Timeout=600
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null
fi

tmp=$(mktemp -d /tmp/swiftgate-lint.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failed=0
checked=0

# report NAME FINDINGS-FILE: one line per file, the findings indented below.
report() {
    checked=$((checked + 1))
    if [ -s "$2" ]; then
        echo "FAIL $1"
        sed 's/^/    /' "$2"
        failed=$((failed + 1))
    else
        echo "ok   $1"
    fi
}

is_shell_script() {
    case "$1" in *.sh) return 0 ;; esac
    # The #! line: /bin/sh, /bin/bash -e, /usr/bin/env bash, ...
    head -n 1 "$1" | grep -qE '^#! *(/[^ ]*/)?(env +(-S +)?)?(ba|da)?sh( |$)' && return 0
    grep -qI '^# shellcheck shell=' "$1"
}

scripts=()
while IFS= read -r -d '' f; do
    [ -f "$f" ] || continue   # tracked, but deleted in this checkout
    if is_shell_script "$f"; then scripts+=("$f"); fi
done < <(git ls-files -z)
[ ${#scripts[@]} -gt 0 ] || { echo "lint-scripts: no shell scripts found under $PWD" >&2; exit 1; }

# run_shellcheck ARGS... (stdin passed on): the findings into $tmp/out.
run_shellcheck() {
    local rc=0
    shellcheck "$@" > "$tmp/out" 2>&1 || rc=$?
    # A failure with nothing said (a crash, a bad option) is a finding too.
    if [ "$rc" != 0 ] && [ ! -s "$tmp/out" ]; then
        echo "shellcheck exited with status $rc and no output" > "$tmp/out"
    fi
}

for f in "${scripts[@]}"; do
    # From the repository root, so `# shellcheck source=` paths resolve.
    run_shellcheck -x "$f"
    report "$f" "$tmp/out"
done

# The cloud-init snippets: each `[sh, -c, '...']` (or bash) item and each
# plain string item (cloud-init runs those with sh) of runcmd and bootcmd.
# Argv lists such as [swiftgate, setup, ...] run without a shell.
mapfile -t -d '' yamls < <(git ls-files -z -- 'cloud-init/*.yaml' 'cloud-init/*.yml')
if [ ${#yamls[@]} -gt 0 ]; then
    "$PY" - "$tmp/snippets" "${yamls[@]}" > "$tmp/manifest" <<'PY'
import os, sys, yaml
out, files = sys.argv[1], sys.argv[2:]
os.makedirs(out)
n = 0
def emit(label, shell, text):
    global n
    n += 1
    with open(os.path.join(out, str(n)), "w") as f:
        f.write(text)
    print(f"{n}\t{shell}\t{label}")
for path in files:
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        # Reported as a finding of that file: the shell side sees the ERROR.
        emit(f"{path}: not valid YAML", "ERROR", f"{e}\n")
        continue
    if not isinstance(doc, dict):
        continue
    for key in ("bootcmd", "runcmd"):
        for i, item in enumerate(doc.get(key) or []):
            label = f"{path} {key}[{i}]"
            if isinstance(item, str):
                emit(label, "sh", item)
            elif (isinstance(item, list) and len(item) >= 3
                  and item[0] in ("sh", "bash", "/bin/sh", "/bin/bash") and item[1] == "-c"):
                emit(label, os.path.basename(str(item[0])), str(item[2]))
PY
    while IFS=$'\t' read -r n shell label; do
        if [ "$shell" = ERROR ]; then
            cp "$tmp/snippets/$n" "$tmp/out"
        else
            # SC1091 off: what a snippet sources (/etc/swiftgate/openrc) is
            # written by the same file's write_files at boot, not here.
            run_shellcheck -s "$shell" -e SC1091 - < "$tmp/snippets/$n"
        fi
        report "$label" "$tmp/out"
    done < "$tmp/manifest"
fi

if [ "$failed" -gt 0 ]; then
    echo "lint-scripts: $failed of $checked failed (fix the findings above; a false positive gets a '# shellcheck disable=SCxxxx' with a comment saying why)"
    exit 1
fi
echo "lint-scripts: all $checked clean"
