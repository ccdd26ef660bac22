#!/usr/bin/env bash
# Scale-out benchmark: 1, 2 and 3 sessiongate instances on a 3-master Redis
# Cluster, on 127.0.0.1 only. Installs nothing: it says what is missing.
# Results go to bench/SCALEOUT.md.
#
#   bench/scaleout.sh                 # 3 rounds of 10 s (about 2 minutes)
#   bench/scaleout.sh --rounds 1 --seconds 3
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in wrk redis-server redis-cli python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/scaleout.sh needs: ${missing[*]}" >&2
  exit 1
fi
cargo build --release --quiet --bin sessiongate --example bench-backend
exec python3 bench/scaleout.py "$@"
