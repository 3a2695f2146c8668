package logging_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/logging"
)

// Canaries: values that must never reach the output.
const (
	accountNumber = "62001234567"
	shortAccount  = "12345" // too short to spot by value: only its key gives it away
	accessToken   = "access-sandbox-8ab976e6-64bc-4b38-98f7-731e7a349970"
	opaqueToken   = "tok-opaque-canary"
	idNumber      = "8001015009087"
	phoneIntl     = "+27 82 555 1234"
	phoneLocal    = "082-555-1234"
	cardNumber    = "4111 1111 1111 1111"
	cardContig    = "5500000000000004"
	jwt           = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"
	password      = "hunter2-canary"
	depositCode   = "0.32"
)

var canaries = []string{
	accountNumber, shortAccount, accessToken, opaqueToken, idNumber, phoneIntl, phoneLocal,
	"0825551234", cardNumber, cardContig, jwt, password, depositCode, "c2lnbmF0dXJl", "8ab976e6",
}

type profile struct {
	Name          string `json:"name"`
	AccountNumber string `json:"account_number"`
	Phone         string
	Bank          struct {
		ID     string
		Branch int64
	}
}

// card implements slog.LogValuer, as a careless type might.
type card struct{ number string }

func (c card) LogValue() slog.Value {
	return slog.GroupValue(slog.String("number", c.number), slog.String("brand", "visa"))
}

func TestLoggerMasksCanariesEverywhereAndKeepsHarmlessFieldsReadable(t *testing.T) {
	var buf bytes.Buffer
	log := logging.New(&buf, slog.LevelDebug)
	ctx := context.Background()
	harmless := []any{"request_id", "req_abc", "status", 200, "took", 250 * time.Millisecond, "path", "/v1/items/itm_x"}

	var p profile
	p.Name, p.AccountNumber, p.Phone, p.Bank.ID, p.Bank.Branch = "x", shortAccount, phoneLocal, idNumber, 250655
	err := fmt.Errorf("exchange for account %s: %w", accountNumber, errors.New("provider said "+jwt))

	log.Info("linked "+phoneIntl+" with card "+cardNumber, harmless...)
	log.Info("keys", append(harmless, "account_number", shortAccount, "accountNumber", shortAccount,
		"access_token", accessToken, "token", opaqueToken, "password", password, "amounts", depositCode,
		"code", depositCode, "Authorization", "Bearer "+opaqueToken)...)
	log.Info("values", append(harmless, "note", "id "+idNumber+" phone "+phoneLocal+" and 0825551234",
		"raw", cardContig, "acct", int64(62001234567), "bearer", "Bearer "+opaqueToken)...)
	log.Info("groups", append(harmless, slog.Group("user", slog.Group("bank",
		slog.String("acct", accountNumber), slog.String("accountNumber", shortAccount),
		slog.Group("credentials", slog.String("value", opaqueToken)))))...)
	log.Error("failed", append(harmless, "err", err)...)
	log.Info("struct", append(harmless, "profile", p, "ptr", &p,
		"map", map[string]any{"routing_number": "250655", "note": "card " + cardNumber, idNumber: "key"})...)
	log.Info("valuer", append(harmless, "card", card{cardContig})...)
	log.With("password", password, "acct", accountNumber).WithGroup("req").With("token", opaqueToken).
		Info("with attrs", harmless...)
	log.WithGroup("secrets").Info("sensitive group", append(harmless, "anything", shortAccount)...)
	log.LogAttrs(ctx, slog.LevelWarn, "attrs "+accessToken, slog.Any("err", errors.New(idNumber)),
		slog.String("request_id", "req_abc"), slog.Int("status", 200), slog.Duration("took", 250*time.Millisecond),
		slog.String("path", "/v1/items/itm_x"))

	out := buf.String()
	for _, c := range canaries {
		if strings.Contains(out, c) {
			t.Errorf("output holds canary %q:\n%s", c, out)
		}
	}
	if m := regexp.MustCompile(`[0-9]{6,}`).FindString(out); m != "" {
		t.Errorf("output holds the digit run %q:\n%s", m, out)
	}
	assertHarmlessReadable(t, out)
}

// assertHarmlessReadable checks that every line kept its harmless fields
// (at the top level, or in the "req" group).
func assertHarmlessReadable(t *testing.T, out string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	lines := 0
	for sc.Scan() {
		lines++
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", lines, err, sc.Text())
		}
		fields := line
		if g, ok := line["req"].(map[string]any); ok {
			fields = g
		}
		if g, ok := line["secrets"].(map[string]any); ok {
			// Under a sensitive group everything is masked, harmless or not.
			if g["request_id"] != logging.Redacted {
				t.Errorf("line %d: request_id under a sensitive group = %v, want masked", lines, g["request_id"])
			}
			continue
		}
		want := map[string]any{"request_id": "req_abc", "status": float64(200), "took": "250ms", "path": "/v1/items/itm_x"}
		for k, v := range want {
			if fields[k] != v {
				t.Errorf("line %d (%v): %s = %v, want %v", lines, line["msg"], k, fields[k], v)
			}
		}
	}
	if lines != 10 {
		t.Errorf("got %d lines, want 10:\n%s", lines, out)
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{"debug", slog.LevelDebug, false},
		{"INFO", slog.LevelInfo, false},
		{"", slog.LevelInfo, false},
		{"warn", slog.LevelWarn, false},
		{"warning", slog.LevelWarn, false},
		{"error", slog.LevelError, false},
		{"verbose", 0, true},
	}
	for _, tt := range tests {
		got, err := logging.ParseLevel(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseLevelErrorDoesNotEchoSecrets(t *testing.T) {
	_, err := logging.ParseLevel(idNumber)
	if err == nil || strings.Contains(err.Error(), idNumber) {
		t.Errorf("ParseLevel(ID number) error = %v, want an error without the value", err)
	}
}

func TestLevelFiltersRecords(t *testing.T) {
	var buf bytes.Buffer
	log := logging.New(&buf, slog.LevelWarn)
	log.Info("dropped")
	log.Warn("kept")
	if got := strings.Count(buf.String(), "\n"); got != 1 || !strings.Contains(buf.String(), "kept") {
		t.Errorf("output = %q, want only the warning", buf.String())
	}
}

func BenchmarkLogLine(b *testing.B) {
	attrs := func(log *slog.Logger, msg string) {
		log.LogAttrs(context.Background(), slog.LevelInfo, msg,
			slog.String("request_id", "req_8f3a2c"), slog.String("method", "GET"),
			slog.String("path", "/v1/items/itm_x"), slog.Int("status", 200),
			slog.Duration("took", 12*time.Millisecond), slog.String("remote", "10.0.0.1"))
	}
	b.Run("json handler alone", func(b *testing.B) {
		log := slog.New(slog.NewJSONHandler(io.Discard, nil))
		b.ReportAllocs()
		for b.Loop() {
			attrs(log, "request finished")
		}
	})
	b.Run("redacting, nothing to mask", func(b *testing.B) {
		log := logging.New(io.Discard, slog.LevelInfo)
		b.ReportAllocs()
		for b.Loop() {
			attrs(log, "request finished")
		}
	})
	b.Run("redacting, secrets in the message", func(b *testing.B) {
		log := logging.New(io.Discard, slog.LevelInfo)
		b.ReportAllocs()
		for b.Loop() {
			attrs(log, "linked account 62001234567 for +27 82 555 1234 with Bearer abc.def")
		}
	})
}

// nilErr panics when its Error method is called on a nil pointer.
type nilErr struct{ msg string }

func (e *nilErr) Error() string { return e.msg }

func TestAValueThatPanicsWhileFormattingDoesNotCrashTheLogger(t *testing.T) {
	var buf bytes.Buffer
	var err *nilErr
	logging.New(&buf, slog.LevelInfo).Info("x", "err", error(err), "request_id", "req_abc")
	if !strings.Contains(buf.String(), "req_abc") {
		t.Errorf("output = %q, want the line written", buf.String())
	}
}
