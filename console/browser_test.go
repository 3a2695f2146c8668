package console_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium is where .ci/run installs Debian's Chromium.
const chromium = "/usr/bin/chromium"

// browser starts headless Chromium for one test. Without Chromium the test
// is skipped, except in CI, where that is a failure.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := exec.LookPath(chromium); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("chromium is not installed (%v); .ci/run installs it", err)
		}
		t.Skip("chromium is not installed")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		// The test servers' certificate is httptest's own.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	// The first call starts the browser for the context's whole life: no
	// deadline on it (each step below has its own).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// shots keeps screenshots: in KLUIS_SCREENSHOT_DIR when set (docs/ is made
// that way), and on failure in the test's artifact directory.
type shots struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	last []byte
}

func newShots(t *testing.T, ctx context.Context) *shots {
	s := &shots{t: t, ctx: ctx, dir: os.Getenv("KLUIS_SCREENSHOT_DIR")}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil || len(buf) == 0 {
			buf = s.last
		}
		dir := filepath.Join(os.TempDir(), "kluis-test-artifacts")
		_ = os.MkdirAll(dir, 0o755)
		p := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".png")
		if os.WriteFile(p, buf, 0o644) == nil {
			t.Logf("screenshot of the failure: %s", p)
		}
	})
	return s
}

// take saves the page as name-desktop.png and name-phone.png.
func (s *shots) take(name string) {
	s.t.Helper()
	var err error
	if s.last, err = chromedp.Run(s.ctx, chromedp.FullScreenshot(100)); err != nil {
		s.t.Fatalf("screenshot: %v", err)
	}
	if s.dir == "" {
		return
	}
	write := func(suffix string, b []byte) {
		if err := os.WriteFile(filepath.Join(s.dir, name+"-"+suffix+".png"), b, 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	write("desktop", s.last)
	if err := chromedp.Do(s.ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2))); err != nil {
		s.t.Fatal(err)
	}
	phone, err := chromedp.Run(s.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		s.t.Fatal(err)
	}
	if err := chromedp.Do(s.ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		s.t.Fatal(err)
	}
	write("phone", phone)
}

// signInAs signs in through the provider's page with clicks.
type step = chromedp.Action[chromedp.Void]

func signInAs(ce *consoleEnv, user string) step {
	return chromedp.Steps(
		chromedp.Navigate(ce.console.URL+"/"),
		chromedp.WaitVisible(css("#as-"+user)),
		chromedp.Click(css("#as-"+user)),
		chromedp.WaitVisible(css("form.signout")),
	)
}

func signOut() step {
	return chromedp.Steps(chromedp.Click(css("form.signout button")), chromedp.WaitVisible(css(`a[href="/login"]`)))
}

func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

// run runs steps, each bounded, and fails the test with what step broke.
func run(t *testing.T, ctx context.Context, what string, steps ...step) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := chromedp.Run(sctx, chromedp.Text(css(sel)))
	if err != nil {
		t.Fatalf("read %s: %v", sel, err)
	}
	return s
}

// TestTheWholeErasureWorkflowThroughTheConsole: two staff members request,
// list, cancel, reject and approve erasures, complete a stalled one with
// exceptions, place a hold and read an access report, with clicks in a real
// browser.
func TestTheWholeErasureWorkflowThroughTheConsole(t *testing.T) {
	ce := startConsole(t)
	ctx := browser(t)
	shot := newShots(t, ctx)
	for _, s := range []string{"user-erase", "user-cancel", "user-reject", "user-held"} {
		ce.subject(t, s)
	}
	ce.revoker.stalled.Store(ce.subject(t, "user-stalled"))

	// Every action starts from a fresh queue, so that the confirmation
	// waited for is this action's, not the last one's.
	queue := chromedp.Navigate(ce.console.URL + "/")
	run(t, ctx, "sign in as staff_a", signInAs(ce, "staff_a"))
	request := func(subject, reason string) {
		run(t, ctx, "request erasure of "+subject, queue,
			chromedp.SetValue(css("#er-subject"), subject),
			chromedp.SetValue(css("#er-reason"), reason),
			chromedp.Click(css(`form[action="/erasures"] button`)),
			chromedp.WaitVisible(css(`div.done`)),
		)
	}
	request("user-erase", "TICKET-1")
	request("user-cancel", "TICKET-2")
	request("user-reject", "TICKET-3")
	request("user-stalled", "TICKET-4")
	erase, cancel, reject, stalled := ce.requestID(t, "TICKET-1"), ce.requestID(t, "TICKET-2"), ce.requestID(t, "TICKET-3"), ce.requestID(t, "TICKET-4")
	for _, id := range []string{erase, cancel, reject, stalled} {
		if !strings.Contains(text(t, ctx, "#"+id+" .status"), "pending approval") {
			t.Fatalf("%s is not listed as pending", id)
		}
	}
	shot.take("console-erasures")

	// The requester may cancel their own request, with a reason.
	run(t, ctx, "cancel", queue,
		chromedp.SetValue(css("#cn-"+cancel), "TICKET-2-withdrawn"),
		chromedp.Click(css(`button[aria-label="Cancel `+cancel+`"]`)),
		chromedp.WaitVisible(css(`div.done`)),
	)
	if got := ce.status(t, cancel); got != "cancelled" {
		t.Fatalf("cancelled request = %s", got)
	}
	// The requester cannot approve their own request: kluis says why.
	run(t, ctx, "approve own request", queue,
		chromedp.Click(css(`button[aria-label="Approve `+erase+`"]`)),
		chromedp.WaitVisible(css(`div.error`)),
	)
	if msg := text(t, ctx, "div.error"); !strings.Contains(msg, "another staff member") {
		t.Errorf("approving one's own request says %q", msg)
	}
	run(t, ctx, "sign out", signOut())

	run(t, ctx, "sign in as staff_b", signInAs(ce, "staff_b"))
	run(t, ctx, "reject", queue,
		chromedp.SetValue(css("#rj-"+reject), "TICKET-3-not-verified"),
		chromedp.Click(css(`button[aria-label="Reject `+reject+`"]`)),
		chromedp.WaitVisible(css(`div.done`)),
	)
	run(t, ctx, "approve", queue, chromedp.Click(css(`button[aria-label="Approve `+erase+`"]`)), chromedp.WaitVisible(css(`div.done`)))
	run(t, ctx, "approve the stalled one", queue, chromedp.Click(css(`button[aria-label="Approve `+stalled+`"]`)), chromedp.WaitVisible(css(`div.done`)))
	for id, want := range map[string]string{reject: "rejected", erase: "completed", stalled: "needs_attention"} {
		if got := ce.status(t, id); got != want {
			t.Errorf("%s = %s, want %s", id, got, want)
		}
	}
	run(t, ctx, "reload the queue", chromedp.Navigate(ce.console.URL+"/"), chromedp.WaitVisible(css("#"+stalled)))
	if s := text(t, ctx, "#"+stalled+" .status"); !strings.Contains(s, "needs attention") || !strings.Contains(s, "1 not revoked") {
		t.Errorf("the stalled request shows %q", s)
	}
	shot.take("console-needs-attention")
	run(t, ctx, "acknowledge the exceptions", queue,
		chromedp.Click(css(`button[aria-label="Complete `+stalled+` with exceptions"]`)), chromedp.WaitVisible(css(`div.done`)))
	if got := ce.status(t, stalled); got != "needs_attention" {
		t.Fatalf("one staff member completed it alone: %s", got)
	}
	run(t, ctx, "sign out", signOut())

	run(t, ctx, "sign in as staff_a again", signInAs(ce, "staff_a"))
	run(t, ctx, "complete with exceptions", queue,
		chromedp.Click(css(`button[aria-label="Complete `+stalled+` with exceptions"]`)), chromedp.WaitVisible(css(`div.done`)))
	if got := ce.status(t, stalled); got != "completed_with_exceptions" {
		t.Fatalf("stalled request = %s, want completed_with_exceptions", got)
	}

	run(t, ctx, "place a hold",
		chromedp.Navigate(ce.console.URL+"/holds"),
		chromedp.SetValue(css("#h-subject"), "user-held"),
		chromedp.SetValue(css("#h-reason"), "CASE-77"),
		chromedp.Click(css(`form[action="/holds"] button`)),
		chromedp.WaitVisible(css(`div.done`)),
	)
	if body := text(t, ctx, "main"); !strings.Contains(body, "CASE-77") {
		t.Error("the hold is not listed")
	}
	shot.take("console-holds")

	run(t, ctx, "read the access report",
		chromedp.Navigate(ce.console.URL+"/subjects"),
		chromedp.SetValue(css("#s-id"), "user-held"),
		chromedp.Click(css(`form[action="/subjects"] button`)),
		chromedp.WaitVisible(css(`#report`)),
	)
	if body := text(t, ctx, "main table"); !strings.Contains(body, "legal_hold.placed") || !strings.Contains(body, "staff_a") {
		t.Errorf("the access report lacks the hold: %q", body)
	}
	shot.take("console-subject")

	run(t, ctx, "verify the audit chain",
		chromedp.Navigate(ce.console.URL+"/audit"),
		chromedp.Click(css(`form[action="/audit/verify"] button`)),
		chromedp.WaitVisible(css(`#result`)),
	)
	if got := text(t, ctx, "#result"); got != "The chain is whole" {
		t.Errorf("audit verification says %q", got)
	}
	shot.take("console-audit")
}

// TestAStaleSignInIsAskedToSignInAgain: kluis refuses an erasure action
// with mfa_stale when the staff member authenticated too long ago; the
// console says so, and a fresh sign-in lets the action through.
func TestAStaleSignInIsAskedToSignInAgain(t *testing.T) {
	ce := startConsole(t)
	ctx := browser(t)
	newShots(t, ctx)
	ce.subject(t, "user-stale")
	ce.idp.SetAuthTime("staff_a", time.Now().Add(-time.Hour))
	run(t, ctx, "sign in with an old MFA", signInAs(ce, "staff_a"))
	run(t, ctx, "request",
		chromedp.SetValue(css("#er-subject"), "user-stale"),
		chromedp.SetValue(css("#er-reason"), "TICKET-9"),
		chromedp.Click(css(`form[action="/erasures"] button`)),
		chromedp.WaitVisible(css(`div.error`)),
	)
	if msg := text(t, ctx, "div.error"); !strings.Contains(msg, "Sign in again") {
		t.Fatalf("a stale sign-in says %q", msg)
	}
	ce.idp.SetAuthTime("staff_a", time.Now())
	run(t, ctx, "sign in again",
		chromedp.Click(css(`div.error a`)), chromedp.WaitVisible(css("#as-staff_a")), chromedp.Click(css("#as-staff_a")), chromedp.WaitVisible(css("form.signout")),
		chromedp.SetValue(css("#er-subject"), "user-stale"),
		chromedp.SetValue(css("#er-reason"), "TICKET-9"),
		chromedp.Click(css(`form[action="/erasures"] button`)),
		chromedp.WaitVisible(css(`div.done`)),
	)
	if got := ce.status(t, ce.requestID(t, "TICKET-9")); got != "pending_approval" {
		t.Errorf("request after a fresh sign-in = %s", got)
	}
}
