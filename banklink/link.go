package banklink

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink/accountnumber"
	"github.com/kluis-dev/kluis/events"
	"github.com/kluis-dev/kluis/vault"
)

// Bounds on caller input.
const (
	maxPublicTokenLen = 512
	maxProducts       = 8
	maxSandboxCodeLen = 16
)

// exchangeLease is how long one exchange may talk to the provider before a
// concurrent call may take over; exchangePoll is how often the others look.
const (
	exchangeLease = 30 * time.Second
	exchangePoll  = 25 * time.Millisecond
)

// CreateLinkSession starts a link flow for the subject sub: a new item at
// provider (empty: the default provider; one not configured is EInvalid),
// or update mode for itemID (which sub must own, active or login_required;
// or relink_required at an OAuth provider, whose update mode is a new
// authorization: reauthorize.go) at the item's own provider. The link
// token is in the answer only.
func (s *Service) CreateLinkSession(ctx context.Context, actor audit.Actor, products []string, itemID, provider string) (LinkSession, error) {
	return s.CreateLinkSessionWith(ctx, actor, LinkOptions{Products: products, ItemID: itemID, Provider: provider})
}

// CreateLinkSessionWith is CreateLinkSession with the session's Link
// options (LinkOptions); a bad option is EInvalid naming its field.
func (s *Service) CreateLinkSessionWith(ctx context.Context, actor audit.Actor, opts LinkOptions) (LinkSession, error) {
	opts, err := opts.normalize()
	if err != nil {
		return LinkSession{}, err
	}
	products, itemID, provider := opts.Products, opts.ItemID, opts.Provider
	p, err := s.sessionProvider(provider)
	if err != nil {
		return LinkSession{}, err
	}
	subjectID, err := vault.EnsureSubject(ctx, s.db.Pool, actor.Name)
	if err != nil {
		return LinkSession{}, err
	}
	row := sessionRow{ID: kluis.NewID(kluis.PrefixLinkSession), SubjectID: subjectID, Provider: p.Name(),
		Mode: ModeNew, Status: SessionCreated, Products: products, RedirectURI: opts.RedirectURI}
	req := LinkTokenRequest{Products: products, AccountSubtypes: opts.AccountSubtypes,
		AccountSelection: opts.AccountSelection, Platform: opts.Platform, Link: opts.Link}
	if req.ClientUserID, err = s.clientUserID(subjectID); err != nil {
		return LinkSession{}, err
	}
	ttl := NewSessionTTL
	var update Item
	var version vault.Versions
	if itemID != "" {
		if !kluis.ValidID(kluis.PrefixItem, itemID) {
			return LinkSession{}, notFound()
		}
		if update, err = getItem(ctx, s.db.Pool, itemID, subjectID, false); err != nil {
			return LinkSession{}, err
		}
		if !updatable(update.Status, true) {
			return LinkSession{}, kluis.Errorf(kluis.EConflict, "only an active item or one whose login is required can be updated")
		}
		if p, err = s.updateProvider(update, provider); err != nil {
			return LinkSession{}, err
		}
		_, reauth := oauthProvider(p)
		if !updatable(update.Status, reauth) {
			return LinkSession{}, kluis.Errorf(kluis.EConflict, "only an active item or one whose login is required can be updated")
		}
		row.Provider = p.Name()
		if !reauth {
			// An OAuth provider's update mode authorizes anew and needs
			// nothing of the old token (which may be dead).
			if version, err = s.vault.CredentialVersions(ctx, s.db.Pool, update.CredentialRef, false); err != nil {
				return LinkSession{}, err
			}
			if req.AccessToken, err = s.accessToken(ctx, update.ID, update.CredentialRef); err != nil {
				return LinkSession{}, err
			}
		}
		row.Mode, row.ItemID, ttl = ModeUpdate, update.ID, UpdateSessionTTL
	}
	req.WebhookURL = s.webhookURL(p.Name())
	if _, ok := oauthProvider(p); ok {
		if req.State, err = s.oauthState(row.ID); err != nil {
			return LinkSession{}, err
		}
	}
	lt, err := p.CreateLinkToken(ctx, req)
	if err != nil {
		if update.ID != "" && req.AccessToken != "" && !version.Pending && kluis.ErrorCode(err) == CodeInvalidToken {
			// The provider no longer knows the item's only token: update
			// mode cannot repair it, and the item must not stay active.
			if _, merr := s.markRelinkRequired(ctx, actor, update, version.Version, "the provider no longer knows the token"); merr != nil {
				s.log.Error("mark item relink_required", "item_id", update.ID, "cause", merr.Error())
			}
		}
		return LinkSession{}, providerErr("create link token", err)
	}
	now := s.now()
	row.ExpiresAt = now.Add(ttl)
	if !lt.ExpiresAt.IsZero() && lt.ExpiresAt.Before(row.ExpiresAt) {
		row.ExpiresAt = lt.ExpiresAt.UTC()
	}
	row.ExpiresAt = row.ExpiresAt.Truncate(time.Microsecond)
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := vault.FenceSubject(ctx, tx, subjectID); err != nil {
			return err
		}
		if err := insertSession(ctx, tx, row, now); err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, actor, "link_session.created", row.ID, actor.Name,
			map[string]any{"mode": row.Mode, "item_id": row.ItemID, "provider": row.Provider})
	})
	if err != nil {
		return LinkSession{}, err
	}
	return LinkSession{ID: row.ID, Mode: row.Mode, ItemID: row.ItemID, Provider: row.Provider, Status: row.Status,
		LinkToken: lt.Token, ExpiresAt: row.ExpiresAt, SubjectID: row.SubjectID, RedirectURI: row.RedirectURI}, nil
}

// openSession reads the subject's session, with expiry computed: an open
// session past its deadline reads as expired before the job marks it.
func (s *Service) openSession(ctx context.Context, q querier, sub, id string) (sessionRow, string, error) {
	if !kluis.ValidID(kluis.PrefixLinkSession, id) {
		return sessionRow{}, "", notFound()
	}
	subjectID, err := vault.LookupSubject(ctx, s.db.Pool, sub)
	if err != nil {
		return sessionRow{}, "", err
	}
	row, err := getSession(ctx, q, id, subjectID)
	if err != nil {
		return sessionRow{}, "", err
	}
	if (row.Status == SessionCreated || row.Status == SessionSucceeded) && !s.now().Before(row.ExpiresAt) {
		row.Status = SessionExpired
	}
	return row, subjectID, nil
}

func sessionClosed(status string) error {
	return kluis.Errorf(CodeLinkSessionClosed, "the link session is %s; start a new one", status)
}

// SandboxPublicToken plays the user finishing the sandbox's Link UI for the
// session: it logs in at the institution (a bad login is
// CodeInvalidCredentials) and moves the session to succeeded, keeping only
// the public token's hash. Only the sandbox provider has it.
func (s *Service) SandboxPublicToken(ctx context.Context, actor audit.Actor, sessionID string, login SandboxLink) (string, error) {
	row, _, err := s.openSession(ctx, s.db.Pool, actor.Name, sessionID)
	if err != nil {
		return "", err
	}
	linker, err := s.sandboxLinker(row.Provider)
	if err != nil {
		return "", err
	}
	if row.Status != SessionCreated {
		return "", sessionClosed(row.Status)
	}
	login.AccessToken = ""
	if len(login.Code) > maxSandboxCodeLen {
		return "", kluis.Errorf(kluis.EInvalid, "code: at most 16 characters")
	}
	if row.Mode == ModeUpdate {
		it, err := getItem(ctx, s.db.Pool, row.ItemID, row.SubjectID, false)
		if err != nil {
			return "", err
		}
		if login.AccessToken, err = s.accessToken(ctx, it.ID, it.CredentialRef); err != nil {
			return "", err
		}
		login.InstitutionID = it.InstitutionID
	}
	tok, err := linker.CompleteLink(ctx, login)
	if err != nil {
		return "", providerErr("complete sandbox link", err)
	}
	if err := s.succeed(ctx, actor, row, tok, nil); err != nil {
		return "", err
	}
	return tok, nil
}

// succeed moves the session to succeeded with the public token (its hash,
// and its sealed copy for GET /v1/link/sessions/{id}) and the accounts the
// user picked, audited.
func (s *Service) succeed(ctx context.Context, actor audit.Actor, row sessionRow, tok string, selected []string) error {
	hash, err := s.publicTokenHash(tok)
	if err != nil {
		return err
	}
	sealed, err := s.sealPublicToken(row.ID, tok)
	if err != nil {
		return err
	}
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := vault.FenceSubject(ctx, tx, row.SubjectID); err != nil {
			return err
		}
		ok, err := markSucceeded(ctx, tx, row.ID, hash, sealed, selected, s.now())
		if err != nil {
			return err
		}
		if !ok {
			return sessionClosed("no longer open")
		}
		return s.appendAudit(ctx, tx, actor, "link_session.succeeded", row.ID, actor.Name,
			map[string]any{"mode": row.Mode, "accounts_selected": len(selected)})
	})
}

// Exchange trades the session's public token for an item. The first call
// that succeeds creates the item (created is true); the same token again
// returns the same item. Concurrent calls with one token make one provider
// exchange: one holds the session's lease, the others wait for its item.
// In update mode it repairs the session's item instead (login_required →
// active) once the provider accepts its access token again.
func (s *Service) Exchange(ctx context.Context, actor audit.Actor, sessionID, publicToken string) (Item, bool, error) {
	if publicToken == "" || len(publicToken) > maxPublicTokenLen {
		return Item{}, false, kluis.Errorf(kluis.EInvalid, "public_token is required")
	}
	fresh, err := s.publicTokenHash(publicToken)
	if err != nil {
		return Item{}, false, err
	}
	for {
		row, subjectID, err := s.openSession(ctx, s.db.Pool, actor.Name, sessionID)
		if err != nil {
			return Item{}, false, err
		}
		hash, err := s.storedTokenHash(row.PublicTokenHash, fresh, publicToken)
		if err != nil {
			return Item{}, false, err
		}
		switch {
		case row.Status == SessionExchanged && sameHash(row.PublicTokenHash, hash):
			it, err := s.Item(ctx, actor.Name, row.ExchangedItemID)
			return it, false, err
		case row.Status == SessionExpired || row.Status == SessionExited || row.Status == SessionExchanged:
			return Item{}, false, sessionClosed(row.Status)
		case row.Status == SessionSucceeded && !sameHash(row.PublicTokenHash, hash):
			return Item{}, false, kluis.Errorf(CodeInvalidToken, "the public token does not belong to this link session")
		}
		now := s.now()
		old, claimed, err := s.claim(ctx, row.ID, subjectID, hash, now)
		if err != nil {
			return Item{}, false, err
		}
		if !claimed {
			// Another call holds the lease: wait for its outcome.
			select {
			case <-ctx.Done():
				return Item{}, false, kluis.Unavailable("link session exchange", ctx.Err())
			case <-time.After(exchangePoll):
			}
			continue
		}
		row.Status = SessionSucceeded
		var it Item
		if row.Mode == ModeUpdate {
			it, err = s.exchangeUpdate(ctx, actor, row, hash, publicToken)
		} else {
			it, err = s.exchangeNew(ctx, actor, row, hash, publicToken)
		}
		if err != nil {
			// A token the provider refused must not lock a session that
			// was open to any token before this call.
			refused := kluis.ErrorCode(err) == CodeInvalidToken && old == SessionCreated
			if rerr := releaseClaim(context.WithoutCancel(ctx), s.db.Pool, row.ID, hash, refused); rerr != nil {
				s.log.Error("release link session lease", "link_session", row.ID, "cause", rerr.Error())
			}
			return Item{}, false, err
		}
		return it, true, nil
	}
}

// claim takes the session's exchange lease behind the erasure fence, before
// the provider is asked for a token: a claim committed before an erasure's
// approval is an exchange in flight that the erasure waits for
// (Service.Live); one after it is refused, so no token is fetched for a
// subject being erased.
func (s *Service) claim(ctx context.Context, id, subjectID string, hash []byte, now time.Time) (string, bool, error) {
	var old string
	var claimed bool
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := vault.FenceSubject(ctx, tx, subjectID); err != nil {
			return err
		}
		var err error
		old, claimed, err = claimExchange(ctx, tx, id, subjectID, hash, now, now.Add(exchangeLease))
		return err
	})
	return old, claimed, err
}

// exchangeNew exchanges the public token at the provider, reads the item's
// accounts and numbers, and stores the item with its token and numbers
// sealed, all in one transaction with the session's transition.
func (s *Service) exchangeNew(ctx context.Context, actor audit.Actor, row sessionRow, hash []byte, publicToken string) (Item, error) {
	p, err := s.providers.Provider(row.Provider)
	if err != nil {
		return Item{}, err
	}
	ex, err := s.exchangeToken(ctx, p, publicToken)
	if err != nil {
		return Item{}, providerErr("exchange public token", err)
	}
	// From here the provider holds a live item: the rest runs to its end
	// even if the caller goes away, each read on its own deadline, and a
	// read that fails leaves the item to be completed later.
	ctx = context.WithoutCancel(ctx)
	rd, err := s.readAfterExchange(ctx, p, ex.AccessToken)
	if err != nil {
		// The provider says the token it just gave is not good: it keeps
		// no item, and revoking costs nothing.
		s.removeQuietly(p, ex.AccessToken)
		return Item{}, err
	}
	accts, numbers := rd.accounts, rd.numbers
	accts.Accounts = selectAccounts(accts.Accounts, row.SelectedAccounts)
	it := Item{ID: kluis.NewID(kluis.PrefixItem), SubjectID: row.SubjectID, Provider: p.Name(),
		ProviderItemID: ex.ProviderItemID, InstitutionID: accts.Institution.ID, InstitutionName: accts.Institution.Name,
		Status: rd.status, CompletionPending: rd.pending, webhookURL: s.webhookURL(p.Name())}
	if it.ProviderItemID == "" {
		it.ProviderItemID = accts.ProviderItemID
	}
	now := s.now()
	err = s.inEventTx(ctx, func(tx pgx.Tx) error {
		var err error
		if it.CredentialRef, err = s.sealAccessToken(ctx, tx, it.ID, row.SubjectID, it.Provider, ex.AccessToken); err != nil {
			return err
		}
		if err := insertItem(ctx, tx, it, now); err != nil {
			return err
		}
		added, err := s.addAccounts(ctx, tx, it, accts.Accounts, numbers, now)
		if err != nil {
			return err
		}
		ok, err := markExchanged(ctx, tx, row.ID, hash, it.ID, now)
		if err != nil {
			return err
		}
		if !ok {
			return sessionClosed("no longer open")
		}
		if err := s.appendAudit(ctx, tx, actor, "link_session.exchanged", row.ID, actor.Name, map[string]any{"item_id": it.ID}); err != nil {
			return err
		}
		if err := itemEvent(ctx, tx, events.ItemCreated, it.SubjectID, it.ID, it.Status); err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, actor, "item.linked", it.ID, actor.Name, map[string]any{
			"provider": it.Provider, "institution_id": it.InstitutionID, "credential_ref": it.CredentialRef, "accounts": added,
			"status": it.Status, "completion_pending": it.CompletionPending, "read_failure": rd.failure})
	})
	if err != nil {
		s.revokeUnstored(ctx, p, actor, row, hash, ex.ProviderItemID, ex.AccessToken)
		return Item{}, err
	}
	return s.Item(ctx, actor.Name, it.ID)
}

// exchangeUpdate finishes update mode: the provider must accept the item's
// access token again; then the item is active, and any new accounts added.
// At an OAuth provider the public token is a new authorization, redeemed
// for the item's new token (exchangeReauthorized).
// The accounts and the numbers are read each on its own deadline, as after
// a first exchange: numbers the provider is slow with or not ready to give
// (PRODUCT_NOT_READY) leave the repaired item to the completion job
// instead of failing the user's repair.
func (s *Service) exchangeUpdate(ctx context.Context, actor audit.Actor, row sessionRow, hash []byte, publicToken string) (Item, error) {
	it, err := getItem(ctx, s.db.Pool, row.ItemID, row.SubjectID, false)
	if err != nil {
		return Item{}, err
	}
	p, err := s.providers.Provider(it.Provider)
	if err != nil {
		return Item{}, err
	}
	if _, ok := oauthProvider(p); ok {
		return s.exchangeReauthorized(ctx, actor, row, hash, publicToken, it, p)
	}
	token, err := s.accessToken(ctx, it.ID, it.CredentialRef)
	if err != nil {
		return Item{}, err
	}
	actx, cancel := context.WithTimeout(ctx, s.timeouts.Accounts)
	accts, err := p.GetAccounts(actx, token)
	cancel()
	if err != nil {
		return Item{}, providerErr("get accounts", err)
	}
	numbers, numbersPending, _ := s.readNumbers(ctx, p, token)
	now := s.now()
	err = s.inEventTx(ctx, func(tx pgx.Tx) error {
		if err := vault.FenceSubject(ctx, tx, row.SubjectID); err != nil {
			return err
		}
		locked, err := getItem(ctx, tx, it.ID, row.SubjectID, true)
		if err != nil {
			return err
		}
		_, repaired, err := setItemStatus(ctx, tx, locked.ID, ItemEventLoginRepaired, now)
		if err != nil {
			return err
		}
		if !repaired && locked.Status != ItemActive {
			return kluis.Errorf(kluis.EConflict, "the item can no longer be updated")
		}
		added, err := s.addAccounts(ctx, tx, locked, accts.Accounts, numbers, now)
		if err != nil {
			return err
		}
		// The user may have confirmed the provider's micro-deposits in this
		// session: their accounts' statuses, and the numbers now given.
		if err := s.refreshProviderStatuses(ctx, tx, locked, accts.Accounts); err != nil {
			return err
		}
		if _, err := s.sealMissingNumbers(ctx, tx, locked, numbers); err != nil {
			return err
		}
		if numbersPending {
			if err := markCompletionPending(ctx, tx, locked.ID, now); err != nil {
				return err
			}
		}
		ok, err := markExchanged(ctx, tx, row.ID, hash, locked.ID, now)
		if err != nil {
			return err
		}
		if !ok {
			return sessionClosed("no longer open")
		}
		if err := s.appendAudit(ctx, tx, actor, "link_session.exchanged", row.ID, actor.Name, map[string]any{"item_id": locked.ID, "mode": ModeUpdate}); err != nil {
			return err
		}
		if repaired {
			if err := s.appendAudit(ctx, tx, actor, "item.login_repaired", locked.ID, actor.Name,
				map[string]any{"from": ItemLoginRequired, "to": ItemActive}); err != nil {
				return err
			}
			if err := itemEvent(ctx, tx, events.ItemRepaired, locked.SubjectID, locked.ID, ItemActive); err != nil {
				return err
			}
		}
		if added > 0 {
			if err := itemEvent(ctx, tx, events.ItemAccountsAdded, locked.SubjectID, locked.ID, ItemActive); err != nil {
				return err
			}
			return s.appendAudit(ctx, tx, actor, "item.accounts_added", locked.ID, actor.Name, map[string]any{"accounts": added})
		}
		return nil
	})
	if err != nil {
		return Item{}, err
	}
	return s.Item(ctx, actor.Name, it.ID)
}

// fetchAccounts reads an item's institution, accounts and (where the
// institution has instant auth) their numbers at the item's provider p.
func (s *Service) fetchAccounts(ctx context.Context, p Provider, token string) (ItemAccounts, map[string]AuthNumbers, error) {
	accts, err := p.GetAccounts(ctx, token)
	if err != nil {
		return ItemAccounts{}, nil, providerErr("get accounts", err)
	}
	numbers := map[string]AuthNumbers{}
	auth, err := p.GetAuth(ctx, token)
	switch {
	case kluis.ErrorCode(err) == CodeProductNotSupported:
		// No instant auth here: the accounts are linked without numbers
		// and verification falls back to micro-deposits.
	case err != nil:
		return ItemAccounts{}, nil, providerErr("get auth", err)
	default:
		for _, n := range auth {
			numbers[n.ProviderAccountID] = n
		}
	}
	return accts, numbers, nil
}

// addAccounts inserts the accounts the item does not have yet, sealing
// their numbers when known, and returns how many it added.
func (s *Service) addAccounts(ctx context.Context, tx pgx.Tx, it Item, accts []ProviderAccount, numbers map[string]AuthNumbers, now time.Time) (int, error) {
	existing, err := accountsOf(ctx, tx, []string{it.ID})
	if err != nil {
		return 0, err
	}
	have := map[string]bool{}
	for _, a := range existing {
		have[a.ProviderAccountID] = true
	}
	added := 0
	for _, pa := range accts {
		if pa.ProviderAccountID == "" || have[pa.ProviderAccountID] {
			continue
		}
		a := Account{ID: kluis.NewID(kluis.PrefixAccount), SubjectID: it.SubjectID, ItemID: it.ID,
			ProviderAccountID: pa.ProviderAccountID, Name: clip(pa.Name), Mask: safeMask(pa.Mask),
			Type: clip(pa.Type), Subtype: clip(pa.Subtype), ProviderVerificationStatus: pa.VerificationStatus}
		if n, ok := numbers[pa.ProviderAccountID]; ok && accountnumber.Normalize(n.AccountNumber) != "" {
			if a.AccountNumberRef, err = s.sealNumbers(ctx, tx, a.ID, it.SubjectID, n); err != nil {
				return 0, err
			}
			if a.Mask == "" {
				a.Mask = lastFour(accountnumber.Normalize(n.AccountNumber))
			}
		}
		ok, err := insertAccount(ctx, tx, a, now)
		if err != nil {
			return 0, err
		}
		if ok {
			added++
			if err := s.reportProviderStatus(ctx, tx, it.Provider, a.ID, a.ProviderVerificationStatus); err != nil {
				return 0, err
			}
		}
	}
	return added, nil
}

// safeMask keeps a mask only if it is at most four digits: a provider that
// sent more must not get a full number into a clear column.
func safeMask(m string) string {
	if len(m) > 4 {
		return ""
	}
	for _, c := range m {
		if c < '0' || c > '9' {
			return ""
		}
	}
	return m
}

func lastFour(digits string) string {
	if len(digits) <= 4 {
		return digits
	}
	return digits[len(digits)-4:]
}

// removeQuietly revokes at p a token kluis could not store, best effort.
func (s *Service) removeQuietly(p Provider, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.RemoveItem(ctx, token); err != nil {
		s.log.Warn("could not revoke an item kluis did not keep", "code", kluis.ErrorCode(err), "cause", err.Error())
	}
}
