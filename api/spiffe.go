package api

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"strings"
)

// SPIFFEID is a SPIFFE ID that passed ParseSPIFFEID: spiffe://TrustDomain Path.
type SPIFFEID struct {
	// TrustDomain is lower-case letters, digits, '.', '-' and '_'.
	TrustDomain string
	// Path is "" or one or more "/segment"s, each of letters, digits, '.',
	// '-' and '_', none empty, "." or "..".
	Path string
}

// Limits of the SPIFFE ID specification.
const (
	maxSPIFFEIDBytes   = 2048
	maxTrustDomainSize = 255
)

// Why a SPIFFE ID is refused. They name a category only, never the ID: it
// is the caller's choice and goes no further than the audit log's reason.
var (
	errSPIFFEScheme      = errors.New("not a spiffe:// URI")
	errSPIFFETrustDomain = errors.New("bad SPIFFE trust domain")
	errSPIFFEPath        = errors.New("bad SPIFFE path")
	errSPIFFETooLong     = errors.New("SPIFFE ID too long")
)

// ParseSPIFFEID parses raw strictly by the SPIFFE ID specification
// (SPIFFE-ID.md, section 2). It works on the URI's bytes as the certificate
// holds them, not on a net/url.URL: net/url decodes percent-escapes,
// forgets an empty fragment or query, and accepts a user or a port, each of
// which would let two spellings name one service. So the only characters it
// accepts are the ones the specification allows, which leaves no room for
// userinfo ('@'), a port (':'), a query ('?'), a fragment ('#') or
// percent-encoding ('%'); the scheme and trust domain must already be in
// lower case, and a path may have no empty, "." or ".." segment and no
// trailing slash.
func ParseSPIFFEID(raw string) (SPIFFEID, error) {
	if len(raw) > maxSPIFFEIDBytes {
		return SPIFFEID{}, errSPIFFETooLong
	}
	rest, ok := strings.CutPrefix(raw, "spiffe://")
	if !ok {
		return SPIFFEID{}, errSPIFFEScheme
	}
	td, path, hasPath := strings.Cut(rest, "/")
	if err := checkTrustDomain(td); err != nil {
		return SPIFFEID{}, err
	}
	if !hasPath {
		return SPIFFEID{TrustDomain: td}, nil
	}
	path = "/" + path
	if err := checkSPIFFEPath(path); err != nil {
		return SPIFFEID{}, err
	}
	return SPIFFEID{TrustDomain: td, Path: path}, nil
}

// checkTrustDomain accepts a non-empty trust domain of at most 255 bytes,
// each a lower-case letter, a digit, '.', '-' or '_'.
func checkTrustDomain(td string) error {
	if td == "" || len(td) > maxTrustDomainSize {
		return errSPIFFETrustDomain
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return errSPIFFETrustDomain
		}
	}
	return nil
}

// checkSPIFFEPath accepts one or more "/segment"s, each of letters, digits,
// '.', '-' and '_', and neither empty nor "." nor "..".
func checkSPIFFEPath(path string) error {
	if path == "" || path[0] != '/' {
		return errSPIFFEPath
	}
	for _, seg := range strings.Split(path[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errSPIFFEPath
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
				return errSPIFFEPath
			}
		}
	}
	return nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// uriSANs returns the certificate's URI SANs exactly as it carries them.
// crypto/x509 offers them only as parsed net/url.URLs, whose String() is
// not the original (an empty fragment or query is lost), so they are read
// from the extension itself.
func uriSANs(cert *x509.Certificate) ([]string, error) {
	var uris []string
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &seq)
		if err != nil || len(rest) > 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
			return nil, errors.New("malformed subject alternative names")
		}
		for b := seq.Bytes; len(b) > 0; {
			var name asn1.RawValue
			if b, err = asn1.Unmarshal(b, &name); err != nil {
				return nil, errors.New("malformed subject alternative names")
			}
			const uniformResourceIdentifier = 6 // GeneralName [6] IA5String (RFC 5280 4.2.1.6)
			if name.Class == asn1.ClassContextSpecific && name.Tag == uniformResourceIdentifier {
				uris = append(uris, string(name.Bytes))
			}
		}
	}
	return uris, nil
}
