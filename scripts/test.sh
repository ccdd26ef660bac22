#!/usr/bin/env bash
# The test suite: installs what is missing (scripts/prerequisites.sh), then
# runs every test, including those marked #[ignore] because they need what
# prerequisites.sh installs (the Python apps of examples/). Each test starts
# its own redis-server, backends and sessiongate on free 127.0.0.1 ports, and
# stops them. Extra arguments go to the test binaries (a name filter, say).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh
cargo test -- --include-ignored "$@"
