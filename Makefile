# kluis: `make dev` for a first look, `make test` for the whole suite.
GO        ?= go
PKGS      := ./...
FUZZTIME  ?= 2m
export KLUIS_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable

.PHONY: dev test unit fuzz lint spectral sbom build services bench clean

## dev: Postgres up, migrated, local key, sandbox provider, sample requests printed
dev: services
	$(GO) run ./cmd/kluis dev

## test: the whole suite, race detector on; every fuzz target runs over its
## committed corpus as a regression test (deterministic: no -fuzz here)
test: services unit

# `go test` runs each Fuzz target over its f.Add seeds and its
# testdata/fuzz/<target>/ files, and generates no new inputs: the same commit
# gives the same result.
unit:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## fuzz: exploratory fuzzing of every target, FUZZTIME each (default 2m;
## FUZZTIME=10m for the issue's bar); commit what it finds as seeds
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

## bench: the benchmarks of docs/BENCHMARKS.md
bench: services
	@scripts/bench.sh

## lint: go vet, gofmt, staticcheck, gosec, govulncheck (pinned in tools/go.mod),
## and Spectral's OWASP ruleset over api/openapi.yaml (pinned in
## tools/spectral/package-lock.json; needs node 20 and npm)
lint:
	@scripts/lint.sh

## spectral: only the contract's Spectral lint (zero errors required)
spectral:
	@scripts/spectral.sh

## sbom: a CycloneDX SBOM (JSON) of the modules built into bin/kluis
sbom: build
	$(GO) run -C tools ./sbom -o ../bin/kluis.cdx.json ../bin/kluis
	@echo "sbom: bin/kluis.cdx.json"

build:
	$(GO) build -trimpath -o bin/kluis ./cmd/kluis

services:
	@scripts/ensure-services.sh

clean:
	rm -rf bin .kluis-dev
