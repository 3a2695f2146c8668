package api

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"slices"

	"gopkg.in/yaml.v3"
)

// Credential kinds a policy may allow to be revealed.
var knownKinds = []string{"bank_access_token", "account_number"}

// Policy says what each internal service may do (KLUIS_SERVICE_POLICY_FILE).
// A service not named in it may do nothing.
type Policy struct {
	Services map[string]ServicePolicy `yaml:"services"`
}

// ServicePolicy is one service's rights.
type ServicePolicy struct {
	Reveal *RevealPolicy `yaml:"reveal"`
	// Compliance lets the service carry compliance staff requests (the staff
	// member must still present their own token).
	Compliance bool `yaml:"compliance"`
}

// RevealPolicy lists the credential kinds a service may reveal and the
// purposes it may give.
type RevealPolicy struct {
	Kinds    []string `yaml:"kinds"`
	Purposes []string `yaml:"purposes"`
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$`)

// LoadPolicy reads and checks a policy file. Unknown keys, unknown kinds and
// odd names are errors: a typo in a security policy must not pass silently.
func LoadPolicy(path string) (*Policy, error) {
	raw, err := os.ReadFile(path) // #nosec G304 -- KLUIS_SERVICE_POLICY_FILE, the operator's setting
	if err != nil {
		return nil, fmt.Errorf("service policy: %w", err)
	}
	return ParsePolicy(raw)
}

// ParsePolicy parses a policy document strictly.
func ParsePolicy(raw []byte) (*Policy, error) {
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("service policy: %w", err)
	}
	for name, sp := range p.Services {
		if !namePattern.MatchString(name) {
			return nil, fmt.Errorf("service policy: service name %q is not a valid name", name)
		}
		if sp.Reveal == nil {
			continue
		}
		for _, k := range sp.Reveal.Kinds {
			if !slices.Contains(knownKinds, k) {
				return nil, fmt.Errorf("service policy: service %q: unknown credential kind %q", name, k)
			}
		}
		if len(sp.Reveal.Kinds) > 0 && len(sp.Reveal.Purposes) == 0 {
			return nil, fmt.Errorf("service policy: service %q: reveal needs at least one purpose", name)
		}
		for _, pu := range sp.Reveal.Purposes {
			if !namePattern.MatchString(pu) {
				return nil, fmt.Errorf("service policy: service %q: purpose %q is not a valid name", name, pu)
			}
		}
	}
	return &p, nil
}

// Knows reports whether the service is named in the policy.
func (p *Policy) Knows(service string) bool {
	if p == nil {
		return false
	}
	_, ok := p.Services[service]
	return ok
}

// MayReveal reports whether the service may reveal a credential of kind for
// purpose.
func (p *Policy) MayReveal(service, kind, purpose string) bool {
	if p == nil {
		return false
	}
	sp, ok := p.Services[service]
	if !ok || sp.Reveal == nil {
		return false
	}
	return slices.Contains(sp.Reveal.Kinds, kind) && slices.Contains(sp.Reveal.Purposes, purpose)
}

// MayCarryCompliance reports whether the service is a compliance console.
func (p *Policy) MayCarryCompliance(service string) bool {
	if p == nil {
		return false
	}
	return p.Services[service].Compliance
}
