# shellcheck shell=bash
# Redis for hack/services.sh (sourced): the Debian redis-server with its own config, bound to
# 127.0.0.1, every write fsynced to the AOF before the reply. Defines the redis_* hooks.

REDIS_DIR="$STATE/redis"

redis_install() {
  # redis-server depends on redis-tools, which brings redis-cli and redis-benchmark.
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return 0; fi
  apt_install redis-server redis-tools
}

redis_pid_file() { echo "$REDIS_DIR/redis.pid"; }
redis_process() { echo redis-server; }
redis_ports() { echo "$REDIS_PORT"; }
redis_log() { echo "$REDIS_DIR/redis.log"; }
redis_stop_signal() { echo TERM; }
# Nothing beyond its direct children (an AOF rewrite child), which kill9 takes anyway.
redis_children() { :; }

redis_answers() {
  [[ $(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

redis_launch() {
  mkdir -p "$REDIS_DIR/data"
  cat >"$REDIS_DIR/redis.conf" <<EOF
# Written by hack/services.sh on every start: edit hack/services/redis.sh, not this file.
bind 127.0.0.1
port $REDIS_PORT
daemonize no
dir $REDIS_DIR/data
logfile ""
# The AOF is the durable record. appendfsync always: Redis fsyncs each write before replying,
# so a booking confirmed from Redis (stage 2) survives kill -9; everysec could lose up to a second.
appendonly yes
appendfsync always
# No RDB snapshots: the AOF already persists everything, and snapshot forks cost under load.
save ""
# Bounded like the operator's Redis (3/4 of its memory limit there): past it writes are refused
# (the API answers 503) instead of keys evicted, which would lose claims and unsynced bookings.
maxmemory 1gb
maxmemory-policy noeviction
EOF
  rotate_log "$REDIS_DIR/redis.log"
  spawn_daemon "$REDIS_DIR/redis.pid" "$REDIS_DIR/redis.log" redis-server "$REDIS_DIR/redis.conf"
}

redis_after_ready() { :; }
