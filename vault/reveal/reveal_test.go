package reveal_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
	"github.com/kluis-dev/kluis/vault/reveal"
)

// The use case's table tests: every port is a fake, so each row says what
// the policy, the pointers, the record and the audit log answer, and what
// the reveal must answer and audit.

const (
	ref      = "cred_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	otherRef = "cred_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	itemID   = "itm_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	otherItm = "itm_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	secret   = `{"access_token":"access-sandbox-secret","provider":"plaid"}`
)

// fakePolicy allows the kinds, purposes and apps it lists.
type fakePolicy struct{ kinds, purposes, apps []string }

func (p fakePolicy) MayReveal(_, kind, purpose string) bool {
	return slices.Contains(p.kinds, kind) && slices.Contains(p.purposes, purpose)
}

func (p fakePolicy) MayRevealApp(_, app string) bool {
	return len(p.apps) == 0 || slices.Contains(p.apps, app)
}

var allow = fakePolicy{kinds: []string{kindAccessToken, kindAccountNumber}, purposes: []string{"payment"}}

// The kinds the tests seal, registered as banklink registers them.
const (
	kindAccessToken   = "bank_access_token"
	kindAccountNumber = "account_number"
)

var testKinds = vault.MustKinds(
	vault.Kind{Name: kindAccessToken, Owner: vault.OwnerItem, Revealable: true},
	vault.Kind{Name: kindAccountNumber, Owner: vault.OwnerAccount, Revealable: true},
)

// fakeRecords holds fetched records and what opening each answers.
type fakeRecords struct {
	mu      sync.Mutex
	fetched map[string]vault.Fetched
	open    map[string]func(owner vault.Owner) (vault.Credential, error)
	opened  int
	fetches int
}

func (r *fakeRecords) Kinds() *vault.Kinds { return testKinds }

func (r *fakeRecords) Fetch(_ context.Context, ref string) (vault.Fetched, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fetches++
	f, ok := r.fetched[ref]
	if !ok {
		return vault.Fetched{}, kluis.Errorf(kluis.ENotFound, "not found")
	}
	return f, nil
}

func (r *fakeRecords) OpenFetched(_ context.Context, f vault.Fetched, owner vault.Owner) (vault.Credential, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened++
	return r.open[f.Ref](owner)
}

// fakePointers: which ref each owner points at, and which owners point at
// each ref.
type fakePointers struct {
	of    map[vault.Owner]string
	to    map[string][]vault.Owner
	calls int
}

func (p *fakePointers) OwnerCredential(_ context.Context, o vault.Owner) (string, error) {
	p.calls++
	if r, ok := p.of[o]; ok {
		return r, nil
	}
	return "", kluis.Errorf(kluis.ENotFound, "not found")
}

func (p *fakePointers) PointersTo(_ context.Context, _ postgres.Querier, r string) ([]vault.Owner, error) {
	return p.to[r], nil
}

// fakeAudit keeps the entries it committed; with fail set it commits none.
type fakeAudit struct {
	mu      sync.Mutex
	entries []audit.Entry
	fail    bool
}

func (a *fakeAudit) Record(_ context.Context, e audit.Entry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail {
		return kluis.Unavailable("audit log", errors.New("audit: down"))
	}
	a.entries = append(a.entries, e)
	return nil
}

// described is a fetched access token of itemID, the default app's.
func described(r string, owner vault.Owner) vault.Fetched {
	return vault.Fetched{Described: vault.Described{
		CredentialInfo:    vault.CredentialInfo{Ref: r, Kind: kindAccessToken, SubjectID: "sub_1", KeyVersion: 1, Owner: owner},
		ExternalSubjectID: "default\x1fuser-1", App: "default",
	}}
}

// opens answers an opened credential of owner, bound (format 2) or not.
func opens(r string, owner vault.Owner, bound bool) func(vault.Owner) (vault.Credential, error) {
	return func(want vault.Owner) (vault.Credential, error) {
		if !want.IsZero() && want != owner {
			return vault.Credential{}, kluis.Errorf(vault.EIntegrity, "internal error")
		}
		return vault.Credential{Ref: r, Kind: kindAccessToken, SubjectID: "sub_1", KeyVersion: 1,
			Owner: owner, OwnerBound: bound, Secret: []byte(secret)}, nil
	}
}

func fails(err error) func(vault.Owner) (vault.Credential, error) {
	return func(vault.Owner) (vault.Credential, error) { return vault.Credential{}, err }
}

type world struct {
	records  *fakeRecords
	pointers *fakePointers
	audit    *fakeAudit
	policy   fakePolicy
	secrets  reveal.Secrets
}

func newWorld() *world {
	item := vault.ItemOwner(itemID)
	return &world{
		records: &fakeRecords{
			fetched: map[string]vault.Fetched{ref: described(ref, item)},
			open:    map[string]func(vault.Owner) (vault.Credential, error){ref: opens(ref, item, true)},
		},
		pointers: &fakePointers{of: map[vault.Owner]string{item: ref}, to: map[string][]vault.Owner{ref: {item}}},
		audit:    &fakeAudit{},
		policy:   allow,
	}
}

func (w *world) service() *reveal.Service {
	return reveal.New(reveal.Options{Records: w.records, Policy: w.policy, Pointers: w.pointers, Secrets: w.secrets, Audit: w.audit})
}

func byRef(r string) reveal.Request {
	return reveal.Request{Service: "payments", Purpose: "payment", RequestID: "req-1", Via: reveal.ViaCredential, Ref: r}
}

func byItem(id string) reveal.Request {
	return reveal.Request{Service: "payments", Purpose: "payment", RequestID: "req-1", Via: reveal.ViaItem, Owner: vault.ItemOwner(id)}
}

func TestReveal(t *testing.T) {
	item := vault.ItemOwner(itemID)
	tests := []struct {
		name    string
		setup   func(w *world)
		req     reveal.Request
		code    string // the error's code; "" for a secret
		outcome string // the one audit entry's outcome; "" for none
		reason  string
		opened  bool // whether the record was opened
	}{
		{name: "by ref", req: byRef(ref), outcome: audit.OutcomeSuccess, opened: true},
		{name: "by the item's pointer", req: byItem(itemID), outcome: audit.OutcomeSuccess, opened: true},
		{name: "unknown ref", req: byRef(otherRef), code: kluis.ENotFound, outcome: audit.OutcomeDenied, reason: "not found"},
		{name: "unknown item", req: byItem(otherItm), code: kluis.ENotFound, outcome: audit.OutcomeDenied, reason: "not found"},
		{name: "kind or purpose refused", setup: func(w *world) { w.policy.purposes = nil },
			req: byRef(ref), code: kluis.EForbidden, outcome: audit.OutcomeDenied, reason: "the policy does not allow this kind or purpose"},
		{name: "kind refused before the pointer is read", setup: func(w *world) { w.policy.kinds = []string{kindAccountNumber} },
			req: byItem(itemID), code: kluis.EForbidden, outcome: audit.OutcomeDenied, reason: "the policy does not allow this kind or purpose"},
		{name: "app refused", setup: func(w *world) { w.policy.apps = []string{"other"} },
			req: byRef(ref), code: kluis.EForbidden, outcome: audit.OutcomeDenied, reason: "the policy does not allow this app"},
		{name: "pointer to another owner's credential", setup: func(w *world) {
			w.pointers.of[vault.ItemOwner(otherItm)] = ref
		}, req: byItem(otherItm), code: vault.EIntegrity, outcome: audit.OutcomeFailure, reason: "integrity"},
		{name: "record does not authenticate", setup: func(w *world) {
			w.records.open[ref] = fails(kluis.Errorf(vault.EIntegrity, "internal error"))
		}, req: byRef(ref), code: vault.EIntegrity, outcome: audit.OutcomeFailure, reason: "integrity", opened: true},
		{name: "subject erased", setup: func(w *world) {
			w.records.open[ref] = fails(kluis.Errorf(kluis.ENotFound, "not found"))
		}, req: byRef(ref), code: kluis.ENotFound, outcome: audit.OutcomeDenied, reason: "credential erased", opened: true},
		{name: "revoked at the provider", setup: func(w *world) {
			w.records.open[ref] = fails(kluis.Errorf(vault.CodeCredentialRevoked, "revoked"))
		}, req: byRef(ref), code: vault.CodeCredentialRevoked, outcome: audit.OutcomeDenied, reason: "credential revoked", opened: true},
		{name: "key provider down: no reveal, nothing recorded", setup: func(w *world) {
			w.records.open[ref] = fails(kluis.Unavailable("key provider", errors.New("down")))
		}, req: byRef(ref), code: kluis.EUnavailable, opened: true},
		{name: "record that does not open", setup: func(w *world) {
			w.records.open[ref] = fails(kluis.Errorf(kluis.EInternal, "internal error"))
		}, req: byRef(ref), code: kluis.EInternal, outcome: audit.OutcomeFailure, reason: "credential does not open", opened: true},
		{name: "version-1 record, its one pointer", setup: func(w *world) { w.records.open[ref] = opens(ref, item, false) },
			req: byRef(ref), outcome: audit.OutcomeSuccess, opened: true},
		{name: "version-1 record pointed at twice", setup: func(w *world) {
			w.records.open[ref] = opens(ref, item, false)
			w.pointers.to[ref] = []vault.Owner{item, vault.ItemOwner(otherItm)}
		}, req: byRef(ref), code: vault.EIntegrity, outcome: audit.OutcomeFailure, reason: "integrity", opened: true},
		{name: "audit log down: no secret", setup: func(w *world) { w.audit.fail = true },
			req: byRef(ref), code: kluis.EUnavailable, opened: true},
		{name: "bank's renewal fails: no secret, no success recorded", setup: func(w *world) {
			w.secrets = reveal.SecretsFunc(func(context.Context, vault.Credential) ([]byte, error) {
				return nil, kluis.Unavailable("bank", errors.New("stitch down"))
			})
		}, req: byRef(ref), code: kluis.EUnavailable, opened: true},
		{name: "unknown way", req: reveal.Request{Service: "payments", Purpose: "payment", Via: "guess", Ref: ref}, code: kluis.EInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld()
			if tt.setup != nil {
				tt.setup(w)
			}
			got, err := w.service().Reveal(context.Background(), tt.req)
			if kluis.ErrorCode(err) != tt.code && !(tt.code == "" && err == nil) {
				t.Fatalf("err = %v (code %q), want code %q", err, kluis.ErrorCode(err), tt.code)
			}
			if tt.code != "" && (got.Secret != nil || got.Ref != "") {
				t.Errorf("a refused reveal answered %+v", got.Ref)
			}
			if tt.code == "" && string(got.Secret) != secret {
				t.Errorf("secret = %q", got.Secret)
			}
			if (w.records.opened > 0) != tt.opened {
				t.Errorf("opened %d times, want opened=%v", w.records.opened, tt.opened)
			}
			if tt.outcome == "" {
				if len(w.audit.entries) != 0 {
					t.Errorf("audited %+v, want nothing", w.audit.entries)
				}
				return
			}
			if len(w.audit.entries) != 1 {
				t.Fatalf("audited %d entries, want 1", len(w.audit.entries))
			}
			e := w.audit.entries[0]
			if e.Outcome != tt.outcome || e.Action != reveal.Action || e.Actor != "payments" || e.ActorKind != audit.ActorService || e.RequestID != "req-1" {
				t.Errorf("entry = %+v", e)
			}
			if tt.reason != "" && e.Details["reason"] != tt.reason {
				t.Errorf("reason = %v, want %q", e.Details["reason"], tt.reason)
			}
			if e.Details["purpose"] != "payment" || e.Details["via"] != tt.req.Via {
				t.Errorf("details = %v", e.Details)
			}
			for k, v := range e.Details {
				if s, ok := v.(string); ok && s == secret {
					t.Errorf("the secret is in the audit entry's %s", k)
				}
			}
		})
	}
}

// TestTheSuccessEntryNamesTheCredentialItsSubjectAndOwner: what compliance
// reads back from a reveal.
func TestTheSuccessEntryNamesTheCredentialItsSubjectAndOwner(t *testing.T) {
	w := newWorld()
	got, err := w.service().Reveal(context.Background(), byItem(itemID))
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref != ref || got.Kind != kindAccessToken || got.Owner != vault.ItemOwner(itemID) {
		t.Errorf("revealed %s %s %s", got.Ref, got.Kind, got.Owner)
	}
	e := w.audit.entries[0]
	if e.Target != ref || e.Subject != "default\x1fuser-1" || e.Details["owner"] != "item/"+itemID ||
		e.Details["kind"] != kindAccessToken || e.Details["app"] != "default" {
		t.Errorf("entry = %+v", e)
	}
}

// TestAnIntegrityFailureNamesBothOwnersAndOpensNothing: a pointer made to
// point at another owner's credential is caught before the record is
// opened, and the entry names the credential's real owner.
func TestAnIntegrityFailureNamesBothOwnersAndOpensNothing(t *testing.T) {
	w := newWorld()
	w.pointers.of[vault.ItemOwner(otherItm)] = ref
	if _, err := w.service().Reveal(context.Background(), byItem(otherItm)); kluis.ErrorCode(err) != vault.EIntegrity {
		t.Fatalf("err = %v", err)
	}
	e := w.audit.entries[0]
	if e.Details["owner"] != "item/"+otherItm || e.Details["credential_owner"] != "item/"+itemID || e.Details["credential_ref"] != ref {
		t.Errorf("details = %v", e.Details)
	}
	if w.records.opened != 0 {
		t.Error("the record was opened")
	}
}

// TestAPolicyRefusalOnAnOwnerRouteReadsNothing: the route fixes the kind,
// so a service that may not reveal it learns nothing, not even whether the
// owner exists.
func TestAPolicyRefusalOnAnOwnerRouteReadsNothing(t *testing.T) {
	w := newWorld()
	w.policy.kinds = []string{kindAccountNumber}
	if _, err := w.service().Reveal(context.Background(), byItem(itemID)); kluis.ErrorCode(err) != kluis.EForbidden {
		t.Fatalf("err = %v", err)
	}
	if w.pointers.calls != 0 || w.records.fetches != 0 {
		t.Errorf("read %d pointers and %d records", w.pointers.calls, w.records.fetches)
	}
}

// TestTheServiceGetsTheRenewedSecret: Stitch's usable token (renewed on
// reveal) is what leaves, not the sealed refresh token.
func TestTheServiceGetsTheRenewedSecret(t *testing.T) {
	w := newWorld()
	renewed := `{"access_token":"renewed","provider":"stitch","expires_at":"2030-01-01T00:00:00Z"}`
	w.secrets = reveal.SecretsFunc(func(_ context.Context, c vault.Credential) ([]byte, error) {
		if string(c.Secret) != secret {
			t.Errorf("Secrets got %q", c.Secret)
		}
		return []byte(renewed), nil
	})
	got, err := w.service().Reveal(context.Background(), byRef(ref))
	if err != nil || string(got.Secret) != renewed {
		t.Fatalf("got %q, %v", got.Secret, err)
	}
}

// TestAnAuditLogThatRefusesARefusalAnswers503: a refusal that cannot be
// recorded is the audit log's 503, not the refusal.
func TestAnAuditLogThatRefusesARefusalAnswers503(t *testing.T) {
	w := newWorld()
	w.audit.fail = true
	if _, err := w.service().Reveal(context.Background(), byRef(otherRef)); kluis.ErrorCode(err) != kluis.EUnavailable {
		t.Fatalf("err = %v", err)
	}
}
