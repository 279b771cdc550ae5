#!/usr/bin/env bash
# The development environment: the native stack plus the three services
# running in the background, logs in .local/dev/logs — or, where a Docker
# engine answers, the compose stack of deployments/development.
#
#   DEV_STACK=native|compose   force one (default: compose if `docker info`
#                              succeeds, native otherwise)
#
#   scripts/dev.sh up      install, start everything, wait until ready, print URLs
#   scripts/dev.sh down    stop the services (gracefully) and the stack
#   scripts/dev.sh status  what is running
#
# Running `up` twice is harmless: what runs keeps running; a service whose
# binary was rebuilt since it started is restarted.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR="$ROOT/.local/dev"
LOGS="$DIR/logs"
RUN="$DIR/run"
SERVICES=(api processor monitoring)
API_URL=${API_URL:-http://127.0.0.1:8080}

LOG_TAG=dev
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

port_of() {
  case "$1" in api) echo 8080 ;; processor) echo 8081 ;; monitoring) echo 8082 ;; esac
}
bin_of() { echo "$ROOT/target/debug/cmd-$1"; }

load_stack_env() {
  set -a
  # shellcheck disable=SC1091
  . "$DIR/stack.env"
  set +a
}

build() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) and run again"
  say "building the services (first build takes several minutes on 2 cores)"
  (cd "$ROOT" && cargo build --quiet -p cmd-api -p cmd-processor -p cmd-monitoring)
}

start_service() {
  local name=$1 pidfile="$RUN/$1.pid"
  if pid_alive "$pidfile" && [ "$(bin_of "$name")" -nt "$pidfile" ]; then
    say "cmd-$name was rebuilt: restarting it"
    stop_service "$name"
  fi
  start_bg "cmd-$name" "$pidfile" "$LOGS/$name.log" "$(bin_of "$name")"
}

# The api's grace period is 20 s by default; allow it and a little more.
stop_service() { stop_bg "cmd-$1" "$RUN/$1.pid" TERM 30; }

wait_ready() {
  local name=$1 url; url="http://127.0.0.1:$(port_of "$1")/readiness"
  local deadline=$((SECONDS + 120))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if ! pid_alive "$RUN/$name.pid"; then
      tail -n 20 "$LOGS/$name.log" >&2
      die "cmd-$name exited; see $LOGS/$name.log"
    fi
    if [ $SECONDS -ge $deadline ]; then
      curl -sS "$url" >&2 || true
      die "cmd-$name not ready after 120 s; see $LOGS/$name.log"
    fi
    sleep 0.5
  done
}

# Which stack `up`, `down` and `status` use.
choose_stack() {
  case "${DEV_STACK:-}" in
    native|compose) echo "$DEV_STACK" ;;
    "") if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo compose; else echo native; fi ;;
    *) die "DEV_STACK must be native or compose, not '$DEV_STACK'" ;;
  esac
}

COMPOSE_FILE="$ROOT/deployments/development/docker-compose.yml"
dev_compose() {
  local env_file="$ROOT/deployments/development/.env"
  [ -f "$env_file" ] || env_file="$ROOT/deployments/development/.env.example"
  compose -p etl-dev -f "$COMPOSE_FILE" --env-file "$env_file" "$@"
}

compose_up() {
  docker info >/dev/null 2>&1 || die "DEV_STACK=compose, but no Docker engine answers (docker info); use DEV_STACK=native"
  say "starting the compose stack (deployments/development): 3 Kafka brokers, MinIO, PostgreSQL, the services, Prometheus, Grafana"
  ETL_GIT_SHA=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown) \
  ETL_GIT_BRANCH=$(git -C "$ROOT" rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown) \
  ETL_BUILD_TIME=$(date -u +%FT%TZ) \
    dev_compose up -d --build
  local s url deadline=$((SECONDS + 300))
  for s in "${SERVICES[@]}"; do
    url="http://127.0.0.1:$(port_of "$s")/readiness"
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
      [ $SECONDS -lt $deadline ] || die "cmd-$s not ready after 300 s; see: docker compose -p etl-dev logs $s"
      sleep 1
    done
  done
  cat <<MSG

[dev] the compose stack is up (docker compose -p etl-dev ...).
  api         $API_URL            (POST /import/companies; spec and UI at $API_URL/docs)
  processor   http://127.0.0.1:8081
  monitoring  http://127.0.0.1:8082    (dashboard; /stats, /files/{id}, /events/stream)
  grafana     http://127.0.0.1:3000    (dashboard "ETL pipeline")
  prometheus  http://127.0.0.1:9090
  minio       http://127.0.0.1:19001   (console)
  logs        docker compose -p etl-dev -f deployments/development/docker-compose.yml logs -f
  stop        make dev-down   (data stays in the named volumes)
MSG
}

up() {
  if [ "$STACK" = compose ]; then compose_up; return; fi
  "$ROOT/scripts/stack.sh" dev up
  load_stack_env
  build
  "$ROOT/target/debug/cmd-processor" migrate
  for s in "${SERVICES[@]}"; do start_service "$s"; done
  for s in "${SERVICES[@]}"; do wait_ready "$s"; done
  cat <<MSG

[dev] everything is up and ready.
  api         $API_URL            (POST /import/companies; spec and UI at $API_URL/docs)
  processor   http://127.0.0.1:8081
  monitoring  http://127.0.0.1:8082    (dashboard; /stats, /files/{id}, /events/stream)
  each has /liveness /readiness /metrics
  logs        $LOGS/{api,processor,monitoring}.log  (JSON lines)
  postgres    $DATABASE_URL
  stop        make dev-down

Try it:
  curl -sS -X POST $API_URL/import/companies -H 'Content-Type: application/json' --data-binary @examples/data/json/companies/c.json
  examples/sh/import.sh
  psql $DATABASE_URL -c 'select inn, name from companies'
MSG
}

down() {
  if [ "$STACK" = compose ]; then dev_compose down; return; fi
  for s in monitoring processor api; do stop_service "$s"; done
  "$ROOT/scripts/stack.sh" dev down
}

status() {
  if [ "$STACK" = compose ]; then dev_compose ps; return; fi
  "$ROOT/scripts/stack.sh" dev status
  for s in "${SERVICES[@]}"; do
    if pid_alive "$RUN/$s.pid"; then say "cmd-$s running (pid $(cat "$RUN/$s.pid"))"; else say "cmd-$s stopped"; fi
  done
}

STACK=$(choose_stack) || exit 1
case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: scripts/dev.sh <up|down|status>" ;;
esac
