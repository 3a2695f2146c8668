// Command loadgen sends a bounded load to one kluis endpoint and prints
// throughput and latency percentiles. For example, against `make dev`:
//
//	go run ./cmd/loadgen -url http://127.0.0.1:8080/v1/items -header "Authorization: Bearer $USER_TOKEN" -c 16 -n 5000
//	go run ./cmd/loadgen -method POST -url https://127.0.0.1:8081/internal/v1/credentials/cred_…/reveal \
//	  -body '{"purpose":"payment_initiation"}' -header 'Content-Type: application/json' \
//	  -cacert .kluis-dev/ca.crt -cert .kluis-dev/payments.crt -key .kluis-dev/payments.key -c 32 -n 20000
//
// It refuses targets that are not on this machine's loopback addresses.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kluis-dev/kluis/loadgen"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	var hs headers
	method := flag.String("method", "GET", "HTTP method")
	target := flag.String("url", "", "target URL (loopback only)")
	body := flag.String("body", "", "request body")
	clients := flag.Int("c", 16, "concurrent clients")
	max := flag.Int("n", 5000, "requests at most")
	dur := flag.Duration("d", 60*time.Second, "time at most")
	caFile := flag.String("cacert", "", "CA certificate to trust (PEM)")
	certFile := flag.String("cert", "", "client certificate (PEM), for the internal listener")
	keyFile := flag.String("key", "", "client key (PEM)")
	flag.Var(&hs, "header", "header 'Name: value' (repeatable)")
	flag.Parse()
	if err := run(*method, *target, *body, *caFile, *certFile, *keyFile, hs, *clients, *max, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(method, target, body, caFile, certFile, keyFile string, hs headers, clients, max int, dur time.Duration) error {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("-url must be a URL")
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("refusing %s: loadgen targets this machine's loopback addresses only", u.Hostname())
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile) // #nosec G304 -- the CA file named on loadgen's command line by its operator
		if err != nil {
			return err
		}
		tc.RootCAs = x509.NewCertPool()
		tc.RootCAs.AppendCertsFromPEM(pem)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	header := http.Header{}
	for _, h := range hs {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("header %q is not 'Name: value'", h)
		}
		header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	cfg := loadgen.Config{
		Client: &http.Client{Transport: &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: clients}, Timeout: 30 * time.Second},
		Method: method, URL: target, Header: header, Clients: clients, Max: max, For: dur,
	}
	if body != "" {
		cfg.Body = []byte(body)
	}
	res := loadgen.Run(context.Background(), cfg)
	fmt.Println(res)
	fmt.Println("statuses:", res.Statuses)
	return nil
}
