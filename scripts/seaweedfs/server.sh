#!/usr/bin/env bash
# Runs a local SeaweedFS (`weed mini`: master, volume server, filer and S3
# gateway in one process) in the foreground (exec, so the caller's pid is
# the server's), with everything it writes under <dir>. Used by
# scripts/stack.sh and by the tests' own S3 servers.
#
#   WEED_BIN=<weed> S3_ACCESS_KEY_ID=… S3_SECRET_ACCESS_KEY=… \
#     scripts/seaweedfs/server.sh <dir> <base port>
#
# S3 answers on <base port>; the other parts take the nine ports after it.
set -euo pipefail
DIR=${1:?dir} PORT=${2:?base port}
: "${WEED_BIN:?must name the weed binary}"
: "${S3_ACCESS_KEY_ID:?must be set}" "${S3_SECRET_ACCESS_KEY:?must be set}"

mkdir -p "$DIR/data" "$DIR/tmp"
# Without identities the gateway accepts anyone: always give it one.
cat >"$DIR/s3.json" <<JSON
{"identities": [{"name": "etl", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
  "credentials": [{"accessKey": "$S3_ACCESS_KEY_ID", "secretKey": "$S3_SECRET_ACCESS_KEY"}]}]}
JSON

# TMPDIR: weed writes its logs there unless told otherwise.
export TMPDIR="$DIR/tmp"
# -master.telemetry=false: telemetry is on by default and reports to the
# vendor. The admin UI, WebDAV, Iceberg and Lance endpoints are not needed.
# Every bucket is a collection with volumes of its own, and by default the
# volume count is capped at the free disk divided by the volume size (about
# 80 on a test machine: the 78th bucket could not store a byte). Volumes
# grow as written, not preallocated, so a high cap costs nothing.
exec "$WEED_BIN" -logdir="$DIR/tmp" mini -dir="$DIR/data" \
  -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.telemetry=false -webdav=false -admin.ui=false \
  -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$DIR/s3.json" \
  -s3.port="$PORT" -s3.port.grpc=$((PORT + 1)) \
  -master.port=$((PORT + 2)) -master.port.grpc=$((PORT + 3)) \
  -volume.max=10000 -volume.port=$((PORT + 4)) -volume.port.grpc=$((PORT + 5)) \
  -filer.port=$((PORT + 6)) -filer.port.grpc=$((PORT + 7)) \
  -admin.port=$((PORT + 8)) -admin.port.grpc=$((PORT + 9)) \
  -filer.localSocket="$DIR/filer.sock" -s3.localSocket="$DIR/s3.sock"
