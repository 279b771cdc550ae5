#!/usr/bin/env bash
# Posts one file to a dataset's import route and prints the JSON answer.
#   examples/sh/post.sh FILE [CONTENT_TYPE]
# DATASET defaults to companies (GET /datasets lists the others); API_URL
# to the local api (make dev-up); API_KEY is sent as a Bearer token when
# set (for an api started with API_KEYS).
set -euo pipefail
file=${1:?usage: post.sh FILE [CONTENT_TYPE]}
content_type=${2:-application/json}
api=${API_URL:-http://127.0.0.1:8080}
dataset=${DATASET:-companies}
auth=()
[ -n "${API_KEY:-}" ] && auth=(-H "Authorization: Bearer $API_KEY")
curl -sS -X POST "$api/import/$dataset?filename=$(basename "$file")" \
  -H "Content-Type: $content_type" "${auth[@]}" \
  --data-binary "@$file" \
  -w '\nHTTP %{http_code}\n'
