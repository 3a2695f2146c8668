#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time each (default 10s).
# A failure leaves its input under testdata/fuzz/ for `git add`.
set -euo pipefail
time=${1:-10s}
status=0
while IFS= read -r file; do
  pkg="./$(dirname "${file#./}")"
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    echo "fuzz: $pkg $target for $time"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" "$pkg" >/tmp/kluis-fuzz.log 2>&1; then
      cat /tmp/kluis-fuzz.log; status=1
    else
      tail -n 1 /tmp/kluis-fuzz.log
    fi
  done
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | sort)
exit $status
