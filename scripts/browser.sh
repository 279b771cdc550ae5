#!/usr/bin/env bash
# Headless Chromium driven by playwright-core, for the dashboard test.
#
#   scripts/browser.sh install     chromium (apt) and playwright-core (npm), once
#   scripts/browser.sh dashboard MONITOR_URL API_URL SCREENSHOT
#                                  opens the dashboard, posts a company through
#                                  the api, waits for the page to show it
#
# `make test` runs `install` before the suite; the test
# (crates/etl-e2e/tests/it/browser.rs) calls `dashboard`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/etl-pipeline/tools}
PLAYWRIGHT_VERSION=1.65.1
PLAYWRIGHT_DIR="$TOOLS_DIR/playwright-core-$PLAYWRIGHT_VERSION"

LOG_TAG=browser
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

chromium_bin() {
  local b
  for b in chromium chromium-browser; do
    command -v "$b" >/dev/null && { command -v "$b"; return 0; }
  done
  return 1
}

install() {
  chromium_bin >/dev/null || apt_install chromium
  if [ ! -f "$PLAYWRIGHT_DIR/node_modules/playwright-core/package.json" ]; then
    command -v npm >/dev/null || apt_install nodejs npm
    say "installing playwright-core $PLAYWRIGHT_VERSION into $PLAYWRIGHT_DIR (npm, once)"
    mkdir -p "$PLAYWRIGHT_DIR"
    npm install --silent --no-audit --no-fund --prefix "$PLAYWRIGHT_DIR" \
      "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null 2>&1 \
      || die "npm could not install playwright-core $PLAYWRIGHT_VERSION"
  fi
}

case "${1:-}" in
  install) install ;;
  dashboard)
    [ $# -eq 4 ] || die "usage: $0 dashboard MONITOR_URL API_URL SCREENSHOT"
    install
    CHROMIUM_BIN=$(chromium_bin) \
      PLAYWRIGHT_CORE="$PLAYWRIGHT_DIR/node_modules/playwright-core" \
      exec node "$ROOT/scripts/browser/dashboard.cjs" "$2" "$3" "$4"
    ;;
  *) die "usage: $0 install | dashboard MONITOR_URL API_URL SCREENSHOT" ;;
esac
