#!/usr/bin/env bash
# Runs each fuzz target for a bounded time with cargo-fuzz (libFuzzer), on the
# stable toolchain: `--sanitizer none` needs no nightly flags.
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # 10 minutes per target
#   scripts/fuzz.sh 60 cookie  # one target
#
# Needs `cargo install cargo-fuzz`. Inputs it finds go to fuzz/corpus/<target>
# (kept between runs, not committed); a crash goes to fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
targets=${2:-"cookie update config"}
command -v cargo-fuzz >/dev/null 2>&1 || { echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 1; }
for target in $targets; do
  mkdir -p "corpus/$target"
  echo "== $target: ${seconds}s"
  cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 2>&1 |
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)|ERROR|panicked|SUMMARY" || true
  if [ -d "artifacts/$target" ] && [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "crash inputs in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
