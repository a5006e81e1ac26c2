#!/usr/bin/env bash
# Idempotent, cached set-up: virtualenv + project (editable, all extras), Kafka jars, redis-server,
# Helm + actionlint (go install), MovieLens-100K. Re-running does only what is missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
EXTRAS=${RECMESH_EXTRAS:-all,dev}
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip wheel setuptools
fi
stamp=".venv/.recmesh-$(cat pyproject.toml | sha1sum | cut -c1-12)-${EXTRAS//,/_}"
if [ ! -f "$stamp" ]; then
  step "installing recmesh[$EXTRAS] into .venv (PyTorch and PySpark are large; cached afterwards)"
  .venv/bin/pip install -q -e ".[$EXTRAS]"
  rm -f .venv/.recmesh-*; touch "$stamp"
fi

step "Kafka jars"; infra/kafka/kafka.sh fetch
step "redis-server"; infra/redis/redis.sh install

# PostgreSQL server binaries for the SQL importer's integration test (best effort: without them
# that one test skips). Debian starts a system cluster after install; the test runs its own.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  step "PostgreSQL (Debian's packages)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
      && { service postgresql stop >/dev/null 2>&1 || true; }; } || echo "setup: PostgreSQL not installed; its test will skip" >&2
fi

BIN=$ROOT/.cache/bin
mkdir -p "$BIN"
if command -v go >/dev/null; then
  # Module and build caches stay in the user's Go caches, shared by every clone on the machine.
  export GOBIN=$BIN GOFLAGS=-mod=mod
  [ -x "$BIN/helm" ] || { step "building helm (go install)"; go install helm.sh/helm/v4/cmd/helm@v4.3.2; }
  [ -x "$BIN/actionlint" ] || { step "building actionlint (go install)"; go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12; }
else
  echo "setup: go not found; chart and workflow checks will be skipped" >&2
fi

step "MovieLens-100K"; PYTHON=.venv/bin/python infra/data/ml100k.sh >/dev/null
step "setup complete"
