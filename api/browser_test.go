package api_test

import (
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/kluis-dev/kluis/api"
	"github.com/kluis-dev/kluis/api/jwtauth/jwttest"
	"github.com/kluis-dev/kluis/banklink/plaid/plaidtest"
	"github.com/kluis-dev/kluis/exampleapp"
)

// Browser tests: headless Chromium (Debian's chromium) driven by chromedp,
// kluis's hosted pages opened by the example app's page through the
// drop-in, axe-core checking every page. Without Chromium they skip, unless
// CI is set: then they fail. Screenshots of every page go to docs/
// screenshots with KLUIS_SCREENSHOTS=update; on a failure, a screenshot of
// each open tab goes to KLUIS_BROWSER_ARTIFACTS (default: a folder in the
// system's temporary directory, named in the log).

// chromiumPath is Debian's Chromium (CHROMIUM_PATH overrides it).
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM_PATH"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// axePath is axe-core from npm (api/browsertest/package-lock.json; npm ci
// there installs it).
const axePath = "browsertest/node_modules/axe-core/axe.min.js"

// needBrowser skips without Chromium or axe-core, except under CI.
func needBrowser(t *testing.T) {
	t.Helper()
	_, errC := exec.LookPath(chromiumPath())
	_, errA := os.Stat(axePath)
	if errC == nil && errA == nil {
		return
	}
	msg := fmt.Sprintf("browser tests need %s (apt-get install chromium) and %s (npm ci --prefix api/browsertest): %v %v", chromiumPath(), axePath, errC, errA)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// browserEnv is kluis, the example app and an attacker's site, each on its
// own origin, and a browser.
type browserEnv struct {
	*hostedEnv
	t         *testing.T
	ctx       context.Context
	app, bad  string // origins: the example app and another site
	plaidLink string // origin of the stand-in for Plaid Link's script
	appDirect string // the example app by address
	tok       string
	tabs      map[string]context.Context
}

func startBrowser(t *testing.T) *browserEnv {
	t.Helper()
	needBrowser(t)
	appLn, badLn, plaidLn := listen(t), listen(t), listen(t)
	be := &browserEnv{t: t, tabs: map[string]context.Context{},
		app: "http://app.test:" + port(appLn), bad: "http://evil.test:" + port(badLn), appDirect: "http://" + appLn.Addr().String(),
		plaidLink: "http://plaid-link.test:" + port(plaidLn)}
	// The Plaid step loads the stand-in for Plaid Link (whose real script
	// cannot be reached from here), checked by its integrity value.
	be.hostedEnv = startHosted(t, "kluis.test", be.app, func(d *api.Deps) {
		d.PlaidLink = api.PlaidLink{ScriptURL: be.plaidLink + "/link-initialize.js", Integrity: fakePlaidLinkIntegrity}
	})
	serve(t, plaidLn, fakePlaidLink(t, be.hostedEnv.plaid))
	sub := "user-browser"
	be.tok = userToken(t, sub)
	serve(t, appLn, exampleapp.Handler(exampleapp.Options{KluisURL: be.KluisURL, APIURL: be.Direct, AppURL: be.app,
		Integrity: api.LinkJSIntegrity, ExtraFrameOrigins: []string{be.bad}, Providers: []string{"sandbox", "stitch", "plaid"},
		Token: func() (string, error) { return jwttest.Token(t, jwttest.WithSubject(sub)), nil }}))
	serve(t, badLn, badSite())

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath()), chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("no-proxy-server", true),
		// The test's sites: kluis.test, app.test and evil.test are three
		// sites (cross-site to each other) on this machine.
		chromedp.Flag("host-resolver-rules", "MAP *.test 127.0.0.1"),
		chromedp.Flag("disable-site-isolation-trials", true), chromedp.Flag("disable-features", "IsolateOrigins,site-per-process"),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil {
		cancelB()
		cancelA()
		t.Fatalf("start chromium: %v", err)
	}
	be.ctx = ctx
	be.tabs["main"] = ctx
	t.Cleanup(func() {
		if t.Failed() {
			be.keepScreenshots()
		}
		cancelB()
		cancelA()
	})
	return be
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func port(ln net.Listener) string { return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) }

func serve(t *testing.T, ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// badSite is another site: it frames what it is given, forges messages to
// the page that frames it, and posts forms to kluis. Its inline scripts
// are the attacker's, not kluis's.
func badSite() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /frame", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>framer</title><iframe id="f" src="%s" title="kluis"></iframe>`, htmlEscape(r.URL.Query().Get("url")))
	})
	mux.HandleFunc("GET /forge", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><title>forger</title><script>
parent.postMessage({source: 'kluis-link', type: 'success', public_token: 'forged-public-token', metadata: {link_session_id: 'lks_forged'}}, '*');
for (var i = 0; i < parent.frames.length; i++) { parent.frames[i].postMessage({source: 'kluis-app', type: 'exit'}, '*'); }
parent.postMessage({source: 'evil', type: 'done'}, '*');
</script>`)
	})
	mux.HandleFunc("GET /csrf", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>csrf</title><form id="f" method="post" action="%s">
<input name="form_token" value="%s"><input name="action" value="search"><input name="q" value="x"></form>
<script>document.getElementById('f').submit();</script>`, htmlEscape(q.Get("target")), htmlEscape(q.Get("token")))
	})
	return mux
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", `"`, "&quot;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// run runs actions in a tab, failing the test on an error.
func (be *browserEnv) run(ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	be.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		be.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a script in a tab.
func eval[T any](be *browserEnv, ctx context.Context, script string, opts ...chromedp.EvaluateOption) T {
	be.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](script, opts...))
	if err != nil {
		be.t.Fatalf("evaluate %.80q: %v", script, err)
	}
	return v
}

// waitFor polls a predicate in a tab, through navigations.
func (be *browserEnv) waitFor(ctx context.Context, what, predicate string) {
	be.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool](`!!(function () { try { return (`+predicate+`); } catch (e) { return false; } })()`))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			be.t.Fatalf("%s: not so after 20s (%v)", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// title is the document's title.
func (be *browserEnv) title(ctx context.Context) string {
	return eval[string](be, ctx, `document.title`)
}

// axeViolation is one finding of axe-core.
type axeViolation struct {
	ID, Impact, Help string
	Nodes            []string
}

// checkA11y runs axe-core in the page (injected through the DevTools
// protocol, which the page's Content-Security-Policy does not govern) and
// fails on any serious or critical finding.
func (be *browserEnv) checkA11y(ctx context.Context, pageName string) {
	be.t.Helper()
	src, err := os.ReadFile(axePath)
	if err != nil {
		be.t.Fatal(err)
	}
	eval[chromedp.Void](be, ctx, string(src)+";\nundefined")
	found := eval[[]axeViolation](be, ctx, `axe.run(document, {resultTypes: ['violations']}).then(function (r) {
		return r.violations.map(function (v) { return {ID: v.id, Impact: v.impact || '', Help: v.help,
			Nodes: v.nodes.map(function (n) { return n.target.join(' '); })}; }); })`, chromedp.EvalAwaitPromise)
	for _, v := range found {
		if v.Impact == "serious" || v.Impact == "critical" {
			be.t.Errorf("accessibility (%s): %s %s: %s at %v", pageName, v.Impact, v.ID, v.Help, v.Nodes)
		}
	}
}

// shoot checks a page's accessibility and, with KLUIS_SCREENSHOTS=update,
// writes its screenshots on a desktop and a phone-sized window to
// docs/screenshots.
func (be *browserEnv) shoot(ctx context.Context, name string) {
	be.t.Helper()
	be.checkA11y(ctx, name)
	if os.Getenv("KLUIS_SCREENSHOTS") != "update" {
		return
	}
	for _, size := range []struct {
		suffix string
		w, h   int64
		mobile bool
	}{{"desktop", 1280, 800, false}, {"phone", 390, 844, true}} {
		emulate := chromedp.EmulateViewport(size.w, size.h)
		if size.mobile {
			emulate = chromedp.EmulateViewport(size.w, size.h, chromedp.EmulateMobile, chromedp.EmulateScale(2))
		}
		be.run(ctx, "resize", emulate)
		png := eval2(be, ctx, chromedp.FullScreenshot(100))
		if err := os.WriteFile(filepath.Join("..", "docs", "screenshots", name+"-"+size.suffix+".png"), png, 0o644); err != nil {
			be.t.Fatal(err)
		}
	}
	be.run(ctx, "reset size", chromedp.EmulateReset())
}

func eval2[T any](be *browserEnv, ctx context.Context, a chromedp.Action[T]) T {
	be.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		be.t.Fatal(err)
	}
	return v
}

// keepScreenshots saves a screenshot of each open tab, for a failure.
func (be *browserEnv) keepScreenshots() {
	dir := os.Getenv("KLUIS_BROWSER_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "kluis-browser-artifacts")
	}
	dir = filepath.Join(dir, strings.ReplaceAll(be.t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	for name, ctx := range be.tabs {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
		cancel()
		if err == nil {
			_ = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
		}
	}
	be.t.Logf("browser screenshots of the failure: %s", dir)
}

// results are what the example app's drop-in callbacks recorded.
type appResult struct {
	Kind   string          `json:"kind"`
	Detail json.RawMessage `json:"detail"`
}

func (be *browserEnv) results(ctx context.Context) []appResult {
	return eval[[]appResult](be, ctx, `window.exampleResults`)
}

// framed returns a query option that runs a query in the example app's
// kluis iframe (in the tab's process: the browser runs without site
// isolation, so the test can reach into the frame; the pages' policies,
// frame-ancestors included, apply as ever).
func (be *browserEnv) framed(ctx context.Context) chromedp.QueryOption {
	be.t.Helper()
	nodes := eval2(be, ctx, chromedp.Nodes(chromedp.CSS("iframe.kluis-link-frame")))
	if len(nodes) == 0 || nodes[0].ContentDocument == nil {
		be.t.Fatal("the example app shows no kluis frame")
	}
	return chromedp.FromNode(nodes[0])
}

// in runs actions on selectors in the frame (framed) or the tab (nil).
type where func() []chromedp.QueryOption

// linkThroughThePages does the sandbox's steps: search, choose, a wrong
// login, the right one, accounts (the savings account left out). at gives
// the query options for the page's current document (the tab's own, or
// the app's frame, asked afresh at each step). With shots, each page is
// checked and photographed (top-level pages only).
func (be *browserEnv) linkThroughThePages(ctx context.Context, at where, shots bool) {
	be.t.Helper()
	q := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	// step runs acts (clicks and keys: once) on the current document.
	step := func(what string, acts ...func([]chromedp.QueryOption) chromedp.Action[chromedp.Void]) {
		be.t.Helper()
		var as []chromedp.Action[chromedp.Void]
		for _, a := range acts {
			as = append(as, a(at()))
		}
		be.run(ctx, what, as...)
	}
	// waitStep waits for the step's page; a frame's document node is
	// asked afresh until the frame has navigated to it.
	waitStep := func(what string, acts ...func([]chromedp.QueryOption) chromedp.Action[chromedp.Void]) {
		be.t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var as []chromedp.Action[chromedp.Void]
			for _, a := range acts {
				as = append(as, a(at()))
			}
			tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := chromedp.Do(tctx, as...)
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				be.t.Fatalf("%s: %v", what, err)
			}
		}
	}
	wait := func(sel string) func([]chromedp.QueryOption) chromedp.Action[chromedp.Void] {
		return func(o []chromedp.QueryOption) chromedp.Action[chromedp.Void] {
			return chromedp.WaitVisible(q(sel), o...)
		}
	}
	click := func(sel string) func([]chromedp.QueryOption) chromedp.Action[chromedp.Void] {
		return func(o []chromedp.QueryOption) chromedp.Action[chromedp.Void] { return chromedp.Click(q(sel), o...) }
	}
	keys := func(sel, v string) func([]chromedp.QueryOption) chromedp.Action[chromedp.Void] {
		return func(o []chromedp.QueryOption) chromedp.Action[chromedp.Void] {
			return chromedp.SendKeys(q(sel), v, o...)
		}
	}
	waitStep("institution page", wait("#q"))
	if shots {
		be.shoot(ctx, "link-institution")
	}
	step("search", keys("#q", "credit"), click(`button[value="search"]`))
	waitStep("search results", wait(`#q[value="credit"]`), wait(`button.choice[value="ins_sandbox_noauth"]`))
	if shots {
		if n := eval[int](be, ctx, `document.querySelectorAll('button.choice').length`); n != 1 {
			be.t.Errorf("searching for credit lists %d banks, want 1", n)
		}
	}
	step("choose", click(`button.choice[value="ins_sandbox_noauth"]`))
	waitStep("login page", wait("#username"))
	if shots {
		be.shoot(ctx, "link-login")
	}
	step("wrong login", keys("#username", "user_good"), keys("#password", "nope"), click(`button[value="login"]`))
	waitStep("login error", wait("#form-error"))
	if shots {
		if got := eval[string](be, ctx, `document.activeElement && document.activeElement.id`); got != "username" {
			be.t.Errorf("after a wrong login, focus is on %q, want the first field in error", got)
		}
		be.shoot(ctx, "link-login-error")
	}
	step("login", keys("#username", "user_good"), keys("#password", "pass_good"), click(`button[value="login"]`))
	waitStep("accounts page", wait("#acct-1"))
	if shots {
		be.shoot(ctx, "link-accounts")
	}
	step("pick", click("#acct-1"), click(`button[value="accounts"]`))
}

// lastSession is the status of the newest link session.
func (be *browserEnv) lastSession() string {
	var status string
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT status FROM link_sessions ORDER BY created_at DESC LIMIT 1`).Scan(&status); err != nil {
		be.t.Fatal(err)
	}
	return status
}

func TestBrowserLinksASandboxAccountThroughTheDropInInAFrameAndByRedirect(t *testing.T) {
	be := startBrowser(t)
	ctx := be.ctx
	be.run(ctx, "app page", chromedp.Navigate(be.app+"/"), chromedp.WaitVisible(chromedp.CSS("#link-iframe")))
	be.shoot(ctx, "example-app")
	be.run(ctx, "open the frame", chromedp.Click(chromedp.CSS("#link-iframe")))
	be.waitFor(ctx, "the frame", `document.querySelector('iframe.kluis-link-frame') !== null`)
	be.linkThroughThePages(ctx, func() []chromedp.QueryOption { return []chromedp.QueryOption{be.framed(ctx)} }, false)
	be.waitFor(ctx, "the app's exchange", `document.getElementById('result').textContent.indexOf('Linked Sandbox Credit Union') === 0`)
	got := eval[string](be, ctx, `document.getElementById('result').textContent`)
	if !strings.Contains(got, "Sandbox checking 1") || strings.Contains(got, "savings") {
		t.Errorf("the app linked %q, want the checking account alone", got)
	}
	var names []string
	for _, r := range be.results(ctx) {
		names = append(names, r.Kind+string(r.Detail))
	}
	if len(names) < 3 || names[0] != `event"OPEN"` {
		t.Errorf("the drop-in reported %v, want OPEN first, then the steps, then success", names)
	}

	// The redirect flow: away to kluis and back; the app's backend reads
	// the token from GET /v1/link/sessions/{id}. Every page is checked.
	be.run(ctx, "redirect", chromedp.Click(chromedp.CSS("#link-redirect")))
	be.linkThroughThePages(ctx, func() []chromedp.QueryOption { return nil }, true)
	be.waitFor(ctx, "back at the app", `location.origin === `+strconv.Quote(be.app)+` && document.getElementById('result').textContent.indexOf('Linked Sandbox Credit Union') === 0`)
	if loc := eval[string](be, ctx, `location.search`); strings.Contains(loc, "public") || !strings.Contains(loc, "kluis_status=success") {
		t.Errorf("the redirect back carried %q", loc)
	}

	// Opened directly (no app to hand to), the last page stays: it says
	// the account is linked.
	_, link := be.linkSession(t, be.tok, `{}`)
	be.run(ctx, "direct", chromedp.Navigate(be.KluisURL+link))
	be.linkThroughThePages(ctx, func() []chromedp.QueryOption { return nil }, false)
	be.waitFor(ctx, "done page", `document.querySelector('h1').textContent === 'Bank linked'`)
	be.shoot(ctx, "link-done")
}

func TestBrowserRefusesFramingByAnotherSiteAndMessagesFromAnotherOrigin(t *testing.T) {
	be := startBrowser(t)
	ctx := be.ctx
	be.run(ctx, "app page", chromedp.Navigate(be.app+"/"), chromedp.WaitVisible(chromedp.CSS("#link-iframe")))
	be.run(ctx, "iframe", chromedp.Click(chromedp.CSS("#link-iframe")))
	// The app's origin may frame the page: it loads and reports OPEN.
	be.waitFor(ctx, "OPEN from the framed page", `window.exampleResults.some(function (r) { return r.kind === 'event' && r.detail === 'OPEN'; })`)

	// Another origin in the app's page forges a success to the app and an
	// exit to the kluis frame: both are ignored.
	eval[chromedp.Void](be, ctx, `window.addEventListener('message', function (e) { if (e.data && e.data.source === 'evil') { window.evilDone = true; } });
		var f = document.createElement('iframe'); f.src = `+strconv.Quote(be.bad+"/forge")+`; f.title = 'other site'; document.body.appendChild(f);`)
	be.waitFor(ctx, "the forger ran", `window.evilDone === true`)
	for _, r := range be.results(ctx) {
		if r.Kind == "success" || r.Kind == "exit" {
			t.Fatalf("a message from another origin reached the app's callbacks: %+v", r)
		}
	}
	if s := be.lastSession(); s != "created" {
		t.Fatalf("a message from another origin moved the session to %s", s)
	}
	// The app itself may end the flow: its exit reaches the page.
	be.run(ctx, "close", chromedp.Click(chromedp.CSS("#link-close")))
	be.waitFor(ctx, "onExit", `window.exampleResults.some(function (r) { return r.kind === 'exit'; })`)
	if s := be.lastSession(); s != "exited" {
		t.Errorf("after the app's close the session is %s, want exited", s)
	}

	// A site that is not an app's cannot frame the page.
	_, link := be.linkSession(t, be.tok, `{}`)
	bad := be.ctx
	be.run(bad, "framer", chromedp.Navigate(be.bad+"/frame?url="+url.QueryEscape(be.KluisURL+link)), chromedp.WaitReady(chromedp.CSS("#f")))
	be.waitFor(bad, "the frame's load", `document.readyState === 'complete'`)
	tree := eval2(be, bad, chromedp.Action[*cdppage.FrameTree](func(ctx context.Context, t *chromedp.Target) (*cdppage.FrameTree, error) {
		r, err := cdp.Call(ctx, t, cdppage.GetFrameTree, cdp.Empty{})
		return r.FrameTree, err
	}))
	// The browser refuses the frame (frame-ancestors): it shows its own
	// error page in its place, and the page's URL is the unreachable one.
	if len(tree.ChildFrames) != 1 {
		t.Fatalf("the framer has %d frames, want 1", len(tree.ChildFrames))
	}
	if f := tree.ChildFrames[0].Frame; !strings.HasPrefix(f.URL, "chrome-error:") || !strings.HasPrefix(f.UnreachableURL, be.KluisURL+"/link/") {
		t.Errorf("another site framed the page: %+v", f)
	}
}

func TestBrowserVerifiesAManualAccountOnTheVerifyPage(t *testing.T) {
	be := startBrowser(t)
	ctx := be.ctx
	// The example app's backend adds the account and starts the
	// verification, as its button does; the page opens in this tab.
	resp, err := http.Post(be.appDirect+"/api/verification", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		URL      string `json:"hosted_verify_url"`
		Deposits []int  `json:"deposits"`
	}
	err = json.NewDecoder(resp.Body).Decode(&v)
	_ = resp.Body.Close()
	if err != nil || len(v.Deposits) != 2 || !strings.HasPrefix(v.URL, be.KluisURL+"/verify/ver_") {
		t.Fatalf("the app's verification: %+v (%v)", v, err)
	}
	a, b := v.Deposits[0], v.Deposits[1]
	be.run(ctx, "verify page", chromedp.Navigate(v.URL+"&origin="+url.QueryEscape(be.app)+"&mode=popup"), chromedp.WaitVisible(chromedp.CSS("#amount1")))
	be.shoot(ctx, "verify")
	be.run(ctx, "wrong amounts", chromedp.SendKeys(chromedp.CSS("#amount1"), strconv.Itoa(a%99+1)), chromedp.SendKeys(chromedp.CSS("#amount2"), strconv.Itoa(b)),
		chromedp.Click(chromedp.CSS(`button[value="confirm"]`)))
	be.run(ctx, "mismatch", chromedp.WaitVisible(chromedp.CSS("#form-error")))
	if left := eval[string](be, ctx, `document.getElementById('attempts').textContent`); !strings.Contains(left, "2") {
		t.Errorf("after one wrong answer the page says %q, want 2 attempts left", left)
	}
	be.shoot(ctx, "verify-error")
	be.run(ctx, "right amounts", chromedp.SendKeys(chromedp.CSS("#amount1"), strconv.Itoa(a)), chromedp.SendKeys(chromedp.CSS("#amount2"), strconv.Itoa(b)),
		chromedp.Click(chromedp.CSS(`button[value="confirm"]`)))
	be.waitFor(ctx, "verified", `document.querySelector('h1').textContent === 'Account verified'`)
	be.shoot(ctx, "verify-verified")
	var status string
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT status FROM verifications ORDER BY created_at DESC LIMIT 1`).Scan(&status); err != nil || status != "verified" {
		t.Fatalf("verification %s (%v), want verified", status, err)
	}
}

func TestBrowserRefusesWrongAndExpiredPageTokensReplayedFormsAndCrossSitePosts(t *testing.T) {
	be := startBrowser(t)
	tab := be.ctx
	id, link := be.linkSession(t, be.tok, `{}`)

	// A wrong token, then an expired one.
	be.run(tab, "wrong token", chromedp.Navigate(be.KluisURL+"/link/"+id+"?token=kpt_wrongwrongwrongwrongwrongwrongwrongwrongwr"))
	if got := be.title(tab); !strings.HasPrefix(got, "This page cannot be used") {
		t.Errorf("a wrong page token shows %q", got)
	}
	be.shoot(tab, "refused")
	if _, err := be.DB.Pool.Exec(context.Background(), `UPDATE hosted_pages SET expires_at = now() - interval '1 minute' WHERE object_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	be.run(tab, "expired token", chromedp.Navigate(be.KluisURL+link))
	if got := be.title(tab); !strings.HasPrefix(got, "This page cannot be used") {
		t.Errorf("an expired page token shows %q", got)
	}

	// A form replayed from the page itself.
	_, link = be.linkSession(t, be.tok, `{}`)
	be.run(tab, "open", chromedp.Navigate(be.KluisURL+link), chromedp.WaitVisible(chromedp.CSS("#q")))
	old := eval[string](be, tab, `document.querySelector('[name=form_token]').value`)
	be.run(tab, "search", chromedp.Click(chromedp.CSS(`button[value="search"]`)))
	be.waitFor(tab, "next form", `document.querySelector('[name=form_token]') && document.querySelector('[name=form_token]').value !== `+strconv.Quote(old))
	current := eval[string](be, tab, `document.querySelector('[name=form_token]').value`)
	eval[chromedp.Void](be, tab, `var f = document.querySelector('form.search'); f.querySelector('[name=form_token]').value = `+strconv.Quote(old)+`;
		f.querySelector('button').click();`)
	be.waitFor(tab, "replay refused", `document.title.indexOf('This page cannot be used') === 0`)

	// A post from another site, with the page's live form token: refused
	// before the token is spent.
	evil := be.ctx
	be.run(evil, "cross-site post", chromedp.Navigate(be.bad+"/csrf?target="+url.QueryEscape(be.KluisURL+link[:strings.Index(link, "?")])+"&token="+url.QueryEscape(current)))
	be.waitFor(evil, "cross-site post refused", `location.origin === `+strconv.Quote(be.KluisURL)+` && document.title.indexOf('This page cannot be used') === 0`)
	status, body := be.post(t, link[:strings.Index(link, "?")], url.Values{"form_token": {current}, "action": {"search"}, "q": {"bank"}}, nil)
	if status != 200 {
		t.Errorf("after the refused cross-site post the page's own form answered %d:\n%s", status, body)
	}
	if errors.Is(context.Cause(be.ctx), context.Canceled) {
		t.Fatal("the browser went away")
	}
}

// fakePlaidLinkJS stands in for Plaid Link's script (link-initialize.js),
// which cannot be reached from the test: the same API, Plaid.create({token,
// onSuccess, onExit, onEvent}).open(), and like Plaid's, Link's UI in a
// frame of the script's own origin that reports back by postMessage.
const fakePlaidLinkJS = `(function () {
  'use strict';
  var origin = new URL(document.currentScript.src).origin;
  window.Plaid = { create: function (cfg) {
    var frame = null;
    function onMessage(e) {
      if (!frame || e.origin !== origin || e.source !== frame.contentWindow) { return; }
      var d = e.data || {};
      window.removeEventListener('message', onMessage);
      frame.parentNode.removeChild(frame);
      frame = null;
      if (d.type === 'success') { cfg.onSuccess(d.public_token, { institution: d.institution }); }
      else if (cfg.onExit) { cfg.onExit(null, {}); }
    }
    return {
      open: function () {
        if (cfg.onEvent) { cfg.onEvent('OPEN', {}); }
        window.addEventListener('message', onMessage);
        frame = document.createElement('iframe');
        frame.src = origin + '/link?token=' + encodeURIComponent(cfg.token);
        frame.title = 'Plaid Link';
        frame.id = 'plaid-link-frame';
        document.body.appendChild(frame);
      },
      exit: function () {}, destroy: function () {}
    };
  } };
})();
`

var fakePlaidLinkIntegrity = func() string {
	sum := sha512.Sum384([]byte(fakePlaidLinkJS))
	return "sha384-" + base64.StdEncoding.EncodeToString(sum[:])
}()

// fakePlaidLink serves the stand-in: the script (with CORS, for its
// integrity check) and Link's frame, where the user's click finishes Link
// at the in-test Plaid (plaidtest) and the frame hands its public token to
// the page that opened it.
func fakePlaidLink(t *testing.T, pl *plaidtest.Server) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /link-initialize.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		fmt.Fprint(w, fakePlaidLinkJS)
	})
	mux.HandleFunc("GET /link", func(w http.ResponseWriter, r *http.Request) {
		pub, err := pl.CompleteLink(r.URL.Query().Get("token"), plaidtest.InstitutionAuth)
		if err != nil {
			t.Errorf("the Plaid step opened Link with a link token Plaid did not issue: %v", err)
			http.Error(w, "bad link token", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>Plaid Link</title><button id="plaid-continue">Link First Platypus Bank</button>
<script>document.getElementById('plaid-continue').addEventListener('click', function () {
  parent.postMessage({type: 'success', public_token: %q, institution: {name: 'First Platypus Bank'}}, location.ancestorOrigins[0]);
});</script>`, pub)
	})
	return mux
}

// popup clicks sel in the app's tab and returns a context that drives the
// popup window the click opens on kluis's origin (chromedp attaches to the
// new target by its id).
func (be *browserEnv) popup(sel string) (context.Context, target.ID) {
	be.t.Helper()
	ch := chromedp.WaitNewTarget(be.ctx, func(info *target.Info) bool {
		return info.Type == "page" && strings.HasPrefix(info.URL, be.KluisURL+"/link/")
	})
	be.run(be.ctx, "open the popup", chromedp.Click(chromedp.CSS(sel)))
	var id target.ID
	select {
	case id = <-ch:
	case <-time.After(20 * time.Second):
		be.t.Fatal("no popup opened on kluis's link page")
	}
	pctx, cancel := chromedp.NewContext(be.ctx, chromedp.WithTargetID(id))
	be.t.Cleanup(cancel)
	// The first Run attaches to the target for as long as its context
	// lives: it must be pctx itself, not a child with a deadline (the
	// steps' own timeouts), or the popup is let go after the first step.
	if err := chromedp.Do(pctx); err != nil {
		be.t.Fatalf("attach to the popup: %v", err)
	}
	be.tabs["popup"] = pctx
	return pctx, id
}

// waitGone waits until the target is no longer open.
func (be *browserEnv) waitGone(id target.ID, what string) {
	be.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		infos, err := chromedp.Targets(be.ctx)
		if err == nil && !slices.ContainsFunc(infos, func(i *target.Info) bool { return i.TargetID == id }) {
			return
		}
		if time.Now().After(deadline) {
			be.t.Fatalf("%s: still open after 20s (%v)", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// chooseProvider picks the bank provider on the example app's page.
func (be *browserEnv) chooseProvider(name string) {
	be.t.Helper()
	be.run(be.ctx, "choose "+name, chromedp.SetValue(chromedp.CSS("#provider"), name))
}

// appLinked waits until the example app's backend exchanged a public
// token, and returns what it shows.
func (be *browserEnv) appLinked() string {
	be.t.Helper()
	be.waitFor(be.ctx, "the app's exchange", `document.getElementById('result').textContent.indexOf('Linked ') === 0`)
	return eval[string](be, be.ctx, `document.getElementById('result').textContent`)
}

func TestBrowserLinksASandboxAccountInAPopupAndIgnoresMessagesFromAnotherOrigin(t *testing.T) {
	be := startBrowser(t)
	ctx := be.ctx
	be.run(ctx, "app page", chromedp.Navigate(be.app+"/"), chromedp.WaitVisible(chromedp.CSS("#link-popup")))
	pop, id := be.popup("#link-popup")
	be.waitFor(pop, "the popup's first page", `document.getElementById('q') !== null`)
	if got := eval[string](be, pop, `location.search`); !strings.Contains(got, "mode=popup") || !strings.Contains(got, "origin="+url.QueryEscape(be.app)) {
		t.Errorf("the drop-in opened the popup at %q", got)
	}
	if !eval[bool](be, pop, `window.opener !== null`) {
		t.Fatal("the popup lost its opener: it could not hand the app the result")
	}

	// Another origin, framed in the app's page, forges a success to the
	// app while the popup is open: the drop-in ignores it.
	eval[chromedp.Void](be, ctx, `window.addEventListener('message', function (e) { if (e.data && e.data.source === 'evil') { window.evilDone = true; } });
		var f = document.createElement('iframe'); f.src = `+strconv.Quote(be.bad+"/forge")+`; f.title = 'other site'; document.body.appendChild(f);`)
	be.waitFor(ctx, "the forger ran", `window.evilDone === true`)
	for _, r := range be.results(ctx) {
		if r.Kind == "success" || r.Kind == "exit" {
			t.Fatalf("a message from another origin reached the app's callbacks: %+v", r)
		}
	}

	be.linkThroughThePages(pop, func() []chromedp.QueryOption { return nil }, false)
	got := be.appLinked()
	if !strings.Contains(got, "Linked Sandbox Credit Union") || !strings.Contains(got, "Sandbox checking 1") || strings.Contains(got, "savings") {
		t.Errorf("the app linked %q, want the checking account alone", got)
	}
	var success []string
	for _, r := range be.results(ctx) {
		if r.Kind == "success" {
			success = append(success, string(r.Detail))
		}
	}
	if len(success) != 1 || strings.Contains(success[0], "forged") {
		t.Errorf("onSuccess calls: %v, want one, with the session's id", success)
	}
	be.waitGone(id, "the popup after onSuccess")
	if s := be.lastSession(); s != "succeeded" && s != "exchanged" {
		t.Errorf("the session is %s after the popup's link", s)
	}
}

func TestBrowserLinksThroughStitchInAPopup(t *testing.T) {
	be := startBrowser(t)
	ctx := be.ctx
	be.run(ctx, "app page", chromedp.Navigate(be.app+"/"), chromedp.WaitVisible(chromedp.CSS("#link-popup")))
	be.chooseProvider("stitch")
	pop, id := be.popup("#link-popup")
	be.waitFor(pop, "the Stitch step", `document.getElementById('oauth-continue') !== null`)
	be.shoot(pop, "link-oauth")
	if csp := be.pagePolicy(pop); !strings.Contains(csp, "form-action 'self' "+be.stitch.URL+" ") || strings.Contains(csp, be.plaidLink) {
		t.Errorf("the Stitch step's policy: %s", csp)
	}
	// To Stitch (the test server's consent page), and back to kluis's
	// callback, which hands the app the public token.
	be.run(pop, "continue to Stitch", chromedp.Click(chromedp.CSS("#oauth-continue")))
	be.waitFor(pop, "Stitch's consent page", `location.href.indexOf(`+strconv.Quote(be.stitch.URL+"/connect/authorize?")+`) === 0 && document.getElementById('stitch-allow') !== null`)
	be.run(pop, "allow", chromedp.Click(chromedp.CSS("#stitch-allow")))
	got := be.appLinked()
	if !strings.Contains(got, "Linked") {
		t.Errorf("the app shows %q", got)
	}
	be.waitGone(id, "the popup after onSuccess")
	var provider, status string
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT provider, status FROM link_sessions ORDER BY created_at DESC LIMIT 1`).Scan(&provider, &status); err != nil || provider != "stitch" {
		t.Fatalf("the last session: %s %s (%v)", provider, status, err)
	}

	// The done page after Stitch's return, checked: the flow again in a
	// page opened directly (nobody to hand to: the page stays).
	_, link := be.linkSession(t, be.tok, `{"products":["auth"],"provider":"stitch"}`)
	be.run(ctx, "direct", chromedp.Navigate(be.KluisURL+link), chromedp.WaitVisible(chromedp.CSS("#oauth-continue")))
	be.run(ctx, "continue", chromedp.Click(chromedp.CSS("#oauth-continue")), chromedp.WaitVisible(chromedp.CSS("#stitch-allow")))
	be.run(ctx, "allow", chromedp.Click(chromedp.CSS("#stitch-allow")))
	be.waitFor(ctx, "back from Stitch", `location.pathname === '/link/callback/stitch' && document.querySelector('h1').textContent === 'Bank linked'`)
	be.checkA11y(ctx, "the done page after Stitch")

	// The user denies at Stitch: the session is exited, the page says so.
	denied, link := be.linkSession(t, be.tok, `{"products":["auth"],"provider":"stitch"}`)
	be.run(ctx, "direct", chromedp.Navigate(be.KluisURL+link), chromedp.WaitVisible(chromedp.CSS("#oauth-continue")))
	be.run(ctx, "continue", chromedp.Click(chromedp.CSS("#oauth-continue")), chromedp.WaitVisible(chromedp.CSS("#stitch-deny")))
	be.run(ctx, "deny", chromedp.Click(chromedp.CSS("#stitch-deny")))
	be.waitFor(ctx, "back from Stitch", `location.pathname === '/link/callback/stitch' && document.querySelector('h1').textContent === 'Linking cancelled'`)
	if s := be.sessionStatus(t, denied); s != "exited" {
		t.Errorf("after a denial at Stitch the session is %s, want exited", s)
	}

	// In a frame the step says why it cannot go on.
	_, link = be.linkSession(t, be.tok, `{"provider":"stitch"}`)
	be.run(ctx, "framed step", chromedp.Navigate(be.KluisURL+link+"&mode=iframe&origin="+url.QueryEscape(be.app)), chromedp.WaitVisible(chromedp.CSS("#form-error")))
	be.shoot(ctx, "link-oauth-frame")
}

func TestBrowserLinksThroughThePlaidStepWithPlaidLinksScriptOnThatPageOnly(t *testing.T) {
	be := startBrowser(t)
	ctx := be.ctx
	be.run(ctx, "app page", chromedp.Navigate(be.app+"/"), chromedp.WaitVisible(chromedp.CSS("#link-redirect")))
	be.chooseProvider("plaid")
	be.run(ctx, "redirect", chromedp.Click(chromedp.CSS("#link-redirect")))
	be.waitFor(ctx, "the Plaid step", `location.origin === `+strconv.Quote(be.KluisURL)+` && window.Plaid && document.getElementById('plaid-open') !== null`)
	csp := be.pagePolicy(ctx)
	for _, want := range []string{"script-src 'self' " + be.plaidLink + ";", "frame-src " + be.plaidLink, "connect-src 'self' " + be.plaidLink + ";"} {
		if !strings.Contains(csp, want) {
			t.Errorf("the Plaid step's policy %q lacks %q", csp, want)
		}
	}
	be.shoot(ctx, "link-plaid")
	be.run(ctx, "open Plaid Link", chromedp.Click(chromedp.CSS("#plaid-open")))
	be.waitFor(ctx, "Link's frame", `document.getElementById('plaid-link-frame') !== null`)
	var frame chromedp.QueryOption
	deadline := time.Now().Add(20 * time.Second)
	for {
		nodes := eval2(be, ctx, chromedp.Nodes(chromedp.CSS("#plaid-link-frame")))
		if len(nodes) == 1 && nodes[0].ContentDocument != nil {
			frame = chromedp.FromNode(nodes[0])
			tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := chromedp.Do(tctx, chromedp.Click(chromedp.CSS("#plaid-continue"), frame))
			cancel()
			if err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("Plaid Link's frame did not load")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Plaid's onSuccess posts the public token in the page's form; kluis
	// sends the browser back to the app, whose backend exchanges it.
	got := be.appLinked()
	if !strings.Contains(got, "Linked") {
		t.Errorf("the app shows %q", got)
	}
	var provider string
	if err := be.DB.Pool.QueryRow(context.Background(), `SELECT provider FROM items ORDER BY created_at DESC LIMIT 1`).Scan(&provider); err != nil || provider != "plaid" {
		t.Fatalf("the item's provider: %q (%v)", provider, err)
	}

	// Every other page's policy leaves the script's origin out.
	_, link := be.linkSession(t, be.tok, `{}`)
	for name, path := range map[string]string{"the sandbox's first page": link, "a refusal": link, "the drop-in": "/link.js"} {
		_, h, _ := be.do(t, "GET", path, "", "", "", nil)
		if csp := h.Get("Content-Security-Policy"); strings.Contains(csp, be.plaidLink) || strings.Contains(csp, "plaid.com") {
			t.Errorf("%s allows Plaid Link's origin: %s", name, csp)
		}
	}
}

// pagePolicy is the Content-Security-Policy the tab's page was served
// with (its page token opened it once: it cannot be fetched again).
func (be *browserEnv) pagePolicy(ctx context.Context) string {
	be.t.Helper()
	return be.policy(eval[string](be, ctx, `location.pathname`))
}
