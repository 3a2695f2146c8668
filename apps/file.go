package apps

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kluis-dev/kluis/banklink/plaid/plaidlink"
)

// Options say how an apps file is read.
type Options struct {
	// Issuer is the JWT issuer of an app that names none (KLUIS_JWT_ISSUER).
	Issuer string
	// StaffAudience is the staff tokens' audience (KLUIS_STAFF_JWT_AUDIENCE):
	// no app may take it as its users' audience, or a staff token would be a
	// user token of that app.
	StaffAudience string
	// Production refuses plain http anywhere (endpoints, origins, redirect
	// URIs, JWKS URLs).
	Production bool
	// ReadFile reads the secret files the apps file names; os.ReadFile if nil.
	ReadFile func(string) ([]byte, error)
}

// fileDoc is the YAML document of an apps file.
type fileDoc struct {
	Apps map[string]fileApp `yaml:"apps"`
}

type fileApp struct {
	JWT struct {
		Issuer   string `yaml:"issuer"`
		Audience string `yaml:"audience"`
		JWKSURL  string `yaml:"jwks_url"`
		JWKSFile string `yaml:"jwks_file"`
	} `yaml:"jwt"`
	AllowedOrigins []string `yaml:"allowed_origins"`
	RedirectURIs   []string `yaml:"redirect_uris"`
	PlaidLink      struct {
		ClientName         string   `yaml:"client_name"`
		CountryCodes       []string `yaml:"country_codes"`
		Language           string   `yaml:"language"`
		RedirectURI        string   `yaml:"redirect_uri"`
		AndroidPackageName string   `yaml:"android_package_name"`
	} `yaml:"plaid_link"`
	Events struct {
		Endpoints []fileEndpoint `yaml:"endpoints"`
	} `yaml:"events"`
}

type fileEndpoint struct {
	ID      string       `yaml:"id"`
	URL     string       `yaml:"url"`
	Secrets []fileSecret `yaml:"secrets"`
}

type fileSecret struct {
	// File holds the secret on its first line: secrets stay out of the apps
	// file, which operators diff, review and copy around.
	File     string    `yaml:"file"`
	RetireAt time.Time `yaml:"retire_at"`
}

// Parse reads an apps file. Unknown keys, bad ids, bad URLs, unreadable or
// short secrets and clashes between apps are errors naming the app and the
// setting (never a secret or a URL's query). It returns the apps and a
// digest of everything read (the file and its secret files), which tells
// a reload whether anything changed.
func Parse(raw []byte, o Options) (*Set, [sha256.Size]byte, error) {
	digest := sha256.New()
	digest.Write(raw)
	var d fileDoc
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return nil, [sha256.Size]byte{}, fmt.Errorf("apps file: %w", err)
	}
	if o.ReadFile == nil {
		o.ReadFile = os.ReadFile
	}
	ids := make([]string, 0, len(d.Apps))
	for id := range d.Apps {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	list := make([]*App, 0, len(ids))
	for _, id := range ids {
		a, err := buildApp(id, d.Apps[id], o, digest.Write)
		if err != nil {
			return nil, [sha256.Size]byte{}, fmt.Errorf("apps file: app %q: %w", id, err)
		}
		list = append(list, a)
	}
	set, err := newSet(list)
	if err != nil {
		return nil, [sha256.Size]byte{}, fmt.Errorf("apps file: %w", err)
	}
	return set, [sha256.Size]byte(digest.Sum(nil)), nil
}

// buildApp checks one app of the file; note receives the secrets read.
func buildApp(id string, f fileApp, o Options, note func([]byte) (int, error)) (*App, error) {
	if !validID(id) {
		return nil, errors.New("an app id is 1 to 63 of a-z, 0-9, _ and -, starting with a letter")
	}
	a := &App{ID: id, JWT: JWT{Issuer: f.JWT.Issuer, Audience: f.JWT.Audience, JWKSURL: f.JWT.JWKSURL, JWKSFile: f.JWT.JWKSFile},
		AllowedOrigins: f.AllowedOrigins, RedirectURIs: f.RedirectURIs,
		PlaidLink: plaidlink.Settings{ClientName: f.PlaidLink.ClientName, CountryCodes: f.PlaidLink.CountryCodes,
			Language: f.PlaidLink.Language, RedirectURI: f.PlaidLink.RedirectURI, AndroidPackageName: f.PlaidLink.AndroidPackageName}}
	if a.JWT.Issuer == "" {
		a.JWT.Issuer = o.Issuer
	}
	if err := checkJWT(a.JWT, o); err != nil {
		return nil, err
	}
	if err := checkPages(a, o.Production); err != nil {
		return nil, err
	}
	if err := checkPlaidLink(a.PlaidLink, o.Production); err != nil {
		return nil, err
	}
	if len(f.Events.Endpoints) > MaxEndpoints {
		return nil, fmt.Errorf("more than %d event endpoints", MaxEndpoints)
	}
	seen := map[string]bool{}
	for i, fe := range f.Events.Endpoints {
		e, err := buildEndpoint(id, fe, o, note)
		if err != nil {
			return nil, fmt.Errorf("events.endpoints[%d]: %w", i, err)
		}
		if seen[e.ID] {
			return nil, fmt.Errorf("events.endpoints[%d]: endpoint id %q is used twice", i, e.ID)
		}
		seen[e.ID] = true
		a.Endpoints = append(a.Endpoints, e)
	}
	return a, nil
}

func checkJWT(j JWT, o Options) error {
	switch {
	case j.Issuer == "":
		return errors.New("jwt.issuer is required (or KLUIS_JWT_ISSUER)")
	case j.Audience == "":
		return errors.New("jwt.audience is required")
	case j.Audience == o.StaffAudience:
		return errors.New("jwt.audience must differ from KLUIS_STAFF_JWT_AUDIENCE, or a staff token would be a user token")
	case j.JWKSURL != "" && j.JWKSFile != "":
		return errors.New("set jwt.jwks_url or jwt.jwks_file, not both")
	case len(j.Issuer) > 255 || len(j.Audience) > 255:
		return errors.New("jwt.issuer and jwt.audience are at most 255 characters")
	}
	if j.JWKSURL != "" {
		if err := checkURL(j.JWKSURL, o.Production, false); err != nil {
			return fmt.Errorf("jwt.jwks_url %w", err)
		}
	}
	return nil
}

func checkPages(a *App, production bool) error {
	if len(a.AllowedOrigins) > maxListLen || len(a.RedirectURIs) > maxListLen {
		return fmt.Errorf("at most %d allowed origins and %d redirect URIs", maxListLen, maxListLen)
	}
	for i, o := range a.AllowedOrigins {
		if err := checkURL(o, production, true); err != nil {
			return fmt.Errorf("allowed_origins[%d] %w", i, err)
		}
	}
	for i, u := range a.RedirectURIs {
		if err := checkURL(u, production, false); err != nil {
			return fmt.Errorf("redirect_uris[%d] %w", i, err)
		}
	}
	return nil
}

// checkPlaidLink applies Plaid's own rules (plaidlink), naming the file's
// keys rather than the environment variables.
func checkPlaidLink(s plaidlink.Settings, production bool) error {
	problems := s.Problems()
	if production && strings.HasPrefix(s.RedirectURI, "http://") {
		problems["KLUIS_PLAID_REDIRECT_URI"] = "must be https in production"
	}
	if len(problems) == 0 {
		return nil
	}
	names := make([]string, 0, len(problems))
	for env := range problems {
		names = append(names, env)
	}
	sort.Strings(names)
	key := "plaid_link." + strings.ToLower(strings.TrimPrefix(names[0], "KLUIS_PLAID_"))
	return fmt.Errorf("%s %s", key, problems[names[0]])
}

func buildEndpoint(app string, fe fileEndpoint, o Options, note func([]byte) (int, error)) (Endpoint, error) {
	if !validID(fe.ID) {
		return Endpoint{}, errors.New("id is 1 to 63 of a-z, 0-9, _ and -, starting with a letter")
	}
	// The URL is not echoed in errors: its query may hold a token.
	if err := checkURL(fe.URL, o.Production, false); err != nil {
		return Endpoint{}, fmt.Errorf("url %w", err)
	}
	if len(fe.Secrets) == 0 || len(fe.Secrets) > MaxSecrets {
		return Endpoint{}, fmt.Errorf("an endpoint has 1 to %d secrets (2 while one is rotated out)", MaxSecrets)
	}
	e := Endpoint{App: app, ID: fe.ID, Key: app + "/" + fe.ID, URL: fe.URL}
	for i, fs := range fe.Secrets {
		key, err := readSecret(fs.File, o.ReadFile)
		if err != nil {
			return Endpoint{}, fmt.Errorf("secrets[%d]: %w", i, err)
		}
		_, _ = note(key)
		e.Secrets = append(e.Secrets, Secret{Key: key, RetireAt: fs.RetireAt})
	}
	if len(e.Secrets) == 2 && e.Secrets[0].RetireAt.IsZero() == e.Secrets[1].RetireAt.IsZero() {
		// Two secrets are a rotation: the old one names the date by which
		// receivers have the new one. Two without dates would sign with
		// both for ever; two with dates could both lapse.
		return Endpoint{}, errors.New("of two secrets, exactly one (the old) has retire_at")
	}
	return e, nil
}

// readSecret reads a webhook secret from the first line of file.
func readSecret(file string, read func(string) ([]byte, error)) ([]byte, error) {
	if file == "" {
		return nil, errors.New("file is required")
	}
	b, err := read(file)
	if err != nil {
		return nil, errors.New("file cannot be read")
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSpace(line)
	if len(line) < MinSecretBytes {
		return nil, fmt.Errorf("file must hold a secret of at least %d bytes", MinSecretBytes)
	}
	return []byte(line), nil
}
