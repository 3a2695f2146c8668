package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis/api/devpki"
	"github.com/kluis-dev/kluis/config"
	"github.com/kluis-dev/kluis/migrations"
	"github.com/kluis-dev/kluis/vault/localkek"
)

// Development settings: everything `kluis dev` makes lives in devDir, which
// is git-ignored, and is reused on the next run.
const (
	devDir      = ".kluis-dev"
	devDBURL    = "postgres://postgres@127.0.0.1:5432/kluis_dev?sslmode=disable"
	devIssuer   = "https://idp.kluis.dev/"
	devKID      = "kluis-dev-1"
	devPolicy   = "services:\n  payments:\n    reveal:\n      kinds: [bank_access_token, account_number]\n      purposes: [payment_initiation, balance_check]\n  compliance-console:\n    compliance: true\n"
	devTokenTTL = 12 * time.Hour
)

// devServingRole is the role `kluis dev` serves as, as production does: it
// owns nothing and holds what `kluis migrate` grants; devDBURL's user owns
// and migrates. Its password is no secret (development only, this machine).
const (
	devServingRole = "kluis_dev_serving"
	devServingURL  = "postgres://" + devServingRole + ":kluis-dev-serving@127.0.0.1:5432/kluis_dev?sslmode=disable"
)

// dev prepares a development environment on this machine (database, local
// root key, certificates, token keys, policy), prints sample requests, and
// serves until interrupted. It refuses to run with KLUIS_ENV=production.
func dev(ctx context.Context, getenv func(string) string, out io.Writer) error {
	if getenv("KLUIS_ENV") == "production" {
		return errors.New("kluis dev is for development only and refuses KLUIS_ENV=production")
	}
	dir, err := filepath.Abs(devDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	env, signer, err := devFiles(dir)
	if err != nil {
		return err
	}
	owner := firstSet(getenv("KLUIS_MIGRATE_DATABASE_URL"), devDBURL)
	env["KLUIS_DATABASE_URL"] = firstSet(getenv("KLUIS_DATABASE_URL"), devServingURL)
	if err := ensureDatabase(ctx, owner); err != nil {
		return err
	}
	if env["KLUIS_DATABASE_URL"] == devServingURL {
		if err := ensureDevRole(ctx, owner); err != nil {
			return err
		}
	}
	// Two roles, as in production: the owner migrates, and kluis serves
	// as a role that owns nothing and may only append to the audit log.
	if _, err := migrations.Up(ctx, owner); err != nil {
		return err
	}
	if _, err := migrations.GrantServing(ctx, owner, env["KLUIS_DATABASE_URL"]); err != nil {
		return err
	}
	cfg, err := config.Load(devLookup(getenv, env))
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg, os.Stderr)
	if err != nil {
		return err
	}
	a, err := build(ctx, cfg, logger)
	if errors.Is(err, errKeysRefused) {
		return fmt.Errorf("%w\n\nThe database %s was set up with another local root key than %s/kek.b64.\n"+
			"Either restore that key file, or start afresh: dropdb -h 127.0.0.1 -U postgres kluis_dev", err, "kluis_dev", devDir)
	}
	if err != nil {
		return err
	}
	defer a.close()
	ready := make(chan [2]string, 1)
	go func() {
		addrs := <-ready
		printSamples(out, dir, addrs, signer)
		serveDevApp(ctx, out, addrs[0], signer, cfg.BankProviders)
	}()
	return a.serve(ctx, ready)
}

// devLookup is the environment `kluis dev` runs with: the operator's own
// settings (getenv) over the development ones (env), except KLUIS_ENV.
// An operator who lists bank providers (KLUIS_BANK_PROVIDERS, such as
// "sandbox,stitch") replaces the development KLUIS_BANK_PROVIDER, which
// config refuses beside it.
func devLookup(getenv func(string) string, env map[string]string) func(string) string {
	return func(k string) string {
		if v := getenv(k); v != "" && k != "KLUIS_ENV" {
			return v
		}
		if k == "KLUIS_BANK_PROVIDER" && getenv("KLUIS_BANK_PROVIDERS") != "" {
			return ""
		}
		return env[k]
	}
}

// devFiles makes (once) and returns the development environment: a local
// root key, a CA with server and client certificates, a token-signing key
// with its JWKS, and a service policy.
func devFiles(dir string) (map[string]string, *ecdsa.PrivateKey, error) {
	p := func(name string) string { return filepath.Join(dir, name) }
	if _, err := os.Stat(p("kek.b64")); errors.Is(err, os.ErrNotExist) {
		if err := localkek.Generate(p("kek.b64")); err != nil {
			return nil, nil, err
		}
	}
	if _, err := os.Stat(p("ca.crt")); errors.Is(err, os.ErrNotExist) {
		if err := devCerts(dir); err != nil {
			return nil, nil, err
		}
	}
	signer, err := devSigner(p("token-signing.pem"), p("jwks.json"))
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(p("policy.yaml"), []byte(devPolicy), 0o600); err != nil {
		return nil, nil, err
	}
	return map[string]string{
		"KLUIS_ENV":                 "development",
		"KLUIS_LOCAL_KEK_FILE":      p("kek.b64"),
		"KLUIS_KEY_PROVIDER":        "local",
		"KLUIS_BANK_PROVIDER":       "sandbox",
		"KLUIS_INTERNAL_TLS_CERT":   p("server.crt"),
		"KLUIS_INTERNAL_TLS_KEY":    p("server.key"),
		"KLUIS_INTERNAL_CLIENT_CA":  p("ca.crt"),
		"KLUIS_SERVICE_POLICY_FILE": p("policy.yaml"),
		"KLUIS_JWT_JWKS_FILE":       p("jwks.json"),
		"KLUIS_JWT_ISSUER":          devIssuer,
		"KLUIS_LOG_LEVEL":           "info",
		"KLUIS_APP_ORIGINS":         "http://" + devAppAddr,
	}, signer, nil
}

func devCerts(dir string) error {
	ca, err := devpki.NewCA("kluis development CA", 365*24*time.Hour)
	if err != nil {
		return err
	}
	if _, err := ca.WriteCA(dir, "ca"); err != nil {
		return err
	}
	server, err := ca.Server("127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	if _, _, err := server.Write(dir, "server"); err != nil {
		return err
	}
	for _, svc := range []string{"payments", "compliance-console"} {
		pair, err := ca.Client(svc, "spiffe://kluis.dev/"+svc)
		if err != nil {
			return err
		}
		if _, _, err := pair.Write(dir, svc); err != nil {
			return err
		}
	}
	return nil
}

// devSigner loads or makes the ES256 key that signs development tokens, and
// writes its public half as the JWKS kluis verifies against.
func devSigner(keyFile, jwksFile string) (*ecdsa.PrivateKey, error) {
	var key *ecdsa.PrivateKey
	var err error
	if _, statErr := os.Stat(keyFile); statErr == nil {
		if key, err = readDevSigner(keyFile); err != nil {
			return nil, err
		}
	} else {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
	}
	// The uncompressed point is 0x04 || X || Y, 32 bytes each on P-256.
	point, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	jwks := map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": devKID,
		"x": b64(point[1:33]), "y": b64(point[33:65]),
	}}}
	out, err := json.MarshalIndent(jwks, "", "  ")
	if err != nil {
		return nil, err
	}
	return key, os.WriteFile(jwksFile, out, 0o644) // #nosec G306 -- public keys only (the JWKS verifiers read)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ensureDatabase creates the development database if it does not exist.
func ensureDatabase(ctx context.Context, dbURL string) error {
	u, err := url.Parse(dbURL)
	if err != nil {
		return errors.New("KLUIS_DATABASE_URL does not parse")
	}
	name := strings.TrimPrefix(u.Path, "/")
	u.Path = "/postgres"
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		return fmt.Errorf("connect to Postgres (is it running? `make dev` starts it): %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}

// ensureDevRole creates the development serving role unless it exists.
func ensureDevRole(ctx context.Context, ownerURL string) error {
	conn, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		return fmt.Errorf("connect to Postgres (is it running? `make dev` starts it): %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, devServingRole).Scan(&exists); err != nil || exists {
		return err
	}
	_, err = conn.Exec(ctx, "CREATE ROLE "+devServingRole+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'kluis-dev-serving'")
	return err
}

func mintDev(signer *ecdsa.PrivateKey, claims jwt.MapClaims) string {
	now := time.Now()
	claims["iss"], claims["iat"] = devIssuer, now.Unix()
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = now.Add(devTokenTTL).Unix()
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = devKID
	s, err := tok.SignedString(signer)
	if err != nil {
		return "(could not sign: " + err.Error() + ")"
	}
	return s
}

func firstSet(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
