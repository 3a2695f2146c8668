package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kluis-dev/kluis/api/apitest"
	"github.com/kluis-dev/kluis/banklink"
)

func TestARevealOfACredentialWhoseKeysAreShreddedIsAnAudited404LikeAnUnknownRef(t *testing.T) {
	env := apitest.Start(t)
	ref := sealFor(t, env, "user_reveal_shredded", banklink.KindAccessToken, `{"access_token":"`+canaryToken+`","provider":"sandbox"}`)
	// An erasure under way: the keys are gone, the rows not yet.
	if _, err := env.DB.Pool.Exec(context.Background(), `DELETE FROM keystore.subject_keys
		WHERE subject_id = (SELECT subject_id FROM credentials WHERE ref = $1)`, ref); err != nil {
		t.Fatal(err)
	}
	client := env.ServiceClient(t, "payments")
	status, _, body := apitest.Do(t, client, "POST", revealURL(env, ref), "", "application/json", `{"purpose":"payment_initiation"}`)
	_, _, unknown := apitest.Do(t, client, "POST", revealURL(env, "cred_"+strings.Repeat("b", 32)), "", "application/json", `{"purpose":"payment_initiation"}`)
	if status != 404 {
		t.Fatalf("reveal of a shredded credential = %d %s, want 404", status, body)
	}
	if got, want := withoutRequestID(body), withoutRequestID(unknown); got != want {
		t.Errorf("shredded: %s; unknown: %s; want the same bytes", got, want)
	}
	if n := auditCount(t, env, `action = 'credential.reveal' AND outcome = 'denied' AND target = $1`, ref); n != 1 {
		t.Errorf("audited refusals of the shredded credential = %d, want 1", n)
	}
}

func TestARevealOfATamperedCredentialIsAuditedAsAFailure(t *testing.T) {
	env := apitest.Start(t)
	ref := sealFor(t, env, "user_reveal_tampered", banklink.KindAccessToken, `{"access_token":"`+canaryToken+`","provider":"sandbox"}`)
	if _, err := env.DB.Pool.Exec(context.Background(), `UPDATE credentials
		SET envelope = overlay(envelope placing '\xff'::bytea from 20 for 1) WHERE ref = $1`, ref); err != nil {
		t.Fatal(err)
	}
	status, _, body := apitest.Do(t, env.ServiceClient(t, "payments"), "POST", revealURL(env, ref), "", "application/json", `{"purpose":"payment_initiation"}`)
	if status != 500 || strings.Contains(body, "CANARY") {
		t.Fatalf("reveal of a tampered credential = %d %s, want 500 and nothing of it", status, body)
	}
	if n := auditCount(t, env, `action = 'credential.reveal' AND outcome = 'failure' AND target = $1`, ref); n != 1 {
		t.Errorf("audited failures = %d, want 1", n)
	}
}
