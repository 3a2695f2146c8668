#!/usr/bin/env bash
# Exploratory fuzzing (`make fuzz`): runs every fuzz target in the module for
# the given time each (default 2m), all of them even when one fails.
#
# This is not part of `make test`: new inputs turn up at random, so a gate
# that fuzzed would fail any commit by chance. `make test` runs each target
# over its committed corpus only. When a run here fails, Go has written the
# input to <package>/testdata/fuzz/<target>/; fix the code, keep that file
# (give it a name that says the case) and commit it, so the regression test
# holds it from then on.
set -euo pipefail
time=${1:-2m}
status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
while IFS= read -r file; do
  pkg="./$(dirname "${file#./}")"
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    echo "fuzz: $pkg $target for $time"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" "$pkg" >"$log" 2>&1; then
      cat "$log"; status=1
      echo "fuzz: $pkg $target failed: commit the new input under $pkg/testdata/fuzz/$target/ with the fix"
    else
      tail -n 1 "$log"
    fi
  done
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | sort)
exit $status
