#!/usr/bin/env bash
# Posts the example employees (one object, an array of 19, NDJSON of 4),
# then the broken ones, and says how each broken one is answered:
#   missing-name.json  422 missing_document_name (no "full_name")
#   bad-snils.json     202, then a ValidationError at /snils (checksum)
#   schema-errors.json 202, then one ValidationError listing every bad path,
#                      the unknown field "department" among them
# A moment later:
#   psql "$DATABASE_URL" -c 'select snils, full_name, company_inn from employees'
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data="$here/../data/json/employees"
export DATASET=employees
"$here/post.sh" "$data/e.json"
"$here/post.sh" "$data/employees.json"
"$here/post.sh" "$data/employees.ndjson" application/x-ndjson
for f in missing-name bad-snils schema-errors; do
  echo "== invalid/$f.json"
  "$here/post.sh" "$data/invalid/$f.json"
done
