#!/usr/bin/env bash
# Static checks: go vet, gofmt, staticcheck, gosec and govulncheck, at the
# versions pinned in tools/go.mod (built into bin/tools from the module
# proxy's checksummed sources). Any finding fails; an exception is allowed
# only as a justified comment in place (//lint:ignore for staticcheck,
# "#nosec RULE -- why" for gosec). govulncheck needs its database
# (vuln.go.dev); where that cannot be reached the script says so in one line
# instead of failing. Last, Spectral with the OWASP ruleset over the contract
# (scripts/spectral.sh; needs node 20 and npm).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin/tools
mkdir -p "$bin"
for pkg in honnef.co/go/tools/cmd/staticcheck github.com/securego/gosec/v2/cmd/gosec golang.org/x/vuln/cmd/govulncheck; do
  go build -C tools -o "../$bin/" "$pkg"
done
status=0
step() { echo "lint: $*"; }

step "go vet"
go vet ./... || status=1

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "$unformatted"; status=1; fi

step "staticcheck $("$bin/staticcheck" -version | awk '{print $2, $3}')"
"$bin/staticcheck" ./... || status=1

step "gosec"
# Generated code (client/kluisapi, "Code generated ... DO NOT EDIT.") is left
# out: a #nosec in it would be lost at the next `go generate`.
"$bin/gosec" -quiet -fmt=text -exclude-dir=tools -exclude-generated ./... || status=1

step "govulncheck"
vulndb=${GOVULNDB:-https://vuln.go.dev}
if curl -fsS --max-time 5 -o /dev/null "$vulndb/index/db.json" 2>/dev/null; then
  "$bin/govulncheck" -db "$vulndb" ./... || status=1
else
  echo "govulncheck: skipped, its vulnerability database ($vulndb) cannot be reached from here"
fi
step "spectral (OWASP API Security ruleset) over api/openapi.yaml"
scripts/spectral.sh || status=1
exit $status
