// Package exampleapp is a tiny frontend app with a backend, for trying
// kluis's hosted pages and drop-in (docs/HOSTED.md): `kluis dev` serves it,
// docker-compose runs it, and the browser tests drive it. Its page loads
// /link.js from kluis with its integrity hash; its backend calls kluis's
// /v1 with the user's token, as a real app's backend would. It is for
// development only: it acts for one demo user and holds no data.
package exampleapp

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"math/big"
	"net/http"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

var page = template.Must(template.ParseFS(static, "static/index.html"))

// Options configures the example app.
type Options struct {
	// KluisURL is kluis's public listener as the browser reaches it (the
	// page loads /link.js from it); APIURL as the app's backend reaches it
	// (KluisURL if empty).
	KluisURL, APIURL string
	// AppURL is the app's own origin: its redirect_uri is AppURL + "/".
	AppURL string
	// Integrity is /link.js's subresource-integrity value.
	Integrity string
	// Token returns a user token for the demo user (the app's identity
	// provider).
	Token func() (string, error)
	// Client calls kluis (http.DefaultClient if nil).
	Client *http.Client
	// ExtraFrameOrigins may also be framed by the app's page (the browser
	// tests frame another site in it, to forge messages from there).
	ExtraFrameOrigins []string
	// Providers, when there are several, are the bank providers the page
	// lets the user choose between (KLUIS_BANK_PROVIDERS' names); the
	// first is kluis's default.
	Providers []string
}

// Handler serves the app's page, its script and its backend's routes.
func Handler(o Options) http.Handler {
	if o.APIURL == "" {
		o.APIURL = o.KluisURL
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 15 * time.Second}
	}
	a := &app{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc("GET /app.js", a.asset("static/app.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /app.css", a.asset("static/app.css", "text/css; charset=utf-8"))
	mux.HandleFunc("POST /api/link-session", a.linkSession)
	mux.HandleFunc("POST /api/exchange", a.exchange)
	mux.HandleFunc("POST /api/verification", a.verification)
	return mux
}

type app struct{ o Options }

func (a *app) index(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	// The app's own policy: its scripts and kluis's drop-in; kluis's page
	// in a frame.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self' "+a.o.KluisURL+"; style-src 'self'; connect-src 'self'; frame-src "+strings.Join(append([]string{a.o.KluisURL}, a.o.ExtraFrameOrigins...), " ")+"; base-uri 'none'")
	h.Set("Content-Type", "text/html; charset=utf-8")
	var providers []string
	if len(a.o.Providers) > 1 {
		providers = a.o.Providers
	}
	_ = page.Execute(w, struct {
		KluisURL, Integrity string
		Providers           []string
	}{a.o.KluisURL, a.o.Integrity, providers})
}

func (a *app) asset(name, contentType string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		b, _ := static.ReadFile(name)
		w.Header().Set("Content-Type", contentType)
		_, _ = w.Write(b)
	}
}

// call sends one request to kluis's /v1 with the user's token and decodes
// the answer into out; a non-2xx answer is an error naming its status.
func (a *app) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.o.APIURL+path, rd)
	if err != nil {
		return err
	}
	tok, err := a.o.Token()
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.o.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("kluis answered %d to %s %s", resp.StatusCode, method, path)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

// linkSession starts a link session and answers its id and hosted page.
func (a *app) linkSession(w http.ResponseWriter, r *http.Request) {
	var s struct {
		ID            string `json:"id"`
		HostedLinkURL string `json:"hosted_link_url"`
	}
	var in struct {
		Provider string `json:"provider"`
	}
	_ = json.NewDecoder(io.LimitReader(r.Body, 1<<10)).Decode(&in)
	req := map[string]any{"products": []string{"auth"}, "redirect_uri": a.o.AppURL + "/"}
	for _, p := range a.o.Providers {
		if p == in.Provider {
			req["provider"] = p
		}
	}
	err := a.call(r.Context(), http.MethodPost, "/v1/link/sessions", req, &s)
	if err == nil && s.HostedLinkURL == "" {
		err = errors.New("kluis gave no hosted_link_url: are hosted pages on?")
	}
	reply(w, s, err)
}

// exchange trades the public token the drop-in reported (or, back from a
// redirect, the one GET /v1/link/sessions/{id} holds) for an item.
func (a *app) exchange(w http.ResponseWriter, r *http.Request) {
	var in struct {
		LinkSessionID string `json:"link_session_id"`
		PublicToken   string `json:"public_token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&in); err != nil || !strings.HasPrefix(in.LinkSessionID, "lks_") {
		reply(w, nil, errors.New("bad request"))
		return
	}
	ctx := r.Context()
	if in.PublicToken == "" {
		var s struct {
			PublicToken string `json:"public_token"`
		}
		if err := a.call(ctx, http.MethodGet, "/v1/link/sessions/"+in.LinkSessionID, nil, &s); err != nil {
			reply(w, nil, err)
			return
		}
		in.PublicToken = s.PublicToken
	}
	var out struct {
		Item struct {
			Institution struct {
				Name string `json:"name"`
			} `json:"institution"`
			Accounts []struct {
				Name string `json:"name"`
				Mask string `json:"mask"`
			} `json:"accounts"`
		} `json:"item"`
	}
	err := a.call(ctx, http.MethodPost, "/v1/link/sessions/"+in.LinkSessionID+"/exchange", map[string]string{"public_token": in.PublicToken}, &out)
	var names []string
	for _, acc := range out.Item.Accounts {
		names = append(names, acc.Name+" ••"+acc.Mask)
	}
	reply(w, map[string]string{"institution": out.Item.Institution.Name, "accounts": strings.Join(names, ", ")}, err)
}

// verification adds a manual account with a random sandbox number, starts
// a micro-deposit verification, and reads the deposits from the sandbox
// bank (the user's statement).
func (a *app) verification(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	n, _ := rand.Int(rand.Reader, big.NewInt(1e9))
	var acc struct {
		ID string `json:"id"`
	}
	err := a.call(ctx, http.MethodPost, "/v1/accounts", map[string]string{"account_number": fmt.Sprintf("7%09d", n.Int64()),
		"routing_number": "021000021", "account_type": "checking", "holder_name": "Sandbox User"}, &acc)
	if err != nil {
		reply(w, nil, err)
		return
	}
	var v struct {
		ID              string `json:"id"`
		HostedVerifyURL string `json:"hosted_verify_url"`
	}
	if err := a.call(ctx, http.MethodPost, "/v1/accounts/"+acc.ID+"/verifications", map[string]string{"method": "micro_deposits"}, &v); err != nil {
		reply(w, nil, err)
		return
	}
	var dep struct {
		Amounts []int `json:"amounts"`
	}
	// Before the sandbox rail has posted them (KLUIS_SANDBOX_RAIL_DELAY)
	// there is nothing on the statement yet: the page says so.
	_ = a.call(ctx, http.MethodGet, "/v1/sandbox/verifications/"+v.ID+"/deposits", nil, &dep)
	reply(w, map[string]any{"id": v.ID, "hosted_verify_url": v.HostedVerifyURL, "deposits": dep.Amounts}, nil)
}
