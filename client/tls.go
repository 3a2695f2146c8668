package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of a service's mutual-TLS identity: its
// certificate chain and key (the certificate names the service by a SPIFFE
// URI SAN or its Common Name, as kluis's service policy expects), and the
// CA that signed kluis's internal listener.
type TLSFiles struct {
	CertFile, KeyFile string
	// CAFile verifies kluis's server certificate. Empty: the system roots.
	CAFile string
	// ServerName overrides the name checked in kluis's certificate (empty:
	// the host of the base URL).
	ServerName string
}

// TLSConfig loads f into a client TLS configuration for kluis's internal
// listener: TLS 1.2 at least, the service's certificate presented, kluis's
// certificate verified against the CA.
func (f TLSFiles) TLSConfig() (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("kluis client: mutual TLS needs a certificate and a key file")
	}
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("kluis client: load the service certificate: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kluis client: read the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kluis client: %s holds no PEM certificate", f.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
