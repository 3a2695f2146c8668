package jwttest_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
)

func TestMaliciousCasesAreDistinctAndNamed(t *testing.T) {
	t.Parallel()
	good := jwttest.Token(t)
	names := map[string]bool{}
	tokens := map[string]string{}
	for _, c := range jwttest.Malicious(t) {
		if c.Name == "" || names[c.Name] {
			t.Errorf("case name %q is empty or repeated", c.Name)
		}
		names[c.Name] = true
		if c.Token == good {
			t.Errorf("%s: same token as a good one", c.Name)
		}
		if other, ok := tokens[c.Token]; ok {
			t.Errorf("%s: same token as %s", c.Name, other)
		}
		tokens[c.Token] = c.Name
	}
}

func TestWriteJWKSWritesThePublicKeysOnly(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(jwttest.WriteJWKS(t))
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	kids := map[string]bool{}
	for _, k := range set.Keys {
		kids[k["kid"].(string)] = true
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if _, ok := k[private]; ok {
				t.Errorf("key %v carries private field %q", k["kid"], private)
			}
		}
	}
	if !kids[jwttest.RSAKeyID] || !kids[jwttest.ECKeyID] || len(kids) != 2 {
		t.Errorf("kids = %v, want %s and %s", kids, jwttest.RSAKeyID, jwttest.ECKeyID)
	}
}

func TestServerCountsFetchesAndServesRotatedKeys(t *testing.T) {
	t.Parallel()
	s := jwttest.NewServer(t)
	s.Rotate(t, "rotated-1")
	resp, err := s.Client().Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 3 || set.Keys[2].KID != "rotated-1" {
		t.Errorf("keys = %+v, want the two defaults and rotated-1", set.Keys)
	}
	if got := s.Fetches(); got != 1 {
		t.Errorf("Fetches = %d, want 1", got)
	}
}
