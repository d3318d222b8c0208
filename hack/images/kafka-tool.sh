#!/bin/sh
# The Kafka tools of flashsale/kafka:local, under the names of apache/kafka's /opt/kafka/bin:
# kafka-topics.sh, kafka-console-producer.sh, kafka-console-consumer.sh, kafka-storage.sh,
# kafka-consumer-groups.sh, kafka-run-class.sh CLASS (each a link to this script).
set -eu
case "$(basename "$0")" in
  kafka-topics.sh) class=org.apache.kafka.tools.TopicCommand ;;
  kafka-console-producer.sh) class=org.apache.kafka.tools.ConsoleProducer ;;
  kafka-console-consumer.sh) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  kafka-storage.sh) class=kafka.tools.StorageTool ;;
  kafka-consumer-groups.sh) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  kafka-run-class.sh) class=$1; shift ;;
  *) echo "kafka-tool.sh: unknown tool $(basename "$0")" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086 # KAFKA_OPTS is a list of JVM flags
exec java -Xmx256m -Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.properties ${KAFKA_OPTS:-} \
  -cp '/opt/kafka/libs/*' "$class" "$@"
