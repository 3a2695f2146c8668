package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"
)

// Handler is a slog.Handler that masks secrets before passing records on to
// the handler it wraps. It covers the message, every attribute (those added
// with WithAttrs and those inside groups included), the values of
// slog.LogValuers, and values of kind Any (errors, structs, maps), which it
// formats and scrubs itself so that the wrapped handler only ever sees
// strings, numbers and plain maps and slices. Numbers of magnitude 100000 or
// more are masked like six-digit runs in strings: an account number logged
// as an int64 is still an account number. Booleans, durations and times
// pass unchanged.
type Handler struct {
	inner slog.Handler
	// masked is set under a group whose name is sensitive: every value
	// below it is replaced.
	masked bool
}

// NewHandler returns a Handler that masks secrets and then passes records to
// inner.
func NewHandler(inner slog.Handler) *Handler {
	return &Handler{inner: inner}
}

// Enabled reports whether the wrapped handler handles records at level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// Handle masks r's message and attributes and passes the result on.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Scrub(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.inner.Handle(ctx, out)
}

// WithAttrs masks attrs once, here, rather than on every record.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.attr(a)
	}
	return &Handler{inner: h.inner.WithAttrs(clean), masked: h.masked}
}

// WithGroup opens a group; under a group with a sensitive name (a
// "credentials" group, say) every value is masked.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{inner: h.inner.WithGroup(Scrub(name)), masked: h.masked || SensitiveKey(name)}
}

// maxDepth bounds the recursion into nested groups and values.
const maxDepth = 16

func (h *Handler) attr(a slog.Attr) slog.Attr {
	return redactAttr(a, h.masked, 0)
}

func redactAttr(a slog.Attr, masked bool, depth int) slog.Attr {
	a.Value = a.Value.Resolve()
	masked = masked || SensitiveKey(a.Key)
	a.Key = Scrub(a.Key)
	if a.Value.Kind() == slog.KindGroup {
		if depth >= maxDepth {
			return slog.String(a.Key, Redacted)
		}
		group := a.Value.Group()
		clean := make([]slog.Attr, len(group))
		for i, g := range group {
			clean[i] = redactAttr(g, masked, depth+1)
		}
		a.Value = slog.GroupValue(clean...)
		return a
	}
	if masked {
		a.Value = slog.StringValue(Redacted)
		return a
	}
	a.Value = redactValue(a.Value, depth)
	return a
}

// bigNumber is the smallest magnitude with six digits: numbers this large
// could be account numbers and are masked like digit runs in strings.
const bigNumber = 100000

func redactValue(v slog.Value, depth int) slog.Value {
	switch v.Kind() {
	case slog.KindString:
		return scrubbedString(v.String())
	case slog.KindInt64:
		if n := v.Int64(); n <= -bigNumber || n >= bigNumber {
			return slog.StringValue(Redacted)
		}
	case slog.KindUint64:
		if v.Uint64() >= bigNumber {
			return slog.StringValue(Redacted)
		}
	case slog.KindFloat64:
		if f := v.Float64(); math.Abs(f) >= bigNumber || math.IsNaN(f) {
			return slog.StringValue(Redacted)
		}
	case slog.KindAny:
		return anyValue(v.Any(), depth)
	}
	// Bool, Duration and Time come from the program, not from data.
	return v
}

func scrubbedString(s string) slog.Value {
	return slog.StringValue(Scrub(s))
}

// anyValue turns an arbitrary value into something the JSON handler can
// write without help and that holds nothing to mask: an error becomes its
// scrubbed message; anything else goes through encoding/json (as the JSON
// handler would have done) and comes back as maps, slices, strings and
// numbers, masked key by key.
func anyValue(x any, depth int) (v slog.Value) {
	defer func() {
		// A value whose Error or MarshalJSON panics (a nil receiver, say)
		// must not take the logging goroutine down with it.
		if recover() != nil {
			v = slog.StringValue("!PANIC while formatting a value")
		}
	}()
	switch x := x.(type) {
	case nil:
		return slog.AnyValue(nil)
	case error:
		return scrubbedString(x.Error())
	case []byte:
		return scrubbedString(string(x))
	}
	raw, err := json.Marshal(x)
	if err != nil {
		return scrubbedString(fmt.Sprintf("%+v", x))
	}
	var tree any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return scrubbedString(string(raw))
	}
	return slog.AnyValue(redactTree(tree, depth))
}

// redactTree masks a decoded JSON value: values under sensitive keys,
// digit runs in strings and in object keys, and large numbers.
func redactTree(x any, depth int) any {
	if depth >= maxDepth {
		return Redacted
	}
	switch x := x.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, v := range x {
			if SensitiveKey(k) {
				out[Scrub(k)] = Redacted
				continue
			}
			out[Scrub(k)] = redactTree(v, depth+1)
		}
		return out
	case []any:
		for i, v := range x {
			x[i] = redactTree(v, depth+1)
		}
		return x
	case string:
		return Scrub(x)
	case json.Number:
		if n := string(x); Scrub(n) != n || bigFloat(n) {
			return Redacted
		}
		return x
	}
	return x // bool, nil
}

// bigFloat reports whether a JSON number in exponent form (1.2e+12) is large
// enough to hide a digit run.
func bigFloat(n string) bool {
	f, err := strconv.ParseFloat(n, 64)
	return err != nil || math.Abs(f) >= bigNumber
}
