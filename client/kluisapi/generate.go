// Package kluisapi is the client and the types oapi-codegen generates from
// kluis's contract, api/openapi.yaml. Services use it through package
// client, which adds mutual TLS, Idempotency-Key, safe retries and typed
// errors; everything here is generated (kluisapi.gen.go) except this file.
package kluisapi

//go:generate go run -C ../../tools github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config ../client/kluisapi/oapi-codegen.yaml ../api/openapi.yaml
