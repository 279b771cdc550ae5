#!/usr/bin/env bash
# What `make bench` drives and watches the services with, installed once:
#
#   scripts/bench.sh install    wrk (the flat 64-connection load phase) and,
#                               when BENCH_PROFILE is set, perf (linux-perf)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=bench
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

case "${1:-}" in
  install)
    command -v wrk >/dev/null || apt_install wrk
    if [ -n "${BENCH_PROFILE:-}" ]; then
      command -v perf >/dev/null || apt_install linux-perf
    fi
    ;;
  *) die "usage: $0 install" ;;
esac
