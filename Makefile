# kluis: `make dev` for a first look, `make test` for the whole suite.
GO        ?= go
PKGS      := ./...
FUZZTIME  ?= 10s
export KLUIS_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable

.PHONY: dev test unit fuzz-short fuzz lint sbom build services bench clean

## dev: Postgres up, migrated, local key, sandbox provider, sample requests printed
dev: services
	$(GO) run ./cmd/kluis dev

## test: the whole suite, race detector on, then a short run of every fuzz target
test: services unit fuzz-short

unit:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# Each fuzz target runs briefly on top of its committed corpus.
fuzz-short:
	@scripts/fuzz.sh $(FUZZTIME)

## fuzz: a longer fuzz run of every target (FUZZTIME=10m for the issue's bar)
fuzz:
	@scripts/fuzz.sh $(if $(filter 10s,$(FUZZTIME)),2m,$(FUZZTIME))

## bench: the benchmarks of docs/BENCHMARKS.md
bench: services
	@scripts/bench.sh

## lint: go vet, gofmt, staticcheck, gosec, govulncheck (pinned in tools/go.mod)
lint:
	@scripts/lint.sh

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
