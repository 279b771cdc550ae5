#!/usr/bin/env bash
# Posts the broken examples and shows how each is answered:
#   malformed.json     400 invalid_json with line and column
#   missing-name.json  422 missing_company
#   bad-inn.json       202, then a ValidationError event (INN checksum)
#   schema-errors.json 202, then one ValidationError listing every bad path
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for f in malformed missing-name bad-inn schema-errors; do
  echo "== $f.json"
  "$here/post.sh" "$here/../data/json/companies/invalid/$f.json"
done
