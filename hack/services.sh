#!/usr/bin/env bash
# Local PostgreSQL, Redis and Kafka for tests, benchmarks and running booking-app by hand:
# installed once into $FLASHSALE_CACHE, served on loopback on non-default ports, with all their
# state under $FLASHSALE_CACHE/services.
#
#   hack/services.sh up | down | status
#   hack/services.sh start | stop | restart | kill9  postgres|redis|kafka   (for fault tests)
#
# `up` writes the connection settings to hack/.services.env (source it).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVICES=(postgres redis kafka)
PG_PORT=15432
REDIS_PORT=16379
KAFKA_PORT=19092
KAFKA_CONTROLLER_PORT=19093
START_TIMEOUT=120
ENV_FILE="$REPO_ROOT/hack/.services.env"
# Resolved, because the cwd of a postgres process (which postgres.sh compares) is.
mkdir -p "$FLASHSALE_CACHE/services"
STATE=$(cd "$FLASHSALE_CACHE/services" && pwd -P)

# set -e stops silently; say where, so a failed step is never a mystery.
set -E
trap 'log "ERROR: line $LINENO: \"$BASH_COMMAND\" failed"' ERR

# Each defines, for its service S: S_install, S_launch, S_answers, S_after_ready, S_pid_file,
# S_process (pattern of its command line), S_ports, S_log, S_stop_signal, S_children.
# shellcheck source=hack/services/postgres.sh
. "$REPO_ROOT/hack/services/postgres.sh"
# shellcheck source=hack/services/redis.sh
. "$REPO_ROOT/hack/services/redis.sh"
# shellcheck source=hack/services/kafka.sh
. "$REPO_ROOT/hack/services/kafka.sh"

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

rotate_log() { if [[ -f $1 ]] && (( $(stat -c %s "$1") > 20000000 )); then mv -f "$1" "$1.1"; fi; }

# Beside the services: `make test` brings them up before it builds, and the build and the TLS
# tests need OpenSSL too: rdkafka-sys builds librdkafka's SSL/SASL against the system's
# (found with pkg-config), and booking-app/tests/store_tls.rs makes its certificates with the CLI.
install_all() {
  local svc
  apt_install libssl-dev pkg-config openssl
  for svc in "${SERVICES[@]}"; do "${svc}_install"; done
}

# svc_pid SERVICE: print the server's PID and succeed if it runs (a recycled PID does not count).
svc_pid() {
  local pid="" file
  file=$("${1}_pid_file")
  [[ -f $file ]] && { read -r pid <"$file"; } 2>/dev/null
  [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$("${1}_process")" || return 1
  echo "$pid"
}

# launch SERVICE: start it unless it already runs; refuse a port held by someone else.
launch() {
  local svc=$1 port
  if svc_pid "$svc" >/dev/null; then return 0; fi
  for port in $("${svc}_ports"); do
    if port_busy "$port"; then
      die "$svc: port 127.0.0.1:$port is in use by a process that is not ours ($(port_owner "$port")); stop it or free the port"
    fi
  done
  log "$svc: starting"
  "${svc}_launch"
}

# await SERVICE: wait until it answers, failing at once if its process dies.
await() {
  local svc=$1 pid logfile
  logfile=$("${svc}_log")
  if ! pid=$(svc_pid "$svc"); then
    tail -n 30 "$logfile" >&2 2>/dev/null || true
    die "$svc: not running after start (log: $logfile)"
  fi
  if "${svc}_answers"; then
    log "$svc: running (pid $pid), answering"
  elif ! (wait_until "$START_TIMEOUT" "$svc" "$pid" "${svc}_answers"); then
    tail -n 30 "$logfile" >&2 2>/dev/null || true
    die "$svc: did not come up (log: $logfile)"
  fi
  "${svc}_after_ready"
}

stop_svc() {
  local svc=$1 pid
  pid=$(svc_pid "$svc") || { log "$svc: not running"; return 0; }
  log "$svc: stopping (pid $pid)"
  kill -"$("${svc}_stop_signal")" "$pid"
  if ! wait_gone 60 "$pid"; then
    log "$svc: still running after 60s, sending SIGKILL"
    kill9_svc "$svc"
    return 0
  fi
  log "$svc: stopped"
}

# kill9_svc SERVICE: the crash of the whole server, its children included. Stopped first, so it
# cannot fork while they are collected.
kill9_svc() {
  local svc=$1 pid victims
  pid=$(svc_pid "$svc") || die "$svc: not running, nothing to kill"
  kill -STOP "$pid"
  mapfile -t victims < <(echo "$pid"; pgrep -P "$pid" || true; "${svc}_children")
  kill -KILL "${victims[@]}" 2>/dev/null || true
  wait_gone 10 "${victims[@]}" || die "$svc: processes survived SIGKILL: ${victims[*]}"
  log "$svc: killed with SIGKILL (pid $pid)"
}

status_svc() {
  local svc=$1 pid ports
  if ! pid=$(svc_pid "$svc"); then
    printf '%-9s stopped\n' "$svc"
    return 1
  fi
  if ! "${svc}_answers"; then
    printf '%-9s running (pid %s), NOT answering (log: %s)\n' "$svc" "$pid" "$("${svc}_log")"
    return 1
  fi
  read -r ports _ < <("${svc}_ports")
  printf '%-9s running (pid %s), answering on 127.0.0.1:%s\n' "$svc" "$pid" "$ports"
}

write_env() {
  cat >"$ENV_FILE.tmp" <<EOF
# Written by hack/services.sh up: connection settings of the local services. Source it.
export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/flashsale
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
# Kafka jars and a quiet log4j2 config for its tools:
#   java -Dlog4j2.configurationFile="\$KAFKA_TOOLS_LOG4J" -cp "\$KAFKA_LIB/*" org.apache.kafka.tools.TopicCommand ...
export KAFKA_LIB=$KAFKA_LIB
export KAFKA_TOOLS_LOG4J=$KAFKA_TOOLS_LOG4J
# PostgreSQL binaries (psql, pgbench).
export PG_BIN=$PG_BIN
EOF
  mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

cmd=${1:-}
[[ -n $cmd ]] || usage
if [[ $cmd != status ]]; then
  # One services.sh at a time changes things: engineers and test runs share these services.
  exec 9>"$STATE/.lock"
  flock -w 600 9 || die "another hack/services.sh held the lock for 10 minutes"
fi

case $cmd in
  up)
    install_all
    # Launched slowest first and awaited together, so the starts overlap.
    for svc in kafka postgres redis; do launch "$svc"; done
    for svc in "${SERVICES[@]}"; do await "$svc"; done
    write_env
    log "services up; settings in ${ENV_FILE#"$REPO_ROOT"/} (source it)"
    ;;
  down)
    for svc in kafka redis postgres; do stop_svc "$svc"; done
    ;;
  status)
    rc=0
    for svc in "${SERVICES[@]}"; do status_svc "$svc" || rc=1; done
    exit "$rc"
    ;;
  start | stop | restart | kill9)
    svc=${2:-}
    [[ " ${SERVICES[*]} " == *" $svc "* ]] || die "unknown service '$svc' (one of: ${SERVICES[*]})"
    case $cmd in
      start) "${svc}_install"; launch "$svc"; await "$svc" ;;
      stop) stop_svc "$svc" ;;
      restart) "${svc}_install"; stop_svc "$svc"; launch "$svc"; await "$svc" ;;
      kill9) kill9_svc "$svc" ;;
    esac
    ;;
  *) usage ;;
esac
