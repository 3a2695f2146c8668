package console_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/console"
	"github.com/kluis-dev/kluis/console/oidctest"
	"github.com/kluis-dev/kluis/vault"
)

// tableShredder destroys subject keys as the vault's key ring does.
type tableShredder struct{}

func (tableShredder) DestroySubjectKeys(ctx context.Context, tx pgx.Tx, subjectID string) (int, error) {
	tag, err := tx.Exec(ctx, `DELETE FROM keystore.subject_keys WHERE subject_id = $1`, subjectID)
	return int(tag.RowsAffected()), err
}

// stallingRevoker never revokes the item of one subject (its provider keeps
// refusing), so that subject's erasure goes to needs_attention.
type stallingRevoker struct{ stalled atomic.Value }

func (r *stallingRevoker) isStalled(subjectID string) bool {
	s, _ := r.stalled.Load().(string)
	return s != "" && s == subjectID
}

func (r *stallingRevoker) RevokeSubject(_ context.Context, subjectID string, _ compliance.RevokeFence) (compliance.Revocation, error) {
	if r.isStalled(subjectID) {
		return compliance.Revocation{Unrevoked: []compliance.UnrevokedItem{{ItemID: "itm_refused", Provider: "sandbox", Reason: kluis.EUnavailable}}}, nil
	}
	return compliance.Revocation{}, nil
}

func (r *stallingRevoker) Live(_ context.Context, _ pgx.Tx, subjectID string) (int, error) {
	if r.isStalled(subjectID) {
		return 1, nil
	}
	return 0, nil
}

// consoleEnv is kluis (internal listener, compliance service), the staff
// identity provider and the console, all on TLS.
type consoleEnv struct {
	kluis   *apitest.Env
	idp     *oidctest.Provider
	console *httptest.Server
	revoker *stallingRevoker
}

func startConsole(t *testing.T) *consoleEnv {
	t.Helper()
	ce := &consoleEnv{revoker: &stallingRevoker{}}
	ce.kluis = apitest.Start(t, func(d *api.Deps) {
		svc := compliance.NewService(d.DB, d.Auditor, tableShredder{}, nil)
		svc.AddRevoker(ce.revoker)
		svc.SetRevokeAttempts(1)
		svc.SetSealedOpener(d.Vault)
		d.Compliance = svc
	})
	ce.idp = oidctest.Start(t, "staff_a", "staff_b")
	pair, err := ce.kluis.CA.Client("compliance-console", "spiffe://kluis.test/compliance-console")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pair.TLS()
	if err != nil {
		t.Fatal(err)
	}
	var handler atomic.Value
	ce.console = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.Load().(http.Handler).ServeHTTP(w, r)
	}))
	ce.console.StartTLS()
	t.Cleanup(ce.console.Close)
	srv, err := console.New(context.Background(), console.Config{
		PublicURL: ce.console.URL, Issuer: ce.idp.URL, ClientID: oidctest.ClientID,
		APIURL: ce.kluis.Internal.URL, IdPClient: ce.idp.Client(),
		APITLS: &tls.Config{RootCAs: ce.kluis.CA.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	handler.Store(srv.Handler())
	return ce
}

// subject makes a data subject with a key, as a linked user leaves one.
func (ce *consoleEnv) subject(t *testing.T, external string) string {
	t.Helper()
	ctx := context.Background()
	id, err := vault.EnsureSubject(ctx, ce.kluis.DB.Pool, external)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ce.kluis.DB.Pool.Exec(ctx, `INSERT INTO keystore.subject_keys (id, subject_id, version, wrapped) VALUES ($1, $2, 1, '\x00')`,
		"sk_"+external, id); err != nil {
		t.Fatal(err)
	}
	return id
}

// requestID is the id of the erasure request with reason.
func (ce *consoleEnv) requestID(t *testing.T, reason string) string {
	t.Helper()
	var id string
	if err := ce.kluis.DB.Pool.QueryRow(context.Background(), `SELECT id FROM erasure_requests WHERE reason = $1`, reason).Scan(&id); err != nil {
		t.Fatalf("erasure request %q: %v", reason, err)
	}
	return id
}

func (ce *consoleEnv) status(t *testing.T, id string) string {
	t.Helper()
	var s string
	if err := ce.kluis.DB.Pool.QueryRow(context.Background(), `SELECT status FROM erasure_requests WHERE id = $1`, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// httpClient is a browser-like client (cookies, no redirects followed) that
// trusts the test servers.
func (ce *consoleEnv) httpClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	// A client of its own (console.Client() is shared), on the transport
	// that trusts the test servers' certificate.
	return &http.Client{
		Transport: ce.console.Client().Transport, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// signIn walks the sign-in with a plain client: /login, the provider's
// form, the callback.
func (ce *consoleEnv) signIn(t *testing.T, c *http.Client, user string) {
	t.Helper()
	resp, err := c.Get(ce.console.URL + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	authz, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("login = %d %v", resp.StatusCode, err)
	}
	q := authz.Query()
	form := url.Values{"user": {user}}
	for _, k := range []string{"redirect_uri", "state", "nonce", "code_challenge"} {
		form.Set(k, q.Get(k))
	}
	resp, err = c.PostForm(ce.idp.URL+"/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = c.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("callback = %d", resp.StatusCode)
	}
}
