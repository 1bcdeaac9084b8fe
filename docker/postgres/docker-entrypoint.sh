#!/bin/bash
# Starts PostgreSQL as the official image does: as root, make PGDATA the postgres user's and
# re-run as that user; on an empty PGDATA, create the cluster with POSTGRES_USER as superuser
# (password from POSTGRES_PASSWORD or the file POSTGRES_PASSWORD_FILE names) and the database
# POSTGRES_DB; then exec the server, listening on every address, passwords required over TCP.
set -euo pipefail

die() { printf 'postgres entrypoint: %s\n' "$*" >&2; exit 1; }

# NAME or the content of the file NAME_FILE names (a Docker secret), not both.
file_env() {
    local name=$1 file_name="${1}_FILE"
    if [ -n "${!name:-}" ] && [ -n "${!file_name:-}" ]; then
        die "set $name or $file_name, not both"
    fi
    if [ -n "${!file_name:-}" ]; then
        [ -r "${!file_name}" ] || die "$file_name: cannot read ${!file_name}"
        printf -v "$name" '%s' "$(<"${!file_name}")"
    fi
    export "$name=${!name:-}"
    unset "$file_name"
}

initialise() {
    local user=${POSTGRES_USER:-postgres} pwfile
    local db=${POSTGRES_DB:-$user}
    file_env POSTGRES_PASSWORD
    [ -n "$POSTGRES_PASSWORD" ] \
        || die "POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is empty: the server takes connections from the network, so it needs a password"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
    rm -f "$pwfile"
    # jit off: the image leaves LLVM out (scripts/offline-images.sh).
    printf "listen_addresses = '*'\njit = off\n" >>"$PGDATA/postgresql.conf"
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        # A server on the socket only, so that nothing connects before the database exists.
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        psql -v ON_ERROR_STOP=1 --quiet --username="$user" --dbname=postgres \
            --set=db="$db" <<<'CREATE DATABASE :"db";'
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    printf 'postgres entrypoint: initialised %s with user %s and database %s\n' "$PGDATA" "$user" "$db"
}

if [ "${1:0:1}" = - ]; then
    set -- postgres "$@"
fi
if [ "$1" = postgres ]; then
    if [ "$(id -u)" = 0 ]; then
        mkdir -p "$PGDATA"
        chown postgres:postgres "$PGDATA"
        chmod 0700 "$PGDATA"
        exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
    fi
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        initialise
    fi
    unset POSTGRES_PASSWORD
fi
exec "$@"
