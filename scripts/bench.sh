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
# The issue's measurement: reveal beside its floor (same I/O, same run), 10k
# subjects (1M with KLUIS_BENCH_1M=1), provider calls at 0 and 25 ms through
# the KMS and Transit test servers, a new keyring epoch while serving, peak
# RSS of `kluis serve` in its own process, root rotation's provider calls,
# the EXPLAIN buffers of reveal's and the floor's reads.
# KLUIS_BENCH_SECONDS sets each load's length (default 10).
echo "uptime before: $(uptime)"
echo "## honest reveal run (KLUIS_BENCH_1M=${KLUIS_BENCH_1M:-0}, KLUIS_BENCH_SECONDS=${KLUIS_BENCH_SECONDS:-10})"
go test -run '^$' -bench 'RevealHonest' -benchtime 1x -timeout 3h ./api/ 2>&1 | grep -E '^(honest:|Benchmark|ok|FAIL|---)|bench_(honest|process)'
echo "uptime after: $(uptime)"
echo
run -bench 'RevealKMS|RevealFloor' -benchtime 3000x -count 3 ./api/
run -bench 'Record|Seal' -benchtime 3000x -count 3 ./compliance/
run -bench 'LogLine' -benchmem -count 3 ./logging/
run -bench 'BenchmarkMemory' -benchmem -count 3 ./api/ratelimit/
run -bench 'PurgeWhileServing' -benchtime 1x ./api/
