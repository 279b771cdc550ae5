#!/usr/bin/env bash
# Fuzzes a live cmd-api with schemathesis, driven by api/openapi.yaml: no
# answer may be a 5xx, and every status, content type, header and body must
# be one the spec documents. Part of `make test`; `make fuzz` runs it alone.
#
#   FUZZ_EXAMPLES=n   test cases per operation (default 100)
#   FUZZ_SEED=n       replay a run (the seed is printed at the start)
#
# Needs the itest stack (`make itest-up`) and a built cmd-api
# (`cargo test --workspace --no-run` builds it as `make test` does).
# Schemathesis is installed once into a per-version virtualenv next to the
# stack's other tools.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/etl-pipeline/tools}
ST_VERSION=4.32.5
ST_DIR="$TOOLS_DIR/schemathesis-$ST_VERSION"
EXAMPLES=${FUZZ_EXAMPLES:-100}
ENV_FILE="$ROOT/.local/itest/stack.env"
API_BIN="$ROOT/target/debug/cmd-api"
OUT="$ROOT/.local/itest/fuzz"

LOG_TAG=fuzz
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

install_schemathesis() {
  [ -x "$ST_DIR/bin/st" ] && return 0
  command -v python3 >/dev/null || die "python3 is needed for schemathesis"
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  say "installing schemathesis $ST_VERSION into $ST_DIR (once)"
  rm -rf "$ST_DIR"
  python3 -m venv "$ST_DIR"
  "$ST_DIR/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
}

[ -f "$ENV_FILE" ] || die "no $ENV_FILE: run 'make itest-up' first"
[ -x "$API_BIN" ] || die "no $API_BIN: run 'cargo test --workspace --no-run' first"
install_schemathesis

# The api gets its own bucket and topics, like every test does.
RUN_ID="fuzz-$(date +%s)-$$"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$OUT"
LOG="$OUT/cmd-api.log"
(
  set -a
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  set +a
  export API_LISTEN_ADDR="127.0.0.1:$PORT" S3_BUCKET="$RUN_ID" KAFKA_TOPIC_PREFIX="$RUN_ID." \
    LOG_FORMAT=json RUST_LOG=warn
  exec "$API_BIN"
) >"$LOG" 2>&1 &
API_PID=$!
trap 'kill -TERM $API_PID 2>/dev/null || true; wait $API_PID 2>/dev/null || true' EXIT

deadline=$((SECONDS + 60))
until curl -fsS "http://127.0.0.1:$PORT/readiness" >/dev/null 2>&1; do
  kill -0 "$API_PID" 2>/dev/null || die "cmd-api exited before it was ready; see $LOG"
  [ $SECONDS -lt $deadline ] || die "cmd-api not ready within 60 s; see $LOG"
  sleep 0.2
done

say "fuzzing cmd-api on :$PORT, $EXAMPLES cases per operation (report in $OUT)"
seed=()
[ -n "${FUZZ_SEED:-}" ] && seed=(--seed "$FUZZ_SEED")
"$ST_DIR/bin/st" run "$ROOT/api/openapi.yaml" \
  --url "http://127.0.0.1:$PORT" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" \
  --workers 2 \
  --generation-database none \
  --request-timeout 30 \
  --no-color \
  --report junit --report-dir "$OUT" \
  "${seed[@]}"
kill -0 "$API_PID" 2>/dev/null || die "cmd-api died during the fuzz run; see $LOG"
curl -fsS "http://127.0.0.1:$PORT/readiness" >/dev/null || die "cmd-api is not ready after the fuzz run; see $LOG"
say "cmd-api still ready after the fuzz run; its import outcomes:"
curl -fsS "http://127.0.0.1:$PORT/metrics" | grep '^import_requests_total' | sed 's/^/  /'

