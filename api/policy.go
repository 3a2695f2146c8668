package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/filewatch"
	"gopkg.in/yaml.v3"
)

// Credential kinds a policy may allow to be revealed: bank linking's (the
// kinds registered with the vault, banklink.CredentialKinds).
// verification.KindIDNumber (a holder's national ID number) is left out on
// purpose: no service may have it revealed, and a policy naming it fails
// to load as an unknown kind.
var knownKinds = []string{banklink.KindAccessToken, accountnumber.Kind}

// PolicyPollInterval is how often a watched policy file is read for changes:
// a change is in force within 5 seconds (docs/SECURITY.md, "Certificates
// that cannot be taken back") with room to spare.
const PolicyPollInterval = 2 * time.Second

// Policy says what each internal service may do (KLUIS_SERVICE_POLICY_FILE).
// A service not named in it may do nothing. A Policy is the policy in force:
// Reload and Watch swap a new version in atomically, so a request sees
// either the old rules or the new ones, never a mix within one call, and a
// file that does not parse leaves the rules in force as they are. It is
// safe for concurrent use.
type Policy struct {
	doc  atomic.Pointer[policyDoc]
	path string

	mu  sync.Mutex // serializes reloads
	sum [sha256.Size]byte
}

// policyDoc is one version of the policy file, parsed and checked.
type policyDoc struct {
	Services map[string]ServicePolicy `yaml:"services"`
	Revoked  Revocations              `yaml:"revoked"`

	// Derived when parsed.
	bySPIFFEPath map[string]string // a spiffe_id path → its service
	serials      map[string]bool   // revoked serials, lower-case hex without leading zeros
	pins         map[[sha256.Size]byte]bool
}

// ServicePolicy is one service's rights.
type ServicePolicy struct {
	// SPIFFEID, if set, is the path of the SPIFFE ID that names this
	// service (SPIRE's "/ns/payments/sa/api"); then only that ID does, not
	// spiffe://<trust domain>/<service>.
	SPIFFEID string        `yaml:"spiffe_id"`
	Reveal   *RevealPolicy `yaml:"reveal"`
	// Compliance lets the service carry compliance staff requests (the staff
	// member must still present their own token).
	Compliance bool `yaml:"compliance"`
}

// RevealPolicy lists the credential kinds a service may reveal and the
// purposes it may give, and optionally the apps whose users' credentials
// it may reveal.
type RevealPolicy struct {
	Kinds    []string `yaml:"kinds"`
	Purposes []string `yaml:"purposes"`
	// Apps, when set, limits the service to the credentials of these apps'
	// users (app ids); empty means every app's.
	Apps []string `yaml:"apps"`
}

// Revocations lists client certificates refused whatever service they name:
// by serial number (hexadecimal, as `openssl x509 -serial` prints it; case,
// colons and leading zeros do not matter), or by the base64 SHA-256 of the
// certificate's SubjectPublicKeyInfo (which also catches a certificate
// re-issued for the same key). A listed CA or intermediate revokes every
// certificate under it.
type Revocations struct {
	Serials    []string `yaml:"serials"`
	SPKISHA256 []string `yaml:"spki_sha256"`
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$`)

// LoadPolicy reads and checks a policy file, and remembers its path for
// Reload and Watch. Unknown keys, unknown kinds and odd names are errors: a
// typo in a security policy must not pass silently.
func LoadPolicy(path string) (*Policy, error) {
	raw, err := os.ReadFile(path) // #nosec G304 -- KLUIS_SERVICE_POLICY_FILE, the operator's setting
	if err != nil {
		return nil, fmt.Errorf("service policy: %w", err)
	}
	p, err := ParsePolicy(raw)
	if err != nil {
		return nil, err
	}
	p.path, p.sum = path, sha256.Sum256(raw)
	return p, nil
}

// ParsePolicy parses a policy document strictly.
func ParsePolicy(raw []byte) (*Policy, error) {
	doc, err := parsePolicyDoc(raw)
	if err != nil {
		return nil, err
	}
	p := &Policy{}
	p.doc.Store(doc)
	return p, nil
}

func parsePolicyDoc(raw []byte) (*policyDoc, error) {
	var d policyDoc
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("service policy: %w", err)
	}
	d.bySPIFFEPath = map[string]string{}
	for name, sp := range d.Services {
		if err := checkService(name, sp); err != nil {
			return nil, fmt.Errorf("service policy: service %q: %w", name, err)
		}
		if sp.SPIFFEID == "" {
			continue
		}
		if other, dup := d.bySPIFFEPath[sp.SPIFFEID]; dup {
			return nil, fmt.Errorf("service policy: services %q and %q have the same spiffe_id", min(name, other), max(name, other))
		}
		d.bySPIFFEPath[sp.SPIFFEID] = name
	}
	for path, name := range d.bySPIFFEPath {
		// "/reporting" given to payments while reporting exists: which one
		// would spiffe://<td>/reporting name? Refuse to guess.
		if other := path[1:]; other != name && !strings.Contains(other, "/") {
			if _, ok := d.Services[other]; ok {
				return nil, fmt.Errorf("service policy: service %q: spiffe_id %q is the default ID of service %q", name, path, other)
			}
		}
	}
	if err := d.parseRevocations(); err != nil {
		return nil, err
	}
	return &d, nil
}

func checkService(name string, sp ServicePolicy) error {
	if !namePattern.MatchString(name) {
		return errors.New("not a valid name")
	}
	if sp.SPIFFEID != "" && checkSPIFFEPath(sp.SPIFFEID) != nil {
		return errors.New("spiffe_id must be the path of a SPIFFE ID, such as /ns/payments/sa/api")
	}
	if sp.Reveal == nil {
		return nil
	}
	for _, k := range sp.Reveal.Kinds {
		if !slices.Contains(knownKinds, k) {
			return fmt.Errorf("unknown credential kind %q", k)
		}
	}
	if len(sp.Reveal.Kinds) > 0 && len(sp.Reveal.Purposes) == 0 {
		return errors.New("reveal needs at least one purpose")
	}
	for _, pu := range sp.Reveal.Purposes {
		if !namePattern.MatchString(pu) {
			return fmt.Errorf("purpose %q is not a valid name", pu)
		}
	}
	for _, app := range sp.Reveal.Apps {
		if !kluis.ValidAppID(app) {
			return fmt.Errorf("app %q is not a valid app id", app)
		}
	}
	return nil
}

func (d *policyDoc) parseRevocations() error {
	d.serials, d.pins = map[string]bool{}, map[[sha256.Size]byte]bool{}
	for i, s := range d.Revoked.Serials {
		n, ok := parseSerial(s)
		if !ok {
			return fmt.Errorf("service policy: revoked.serials[%d] is not a hexadecimal serial number", i)
		}
		d.serials[n] = true
	}
	for i, s := range d.Revoked.SPKISHA256 {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil || len(b) != sha256.Size {
			return fmt.Errorf("service policy: revoked.spki_sha256[%d] is not the base64 of a SHA-256", i)
		}
		d.pins[[sha256.Size]byte(b)] = true
	}
	return nil
}

// parseSerial reads a serial as openssl prints it ("serial=5F3A…"'s value;
// colons allowed, any case) and returns its canonical form: the lower-case
// hex of the number, so that leading zeros do not matter.
func parseSerial(s string) (string, bool) {
	s = strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	if s == "" || len(s) > 64 {
		return "", false
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() < 0 {
		return "", false
	}
	return n.Text(16), true
}

// current is the version in force; nil for a nil Policy.
func (p *Policy) current() *policyDoc {
	if p == nil {
		return nil
	}
	return p.doc.Load()
}

// Reload reads the policy file again and, if it changed and is valid, puts
// it in force. It reports whether the policy changed. An error (a file that
// cannot be read or does not parse) leaves the policy in force unchanged:
// an operator's typo must not open or close the internal API.
func (p *Policy) Reload() (changed bool, err error) {
	if p.path == "" {
		return false, errors.New("service policy: not loaded from a file")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	raw, err := os.ReadFile(p.path)
	if err != nil {
		return false, fmt.Errorf("service policy: %w", err)
	}
	sum := sha256.Sum256(raw)
	if sum == p.sum {
		return false, nil
	}
	doc, err := parsePolicyDoc(raw)
	if err != nil {
		return false, err
	}
	p.doc.Store(doc)
	p.sum = sum
	return true, nil
}

// Watch reloads the policy file every interval and whenever hup delivers
// (SIGHUP), until ctx ends (filewatch.Watch: changes and bad files are
// logged; the policy file holds no secret).
func (p *Policy) Watch(ctx context.Context, interval time.Duration, hup <-chan os.Signal, logger *slog.Logger) {
	filewatch.Watch(ctx, "service policy", interval, hup, logger, p.Reload)
}

// Knows reports whether the service is named in the policy.
func (p *Policy) Knows(service string) bool { return p.current().knows(service) }

func (d *policyDoc) knows(service string) bool {
	if d == nil {
		return false
	}
	_, ok := d.Services[service]
	return ok
}

// MayReveal reports whether the service may reveal a credential of kind for
// purpose.
func (p *Policy) MayReveal(service, kind, purpose string) bool {
	r := p.revealPolicy(service)
	return r != nil && slices.Contains(r.Kinds, kind) && slices.Contains(r.Purposes, purpose)
}

// revealPolicy is the service's reveal policy in force, nil when it may
// reveal nothing.
func (p *Policy) revealPolicy(service string) *RevealPolicy {
	d := p.current()
	if d == nil {
		return nil
	}
	return d.Services[service].Reveal
}

// MayRevealApp reports whether the service may reveal the credentials of
// the users of app: its reveal policy names no apps, or names this one.
func (p *Policy) MayRevealApp(service, app string) bool {
	r := p.revealPolicy(service)
	return r != nil && (len(r.Apps) == 0 || slices.Contains(r.Apps, app))
}

// MayCarryCompliance reports whether the service is a compliance console.
func (p *Policy) MayCarryCompliance(service string) bool {
	d := p.current()
	if d == nil {
		return false
	}
	return d.Services[service].Compliance
}

// Identify names the service a verified client certificate chain speaks
// for, or returns a refusal reason (a fixed category, safe to audit). The
// chain is the peer's certificates, leaf first, as the TLS layer verified
// them.
func (p *Policy) Identify(leaf *x509.Certificate, chains [][]*x509.Certificate, trustDomain string) (service, refusal string) {
	d := p.current()
	if d == nil {
		return "", "no service policy"
	}
	if d.revoked(leaf) {
		return "", "certificate revoked"
	}
	for _, chain := range chains {
		for _, c := range chain {
			if d.revoked(c) {
				return "", "issuing certificate revoked"
			}
		}
	}
	name, refusal := d.serviceOf(leaf, trustDomain)
	if refusal != "" {
		return "", refusal
	}
	if !d.knows(name) {
		return "", "service not in the policy"
	}
	return name, ""
}

func (d *policyDoc) revoked(c *x509.Certificate) bool {
	if c.SerialNumber != nil && d.serials[c.SerialNumber.Text(16)] {
		return true
	}
	return len(d.pins) > 0 && d.pins[sha256.Sum256(c.RawSubjectPublicKeyInfo)]
}

// serviceOf applies the service identity rules (docs/SECURITY.md,
// "Borrowed service identities"). With a trust domain set, a
// certificate names a service only by exactly one URI SAN that is a
// well-formed SPIFFE ID in that domain, whose path is a spiffe_id the
// policy gives a service or else one segment naming a service that has no
// spiffe_id; its Common Name is never used. Without a trust domain the
// same holds for a certificate with a URI SAN (in any trust domain), and a
// certificate with none is named by its Common Name.
func (d *policyDoc) serviceOf(cert *x509.Certificate, trustDomain string) (string, string) {
	uris, err := uriSANs(cert)
	switch {
	case err != nil:
		return "", "unreadable subject alternative names"
	case len(uris) > 1:
		return "", "more than one URI SAN"
	case len(uris) == 0 && trustDomain != "":
		return "", "no SPIFFE ID"
	case len(uris) == 0:
		if cert.Subject.CommonName == "" {
			return "", "no service name"
		}
		return cert.Subject.CommonName, ""
	}
	id, err := ParseSPIFFEID(uris[0])
	switch {
	case err != nil:
		return "", "malformed SPIFFE ID"
	case trustDomain != "" && id.TrustDomain != trustDomain:
		return "", "SPIFFE ID of another trust domain"
	case id.Path == "":
		return "", "SPIFFE ID without a path"
	}
	if name, ok := d.bySPIFFEPath[id.Path]; ok {
		return name, ""
	}
	name := id.Path[1:]
	if strings.Contains(name, "/") || d.Services[name].SPIFFEID != "" {
		return "", "SPIFFE ID names no service in the policy"
	}
	return name, ""
}
