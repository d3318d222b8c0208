#!/bin/bash
# Entry point of flashsale/kafka:local (hack/images.sh): a KRaft broker from the jars in
# /opt/kafka/libs, configured like the apache/kafka image: every KAFKA_* variable is a property
# of server.properties (the prefix dropped, lower case, `_` -> `.`, `__` -> `_`, `___` -> `-`)
# except the JVM's (KAFKA_HEAP_OPTS, KAFKA_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_GC_LOG_OPTS,
# KAFKA_JMX_OPTS, KAFKA_LOG4J_OPTS, KAFKA_VERSION and the KAFKA_*LOG4J* levels); CLUSTER_ID
# formats the log dirs the first time (a second format with the same id is a no-op). With no
# KAFKA_PROCESS_ROLES, a single broker+controller on :9092/:9093 (as apache/kafka's defaults).
# server.properties goes to KAFKA_CONFIG_DIR (/opt/kafka/config, owned by the image's user
# 1000; point it at a volume for a read-only root filesystem). Arguments, when given, are run
# instead (e.g. kafka-topics.sh ...).
set -Eeuo pipefail

if (( $# )); then exec "$@"; fi

say() { printf '%s kafka-entrypoint: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

if [[ -z ${KAFKA_PROCESS_ROLES:-} ]]; then
  : "${KAFKA_NODE_ID:=1}" "${KAFKA_PROCESS_ROLES:=broker,controller}"
  : "${KAFKA_LISTENERS:=PLAINTEXT://:9092,CONTROLLER://:9093}"
  : "${KAFKA_ADVERTISED_LISTENERS:=PLAINTEXT://localhost:9092}"
  : "${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT}"
  : "${KAFKA_CONTROLLER_LISTENER_NAMES:=CONTROLLER}"
  : "${KAFKA_CONTROLLER_QUORUM_VOTERS:=1@localhost:9093}"
  : "${KAFKA_LOG_DIRS:=/var/lib/kafka/data}"
  : "${KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR:=1}" "${KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR:=1}"
  : "${KAFKA_TRANSACTION_STATE_LOG_MIN_ISR:=1}" "${KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR:=1}"
  : "${KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR:=1}" "${KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS:=0}"
  : "${CLUSTER_ID:=5L6g3nShT-eMCtK--X86sw}"
  export "${!KAFKA_@}" CLUSTER_ID
fi
if [[ -z ${CLUSTER_ID:-} ]]; then say "CLUSTER_ID is not set (22 characters, URL-safe base64)"; exit 1; fi

config_dir="${KAFKA_CONFIG_DIR:-/opt/kafka/config}"
props="$config_dir/server.properties"
mkdir -p "$config_dir"
not_properties=" KAFKA_VERSION KAFKA_HEAP_OPTS KAFKA_LOG4J_OPTS KAFKA_OPTS KAFKA_JMX_OPTS \
KAFKA_JVM_PERFORMANCE_OPTS KAFKA_GC_LOG_OPTS KAFKA_LOG4J_ROOT_LOGLEVEL KAFKA_LOG4J_LOGGERS \
KAFKA_TOOLS_LOG4J_LOGLEVEL KAFKA_CONFIG_DIR "

# property_name VAR: KAFKA_FOO_BAR -> foo.bar, KAFKA_A__B -> a_b, KAFKA_A___B -> a-b.
property_name() {
  local key="${1#KAFKA_}"
  key="${key//___/$'\x01'}"; key="${key//__/$'\x02'}"; key="${key//_/.}"
  key="${key//$'\x01'/-}"; key="${key//$'\x02'/_}"
  printf '%s' "${key,,}"
}

{
  echo "# Written by kafka-entrypoint.sh from the KAFKA_* environment at $(date -u +%FT%TZ)"
  for var in $(compgen -e | grep '^KAFKA_' | sort); do
    [[ $not_properties == *" $var "* ]] && continue
    printf '%s=%s\n' "$(property_name "$var")" "${!var}"
  done
} >"$props.tmp"
mv -f "$props.tmp" "$props"

classpath='/opt/kafka/libs/*'
log4j="-Dlog4j2.configurationFile=${KAFKA_LOG4J_CONFIG:-/opt/kafka/config/log4j2.properties}"
tools_log4j="-Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.properties"

format=(format -t "$CLUSTER_ID" -c "$props" -g)
# A dynamic quorum (controller.quorum.bootstrap.servers) starts as this one controller.
if [[ -z ${KAFKA_CONTROLLER_QUORUM_VOTERS:-} && $KAFKA_PROCESS_ROLES == *controller* ]]; then
  format+=(--standalone)
fi
say "formatting the log dirs (cluster id $CLUSTER_ID) unless done before"
# shellcheck disable=SC2086 # KAFKA_OPTS is a list of JVM flags
java $tools_log4j ${KAFKA_OPTS:-} -cp "$classpath" kafka.tools.StorageTool "${format[@]}" >&2

# shellcheck disable=SC2086 # the *_OPTS are lists of JVM flags, as in kafka-run-class.sh
exec java ${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true} \
  ${KAFKA_GC_LOG_OPTS:-} ${KAFKA_JMX_OPTS:-} "$log4j" ${KAFKA_LOG4J_OPTS:-} ${KAFKA_OPTS:-} \
  -cp "$classpath" kafka.Kafka "$props"
