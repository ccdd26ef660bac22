#!/usr/bin/env bash
# sessiongate against nginx over TLS: CPU per request on keep-alive
# connections and per new handshake, side by side, on 127.0.0.1 only.
# Appends its figures to bench/RESULTS.md.
#
#   bench/tls.sh                       # 3 rounds of 5 s per setup
#   bench/tls.sh --rounds 1 --seconds 3
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in nginx wrk openssl python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench/tls.sh needs $tool" >&2; exit 1; }
done
cargo build --release --quiet --bin sessiongate --example bench-backend
exec python3 bench/tls.py "$@"
