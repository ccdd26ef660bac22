#!/usr/bin/env bash
# sessiongate benchmark: sessiongate against direct, nginx and HAProxy, side
# by side in one run, on 127.0.0.1 only. Installs nothing: it says what is
# missing. Results go to bench/RESULTS.md.
#
#   bench/run.sh              # 3 rounds of 10 s per setup (about 6 minutes)
#   bench/run.sh --quick      # 1 round of 3 s, for a smoke test
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in nginx haproxy wrk redis-server python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/run.sh needs: ${missing[*]}" >&2
  debian=()
  for tool in "${missing[@]}"; do
    case "$tool" in
      python3) debian+=(python3) ;;
      cargo) echo "  cargo: install Rust from https://rustup.rs" >&2 ;;
      *) debian+=("$tool") ;;
    esac
  done
  [ ${#debian[@]} -gt 0 ] && echo "  on Debian: sudo apt-get install ${debian[*]}" >&2
  exit 1
fi

cargo build --release --quiet --bin sessiongate --example bench-backend
exec python3 bench/run.py "$@"
