// Package devpki makes a throwaway certificate authority with server and
// client certificates, for `kluis dev` and for tests of the internal
// listener's mutual TLS. Nothing it makes is meant for production: operators
// bring certificates from their own PKI.
package devpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority held in memory.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	PEM  []byte
}

// Pair is an issued certificate and its key, in PEM.
type Pair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a CA valid for a day (tests) or longer (dev), named name.
func NewCA(name string, validFor time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(validFor),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Server issues a server certificate for the given hosts (names or IPs).
func (ca *CA) Server(hosts ...string) (Pair, error) {
	tmpl := ca.leaf(hosts[0], x509.ExtKeyUsageServerAuth)
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl)
}

// Client issues a client certificate whose Common Name is cn and, when
// spiffeID is not empty, with that URI SAN (spiffe://trust-domain/service).
func (ca *CA) Client(cn, spiffeID string) (Pair, error) {
	tmpl := ca.leaf(cn, x509.ExtKeyUsageClientAuth)
	if spiffeID != "" {
		u, err := url.Parse(spiffeID)
		if err != nil {
			return Pair{}, err
		}
		tmpl.URIs = []*url.URL{u}
	}
	return ca.issue(tmpl)
}

// ClientWithURIs issues a client certificate whose Common Name is cn and
// whose URI SANs are exactly uris, byte for byte: the extension is written
// here rather than by crypto/x509, which would re-encode each URI through
// net/url (dropping an empty fragment, say). Tests use it to present the
// odd identities an attacker would.
func (ca *CA) ClientWithURIs(cn string, uris ...string) (Pair, error) {
	tmpl := ca.leaf(cn, x509.ExtKeyUsageClientAuth)
	if len(uris) > 0 {
		var names []asn1.RawValue
		for _, u := range uris {
			names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)})
		}
		val, err := asn1.Marshal(names)
		if err != nil {
			return Pair{}, err
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: val}}
	}
	return ca.issue(tmpl)
}

func (ca *CA) leaf(cn string, usage x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     ca.Cert.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
}

func (ca *CA) issue(tmpl *x509.Certificate) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return Pair{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// Certificate parses the pair's certificate.
func (p Pair) Certificate() (*x509.Certificate, error) {
	b, _ := pem.Decode(p.CertPEM)
	if b == nil {
		return nil, fmt.Errorf("devpki: no certificate in the pair")
	}
	return x509.ParseCertificate(b.Bytes)
}

// TLS returns the pair as a tls.Certificate.
func (p Pair) TLS() (tls.Certificate, error) { return tls.X509KeyPair(p.CertPEM, p.KeyPEM) }

// Write stores the pair as dir/name.crt and dir/name.key (0600).
func (p Pair) Write(dir, name string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	err = os.WriteFile(certFile, p.CertPEM, 0o644) // #nosec G306 -- a certificate is public; the key below is 0600
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, p.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// WriteCA stores the CA certificate as dir/name.crt.
func (ca *CA) WriteCA(dir, name string) (string, error) {
	f := filepath.Join(dir, name+".crt")
	return f, os.WriteFile(f, ca.PEM, 0o644) // #nosec G306 -- a CA certificate is public; clients read it to trust the server
}

// Pool returns a cert pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(fmt.Sprintf("devpki: no randomness: %v", err))
	}
	return n
}
