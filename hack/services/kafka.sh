# shellcheck shell=bash
# Apache Kafka for hack/services.sh (sourced): the broker's jars from Maven Central (kafka/pom.xml),
# run with java as one combined KRaft broker+controller on 127.0.0.1. Defines the kafka_* hooks.

KAFKA_DIR="$STATE/kafka"
KAFKA_FILES="$REPO_ROOT/hack/services/kafka"
# The jars are a cache shared by every checkout; the broker's data is state, under $STATE.
KAFKA_LIB="$FLASHSALE_CACHE/kafka/lib"
KAFKA_TOOLS_LOG4J="$KAFKA_FILES/tools-log4j2.properties"

kafka_install() {
  local pom="$KAFKA_FILES/pom.xml" sum jars
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  sum=$(sha256sum "$pom" | cut -d' ' -f1)
  # The stamp ties the jars to the pom: editing a version there fetches again.
  if [[ -f $KAFKA_LIB/.pom.sha256 && $(<"$KAFKA_LIB/.pom.sha256") == "$sum" ]]; then return 0; fi
  command -v mvn >/dev/null || apt_install maven
  log "kafka: fetching the broker jars from Maven Central into $KAFKA_LIB"
  rm -rf "$KAFKA_LIB.tmp"
  mkdir -p "$FLASHSALE_CACHE/kafka"
  (cd "$KAFKA_FILES" && mvn -q -B -f "$pom" -Dmaven.repo.local="$FLASHSALE_CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIB.tmp" \
    >"$FLASHSALE_CACHE/kafka/mvn.log" 2>&1) ||
    { cat "$FLASHSALE_CACHE/kafka/mvn.log" >&2; die "kafka: mvn dependency:copy-dependencies failed"; }
  echo "$sum" >"$KAFKA_LIB.tmp/.pom.sha256"
  rm -rf "$KAFKA_LIB" && mv "$KAFKA_LIB.tmp" "$KAFKA_LIB"
  jars=("$KAFKA_LIB"/*.jar)
  log "kafka: ${#jars[@]} jars ready"
}

kafka_pid_file() { echo "$KAFKA_DIR/kafka.pid"; }
kafka_process() { echo kafka.Kafka; }
kafka_ports() { echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT"; }
kafka_log() { echo "$KAFKA_DIR/kafka.log"; }
kafka_stop_signal() { echo TERM; }
kafka_children() { :; }

# A raw Metadata request (v4, the oldest Kafka 4 accepts; all topics): the broker answers only
# once it has caught up with the quorum, and lists itself only once unfenced, so a broker count
# of at least one means clients can produce. Costs milliseconds, where a tool JVM costs seconds.
kafka_answers() {
  local hex
  hex=$( (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT" || exit 1
    # size 23 | api_key 3 | version 4 | correlation 1 | client_id "fs-ready" | topics null | no auto-create
    printf '\x00\x00\x00\x17\x00\x03\x00\x04\x00\x00\x00\x01\x00\x08fs-ready\xff\xff\xff\xff\x00' >&3
    timeout 3 od -An -tx1 -N16 <&3) 2>/dev/null | tr -d ' \n') || return 1
  # size(4) correlation_id(4) throttle_time_ms(4) broker_count(4)
  [[ ${#hex} -eq 32 && ${hex:8:8} == 00000001 ]] && (( 16#${hex:24:8} >= 1 ))
}

# What `StorageTool random-uuid` prints (16 random bytes, URL-safe base64, no padding; never a
# leading '-'), without paying for a JVM start.
kafka_cluster_id() {
  local id
  until [[ ${id:-"-"} != -* ]]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  done
  echo "$id"
}

kafka_write_config() {
  # One combined broker+controller. The short heartbeat/session let a broker killed with -9
  # re-register after ~5 s instead of ~13 s (the old registration has to expire first).
  cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by hack/services.sh on every start: edit hack/services/kafka.sh, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DIR/data
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
default.replication.factor=1
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
EOF
}

kafka_launch() {
  mkdir -p "$KAFKA_DIR/data"
  kafka_write_config
  if [[ ! -f $KAFKA_DIR/data/meta.properties ]]; then
    [[ -s $KAFKA_DIR/cluster.id ]] || kafka_cluster_id >"$KAFKA_DIR/cluster.id"
    log "kafka: formatting $KAFKA_DIR/data (cluster id $(<"$KAFKA_DIR/cluster.id"))"
    java -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$KAFKA_LIB/*" kafka.tools.StorageTool \
      format --standalone -g -t "$(<"$KAFKA_DIR/cluster.id")" -c "$KAFKA_DIR/server.properties" \
      >/dev/null || die "kafka: storage format failed"
  fi
  rotate_log "$KAFKA_DIR/kafka.log"
  # ExitOnOutOfMemoryError: a broker out of heap dies (and readiness notices) instead of limping.
  spawn_daemon "$KAFKA_DIR/kafka.pid" "$KAFKA_DIR/kafka.log" java -Xmx512m \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_FILES/log4j2.properties" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_DIR/server.properties"
}

kafka_after_ready() { :; }
