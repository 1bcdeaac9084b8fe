#!/bin/sh
# The official nginx image's entrypoint contract: before starting nginx, source the executable
# /docker-entrypoint.d/*.envsh and run the executable *.sh, in version order.
set -e

entrypoint_log() {
    if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
        echo "$@"
    fi
}

if [ "$1" = "nginx" ] || [ "$1" = "nginx-debug" ]; then
    entrypoint_log "$0: looking for scripts in /docker-entrypoint.d/"
    # Piped into a subshell: what an .envsh exports reaches the scripts after it, not nginx.
    find /docker-entrypoint.d/ -follow -type f -print | sort -V | while read -r f; do
        case "$f" in
            *.envsh | *.sh)
                if [ ! -x "$f" ]; then
                    entrypoint_log "$0: ignoring $f, not executable"
                elif [ "${f%.envsh}" != "$f" ]; then
                    entrypoint_log "$0: sourcing $f"
                    # shellcheck source=/dev/null
                    . "$f"
                else
                    entrypoint_log "$0: launching $f"
                    "$f"
                fi
                ;;
            *) entrypoint_log "$0: ignoring $f" ;;
        esac
    done
    entrypoint_log "$0: configuration complete; ready for start up"
fi

exec "$@"
