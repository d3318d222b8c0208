#!/bin/bash
# Entry point of flashsale/postgres:local (hack/images.sh): Debian's PostgreSQL 15 started the way
# the official postgres image's docker-entrypoint.sh starts it, for what the operator uses:
# POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
# POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default POSTGRES_USER), POSTGRES_INITDB_ARGS,
# POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), PGDATA; *.sh and *.sql files of
# /docker-entrypoint-initdb.d run once, after initdb. Arguments starting with '-' are postgres's
# (`-c max_connections=N`). Runs as the image's user (999), never as root.
set -Eeuo pipefail

if [[ ${1:-} == -* ]]; then set -- postgres "$@"; fi

say() { printf '%s postgres-entrypoint: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

init_cluster() {
  local auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" f
  if [[ -z ${POSTGRES_PASSWORD:-} && $auth != trust ]]; then
    say "POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust to allow connections without one)"
    exit 1
  fi
  say "initdb $PGDATA (superuser $POSTGRES_USER)"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of flags, as in the official image
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
    --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} >&2
  printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
  # A server on the socket only, while the database and the init scripts are made.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w -t 60 start >&2
  local psql=(psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres)
  if [[ $POSTGRES_DB != postgres ]]; then
    say "create database $POSTGRES_DB"
    "${psql[@]}" --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >&2
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case $f in
      *.sh)
        say "running $f"
        # shellcheck source=/dev/null # the user's scripts
        . "$f"
        ;;
      *.sql) say "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" >&2 ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >&2
  say "init done"
}

if [[ ${1:-} == postgres ]]; then
  if (( $(id -u) == 0 )); then say "refusing to run as root: run as uid 999"; exit 1; fi
  : "${PGDATA:=/var/lib/postgresql/data}"
  : "${POSTGRES_USER:=postgres}"
  : "${POSTGRES_DB:=$POSTGRES_USER}"
  export PGDATA POSTGRES_USER POSTGRES_DB
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA" 2>/dev/null || true
  if [[ ! -s $PGDATA/PG_VERSION ]]; then init_cluster; fi
  unset POSTGRES_PASSWORD
fi
exec "$@"
