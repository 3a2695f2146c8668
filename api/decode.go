package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
)

// MaxBodyBytes is the largest request body kluis reads (api/openapi.yaml: 1 MiB).
const MaxBodyBytes = 1 << 20

// DecodeJSON reads the request body as exactly one JSON object into v,
// refusing unknown fields, trailing data and bodies over MaxBodyBytes. Its
// errors name the problem without echoing the caller's bytes back.
func DecodeJSON(c echo.Context, v any) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	return DecodeStrict(body, v)
}

// readBody reads the whole request body, for routes whose body is optional.
func readBody(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, kluis.Errorf(kluis.ETooLarge, "request body is larger than 1 MiB")
		}
		return nil, kluis.Errorf(kluis.EInvalid, "request body could not be read")
	}
	return body, nil
}

// DecodeStrict decodes body as exactly one JSON value into v, refusing
// unknown fields and trailing data. Exported for the fuzz tests of every
// request type.
func DecodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return kluis.Errorf(kluis.EInvalid, "request body is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return kluis.Errorf(kluis.EInvalid, "request body must hold one JSON object")
	}
	return nil
}

func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field == "":
		// The body itself is a string, a number or an array.
		return kluis.Errorf(kluis.EInvalid, "request body must be a JSON object")
	case errors.As(err, &typeErr):
		// The field name is ours (from the struct tag), never the caller's value.
		return kluis.Errorf(kluis.EInvalid, "field %q has the wrong type", typeErr.Field)
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return kluis.Errorf(kluis.EInvalid, "request body is not valid JSON")
	case len(err.Error()) > 21 && err.Error()[:21] == "json: unknown field \"":
		return kluis.Errorf(kluis.EInvalid, "request body has an unknown field")
	}
	return kluis.Errorf(kluis.EInvalid, "request body is not a valid JSON object of the expected shape")
}

// isJSON reports whether a Content-Type names JSON (application/json, with
// or without parameters such as charset).
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}
