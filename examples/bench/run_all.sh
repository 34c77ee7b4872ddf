#!/bin/sh
# Every benchmark of BENCHMARKS.md, in the order of its table. Usage:
#   examples/bench/run_all.sh [output-file]
# Builds the examples and the cldpd binary in release mode first. The fault
# benchmarks run twice: state directory on tmpfs (/dev/shm) and on the
# system temp dir (here an ext4 root file system); see BENCHMARKS.md.
set -eu
out=${1:-bench-results.txt}
cargo build --release --examples --bins
dir=${CARGO_TARGET_DIR:-target}/release/examples
{
  echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || true) load $(cut -d' ' -f1-3 /proc/loadavg)"
  for d in /dev/shm /tmp; do
    "$dir/bench_fanout" --sessions 1000 --lines 1000 --runs 5 --dir "$d"
    "$dir/bench_fanout" --sessions 1 --lines 1000000 --runs 5 --dir "$d"
    "$dir/bench_fanout" --sessions 1 --lines 1000000 --runs 5 --dir "$d" --deliver batches
    "$dir/bench_fanout" --sessions 1000 --lines 200 --runs 5 --dir "$d" --output agent --deliver batches
    "$dir/bench_slow_subscriber" --runs 3 --dir "$d"
    "$dir/bench_hold" --sessions 10000 --runs 3 --dir "$d"
    "$dir/bench_hold" --sessions 10000 --runs 3 --subscriber 0 --dir "$d"
  done
  "$dir/bench_lines" --runs 9
  "$dir/bench_docker_latency" --runs 30
  "$dir/bench_docker_concurrency" --runs 3
  echo "== done, load $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee "$out"
