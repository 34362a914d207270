#!/bin/sh
# The benchmark of issue #5: certgate beside nginx and HAProxy on this machine.
# `make bench` builds certgate and bench/'s programs, installs nginx, HAProxy, wrk and
# perf (scripts/deps.sh bench), then runs this. Results: BENCHMARKS.md, and every run in
# bench/results/<date>/ (git-ignored). Environment: BENCH_QUICK=1 for short runs; see
# bench/bench.py for the others.
set -eu
cd "$(dirname "$0")/.."

for f in build/certgate build/bench/loadgen build/bench/hsfloor; do
  [ -x "$f" ] || { echo "bench: $f is missing; run 'make bench' (it builds first)" >&2; exit 1; }
done
PATH="$PATH:/usr/sbin:/sbin"
for t in nginx haproxy wrk openssl taskset python3 curl; do
  command -v "$t" >/dev/null 2>&1 || {
    echo "bench: $t is missing; 'scripts/deps.sh bench' installs it" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
  echo "bench: needs 2 CPUs (the servers on CPU 0, the load on CPU 1)" >&2; exit 1
fi

# case 5 holds 5,000 connections: the load generator needs the descriptors (the servers
# raise their own limits); take the hard limit, at most 65536
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=65536
[ "$hard" -gt 65536 ] && hard=65536
ulimit -n "$hard"

# the harness itself stays off CPU 0; the servers are pinned there explicitly
taskset -c 1 python3 -B bench/bench.py "$@"
# the SNI callback's cost on the full handshake (issue 12): a 1-entry file (no callback)
# and a 4-entry file whose 4th entry SNI picks, instructions per handshake (callgrind)
echo "bench: the SNI callback's cost, full RSA handshake, 1 entry vs 4 entries:"
INSTR_CASES=full-rsa,full-rsa-sni4 INSTR_SERVERS=certgate taskset -c 1 python3 -B bench/instructions.py
# then the cost of metrics (instructions per operation with metrics-listen off and on;
# bench/metrics_cost.py), printed and put into BENCHMARKS.md's "Metrics cost" section
if [ "${BENCH_NO_WRITE:-0}" = 1 ]; then
  exec taskset -c 1 python3 -B bench/metrics_cost.py
fi
exec taskset -c 1 python3 -B bench/metrics_cost.py --update
