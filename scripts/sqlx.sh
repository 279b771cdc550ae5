#!/usr/bin/env bash
# The compile-checked queries' offline data (.sqlx/, committed): the
# services build without a database because every `sqlx::query!` finds its
# statement's types there. sqlx-cli is installed once, at the version of
# the workspace's sqlx, next to the stack's other tools.
#
#   scripts/sqlx.sh check     .sqlx/ matches every query of the code (make lint)
#   scripts/sqlx.sh prepare   rewrite .sqlx/ after changing a query
#
# Both describe the queries against a scratch database of the itest stack,
# migrated from migrations/ (so `make itest-up` first; make does it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/etl-pipeline/tools}
ENV_FILE="$ROOT/.local/itest/stack.env"
SCRATCH_DB=sqlx_prepare

LOG_TAG=sqlx
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# The sqlx version Cargo.lock resolved: sqlx-cli must describe queries
# the way the macros of that version read them.
SQLX_VERSION=$(awk '/^name = "sqlx"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$ROOT/Cargo.lock")
[ -n "$SQLX_VERSION" ] || die "no sqlx in Cargo.lock"
SQLX_DIR="$TOOLS_DIR/sqlx-cli-$SQLX_VERSION"
CARGO_SQLX="$SQLX_DIR/bin/cargo-sqlx"

install_sqlx_cli() {
  [ -x "$CARGO_SQLX" ] && return 0
  say "building sqlx-cli $SQLX_VERSION into $SQLX_DIR (once, a few minutes)"
  cargo install --quiet --locked --root "$SQLX_DIR" --version "=$SQLX_VERSION" \
    --no-default-features --features postgres sqlx-cli
}

# A fresh scratch database, migrated; prints its URL.
scratch_database() {
  [ -f "$ENV_FILE" ] || die "no $ENV_FILE: run 'make itest-up' first"
  local admin_url base
  admin_url=$(sed -n 's/^DATABASE_URL=//p' "$ENV_FILE")
  base=${admin_url%/*}
  DATABASE_URL="$admin_url" "$CARGO_SQLX" sqlx database drop -y -D "$base/$SCRATCH_DB" >/dev/null
  DATABASE_URL="$base/$SCRATCH_DB" "$CARGO_SQLX" sqlx database create >/dev/null
  DATABASE_URL="$base/$SCRATCH_DB" "$CARGO_SQLX" sqlx migrate run --source "$ROOT/migrations" >/dev/null
  echo "$base/$SCRATCH_DB"
}

install_sqlx_cli
url=$(scratch_database)
cd "$ROOT"
case "${1:-check}" in
  check)
    DATABASE_URL="$url" PATH="$SQLX_DIR/bin:$PATH" cargo sqlx prepare --workspace --check \
      || die ".sqlx/ is stale: run scripts/sqlx.sh prepare and commit .sqlx/"
    ;;
  prepare)
    DATABASE_URL="$url" PATH="$SQLX_DIR/bin:$PATH" cargo sqlx prepare --workspace
    say "wrote .sqlx/; commit it with the queries"
    ;;
  *) die "usage: $0 check|prepare" ;;
esac
