#!/usr/bin/env bash
# Prints this machine's own Debian mirrors as "SUITE URI" lines, read from
# its apt sources at run time (never written into the repository): the
# fresh roots of tests/appliance.sh are bootstrapped from the same mirror
# the machine installs its packages from. Both formats: deb822 .sources
# and one-line .list. Disabled files (any other suffix) are ignored.
set -euo pipefail

files=()
[ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
done
for f in "${files[@]}"; do
    case "$f" in
        *.sources)
            # Paragraphs of "Key: value" lines; a blank line ends one.
            awk '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && enabled != "no")
                        for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print s[j], u[i]
                    types = ""; enabled = ""; nu = 0; ns = 0
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                {
                    key = tolower($1); sub(/:$/, "", key)
                    if (key == "types") { types = ""; for (i = 2; i <= NF; i++) types = types " " $i; types = types " " }
                    else if (key == "uris") { for (i = 2; i <= NF; i++) u[++nu] = $i }
                    else if (key == "suites") { for (i = 2; i <= NF; i++) s[++ns] = $i }
                    else if (key == "enabled") enabled = tolower($2)
                }
                END { flush() }' "$f"
            ;;
        *)
            # deb [options] URI SUITE COMPONENTS...
            awk '$1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    print $(i + 1), $i
                }' "$f"
            ;;
    esac
done
