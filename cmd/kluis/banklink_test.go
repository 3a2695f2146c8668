package main

import (
	"testing"
	"time"
)

func TestTokenMaxAgeSettings(t *testing.T) {
	def := 90 * 24 * time.Hour
	cases := []struct {
		name, in string
		want     time.Duration
		bad      bool
	}{
		{"empty is the default", "", def, false},
		{"days are whole days", "30d", 30 * 24 * time.Hour, false},
		{"a Go duration works", "2160h", 2160 * time.Hour, false},
		{"zero days are refused", "0d", 0, true},
		{"a negative duration is refused", "-1h", 0, true},
		{"words are refused", "ninety days", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDays(tc.in, def)
			if tc.bad != (err != nil) || got != tc.want {
				t.Fatalf("parseDays(%q) = %v, %v", tc.in, got, err)
			}
		})
	}
}
