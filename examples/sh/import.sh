#!/usr/bin/env bash
# Posts the example companies: one object, an array of 56 and NDJSON.
# Then, a moment later, they are in Postgres:
#   psql "$DATABASE_URL" -c 'select inn, name from companies'
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data="$here/../data/json/companies"
"$here/post.sh" "$data/c.json"
"$here/post.sh" "$data/companies.json"
"$here/post.sh" "$data/companies.ndjson" application/x-ndjson
