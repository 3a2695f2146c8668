package api_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// toxicProxy is a toxiproxy proxy embedded in the test: its server runs in
// process (no toxiproxy binary, no HTTP API), and the test adds toxics to
// it directly. Toxics apply to the connections already open as well as to
// new ones, as a real network fault does.
type toxicProxy struct {
	t        *testing.T
	server   *toxiproxy.ApiServer
	upstream string
	addr     string
	proxy    *toxiproxy.Proxy
	clean    bool // up, and without toxics
}

// newToxicProxy starts a proxy on a free loopback port in front of upstream
// (host:port); it stops at t's end.
func newToxicProxy(t *testing.T, upstream string) *toxicProxy {
	t.Helper()
	p := &toxicProxy{
		t: t,
		// Its own metrics registry and a silent logger: nothing global is touched.
		server:   toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()),
		upstream: upstream,
		addr:     "127.0.0.1:0",
	}
	p.up()
	t.Cleanup(func() { _ = p.server.Collection.Clear() })
	return p
}

// up starts a proxy without toxics on p.addr (a free port the first time).
func (p *toxicProxy) up() {
	p.t.Helper()
	p.proxy = toxiproxy.NewProxy(p.server, "upstream", p.addr, p.upstream)
	if err := p.server.Collection.Add(p.proxy, true); err != nil {
		p.t.Fatalf("toxiproxy: start: %v", err)
	}
	// Listen holds the bound address once Start has returned.
	p.addr, p.clean = p.proxy.Listen, true
}

// toxic is one fault: a toxiproxy toxic type, the stream it acts on
// ("upstream" is kluis to the dependency, "downstream" the answers), and its
// attributes (times in milliseconds unless the toxic says otherwise).
type toxic struct {
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// Toxics of the outages the tests inject.
var (
	// blackHole drops everything both ways and never closes: a peer that
	// vanished without a FIN, the case where only a deadline helps.
	blackHole = []toxic{
		{Type: "timeout", Stream: "upstream", Attributes: map[string]any{"timeout": 0}},
		{Type: "timeout", Stream: "downstream", Attributes: map[string]any{"timeout": 0}},
	}
	// resets tears down every connection with a RST as soon as kluis sends.
	resets = []toxic{{Type: "reset_peer", Stream: "upstream", Attributes: map[string]any{"timeout": 0}}}
)

// latency delays every answer by ms milliseconds.
func latency(ms int) toxic {
	return toxic{Type: "latency", Stream: "downstream", Attributes: map[string]any{"latency": ms}}
}

// slicer cuts the answers into small segments, each a little late, as a
// congested network delivers them.
func slicer() toxic {
	return toxic{Type: "slicer", Stream: "downstream", Attributes: map[string]any{"average_size": 64, "size_variation": 32, "delay": 500}}
}

// inject replaces the proxy's faults with these. The connections already
// open carry them too (after a heal if there were other faults).
func (p *toxicProxy) inject(faults ...toxic) {
	p.t.Helper()
	p.heal()
	p.clean = false
	for i, f := range faults {
		b, err := json.Marshal(struct {
			Name string `json:"name"`
			toxic
		}{Name: fmt.Sprintf("%s_%s_%d", f.Type, f.Stream, i), toxic: f})
		if err != nil {
			p.t.Fatal(err)
		}
		if _, err := p.proxy.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
			p.t.Fatalf("toxiproxy: add %s: %v", f.Type, err)
		}
	}
}

// refuse takes the proxy down: open connections are closed and new ones
// refused, as a dependency whose host is up but whose port is closed.
func (p *toxicProxy) refuse() {
	p.t.Helper()
	p.heal()
	if err := p.server.Collection.Remove(p.proxy.Name); err != nil {
		p.t.Fatalf("toxiproxy: stop: %v", err)
	}
	p.clean = false
}

// heal ends the outage: the faulty proxy is stopped, which cuts the
// connections it carried (their requests have timed out or failed: their
// protocol state is lost anyway), and a clean one starts on the same
// address. Removing the toxics in place instead would make toxiproxy flush
// each dead link, five seconds apiece (see ToxicLink.RemoveToxic).
func (p *toxicProxy) heal() {
	p.t.Helper()
	if p.clean {
		return
	}
	if _, err := p.server.Collection.Get(p.proxy.Name); err == nil {
		if err := p.server.Collection.Remove(p.proxy.Name); err != nil {
			p.t.Fatalf("toxiproxy: stop: %v", err)
		}
	}
	p.up()
}
