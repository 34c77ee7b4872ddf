#!/bin/sh
# Interleaved A/B of builds of the fault-runtime benchmarks (BENCHMARKS.md,
# "A/B against 8cd5f73"). Usage:
#   examples/bench/ab.sh ROUNDS NAME=DIR [NAME=DIR ...] > results.txt
# (AB_WORKLOADS="fanout hold" picks workloads; default all four: fanout,
# single, lagging — the fan-out with actix's default mailbox of 16, so
# that subscribers lag and are fed from the logs — and hold)
# where each DIR holds release builds of bench_fanout and bench_hold
# (e.g. $CARGO_TARGET_DIR/release/examples). Each round runs every workload
# once per build, the order of the builds rotating from round to round;
# each invocation is one run in a fresh process (--runs 1).
set -eu
rounds=$1; shift
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg); builds: $*"
workload() {
  case $1 in
    fanout) echo "bench_fanout --sessions 1000 --lines 1000 --runs 1 --dir /dev/shm" ;;
    single) echo "bench_fanout --sessions 1 --lines 1000000 --runs 1 --dir /dev/shm" ;;
    lagging) echo "bench_fanout --sessions 1000 --lines 1000 --mailbox 16 --runs 1 --dir /dev/shm" ;;
    hold) echo "bench_hold --sessions 10000 --runs 1 --dir /dev/shm" ;;
  esac
}
r=1
while [ "$r" -le "$rounds" ]; do
  for w in ${AB_WORKLOADS:-fanout single lagging hold}; do
    set -- "$@"
    n=0
    for b in "$@"; do n=$((n + 1)); done
    # Rotate: round r starts with build ((r-1) mod n).
    i=0
    order=""
    for b in "$@"; do order="$order $b"; done
    k=$(( (r - 1) % n ))
    rot=$(echo $order | tr ' ' '\n' | awk -v k="$k" -v n="$n" '{a[NR-1]=$0} END {for (j=0;j<n;j++) print a[(j+k)%n]}')
    for b in $rot; do
      name=${b%%=*}; dir=${b#*=}
      cmd=$(workload "$w")
      echo "== $w $name round $r (load $(cut -d' ' -f1 /proc/loadavg))"
      "$dir"/$cmd | grep -E '^run 1:'
    done
  done
  r=$((r + 1))
done
echo "# done $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
