#!/usr/bin/env bash
# Builds the three images (Dockerfile.{api,processor,monitoring}) with the
# version metadata /liveness shows. Needs a Docker engine; says so if there
# is none (these development machines have only the client).
#
#   IMAGE_TAG=0.1.0 scripts/images.sh     (default: the workspace version)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=build
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

command -v docker >/dev/null || die "no docker client: install Docker to build the images (the native stack needs none: make dev-up)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed): the images can only be built where one runs. Nothing was built. \
The Dockerfiles are still checked offline by make deploy-check (hadolint and project rules)."

TAG=${IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)}
[ "$TAG" != latest ] || die "IMAGE_TAG=latest: give images a real version"
SHA=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH=$(git -C "$ROOT" rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
NOW=$(date -u +%FT%TZ)
for service in api processor monitoring; do
  say "building etl/cmd-$service:$TAG"
  DOCKER_BUILDKIT=1 docker build -f "$ROOT/Dockerfile.$service" -t "etl/cmd-$service:$TAG" \
    --build-arg "ETL_GIT_SHA=$SHA" --build-arg "ETL_GIT_BRANCH=$BRANCH" --build-arg "ETL_BUILD_TIME=$NOW" \
    "$ROOT"
done
say "built etl/cmd-{api,processor,monitoring}:$TAG"
