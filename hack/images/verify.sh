# shellcheck shell=bash
# `hack/images.sh verify [NAME...]` (sourced by hack/images.sh): each image built is unpacked and
# run with runc, without Kubernetes, the way the operator's pod templates run it: the image's
# uid, the env and args the operator sets, a read-only root filesystem where it sets one, the
# volumes it mounts (bind mounts and tmpfs), every capability dropped, no new privileges. The
# probes run inside the container (`runc exec`), as a kubelet's exec probes do. Host network,
# servers bound to 127.0.0.1 on ports of their own (VERIFY_*_PORT), so nothing clashes with
# hack/services.sh. Every container is stopped by its PID, and deleted, on the way out.

knobs VERIFY PG_PORT=25432 REDIS_PORT=26379 KAFKA_PORT=29092 KAFKA_CONTROLLER_PORT=29093 APP_PORT=28080
VERIFY_DIR="$IMAGES_DIR/verify"
RUNC_ROOT="$VERIFY_DIR/runc"
VERIFY_STARTED=()

runc_() { runc --root "$RUNC_ROOT" "$@"; }

# container_prepare ID IMAGE [oci_image.py runc-config flags...]: a bundle under $VERIFY_DIR/ID.
container_prepare() {
  local id="$1" image="$2" b="$VERIFY_DIR/$1"; shift 2
  container_stop "$id"
  rm -f "$b/config.json"
  # Unpacked again only when the image changed (a restart reuses it, as a node would).
  if [[ ! -f $b/image.key || $(<"$b/image.key") != "$(cat "$IMAGES_DIR/$image.tar.key" 2>/dev/null)" ]]; then
    rm -rf "$b"
    mkdir -p "$b"
    niced python3 "$OCI_IMAGE" unpack "$IMAGES_DIR/$image.tar" "$b/rootfs"
    cp "$IMAGES_DIR/$image.tar.key" "$b/image.key" 2>/dev/null || true
  fi
  python3 "$OCI_IMAGE" runc-config "$IMAGES_DIR/$image.tar" --rootfs "$b/rootfs" --host-network \
    --bind "$VERIFY_DIR/hosts:/etc/hosts:ro" --output "$b/config.json" "$@"
}

# container_start ID IMAGE [flags...]: runs it detached, output to $VERIFY_DIR/ID/log.
container_start() {
  local id="$1" b="$VERIFY_DIR/$1"
  container_prepare "$@"
  VERIFY_STARTED+=("$id")
  runc_ run -d --bundle "$b" --pid-file "$b/pid" "fs-$id" </dev/null >"$b/log" 2>&1 ||
    { cat "$b/log" >&2; die "$id: runc run failed"; }
  log "$id: started (pid $(<"$b/pid"), log $b/log)"
}

# container_run ID IMAGE [flags...]: runs it in the foreground, to completion; its status.
container_run() {
  local id="$1" b="$VERIFY_DIR/$1" rc=0
  container_prepare "$@"
  runc_ run --bundle "$b" "fs-$id" </dev/null || rc=$?
  runc_ delete --force "fs-$id" >/dev/null 2>&1 || true
  return "$rc"
}

container_pid() { local p; p=$(cat "$VERIFY_DIR/$1/pid" 2>/dev/null) && pid_alive "$p" && echo "$p"; }

# container_exec ID CMD...: CMD inside the running container, as its user, with its env.
container_exec() { local id="$1"; shift; runc_ exec "fs-$id" "$@"; }

# container_stop ID [SIGNAL]: the container's init stopped by PID, then the container deleted.
container_stop() {
  local id="$1" sig="${2:-TERM}" pid
  if pid=$(container_pid "$id"); then
    kill -"$sig" "$pid" 2>/dev/null || true
    if ! wait_gone 60 "$pid"; then
      log "$id: still running 60s after SIG$sig: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
      wait_gone 10 "$pid" || log "$id ($pid) survived SIGKILL"
    fi
    log "$id: stopped (pid $pid)"
  fi
  runc_ delete --force "fs-$id" >/dev/null 2>&1 || true
  rm -f "$VERIFY_DIR/$id/pid"
}

verify_cleanup() {
  local id
  for id in "${VERIFY_STARTED[@]}"; do container_stop "$id"; done
  VERIFY_STARTED=()
}

# fresh_volume DIR UID: an empty directory owned by UID (what fsGroup gives a pod's volume).
fresh_volume() { rm -rf "$1"; install -d -o "$2" -g "$2" -m 770 "$1"; }

# empty_dir ID NAME: a fresh directory for a volume like a kubelet's emptyDir (mode 0777), its path.
empty_dir() { local d="$VERIFY_DIR/$1-$2"; rm -rf "$d"; install -d -m 777 "$d"; echo "$d"; }

check_ports() {
  local p
  for p in "$@"; do port_busy "$p" && die "port 127.0.0.1:$p is in use ($(port_owner "$p")): set VERIFY_*_PORT"; done
  return 0
}

PG_PASSWORD=verify-pg-password
pg_ready() { container_exec postgres pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -U flashsale -d flashsale; }

start_postgres() {
  check_ports "$PG_PORT"
  [[ ${1:-} == keep ]] || fresh_volume "$VERIFY_DIR/postgres-data" 999
  # As operator/src/reconcile/desired/postgres.rs: uid 999, POSTGRES_*, PGDATA below the
  # volume, read-only root, /var/run/postgresql, /tmp and /dev/shm as emptyDirs, `-c max_connections`.
  container_start postgres postgres --readonly \
    --args "[\"-c\",\"max_connections=64\",\"-c\",\"port=$PG_PORT\",\"-c\",\"listen_addresses=127.0.0.1,127.0.0.2\"]" \
    --env POSTGRES_USER=flashsale --env POSTGRES_DB=flashsale --env "POSTGRES_PASSWORD=$PG_PASSWORD" \
    --env PGDATA=/var/lib/postgresql/data/pgdata \
    --bind "$VERIFY_DIR/postgres-data:/var/lib/postgresql/data" \
    --bind "$(empty_dir postgres run):/var/run/postgresql" --bind "$(empty_dir postgres tmp):/tmp"
  wait_until 120 "postgres: pg_isready (in the container)" "$(container_pid postgres)" pg_ready
}

verify_postgres() {
  local got
  start_postgres
  got=$(container_exec postgres psql -X -tA -h 127.0.0.1 -p "$PG_PORT" -U flashsale -d flashsale -c 'select 1')
  [[ $got == 1 ]] || die "postgres: psql -c 'select 1' printed '$got'"
  log "postgres: psql -c 'select 1' -> $got (in the container)"
  # initdb trusts the container's own loopback and socket (as in the official image): the
  # password counts from elsewhere (pod IPs), by the line the entry point adds.
  got=$(container_exec postgres psql -X -tA -h 127.0.0.1 -p "$PG_PORT" -U flashsale -d flashsale -c \
    "select rolpassword like 'SCRAM-SHA-256\$%' from pg_authid where rolname = 'flashsale'")
  [[ $got == t ]] || die "postgres: POSTGRES_PASSWORD was not set as flashsale's scram-sha-256 password"
  container_exec postgres grep -qx 'host all all all scram-sha-256' /var/lib/postgresql/data/pgdata/pg_hba.conf ||
    die "postgres: pg_hba.conf has no 'host all all all scram-sha-256'"
  got=$(PGCONNECT_TIMEOUT=5 "${PG_BIN:-/usr/lib/postgresql/15/bin}/psql" -X -tA "postgresql://flashsale@127.0.0.1:$PG_PORT/flashsale" \
    -c 'create table verify (v int); insert into verify values (42); select version()')
  log "postgres: POSTGRES_PASSWORD set (scram-sha-256, required off loopback); from the host: $(tail -n 1 <<<"$got" | cut -c1-40)"
  container_stop postgres INT
  start_postgres keep
  got=$(container_exec postgres psql -X -tA -h 127.0.0.1 -p "$PG_PORT" -U flashsale -d flashsale -c 'select v from verify')
  [[ $got == 42 ]] || die "postgres: the row written before the restart is gone ('$got')"
  if grep -q initdb "$VERIFY_DIR/postgres/log"; then die "postgres: initdb ran again on a formatted volume"; fi
  log "postgres: restarted on its volume, no second initdb, data kept (select v -> $got)"
  # Only the volumes are writable.
  if container_exec postgres touch /usr/local/bin/x 2>/dev/null; then die "postgres: the root filesystem is writable"; fi
  log "postgres: root filesystem read-only; runs as $(container_exec postgres id -u):$(container_exec postgres id -g)"
}

verify_redis() {
  local pass=verify-redis-password got
  check_ports "$REDIS_PORT"
  fresh_volume "$VERIFY_DIR/redis-data" 999
  # As operator/src/reconcile/desired/redis.rs: command redis-server, its args ($(REDIS_PASSWORD)
  # expanded here as the kubelet would), REDISCLI_AUTH for the probe, uid 999, read-only root, /data.
  container_start redis redis --readonly --command '["redis-server"]' \
    --args "[\"--port\",\"$REDIS_PORT\",\"--bind\",\"127.0.0.1\",\"--dir\",\"/data\",\"--appendonly\",\"yes\",\"--appendfsync\",\"always\",\"--requirepass\",\"$pass\",\"--maxmemory\",\"805306368\",\"--maxmemory-policy\",\"noeviction\"]" \
    --env "REDIS_PASSWORD=$pass" --env "REDISCLI_AUTH=$pass" \
    --bind "$VERIFY_DIR/redis-data:/data"
  wait_until 60 "redis: redis-cli ping (in the container)" "$(container_pid redis)" \
    bash -c "[[ \$(runc --root '$RUNC_ROOT' exec fs-redis redis-cli -p $REDIS_PORT ping) == PONG ]]"
  got=$(container_exec redis redis-cli -p "$REDIS_PORT" set verify ok)
  got+=" $(container_exec redis redis-cli -p "$REDIS_PORT" get verify)"
  [[ $got == "OK ok" ]] || die "redis: set/get printed '$got'"
  got=$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>&1 || true)
  [[ $got == *NOAUTH* ]] || die "redis: answered without the password: '$got'"
  log "redis: PONG, set/get ok, NOAUTH without the password; $(container_exec redis redis-server --version | cut -d' ' -f1-3)"
  [[ -d $VERIFY_DIR/redis-data/appendonlydir ]] || die "redis: no AOF under /data"
  log "redis: AOF in the volume: $(cd "$VERIFY_DIR/redis-data/appendonlydir" && echo *)"
  container_stop redis
}

KAFKA_CLUSTER_ID=""
# start_kafka [FLAGS...]: the broker on its volume, as the operator runs it, plus FLAGS.
start_kafka() {
  check_ports "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
  # As operator/src/reconcile/desired/kafka.rs (its KAFKA_* env, CLUSTER_ID, uid 1000, the root
  # filesystem writable: the start script writes server.properties), on 127.0.0.1 and our ports.
  container_start kafka kafka "$@" \
    --env "CLUSTER_ID=$KAFKA_CLUSTER_ID" --env KAFKA_NODE_ID=1 --env KAFKA_PROCESS_ROLES=broker,controller \
    --env "KAFKA_LISTENERS=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT" \
    --env "KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://127.0.0.1:$KAFKA_PORT" \
    --env KAFKA_CONTROLLER_LISTENER_NAMES=CONTROLLER --env KAFKA_INTER_BROKER_LISTENER_NAME=PLAINTEXT \
    --env KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT \
    --env "KAFKA_CONTROLLER_QUORUM_VOTERS=1@localhost:$KAFKA_CONTROLLER_PORT" \
    --env KAFKA_LOG_DIRS=/var/lib/kafka/data/logs \
    --env KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1 --env KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1 \
    --env KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1 --env KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR=1 \
    --env KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR=1 --env KAFKA_MIN_INSYNC_REPLICAS=1 \
    --env KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS=0 --env KAFKA_AUTO_CREATE_TOPICS_ENABLE=false \
    --env "KAFKA_HEAP_OPTS=-Xms512m -Xmx512m" \
    --bind "$VERIFY_DIR/kafka-data:/var/lib/kafka/data"
  # kafka_answers (hack/services/kafka.sh) asks for Metadata on KAFKA_PORT.
  wait_until 180 "kafka: Metadata answered" "$(container_pid kafka)" env KAFKA_PORT="$KAFKA_PORT" bash -c \
    ". '$REPO_ROOT/hack/services/kafka.sh'; kafka_answers"
}

verify_kafka() {
  local id out
  fresh_volume "$VERIFY_DIR/kafka-data" 1000
  KAFKA_CLUSTER_ID=$(kafka_cluster_id)
  start_kafka
  log "kafka: server.properties as written: $(container_exec kafka grep -c . /opt/kafka/config/server.properties) lines, e.g. $(container_exec kafka grep '^controller.quorum.voters' /opt/kafka/config/server.properties)"
  container_exec kafka kafka-topics.sh --bootstrap-server "127.0.0.1:$KAFKA_PORT" --create --topic verify \
    --partitions 3 --replication-factor 1 >&2
  id=$RANDOM
  printf 'one-%s\ntwo-%s\nthree-%s\n' "$id" "$id" "$id" |
    runc_ exec fs-kafka kafka-console-producer.sh --bootstrap-server "127.0.0.1:$KAFKA_PORT" --topic verify \
      --command-property acks=all
  out=$(container_exec kafka kafka-console-consumer.sh --bootstrap-server "127.0.0.1:$KAFKA_PORT" --topic verify \
    --from-beginning --max-messages 3 --timeout-ms 60000 --group verify | sort | tr '\n' ' ')
  [[ $out == "one-$id three-$id two-$id " ]] || die "kafka: consumed '$out'"
  log "kafka: topic created, 3 records produced and consumed back: $out"
  log "kafka: runs as $(container_exec kafka id -u):$(container_exec kafka id -g), $(container_exec kafka java -version 2>&1 | head -n 1)"
  container_stop kafka
  # Again on the same volume, the root filesystem read-only and server.properties on the volume:
  # the second format is a no-op, and the records are still there.
  start_kafka --readonly --env KAFKA_CONFIG_DIR=/var/lib/kafka/data/config \
    --bind "$(empty_dir kafka tmp):/tmp"
  out=$(container_exec kafka kafka-console-consumer.sh --bootstrap-server "127.0.0.1:$KAFKA_PORT" --topic verify \
    --from-beginning --max-messages 3 --timeout-ms 60000 --group verify-again | sort | tr '\n' ' ')
  [[ $out == "one-$id three-$id two-$id " ]] || die "kafka: after the restart, consumed '$out'"
  log "kafka: restarted read-only (KAFKA_CONFIG_DIR on the volume), the records still there: $out"
  container_stop kafka
}

verify_booking_app() {
  local started_pg="" got admin event
  container_run booking-app-help booking-app --args '["--help"]' | head -n 3 >&2
  if ! container_pid postgres >/dev/null; then start_postgres; started_pg=1; fi
  head -c 32 /dev/urandom | base64 >"$VERIFY_DIR/auth-secret"
  chmod 644 "$VERIFY_DIR/auth-secret"
  check_ports "$APP_PORT"
  # As the operator's booking-app pods: uid 65532, read-only root, /tmp an emptyDir.
  container_start booking-app booking-app --readonly --bind "$(empty_dir booking-app tmp):/tmp" \
    --env STAGE=postgres --env "LISTEN_ADDR=127.0.0.1:$APP_PORT" \
    --env "DATABASE_URL=postgres://flashsale:$PG_PASSWORD@127.0.0.1:$PG_PORT/flashsale" \
    --env MIGRATE_ON_START=true --env LOG_FORMAT=json \
    --env AUTH_HS256_SECRET_FILE=/var/run/flashsale/auth/secret \
    --bind "$VERIFY_DIR/auth-secret:/var/run/flashsale/auth/secret:ro"
  wait_until 60 "booking-app: /readyz" "$(container_pid booking-app)" \
    curl -sf --max-time 2 "http://127.0.0.1:$APP_PORT/readyz"
  got=$(curl -s --max-time 2 -w ' %{http_code}' "http://127.0.0.1:$APP_PORT/healthz")
  log "booking-app: /healthz -> $got"
  admin=$(container_exec booking-app booking-app token --user ops --admin)
  event=$(curl -s --max-time 5 -XPOST "http://127.0.0.1:$APP_PORT/events" -H "authorization: Bearer $admin" \
    -H 'content-type: application/json' -d '{"name":"Image check","tickets":10,"per_user_limit":2}')
  got=$(curl -s --max-time 5 -XPOST "http://127.0.0.1:$APP_PORT/events/$(jq -r .id <<<"$event")/bookings" \
    -H "authorization: Bearer $admin" -H 'content-type: application/json' -H "Idempotency-Key: verify-$RANDOM" \
    -d '{"quantity":2}')
  [[ $(jq -r .status <<<"$got") == confirmed ]] || die "booking-app: the booking came back $got"
  log "booking-app: an event created and a booking confirmed through the image: $(jq -c '{status,quantity}' <<<"$got")"
  container_stop booking-app
  [[ -z $started_pg ]] || container_stop postgres INT
}

verify_operator() {
  local crd
  container_run operator-help operator --args '["--help"]' | head -n 3 >&2
  crd=$(container_run operator-crd operator --readonly --args '["crd"]')
  grep -q 'kind: CustomResourceDefinition' <<<"$crd" || die "operator: crd printed no CustomResourceDefinition"
  log "operator: 'flashsale-operator crd' in the image printed the CRD ($(wc -l <<<"$crd") lines)"
}

cmd_verify() {
  local names=("$@") n
  ((${#names[@]})) || names=("${ALL_IMAGES[@]}")
  if (( EUID != 0 )); then die "verify needs root (runc)"; fi
  command -v runc >/dev/null || apt_install runc
  command -v jq >/dev/null || apt_install jq
  for n in "${names[@]}"; do
    [[ -f $IMAGES_DIR/$n.tar ]] || die "$IMAGES_DIR/$n.tar not found: hack/images.sh build $n"
  done
  mkdir -p "$VERIFY_DIR"
  exec 8>"$VERIFY_DIR/.lock"
  flock -n 8 || die "another hack/images.sh verify runs"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\tflashsale\n' >"$VERIFY_DIR/hosts"
  # shellcheck disable=SC2034 # read by hack/services/kafka.sh
  STATE="$FLASHSALE_CACHE/services"
  # shellcheck source=hack/services/kafka.sh # for kafka_cluster_id
  . "$REPO_ROOT/hack/services/kafka.sh"
  trap verify_cleanup EXIT
  for n in "${names[@]}"; do
    log "--- verifying flashsale/$n:$IMAGES_TAG"
    "verify_${n//-/_}"
  done
  verify_cleanup
  log "verified: ${names[*]}"
}
