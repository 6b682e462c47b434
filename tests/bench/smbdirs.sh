# Sourced by the benchmarks that run their own smbd: its private, lock,
# state, cache, pid and ncalrpc directories under DIR/samba, as --global
# arguments for `swiftgate samba-config` (nothing of the host's Samba is
# touched). Sets the array SAMBA_DIR_ARGS.
# shellcheck shell=bash
samba_dir_args() { # DIR
    local k setting
    SAMBA_DIR_ARGS=()
    for k in private lock state cache pid ncalrpc; do
        case $k in
            private) setting="private dir" ;;
            ncalrpc) setting="ncalrpc dir" ;;
            *) setting="$k directory" ;;
        esac
        SAMBA_DIR_ARGS+=(--global "$setting = $1/samba/$k")
    done
}
