#!/usr/bin/env bash
# The test suite: installs what is missing (scripts/prerequisites.sh), then
# runs every test. Each test starts its own redis-server, backends and
# sessiongate on free 127.0.0.1 ports, and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh
cargo test "$@"
