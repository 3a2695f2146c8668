package console

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Settings is `kluis console`'s configuration, from the environment.
type Settings struct {
	Config
	// Addr is the console's listener (KLUIS_CONSOLE_ADDR, default
	// ":8443"); CertFile and KeyFile its own TLS certificate: the session
	// cookie is Secure, so the console is served over HTTPS only.
	Addr, CertFile, KeyFile string
}

// FromEnv reads the console's settings, naming every problem at once.
func FromEnv(getenv func(string) string) (Settings, error) {
	var errs []error
	need := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: required", name))
		}
		return v
	}
	s := Settings{Addr: getenv("KLUIS_CONSOLE_ADDR")}
	if s.Addr == "" {
		s.Addr = ":8443"
	}
	s.PublicURL = need("KLUIS_CONSOLE_PUBLIC_URL")
	s.CertFile, s.KeyFile = need("KLUIS_CONSOLE_TLS_CERT"), need("KLUIS_CONSOLE_TLS_KEY")
	s.Issuer, s.ClientID = need("KLUIS_CONSOLE_OIDC_ISSUER"), need("KLUIS_CONSOLE_OIDC_CLIENT_ID")
	s.ClientSecret = getenv("KLUIS_CONSOLE_OIDC_CLIENT_SECRET")
	if sc := getenv("KLUIS_CONSOLE_OIDC_SCOPES"); sc != "" {
		s.Scopes = strings.Split(sc, ",")
	}
	s.APIURL = need("KLUIS_CONSOLE_API_URL")
	if s.APIURL != "" && !strings.HasPrefix(s.APIURL, "https://") {
		errs = append(errs, errors.New("KLUIS_CONSOLE_API_URL: must be kluis's internal listener, https://"))
	}
	cert, key, ca := need("KLUIS_CONSOLE_CLIENT_CERT"), need("KLUIS_CONSOLE_CLIENT_KEY"), need("KLUIS_CONSOLE_API_CA")
	if cert != "" && key != "" && ca != "" {
		t, err := clientTLS(cert, key, ca)
		if err != nil {
			errs = append(errs, err)
		}
		s.APITLS = t
	}
	return s, errors.Join(errs...)
}

// clientTLS is the console's mutual-TLS configuration towards kluis.
func clientTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("KLUIS_CONSOLE_CLIENT_CERT, KLUIS_CONSOLE_CLIENT_KEY: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("KLUIS_CONSOLE_API_CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("KLUIS_CONSOLE_API_CA: no PEM certificate in the file")
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
