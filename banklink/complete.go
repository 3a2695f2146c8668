package banklink

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/vault"
)

// CallTimeouts bound the provider calls of an exchange, each on its own, so
// that one slow call cannot spend the others' time: a slow /auth/get leaves
// a good item whose numbers are read later, instead of the whole exchange
// failing and the item being thrown away.
type CallTimeouts struct {
	Exchange time.Duration
	Accounts time.Duration
	Auth     time.Duration
}

// DefaultCallTimeouts fit in the default 10 s request deadline with time
// left to store the item.
var DefaultCallTimeouts = CallTimeouts{Exchange: 4 * time.Second, Accounts: 2500 * time.Millisecond, Auth: 2500 * time.Millisecond}

func (c CallTimeouts) withDefaults() CallTimeouts {
	if c.Exchange <= 0 {
		c.Exchange = DefaultCallTimeouts.Exchange
	}
	if c.Accounts <= 0 {
		c.Accounts = DefaultCallTimeouts.Accounts
	}
	if c.Auth <= 0 {
		c.Auth = DefaultCallTimeouts.Auth
	}
	return c
}

// exchangeToken exchanges the public token at the session's provider p
// within its own deadline.
func (s *Service) exchangeToken(ctx context.Context, p Provider, publicToken string) (Exchange, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeouts.Exchange)
	defer cancel()
	return p.ExchangePublicToken(ctx, publicToken)
}

// itemRead is what the reads after an exchange learnt: the accounts and
// numbers that could be read, the item's status, and whether something is
// left to complete (failure names what, for the audit entry).
type itemRead struct {
	accounts ItemAccounts
	numbers  map[string]AuthNumbers
	status   string
	pending  bool
	failure  string
}

// readAfterExchange reads a freshly exchanged item's accounts and numbers
// at its provider p, each within its own deadline. Only a token the
// provider itself refuses (CodeInvalidToken: it kept no item) is an error;
// any other failure is the provider's or the user's situation with an item
// the provider keeps, so kluis keeps it too: login_required when the
// provider says the login needs repair, and completion_pending for
// whatever was not read.
func (s *Service) readAfterExchange(ctx context.Context, p Provider, token string) (itemRead, error) {
	rd := itemRead{status: ItemActive, numbers: map[string]AuthNumbers{}}
	actx, cancel := context.WithTimeout(ctx, s.timeouts.Accounts)
	accts, err := p.GetAccounts(actx, token)
	cancel()
	switch code := kluis.ErrorCode(err); {
	case err == nil:
		rd.accounts = accts
	case code == CodeInvalidToken:
		return rd, providerErr("get accounts", err)
	default:
		if code == CodeItemLoginRequired {
			rd.status = ItemLoginRequired
		}
		rd.pending, rd.failure = true, "accounts: "+code
		return rd, nil
	}
	numbers, pending, code := s.readNumbers(ctx, p, token)
	rd.numbers, rd.pending = numbers, pending
	if pending {
		rd.failure = "auth: " + code
	}
	return rd, nil
}

// readNumbers reads the item's numbers at its provider p within the auth
// deadline. pending
// says they are still to be read (the provider failed, was slow, or is
// still preparing them: PRODUCT_NOT_READY); an institution without
// instant auth is not pending, it simply has none.
func (s *Service) readNumbers(ctx context.Context, p Provider, token string) (map[string]AuthNumbers, bool, string) {
	ctx, cancel := context.WithTimeout(ctx, s.timeouts.Auth)
	defer cancel()
	numbers := map[string]AuthNumbers{}
	auth, err := p.GetAuth(ctx, token)
	switch code := kluis.ErrorCode(err); {
	case err == nil:
		for _, n := range auth {
			numbers[n.ProviderAccountID] = n
		}
		return numbers, false, ""
	case code == CodeProductNotSupported:
		return numbers, false, ""
	default:
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			code = "timeout"
		}
		return numbers, true, code
	}
}

// CompletionResult counts what CompleteItems did.
type CompletionResult struct {
	Completed int // items now complete
	Pending   int // items still pending (the provider is not ready yet)
	Failed    int // items whose completion failed for another reason
	// Rechecked counts complete items read again for an account waiting on
	// the provider's own micro-deposits.
	Rechecked int
}

// WaitingRecheckInterval is how often an item with an account waiting on
// the provider's own micro-deposits (Plaid's Same Day or Automated) is read
// again: the backstop for an AUTH webhook that never arrived, since kluis
// does not expire such a verification itself (it ends on the provider's
// clock). One /accounts/get per waiting item a day.
const WaitingRecheckInterval = 24 * time.Hour

// providerWaitingStatuses are the verification_status values of an
// account whose provider-checked micro-deposits are still under way.
var providerWaitingStatuses = []string{"unsent", "pending_automatic_verification", "pending_manual_verification"}

// CompleteItems finishes up to limit (default 100) items whose reads after
// the exchange failed or were not ready: it reads their accounts and
// numbers again, adds what is missing (sealing numbers of accounts that
// have none), and clears completion_pending once both were read. An item
// whose login is required waits for update mode; a removed or revoked one
// is skipped, and so is one whose provider is not configured (it waits,
// pending, until the operator configures it again). It also reads again,
// once per WaitingRecheckInterval, the accounts of complete items that have
// one waiting on the provider's own micro-deposits, and records what the
// provider says of them now (an expired, verified or failed verification
// whose webhook was lost).
func (s *Service) CompleteItems(ctx context.Context, limit int) (CompletionResult, error) {
	var res CompletionResult
	if limit <= 0 {
		limit = 100
	}
	// Only items of configured providers: one whose provider is not
	// configured cannot be read, and must not hold a place in every batch.
	items, err := itemsPendingCompletion(ctx, s.db.Pool, s.providers.Names(), limit, s.now().Add(-WaitingRecheckInterval))
	if err != nil {
		return res, err
	}
	for _, it := range items {
		done, err := s.completeItem(ctx, it)
		switch {
		case err != nil:
			res.Failed++
			s.log.Warn("item completion failed", "item_id", it.ID, "code", kluis.ErrorCode(err))
		case !it.CompletionPending:
			res.Rechecked++
		case done:
			res.Completed++
		default:
			res.Pending++
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	return res, nil
}

// completeItem reads one pending item again at its own provider and
// stores what it got. CompleteItems lists only items of configured
// providers; one whose provider went away meanwhile fails
// (kluis.EUnavailable) and stays pending until the operator configures it
// again.
func (s *Service) completeItem(ctx context.Context, it Item) (bool, error) {
	p, err := s.providers.Provider(it.Provider)
	if err != nil {
		return false, err
	}
	token, err := s.accessToken(ctx, it.ID, it.CredentialRef)
	if err != nil {
		return false, err
	}
	actx, cancel := context.WithTimeout(ctx, s.timeouts.Accounts)
	accts, err := p.GetAccounts(actx, token)
	cancel()
	if err != nil {
		if kluis.ErrorCode(err) == CodeItemLoginRequired {
			return false, s.markLoginRequiredPending(ctx, it)
		}
		if !it.CompletionPending && ctx.Err() == nil {
			// A waiting item's re-read is a backstop: one the provider
			// failed is tried again after the interval, not every run.
			if terr := s.db.InTx(ctx, func(tx pgx.Tx) error { return touchItem(ctx, tx, it.ID, s.now()) }); terr != nil {
				s.log.Warn("a waiting item's failed re-read was not recorded", "item_id", it.ID, "code", kluis.ErrorCode(terr))
			}
		}
		return false, providerErr("get accounts", err)
	}
	if !it.CompletionPending {
		return false, s.inEventTx(ctx, func(tx pgx.Tx) error { return s.recheckWaiting(ctx, tx, it, accts.Accounts) })
	}
	numbers, pending, _ := s.readNumbers(ctx, p, token)
	actor := audit.Actor{Kind: audit.ActorSystem, Name: "item-completion"}
	err = s.inEventTx(ctx, func(tx pgx.Tx) error {
		// Nothing is sealed for a subject being erased.
		if err := vault.FenceSubject(ctx, tx, it.SubjectID); err != nil {
			return err
		}
		locked, err := getItem(ctx, tx, it.ID, it.SubjectID, true)
		if err != nil {
			return err
		}
		if !locked.CompletionPending || locked.Status != ItemActive {
			return nil
		}
		added, err := s.addAccounts(ctx, tx, locked, accts.Accounts, numbers, s.now())
		if err != nil {
			return err
		}
		sealed, err := s.sealMissingNumbers(ctx, tx, locked, numbers)
		if err != nil {
			return err
		}
		if err := s.refreshProviderStatuses(ctx, tx, locked, accts.Accounts); err != nil {
			return err
		}
		if err := setItemCompletion(ctx, tx, locked.ID, accts.Institution, pending, s.now()); err != nil {
			return err
		}
		ext, err := vault.SubjectKey(ctx, tx, locked.SubjectID)
		if err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, actor, "item.completed", locked.ID, ext, map[string]any{
			"accounts_added": added, "numbers_sealed": sealed, "still_pending": pending})
	})
	return err == nil && !pending, err
}

// recheckWaiting records, in tx, what the provider now says of a complete
// item's accounts (accts: read just now) whose own micro-deposits were under
// way, and marks the item for completion when one is verified now, so that
// its numbers are read. Each change is a conditional transition
// (refreshProviderStatuses); the item's updated_at records the read, so
// that it waits WaitingRecheckInterval for the next.
func (s *Service) recheckWaiting(ctx context.Context, tx pgx.Tx, it Item, accts []ProviderAccount) error {
	locked, err := getItem(ctx, tx, it.ID, it.SubjectID, true)
	if err != nil || locked.Status != ItemActive {
		return err
	}
	if err := s.refreshProviderStatuses(ctx, tx, locked, accts); err != nil {
		return err
	}
	for _, a := range accts {
		if a.VerificationStatus == providerAutomaticallyVerified || a.VerificationStatus == "manually_verified" {
			if err := markCompletionPending(ctx, tx, locked.ID, s.now()); err != nil {
				return err
			}
			break
		}
	}
	return touchItem(ctx, tx, locked.ID, s.now())
}

// markLoginRequiredPending moves a pending item whose login the provider
// says needs repair to login_required (update mode then completes it).
func (s *Service) markLoginRequiredPending(ctx context.Context, it Item) error {
	return s.markLoginBroke(ctx, it, audit.Actor{Kind: audit.ActorSystem, Name: "item-completion"})
}

// markLoginBroke moves the item to login_required, if its machine allows,
// with the app's event and actor's audit entry in the same transaction.
func (s *Service) markLoginBroke(ctx context.Context, it Item, actor audit.Actor) error {
	return s.inEventTx(ctx, func(tx pgx.Tx) error {
		_, changed, err := setItemStatus(ctx, tx, it.ID, ItemEventLoginBroke, s.now())
		if err != nil || !changed {
			return err
		}
		if err := itemEvent(ctx, tx, events.ItemLoginRequired, it.SubjectID, it.ID, ItemLoginRequired); err != nil {
			return err
		}
		ext, err := vault.SubjectKey(ctx, tx, it.SubjectID)
		if err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, actor, "item.login_required", it.ID, ext,
			map[string]any{"from": ItemActive, "to": ItemLoginRequired})
	})
}

// sealMissingNumbers seals the numbers of the item's live accounts that
// have none yet, and returns how many it sealed.
func (s *Service) sealMissingNumbers(ctx context.Context, tx pgx.Tx, it Item, numbers map[string]AuthNumbers) (int, error) {
	accts, err := accountsOf(ctx, tx, []string{it.ID})
	if err != nil {
		return 0, err
	}
	sealed := 0
	for _, a := range accts {
		n, ok := numbers[a.ProviderAccountID]
		if a.AccountNumberRef != "" || a.Status != AccountActive || !ok {
			continue
		}
		ref, err := s.sealNumbers(ctx, tx, a.ID, it.SubjectID, n)
		if err != nil {
			return 0, err
		}
		if err := setAccountNumberRef(ctx, tx, a.ID, ref, s.now()); err != nil {
			return 0, err
		}
		sealed++
	}
	return sealed, nil
}
