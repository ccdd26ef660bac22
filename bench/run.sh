#!/usr/bin/env bash
# sessiongate benchmark matrix: nginx round-robin, HAProxy sticky cookie,
# nginx + Lua + Redis and sessiongate (memory; Redis; Redis + cache in two
# tracking modes), each in three workloads (one hot session, 10,000 sessions
# at random, the same with 10% updates), side by side in one run, on
# 127.0.0.1 only. Installs nothing: it says what is missing. Results go to
# bench/RESULTS.md.
#
#   bench/run.sh              # 5 rounds of 6 s per target and workload (about 17 minutes)
#   bench/run.sh --quick      # 1 round of 2 s, a smoke test (under 3 minutes);
#                             # prints its report, writes it only with --out FILE
#   bench/run.sh --steady     # the cache under continuous load, windows of two
#                             # touch intervals (bench/steady.py, about 10 minutes;
#                             # results in bench/STEADY.md)
#   bench/run.sh --allocs     # allocations per request under continuous load, touches
#                             # at their steady rate (bench/allocs.py, about 10 minutes;
#                             # results in bench/ALLOCS.md)
#   bench/run.sh --instructions [--store memory|redis|cache] [BINARY ...]
#                             # user-space instructions per request under callgrind,
#                             # against nginx: repeatable on a busy machine, for A/B
#                             # of the hot path (bench/instructions.py, about 1 minute)
#
# Allocations per request need perf with uprobes (as root); without them that
# column stays empty. nginx + Lua needs Debian's libnginx-mod-http-lua.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in nginx haproxy wrk redis-server redis-cli python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || missing+=(libnginx-mod-http-lua)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/run.sh needs: ${missing[*]}" >&2
  debian=()
  for tool in "${missing[@]}"; do
    case "$tool" in
      python3) debian+=(python3) ;;
      redis-server | redis-cli) debian+=(redis-server redis-tools) ;;
      cargo) echo "  cargo: install Rust from https://rustup.rs" >&2 ;;
      *) debian+=("$tool") ;;
    esac
  done
  [ ${#debian[@]} -gt 0 ] && echo "  on Debian: sudo apt-get install ${debian[*]}" >&2
  exit 1
fi
command -v perf >/dev/null 2>&1 || echo "bench/run.sh: no perf (Debian: linux-perf): no allocation counts" >&2

cargo build --release --quiet --bin sessiongate --example bench-backend
if [ "${1:-}" = --steady ]; then
  shift
  exec python3 bench/steady.py "$@"
fi
if [ "${1:-}" = --allocs ]; then
  shift
  exec python3 bench/allocs.py "$@"
fi
if [ "${1:-}" = --instructions ]; then
  shift
  command -v valgrind >/dev/null 2>&1 || { echo "bench/run.sh --instructions needs valgrind (Debian: valgrind)" >&2; exit 1; }
  exec python3 bench/instructions.py "$@"
fi
exec python3 bench/run.py "$@"
