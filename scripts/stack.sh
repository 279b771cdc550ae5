#!/usr/bin/env bash
# The native local stack: PostgreSQL, tansu (Kafka protocol) and s3s-fs (S3),
# on loopback, with all state under .local/<stack>/ (git-ignored).
#
#   scripts/stack.sh <dev|itest> <up|down|status|env>
#
# `up` installs what is missing (apt packages, and the two servers with
# `cargo install` into a per-version cache shared by all clones), starts what
# is not running, and writes .local/<stack>/stack.env for the services and
# the tests. Running it twice is harmless.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STACK=${1:?usage: stack.sh <dev|itest> <up|down|status|env>}
ACTION=${2:?usage: stack.sh <dev|itest> <up|down|status|env>}

case "$STACK" in
  dev)   PG_PORT=${PG_PORT:-55432} KAFKA_PORT=${KAFKA_PORT:-19092} S3_PORT=${S3_PORT:-19000} ;;
  itest) PG_PORT=${PG_PORT:-55433} KAFKA_PORT=${KAFKA_PORT:-29092} S3_PORT=${S3_PORT:-29000} ;;
  *) echo "unknown stack '$STACK' (dev or itest)" >&2; exit 2 ;;
esac

DIR="$ROOT/.local/$STACK"
LOGS="$DIR/logs"
RUN="$DIR/run"
ENV_FILE="$DIR/stack.env"
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/etl-pipeline/tools}
TANSU_VERSION=0.6.0
S3S_VERSION=0.14.1
# Our patches to tansu (scripts/tansu/) and s3s-fs (scripts/s3s-fs/); bump
# a level when its patches change so that every machine rebuilds.
TANSU_PATCH_LEVEL=p5
S3S_PATCH_LEVEL=p1
TANSU_BIN="$TOOLS_DIR/tansu-$TANSU_VERSION-$TANSU_PATCH_LEVEL/bin/tansu"
S3S_BIN="$TOOLS_DIR/s3s-fs-$S3S_VERSION-$S3S_PATCH_LEVEL/bin/s3s-fs"
S3_ACCESS_KEY_ID=etl-dev
S3_SECRET_ACCESS_KEY=etl-dev-secret
PG_DB=etl

LOG_TAG=$STACK
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# --- installing what is missing -------------------------------------------

APT_UPDATED=0
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "please install: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing ${missing[*]} (apt)"
  if [ "$APT_UPDATED" -eq 0 ]; then $sudo apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Fetches <version> of every crate that has a folder of patches under
# <patch_root> (scripts/<tool>/<crate>/*.patch) with cargo (so a registry
# mirror configured for cargo works too), applies them, and leaves the
# patched copies in <src_root>/<crate>.
fetch_patched() { # tool version patch_root src_root
  local tool=$1 version=$2 patch_root=$3 src_root=$4
  [ -f "$src_root/.patched" ] && return 0
  local crates=() crate dir
  for dir in "$patch_root"/*/; do crates+=("$(basename "$dir")"); done
  say "fetching $tool $version's ${crates[*]} (cargo) and patching them"
  rm -rf "$src_root" && mkdir -p "$src_root"
  local tmp manifests
  tmp=$(mktemp -d)
  mkdir -p "$tmp/src" && : > "$tmp/src/lib.rs"
  # The tools are binary crates: depend on the patched crates directly.
  {
    printf '[package]\nname = "fetch-%s"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n' "$tool"
    for crate in "${crates[@]}"; do printf '%s = "=%s"\n' "$crate" "$version"; done
  } > "$tmp/Cargo.toml"
  manifests=$(cd "$tmp" && cargo metadata --quiet --format-version 1 | python3 -c '
import json, sys
version, wanted = sys.argv[1], set(sys.argv[2:])
for p in json.load(sys.stdin)["packages"]:
    if p["name"] in wanted and p["version"] == version:
        print(p["name"], p["manifest_path"])' "$version" "${crates[@]}") \
    || die "could not fetch $tool $version with cargo"
  rm -rf "$tmp"
  for crate in "${crates[@]}"; do
    local manifest p
    manifest=$(awk -v c="$crate" '$1 == c {print $2}' <<<"$manifests")
    [ -n "$manifest" ] || die "$tool $version has no crate $crate ($patch_root/$crate)"
    mkdir -p "$src_root/$crate" && cp -r "$(dirname "$manifest")/." "$src_root/$crate/"
    for p in "$patch_root/$crate"/*.patch; do
      patch -s -p1 -d "$src_root/$crate" < "$p" || die "$p does not apply to $crate $version"
    done
  done
  touch "$src_root/.patched"
}

# tansu 0.6.0 built against patched copies of some of its crates
# (scripts/tansu/<crate>/*.patch). Why each patch exists:
# docs/reliability.md and docs/local-stack.md.
install_tansu() {
  [ -x "$TANSU_BIN" ] && return 0
  local src_root="$TOOLS_DIR/src/tansu-$TANSU_VERSION-$TANSU_PATCH_LEVEL"
  fetch_patched tansu "$TANSU_VERSION" "$ROOT/scripts/tansu" "$src_root"
  local config=() dir
  for dir in "$src_root"/*/; do
    config+=(--config "patch.crates-io.$(basename "$dir").path=\"${dir%/}\"")
  done
  say "building tansu $TANSU_VERSION (patched) once into $TOOLS_DIR (about 10 minutes on 2 cores)"
  # cargo's own temporary target folder (about 2 GB) is removed once the
  # binary is installed: CI disks can be small.
  cargo install --quiet --locked tansu \
    --version "$TANSU_VERSION" --features libsql "${config[@]}" \
    --root "$TOOLS_DIR/tansu-$TANSU_VERSION-$TANSU_PATCH_LEVEL"
}

# s3s-fs, patched (scripts/s3s-fs/s3s-fs/*.patch; docs/local-stack.md).
install_s3s_fs() {
  [ -x "$S3S_BIN" ] && return 0
  local src_root="$TOOLS_DIR/src/s3s-fs-$S3S_VERSION-$S3S_PATCH_LEVEL"
  fetch_patched s3s-fs "$S3S_VERSION" "$ROOT/scripts/s3s-fs" "$src_root"
  say "building s3s-fs $S3S_VERSION (patched) once into $TOOLS_DIR (a few minutes on 2 cores)"
  cargo install --quiet --locked --path "$src_root/s3s-fs" --features binary \
    --root "$TOOLS_DIR/s3s-fs-$S3S_VERSION-$S3S_PATCH_LEVEL"
}

install_all() {
  # cmake and the curl headers build librdkafka for the services;
  # postgresql is the database server.
  apt_install cmake libcurl4-openssl-dev postgresql
  # Without --features libsql tansu has no durable storage engine; the
  # memory engine loses data on resume (see docs/local-stack.md).
  install_tansu
  install_s3s_fs
}

# --- processes ------------------------------------------------------------

wait_port() { # port name log [pidfile]
  local deadline=$((SECONDS + 60))
  until port_open "$1"; do
    [ $SECONDS -lt $deadline ] || die "$2 did not open port $1 within 60 s; see $3"
    if [ -n "${4:-}" ] && ! pid_alive "$4"; then
      tail -n 5 "$3" >&2; die "$2 exited; see $3"
    fi
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

# --- broker and object store ------------------------------------------------

kafka_up() {
  mkdir -p "$DIR/tansu"
  # tansu resolves the sqlite path relative to its working directory.
  START_DIR="$DIR/tansu" start_bg tansu "$RUN/tansu.pid" "$LOGS/tansu.log" "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine "sqlite://tansu.db"
  wait_port "$KAFKA_PORT" tansu "$LOGS/tansu.log" "$RUN/tansu.pid"
}

# tansu ignores SIGTERM: ask with SIGINT, then insist.
kafka_down() { stop_bg tansu "$RUN/tansu.pid" INT 10; }

s3_up() {
  mkdir -p "$DIR/s3"
  start_bg s3s-fs "$RUN/s3s-fs.pid" "$LOGS/s3s-fs.log" "$S3S_BIN" \
    --host 127.0.0.1 --port "$S3_PORT" \
    --access-key "$S3_ACCESS_KEY_ID" --secret-key "$S3_SECRET_ACCESS_KEY" "$DIR/s3"
  wait_port "$S3_PORT" s3s-fs "$LOGS/s3s-fs.log" "$RUN/s3s-fs.pid"
}

s3_down() { stop_bg s3s-fs "$RUN/s3s-fs.pid" TERM 10; }

write_env() {
  cat >"$ENV_FILE" <<ENV
# Written by scripts/stack.sh $STACK up; sourced by the Makefile.
DATABASE_URL=$DB_URL
KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
S3_ENDPOINT=http://127.0.0.1:$S3_PORT
S3_REGION=us-east-1
S3_ACCESS_KEY_ID=$S3_ACCESS_KEY_ID
S3_SECRET_ACCESS_KEY=$S3_SECRET_ACCESS_KEY
STACK_DIR=$DIR
TANSU_BIN=$TANSU_BIN
PG_BIN=$(pg_bin)
S3S_FS_BIN=$S3S_BIN
ENV
}

case "$ACTION" in
  up)
    install_all
    pg_up
    kafka_up
    s3_up
    write_env
    say "stack up: postgres 127.0.0.1:$PG_PORT, kafka 127.0.0.1:$KAFKA_PORT, s3 http://127.0.0.1:$S3_PORT ($ENV_FILE)"
    ;;
  down)
    s3_down
    kafka_down
    pg_down
    ;;
  status)
    for svc in "postgres:$PG_PORT" "kafka:$KAFKA_PORT" "s3:$S3_PORT"; do
      if port_open "${svc#*:}"; then say "${svc%%:*} up on ${svc#*:}"; else say "${svc%%:*} down"; fi
    done
    ;;
  env)
    [ -f "$ENV_FILE" ] || die "no $ENV_FILE: run 'make ${STACK/dev/dev}-up' first"
    cat "$ENV_FILE"
    ;;
  *) die "unknown action '$ACTION'" ;;
esac
