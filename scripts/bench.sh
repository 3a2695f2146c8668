#!/usr/bin/env bash
# Runs the benchmarks behind docs/BENCHMARKS.md, each figure beside its floor
# in the same run, and prints the machine and the date first. Takes a few
# minutes; run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "go: $(go version | cut -d' ' -f3), postgres: $(psql -V | awk '{print $3}')"
echo
run() { echo "## go test $*"; go test -run '^$' "$@" 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' ; echo; }
run -bench 'Envelope|RawGCM|Cache|StoreOpen' -benchmem -count 3 ./vault/
run -bench 'Reveal' -benchtime 3000x -count 3 ./api/
run -bench 'Record|Seal' -benchtime 3000x -count 3 ./compliance/
run -bench 'LogLine' -benchmem -count 3 ./logging/
run -bench 'BenchmarkMemory' -benchmem -count 3 ./api/ratelimit/
run -bench 'PurgeWhileServing' -benchtime 1x ./api/
