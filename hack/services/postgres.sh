# shellcheck shell=bash
# PostgreSQL for hack/services.sh (sourced): a dedicated cluster from the Debian binaries, trust
# auth on 127.0.0.1, durable settings, database `flashsale`. Defines the postgres_* hooks.

PG_DIR="$STATE/postgres"
PG_DATA="$PG_DIR/data"

# initdb and postgres refuse to run as root: as root the cluster belongs to the postgres user.
if (( EUID == 0 )); then
  PG_OWNER=postgres
  AS_PG=(runuser -u postgres --)
else
  PG_OWNER=$(id -un)
  AS_PG=()
fi
# From / because the caller's directory may be closed to the postgres user.
as_pg() { (cd / && "${AS_PG[@]}" "$@"); }

find_pg_bin() {
  local d
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/psql ]]; then echo "$d"; return 0; fi
  done
  return 1
}
PG_BIN=$(find_pg_bin) || PG_BIN=""

postgres_install() {
  [[ -n $PG_BIN ]] && return 0
  apt_install postgresql
  PG_BIN=$(find_pg_bin) || die "postgresql is installed but no initdb under /usr/lib/postgresql/*/bin"
}

postgres_pid_file() { echo "$PG_DATA/postmaster.pid"; }
postgres_process() { echo postgres; }
postgres_ports() { echo "$PG_PORT"; }
postgres_log() { echo "$PG_DIR/postgres.log"; }
# SIGINT is the fast shutdown; SIGTERM would wait for every client to disconnect.
postgres_stop_signal() { echo INT; }

# Live processes of our cluster (postmaster and backends): each has the data dir as its cwd.
pg_cluster_pids() {
  local p
  for p in $(pgrep -u "$PG_OWNER" 2>/dev/null); do
    [[ $(readlink "/proc/$p/cwd" 2>/dev/null) == "$PG_DATA" ]] && pid_alive "$p" && echo "$p"
  done
  return 0
}
# A crash of the server takes its backends along.
postgres_children() { pg_cluster_pids; }

pg_psql() {
  PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -tAq "$@"
}
postgres_answers() { [[ $(pg_psql -d postgres -c 'select 1' 2>/dev/null) == 1 ]]; }

# As root the cache usually sits in /root (mode 700): let the postgres user pass through.
pg_open_path() {
  (( EUID == 0 )) || return 0
  runuser -u postgres -- test -x "$PG_DIR" && return 0
  local p="" part parts
  IFS=/ read -ra parts <<<"${STATE#/}"
  for part in "${parts[@]}"; do
    p+="/$part"
    if ! runuser -u postgres -- test -x "$p"; then
      log "postgres: chmod o+x $p so the postgres user can reach its data dir below it"
      chmod o+x "$p"
    fi
  done
}

pg_prepare() {
  if [[ ! -d $PG_DIR ]]; then
    mkdir -p "$PG_DIR/run"
    chown -R "$PG_OWNER:" "$PG_DIR"
    chmod 700 "$PG_DIR"
  fi
  pg_open_path
  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    log "postgres: initdb $PG_DATA"
    rm -rf "$PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" --auth=trust -U postgres -E UTF8 --locale=C.UTF-8 \
      >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; die "postgres: initdb failed"; }
    echo "include 'flashsale.conf'" >>"$PG_DATA/postgresql.conf"
  fi
  # Rewritten on every start, so a change here applies to an existing cluster.
  cat >"$PG_DATA/flashsale.conf" <<EOF
# Written by hack/services.sh on every start: edit hack/services/postgres.sh, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR/run'
# make bench opens 256 at once (pgbench -c 256, a pool of 256) while tests share the server.
max_connections = 600
# Durability stays on: crash tests kill -9 the server and then count the confirmed bookings.
fsync = on
synchronous_commit = on
full_page_writes = on
EOF
  chown "$PG_OWNER:" "$PG_DATA/flashsale.conf"
}

# A killed postmaster leaves its lock files (postmaster.pid, the socket's .lock) behind; if its
# PID lingers as a zombie, postgres takes them as held. Stale means: that PID is not a live
# postgres and no process of the cluster is left (each has the data dir as cwd), so no old
# backend still uses the shared memory.
pg_clear_stale_lock() {
  local locks=("$PG_DATA/postmaster.pid" "$PG_DIR/run/.s.PGSQL.$PG_PORT.lock") left
  [[ -f ${locks[0]} || -f ${locks[1]} ]] || return 0
  svc_pid postgres >/dev/null && return 0
  mapfile -t left < <(pg_cluster_pids)
  if (( ${#left[@]} )); then
    log "postgres: waiting for old server processes to exit: ${left[*]}"
    wait_gone 30 "${left[@]}" || die "postgres: old server processes still running: ${left[*]}"
  fi
  log "postgres: removing the stale lock files of a killed server"
  rm -f "${locks[@]}"
}

postgres_launch() {
  pg_prepare
  pg_clear_stale_lock
  rotate_log "$PG_DIR/postgres.log"
  # pg_ctl -w watches the postmaster it forked: a crash fails at once instead of timing out.
  (cd / && detached "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w \
    -t "$START_TIMEOUT" start >/dev/null 2>&1) || true
}

postgres_after_ready() {
  if [[ $(pg_psql -d postgres -c "select 1 from pg_database where datname = 'flashsale'") != 1 ]]; then
    log "postgres: create database flashsale"
    pg_psql -d postgres -c 'create database flashsale' >/dev/null
  fi
}
