#!/bin/sh
# First start: initdb with POSTGRES_USER as the superuser (password
# POSTGRES_PASSWORD, scram-sha-256 for TCP clients) and create POSTGRES_DB in
# single-user mode (no server, no socket needed). Later starts use the data as
# it is. Then exec the command (postgres) listening on every address.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ "${1:-postgres}" = postgres ]; then
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        if [ -z "${POSTGRES_PASSWORD:-}" ]; then
            echo "POSTGRES_PASSWORD is not set" >&2
            exit 1
        fi
        mkdir -p "$PGDATA"
        chmod 0700 "$PGDATA"
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
        initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
            --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8
        rm -f "$pwfile"
        echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
        if [ "$POSTGRES_DB" != postgres ]; then
            echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" \
                | postgres --single -D "$PGDATA" -j postgres >/dev/null
        fi
    fi
    shift || true
    exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
