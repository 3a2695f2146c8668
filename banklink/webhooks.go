package banklink

import (
	"context"
	"errors"
	"net/http"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/vault"
)

// Outcomes recorded for a webhook event.
const (
	WebhookApplied     = "applied"
	WebhookNoChange    = "no_change"
	WebhookIgnored     = "ignored"
	WebhookUnknownItem = "unknown_item"
)

// WebhookResult says what HandleWebhook did.
type WebhookResult struct {
	EventID   string
	Kind      string
	Duplicate bool
	Outcome   string
	ItemID    string
}

// HandleWebhook verifies a provider webhook over its raw body, records it
// once, and acts on it: login_required and revoked move the item (a
// conditional transition with its audit entry, in the transaction that
// records the event), new_accounts adds the item's new accounts. A
// duplicate is recorded nowhere and changes nothing; an unknown event type
// is recorded and ignored. The webhook goes to the provider its route names
// (POST /webhooks/{provider}), which verifies it, and acts only on that
// provider's items; a provider that is not configured is ENotFound. A bad
// signature is CodeBadSignature and changes nothing.
func (s *Service) HandleWebhook(ctx context.Context, provider string, header http.Header, body []byte, requestID string) (WebhookResult, error) {
	p, ok := s.providers.Lookup(provider)
	if !ok {
		return WebhookResult{}, notFound()
	}
	ev, err := p.VerifyWebhook(WithWebhookItemCheck(ctx, s.webhookItemCheck(provider)), header, body)
	if err != nil {
		return WebhookResult{}, providerErr("verify webhook", err)
	}
	if ev.ID == "" {
		return WebhookResult{}, kluis.Errorf(CodeBadSignature, "webhook refused")
	}
	res := WebhookResult{EventID: ev.ID, Kind: ev.Kind}
	seen, err := webhookSeen(ctx, s.db.Pool, provider, ev.ID)
	if err != nil {
		return res, err
	}
	if seen {
		res.Duplicate = true
		return res, nil
	}
	// New accounts need the provider: ask before the transaction, so that
	// no row stays locked across a call to it.
	var fetched *ItemAccounts
	var numbers map[string]AuthNumbers
	if ev.Kind == EventNewAccounts {
		if fetched, numbers, err = s.fetchNewAccounts(ctx, p, ev.ProviderItemID); err != nil {
			return res, err
		}
	}
	// A bank account verification the bank answered: verification asks
	// the provider and completes it, before the webhook is recorded.
	if ev.Kind == EventBankAccountVerification && s.bankVerificationDone != nil {
		if err := s.bankVerificationDone(ctx, provider, ev.ProviderCode); err != nil {
			return res, err
		}
	}
	// Consent withdrawn: remove the item at the provider where it still
	// can be (it stops access and billing), before the transaction.
	var rv revocation
	if ev.Kind == EventRevoked {
		rv = s.revokeBeforeWebhook(ctx, provider, ev.ProviderItemID)
	}
	actor := audit.Actor{Kind: audit.ActorProvider, Name: provider, RequestID: requestID}
	err = s.inEventTx(ctx, func(tx pgx.Tx) error {
		res.Duplicate, res.Outcome, res.ItemID = false, WebhookIgnored, ""
		it, found, err := s.webhookItem(ctx, tx, provider, ev)
		if err != nil {
			return err
		}
		if found {
			res.ItemID = it.ID
		}
		if res.Outcome, err = s.applyWebhook(ctx, tx, actor, ev, it, found, fetched, numbers, rv); err != nil {
			return err
		}
		fresh, err := recordWebhook(ctx, tx, provider, ev, res.ItemID, res.Outcome, s.now())
		if err != nil {
			return err
		}
		if !fresh {
			res.Duplicate = true
			return errDuplicate
		}
		return nil
	})
	if res.Duplicate {
		return WebhookResult{EventID: ev.ID, Kind: ev.Kind, Duplicate: true}, nil
	}
	return res, err
}

// webhookItemCheck is the WebhookItemCheck VerifyWebhook may ask: whether a
// live item of this provider has the id. A failed lookup answers false: the
// webhook then only draws on the budget every webhook shares.
func (s *Service) webhookItemCheck(provider string) WebhookItemCheck {
	return func(ctx context.Context, providerItemID string) bool {
		_, _, status, err := itemTokenRef(ctx, s.db.Pool, provider, providerItemID)
		return err == nil && status != ""
	}
}

// errDuplicate rolls back a webhook's transaction when a concurrent
// delivery of the same event was recorded first.
var errDuplicate = kluis.Errorf(kluis.EConflict, "duplicate webhook")

func (s *Service) webhookItem(ctx context.Context, tx pgx.Tx, provider string, ev WebhookEvent) (Item, bool, error) {
	if ev.ProviderItemID == "" {
		return Item{}, false, nil
	}
	return itemByProviderID(ctx, tx, provider, ev.ProviderItemID)
}

// applyWebhook makes the event's transition and returns the outcome to
// record.
func (s *Service) applyWebhook(ctx context.Context, tx pgx.Tx, actor audit.Actor, ev WebhookEvent, it Item, found bool, fetched *ItemAccounts, numbers map[string]AuthNumbers, rv revocation) (string, error) {
	if ev.Kind == EventUnknown {
		return WebhookIgnored, nil
	}
	if !found {
		return WebhookUnknownItem, nil
	}
	if out, handled, err := s.applyStateWebhook(ctx, tx, actor, ev, it); handled {
		return out, err
	}
	switch ev.Kind {
	case EventRevoked:
		if rv.itemID != it.ID {
			// The item named changed between the provider call and
			// now: let the provider deliver it again.
			return "", kluis.Unavailable("item revocation", errors.New("banklink: the item changed during revocation"))
		}
		changed, err := s.revokeConsent(ctx, tx, actor, it, rv.versions, rv.providerRevoked, ev.ID)
		if err != nil || !changed {
			return WebhookNoChange, err
		}
		return WebhookApplied, nil
	case EventAccountRevoked:
		changed, err := s.revokeAccountConsent(ctx, tx, actor, it, ev)
		if err != nil || !changed {
			return WebhookNoChange, err
		}
		return WebhookApplied, nil
	}
	var (
		itemEv ItemEvent
		action string
	)
	switch ev.Kind {
	case EventLoginRequired:
		itemEv, action = ItemEventLoginBroke, "item.login_required"
	case EventNewAccounts:
		if fetched == nil || it.Status != ItemActive {
			return WebhookNoChange, nil
		}
		// Nothing new for a subject being erased: the erasure revokes the
		// item, accounts and all, and the provider need not retry.
		if err := vault.FenceSubject(ctx, tx, it.SubjectID); kluis.ErrorCode(err) == kluis.ESubjectErasing {
			return WebhookIgnored, nil
		} else if err != nil {
			return "", err
		}
		added, err := s.addAccounts(ctx, tx, it, fetched.Accounts, numbers, s.now())
		if err != nil || added == 0 {
			return WebhookNoChange, err
		}
		ext, err := vault.SubjectKey(ctx, tx, it.SubjectID)
		if err != nil {
			return "", err
		}
		if err := itemEvent(ctx, tx, events.ItemAccountsAdded, it.SubjectID, it.ID, it.Status); err != nil {
			return "", err
		}
		return WebhookApplied, s.appendAudit(ctx, tx, actor, "item.accounts_added", it.ID, ext, map[string]any{
			"accounts": added, "event_id": ev.ID})
	default:
		return WebhookIgnored, nil
	}
	to, changed, err := setItemStatus(ctx, tx, it.ID, itemEv, s.now())
	if err != nil || !changed {
		return WebhookNoChange, err
	}
	ext, err := vault.SubjectKey(ctx, tx, it.SubjectID)
	if err != nil {
		return "", err
	}
	// The apps hear of it from the outbox, written in this transaction: the
	// event exists exactly when the change does.
	if err := itemEvent(ctx, tx, action, it.SubjectID, it.ID, to); err != nil {
		return "", err
	}
	return WebhookApplied, s.appendAudit(ctx, tx, actor, action, it.ID, ext, map[string]any{
		"from": it.Status, "to": to, "event_id": ev.ID, "provider_code": clip(ev.ProviderCode)})
}

// revocation is what was done at the provider for a consent webhook.
type revocation struct {
	itemID          string
	versions        vault.Versions
	providerRevoked bool
}

// revokeBeforeWebhook removes at the provider, with every live version of
// its token, the live item a consent-revoked webhook names. It is best
// effort: the user withdrew consent at the provider, so kluis destroys the
// token whatever the provider answers, and the audit entry says whether the
// provider revoked.
func (s *Service) revokeBeforeWebhook(ctx context.Context, provider, providerItemID string) revocation {
	if providerItemID == "" {
		return revocation{}
	}
	it, found, err := liveItemByProviderID(ctx, s.db.Pool, provider, providerItemID)
	if err != nil || !found {
		return revocation{}
	}
	rv := revocation{itemID: it.ID}
	if it.Status == ItemRevoked || it.Status == ItemRelinkRequired {
		rv.versions, _ = s.vault.CredentialVersions(ctx, s.db.Pool, it.CredentialRef, false)
		return rv
	}
	tokens, versions, err := s.liveTokens(ctx, it)
	if err != nil {
		s.log.Warn("consent revoked: the item's tokens could not be read", "item_id", it.ID, "code", kluis.ErrorCode(err))
		rv.itemID = ""
		return rv
	}
	rv.versions = versions
	rv.providerRevoked, err = s.revokeAtProvider(ctx, it.Provider, tokens)
	if err != nil {
		s.log.Warn("consent revoked: the provider did not remove the item", "item_id", it.ID, "code", kluis.ErrorCode(err))
	}
	return rv
}

// fetchNewAccounts reads, at p, the accounts of p's item that a
// new_accounts event names; nil when kluis has no live item for it.
func (s *Service) fetchNewAccounts(ctx context.Context, p Provider, providerItemID string) (*ItemAccounts, map[string]AuthNumbers, error) {
	itemID, ref, status, err := itemTokenRef(ctx, s.db.Pool, p.Name(), providerItemID)
	if err != nil {
		return nil, nil, err
	}
	if status != ItemActive {
		return nil, nil, nil
	}
	token, err := s.accessToken(ctx, itemID, ref)
	if err != nil {
		return nil, nil, err
	}
	accts, numbers, err := s.fetchAccounts(ctx, p, token)
	if err != nil {
		return nil, nil, err
	}
	return &accts, numbers, nil
}

// SandboxFire names the webhook SandboxFireWebhook fires, in Plaid's
// terms (SandboxWebhook); AccountID is kluis's id of the item's account a
// USER_ACCOUNT_REVOKED is about (required for it only); Status an
// SMS_MICRODEPOSITS_VERIFICATION's outcome (MANUALLY_VERIFIED by default,
// or VERIFICATION_FAILED).
type SandboxFire struct {
	Type, Code, ErrorCode, AccountID, Status string
}

// SandboxFireWebhook has the sandbox fire a webhook in Plaid's shape about
// the subject's item and delivers it through HandleWebhook, signature
// check included, exactly as POST /webhooks/sandbox would: the one
// decoding and handling path Plaid's webhooks take.
func (s *Service) SandboxFireWebhook(ctx context.Context, actor audit.Actor, itemID string, f SandboxFire) (WebhookResult, error) {
	it, err := s.Item(ctx, actor.Name, itemID)
	if err != nil {
		return WebhookResult{}, err
	}
	linker, err := s.sandboxLinker(it.Provider)
	if err != nil {
		return WebhookResult{}, err
	}
	// A WEBHOOK_UPDATE_ACKNOWLEDGED names the URL the item's webhooks now
	// go to, as Plaid's does after /item/webhook/update: kluis's own.
	w := SandboxWebhook{ProviderItemID: it.ProviderItemID, Type: f.Type, Code: f.Code, ErrorCode: f.ErrorCode,
		Status: f.Status, WebhookURL: s.webhookURL(it.Provider)}
	if f.AccountID != "" || f.Code == sandboxAccountRevoked {
		for _, a := range it.Accounts {
			if a.ID == f.AccountID {
				w.ProviderAccountID = a.ProviderAccountID
			}
		}
		if w.ProviderAccountID == "" {
			return WebhookResult{}, kluis.Errorf(kluis.EInvalid, "account_id must name an account of the item")
		}
	}
	header, body, err := linker.SignedWebhook(ctx, w)
	if err != nil {
		return WebhookResult{}, err
	}
	return s.HandleWebhook(ctx, it.Provider, header, body, actor.RequestID)
}

// sandboxAccountRevoked is Plaid's code for consent withdrawn from one
// account, which names it.
const sandboxAccountRevoked = "USER_ACCOUNT_REVOKED"
