package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"
)

// Server timeouts: a slow client cannot hold a connection by trickling its
// headers or body, and an idle keep-alive is closed in time.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 64 << 10
)

// NewHTTPServer wraps a handler in an http.Server with kluis's timeouts. The
// write timeout leaves the request deadline room to answer with its 503.
func NewHTTPServer(addr string, h http.Handler, requestTimeout time.Duration) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      requestTimeout + 10*time.Second,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Errors from the net/http server (TLS handshakes refused, for one)
		// are not kluis's to report at error level.
		ErrorLog: nil,
	}
}

// baseTLS is TLS 1.2 or newer with AEAD cipher suites only (TLS 1.3 suites
// are not configurable and all good).
func baseTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}

// PublicTLSConfig loads the public listener's certificate.
func PublicTLSConfig(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("public TLS: load certificate and key: %w", err)
	}
	cfg := baseTLS()
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

// InternalTLSConfig loads the internal listener's certificate and requires
// every client to present a certificate signed by the CA in clientCAFile.
func InternalTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("internal TLS: load certificate and key: %w", err)
	}
	pem, err := os.ReadFile(clientCAFile) // #nosec G304 -- KLUIS_INTERNAL_CLIENT_CA, the operator's setting
	if err != nil {
		return nil, fmt.Errorf("internal TLS: read client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("internal TLS: KLUIS_INTERNAL_CLIENT_CA holds no PEM certificate")
	}
	cfg := baseTLS()
	cfg.Certificates = []tls.Certificate{cert}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	return cfg, nil
}
