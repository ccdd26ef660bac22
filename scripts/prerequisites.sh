#!/usr/bin/env bash
# Installs what the test suite needs and a fresh Debian machine with Rust
# lacks: redis-server and redis-cli (the tests start their own, on free
# loopback ports), openssl and iproute2 (the topology tests),
# and a Python virtual environment at .venv with Flask, Tornado, gunicorn and
# PyYAML, for the end-to-end tests of examples/ and deploy/, and Debian's
# chromium, which tests/status_page.rs drives headless. Does nothing when
# everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The topology tests: a Cluster built with redis-cli, certificates made with
# openssl, Redis in a network namespace set up with ip.
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
if command -v python3 >/dev/null 2>&1 && ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if ! .venv/bin/python -c "import flask, tornado, gunicorn, yaml" >/dev/null 2>&1; then
  echo "creating .venv with flask, tornado, gunicorn and pyyaml"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check flask tornado gunicorn pyyaml
fi
