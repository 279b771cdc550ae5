#!/usr/bin/env bash
# Runs one node of a local KRaft cluster in the foreground (exec, so the
# caller's pid is the broker's): writes its server.properties from
# scripts/kafka/server.properties, formats its storage on first start, then
# starts the broker. Used by scripts/stack.sh and by the tests' own clusters.
#
#   KAFKA_HOME=<folder with lib/> scripts/kafka/node.sh \
#     <node dir> <node id> <broker port> <controller port> <voters> <cluster id>
#
# <voters> is controller.quorum.voters (`1@127.0.0.1:p1,2@127.0.0.1:p2,…`);
# with three or more the topics' replication is 3 and min.insync.replicas 2,
# with fewer it is the number of nodes and 1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NODE_DIR=${1:?node dir} NODE_ID=${2:?node id} BROKER_PORT=${3:?broker port}
CONTROLLER_PORT=${4:?controller port} VOTERS=${5:?voters} CLUSTER_ID=${6:?cluster id}
: "${KAFKA_HOME:?must name the folder that holds the broker jars in lib/}"

nodes=$(tr ',' '\n' <<<"$VOTERS" | grep -c .)
if [ "$nodes" -ge 3 ]; then replication=3 min_isr=2; else replication=$nodes min_isr=1; fi

mkdir -p "$NODE_DIR/data"
props="$NODE_DIR/server.properties"
sed -e "s|@NODE_ID@|$NODE_ID|" -e "s|@VOTERS@|$VOTERS|" \
    -e "s|@BROKER_PORT@|$BROKER_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|" \
    -e "s|@DATA_DIR@|$NODE_DIR/data|" -e "s|@REPLICATION@|$replication|g" \
    -e "s|@MIN_ISR@|$min_isr|g" "$HERE/server.properties" >"$props"

java_opts=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20
  -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$HERE/log4j2.yaml")
classpath="$KAFKA_HOME/lib/*"

if [ ! -f "$NODE_DIR/data/meta.properties" ]; then
  # `=`: a cluster id is URL-safe base64 and may start with `-`, which the
  # tool would otherwise take for an option.
  java "${java_opts[@]}" -cp "$classpath" kafka.tools.StorageTool \
    format --cluster-id="$CLUSTER_ID" --config "$props" --ignore-formatted >/dev/null
fi
exec java "${java_opts[@]}" -cp "$classpath" kafka.Kafka "$props"
