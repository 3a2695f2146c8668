package banklink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
)

// querier is what the store's reads run on: the pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// dbErr translates a database error and names the operation.
func dbErr(op string, err error) error {
	return fmt.Errorf("banklink: %s: %w", op, postgres.Translate(err))
}

// sessionRow is a link session as stored.
type sessionRow struct {
	ID              string
	SubjectID       string
	Provider        string
	Mode            string
	ItemID          string
	Status          string
	Products        []string
	PublicTokenHash []byte
	ClaimedUntil    *time.Time
	ExchangedItemID string
	ExpiresAt       time.Time
	// PublicTokenSealed is the public token of a session that succeeded
	// (or whose hosted page holds one the user has not finished with),
	// sealed by Service.sealPublicToken; nil otherwise.
	PublicTokenSealed []byte
	// SelectedAccounts are the account names the user picked on the
	// hosted page; nil: every account.
	SelectedAccounts []string
	// RedirectURI is where the hosted page sends the browser back.
	RedirectURI string
}

func insertSession(ctx context.Context, tx pgx.Tx, s sessionRow, now time.Time) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO link_sessions (id, subject_id, provider, mode, item_id, status, products, expires_at, created_at, updated_at, redirect_uri)
		VALUES ($1, $2, $3, $4, NULLIF($5, ''), $6, $7, $8, $9, $9, NULLIF($10, ''))`,
		s.ID, s.SubjectID, s.Provider, s.Mode, s.ItemID, s.Status, s.Products, s.ExpiresAt, now, s.RedirectURI)
	if err != nil {
		return dbErr("insert link session", err)
	}
	return nil
}

// getSession reads the subject's session; another subject's is ENotFound.
func getSession(ctx context.Context, q querier, id, subjectID string) (sessionRow, error) {
	var s sessionRow
	var itemID, exchanged, redirect *string
	err := q.QueryRow(ctx, `
		SELECT id, subject_id, provider, mode, item_id, status, products, public_token_hash,
		       exchange_claimed_until, exchanged_item_id, expires_at, public_token_sealed, selected_accounts, redirect_uri
		FROM link_sessions WHERE id = $1 AND subject_id = $2`, id, subjectID).Scan(
		&s.ID, &s.SubjectID, &s.Provider, &s.Mode, &itemID, &s.Status, &s.Products, &s.PublicTokenHash,
		&s.ClaimedUntil, &exchanged, &s.ExpiresAt, &s.PublicTokenSealed, &s.SelectedAccounts, &redirect)
	if err != nil {
		return sessionRow{}, dbErr("read link session", err)
	}
	s.ItemID, s.ExchangedItemID, s.RedirectURI = deref(itemID), deref(exchanged), deref(redirect)
	return s, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// markSucceeded records the public token's hash and sealed copy and the
// accounts the user picked (nil: all): created → succeeded, with the public
// token's own deadline.
func markSucceeded(ctx context.Context, tx pgx.Tx, id string, hash, sealed []byte, selected []string, now time.Time) (bool, error) {
	from, to := sessionFrom(SessionEventTokenIssued)
	tag, err := tx.Exec(ctx, `
		UPDATE link_sessions SET status = $8, public_token_hash = $2, public_token_sealed = $5, selected_accounts = $6,
		       expires_at = LEAST(expires_at, $3::timestamptz + $4::interval), updated_at = $3
		WHERE id = $1 AND status = ANY($7) AND expires_at > $3`,
		id, hash, now, PublicTokenTTL, sealed, selected, from, to)
	if err != nil {
		return false, dbErr("mark link session succeeded", err)
	}
	return tag.RowsAffected() == 1, nil
}

// claimExchange takes the session's exchange lease for the public token of
// hash: a created session records the hash and becomes succeeded (a
// provider whose own Link UI issued the token); a succeeded one must carry
// the same hash and no live lease. It returns the status the session had.
func claimExchange(ctx context.Context, q querier, id, subjectID string, hash []byte, now, until time.Time) (string, bool, error) {
	var old string
	// A fresh token moves the session as the machine says; the same token
	// again only renews the lease of a session it already moved.
	from, to := sessionFrom(SessionEventTokenIssued)
	err := q.QueryRow(ctx, `
		UPDATE link_sessions s SET status = $8, public_token_hash = $3, exchange_claimed_until = $5,
		       expires_at = CASE WHEN o.status = ANY($7) THEN LEAST(s.expires_at, $4::timestamptz + $6::interval) ELSE s.expires_at END,
		       updated_at = $4
		FROM (SELECT id, status FROM link_sessions WHERE id = $1 AND subject_id = $2 FOR UPDATE) o
		WHERE s.id = o.id AND s.expires_at > $4 AND (
		      s.status = ANY($7)
		   OR (s.status = $8 AND s.public_token_hash = $3
		       AND (s.exchange_claimed_until IS NULL OR s.exchange_claimed_until < $4)))
		RETURNING o.status`, id, subjectID, hash, now, until, PublicTokenTTL, from, to).Scan(&old)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, dbErr("claim link session", err)
	}
	return old, true, nil
}

// releaseClaim gives the lease back after a failed exchange. A session that
// was created before this claim goes back to created, so that a token the
// provider refused does not lock the session to its hash.
func releaseClaim(ctx context.Context, q querier, id string, hash []byte, toCreated bool) error {
	// Either way only a session the refusal could move is touched.
	from, to := sessionFrom(SessionEventTokenRefused)
	sql, args := `UPDATE link_sessions SET exchange_claimed_until = NULL, updated_at = now()
		WHERE id = $1 AND status = ANY($3) AND public_token_hash = $2`, []any{id, hash, from}
	if toCreated {
		sql = `UPDATE link_sessions SET exchange_claimed_until = NULL, status = $4, public_token_hash = NULL,
		       public_token_sealed = NULL, updated_at = now()
		WHERE id = $1 AND status = ANY($3) AND public_token_hash = $2`
		args = append(args, to)
	}
	if _, err := q.Exec(ctx, sql, args...); err != nil {
		return dbErr("release link session", err)
	}
	return nil
}

// markExchanged is the one transition that makes an exchange count:
// succeeded → exchanged, only for the token of hash.
func markExchanged(ctx context.Context, tx pgx.Tx, id string, hash []byte, itemID string, now time.Time) (bool, error) {
	from, to := sessionFrom(SessionEventExchanged)
	tag, err := tx.Exec(ctx, `
		UPDATE link_sessions SET status = $6, exchanged_item_id = $3, exchange_claimed_until = NULL,
		       public_token_sealed = NULL, updated_at = $4
		WHERE id = $1 AND status = ANY($5) AND public_token_hash = $2`, id, hash, itemID, now, from, to)
	if err != nil {
		return false, dbErr("mark link session exchanged", err)
	}
	return tag.RowsAffected() == 1, nil
}

// expireSessions sets expired on open sessions past their deadline, but
// not while an exchange holds the lease (it may still be revoking a token
// it could not store).
func expireSessions(ctx context.Context, q querier, now time.Time, limit int) (int, error) {
	from, to := sessionFrom(SessionEventDeadline)
	tag, err := q.Exec(ctx, `
		UPDATE link_sessions SET status = $4, exchange_claimed_until = NULL, public_token_sealed = NULL, updated_at = $1
		WHERE id IN (SELECT id FROM link_sessions WHERE status = ANY($3) AND expires_at <= $1
		               AND (exchange_claimed_until IS NULL OR exchange_claimed_until <= $1)
		             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)`, now, limit, from, to)
	if err != nil {
		return 0, dbErr("expire link sessions", err)
	}
	return int(tag.RowsAffected()), nil
}

func insertItem(ctx context.Context, tx pgx.Tx, it Item, now time.Time) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO items (id, subject_id, provider, provider_item_id, institution_id, institution_name, status,
		                   credential_ref, access_token_rotated_at, created_at, updated_at, completion_pending, webhook_url)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9, $10, NULLIF($11, ''))`,
		it.ID, it.SubjectID, it.Provider, it.ProviderItemID, it.InstitutionID, it.InstitutionName, it.Status, it.CredentialRef, now,
		it.CompletionPending, it.webhookURL)
	if err != nil {
		return dbErr("insert item", err)
	}
	return nil
}

// insertAccount adds an item's account unless the item already has it; it
// reports whether it did.
func insertAccount(ctx context.Context, tx pgx.Tx, a Account, now time.Time) (bool, error) {
	tag, err := tx.Exec(ctx, `
		INSERT INTO accounts (id, subject_id, item_id, provider_account_id, name, mask, type, subtype, account_number_ref, created_at, updated_at,
		                      provider_verification_status)
		VALUES ($1, $2, NULLIF($3, ''), NULLIF($4, ''), $5, $6, $7, $8, NULLIF($9, ''), $10, $10, NULLIF($11, ''))
		ON CONFLICT (item_id, provider_account_id) DO NOTHING`,
		a.ID, a.SubjectID, a.ItemID, a.ProviderAccountID, a.Name, a.Mask, a.Type, a.Subtype, a.AccountNumberRef, now,
		a.ProviderVerificationStatus)
	if err != nil {
		return false, dbErr("insert account", err)
	}
	return tag.RowsAffected() == 1, nil
}

const itemColumns = `id, subject_id, provider, provider_item_id, institution_id, institution_name, status,
	COALESCE(credential_ref, ''), created_at, COALESCE(pending_credential_ref, ''), completion_pending`

func scanItem(r pgx.Row) (Item, error) {
	var it Item
	err := r.Scan(&it.ID, &it.SubjectID, &it.Provider, &it.ProviderItemID, &it.InstitutionID, &it.InstitutionName,
		&it.Status, &it.CredentialRef, &it.CreatedAt, &it.legacyPendingRef, &it.CompletionPending)
	return it, err
}

// getItem reads the subject's item that is not removed: another subject's
// item is ENotFound like a missing one, and so is every item for an empty
// subjectID (an owner check that a missing subject would switch off is an
// IDOR waiting to happen; internal reads use anyItem). forUpdate locks the
// row in the caller's transaction.
func getItem(ctx context.Context, q querier, id, subjectID string, forUpdate bool) (Item, error) {
	sql := `SELECT ` + itemColumns + ` FROM items WHERE id = $1 AND status <> 'removed' AND subject_id = $2`
	if forUpdate {
		sql += ` FOR UPDATE`
	}
	it, err := scanItem(q.QueryRow(ctx, sql, id, subjectID))
	if err != nil {
		return Item{}, dbErr("read item", err)
	}
	return it, nil
}

// anyItem reads any item that is not removed, whoever owns it: for internal
// services only.
func anyItem(ctx context.Context, q querier, id string) (Item, error) {
	it, err := scanItem(q.QueryRow(ctx, `SELECT `+itemColumns+` FROM items WHERE id = $1 AND status <> 'removed'`, id))
	if err != nil {
		return Item{}, dbErr("read item", err)
	}
	return it, nil
}

// itemByProviderID finds the (not removed) item a provider names, locked.
func itemByProviderID(ctx context.Context, tx pgx.Tx, provider, providerItemID string) (Item, bool, error) {
	it, err := scanItem(tx.QueryRow(ctx, `SELECT `+itemColumns+` FROM items
		WHERE provider = $1 AND provider_item_id = $2 AND status <> 'removed' FOR UPDATE`, provider, providerItemID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Item{}, false, nil
	}
	if err != nil {
		return Item{}, false, dbErr("read item", err)
	}
	return it, true, nil
}

// liveItemByProviderID finds the (not removed) item a provider names,
// without locking it.
func liveItemByProviderID(ctx context.Context, q querier, provider, providerItemID string) (Item, bool, error) {
	it, err := scanItem(q.QueryRow(ctx, `SELECT `+itemColumns+` FROM items
		WHERE provider = $1 AND provider_item_id = $2 AND status <> 'removed'`, provider, providerItemID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Item{}, false, nil
	}
	if err != nil {
		return Item{}, false, dbErr("read item", err)
	}
	return it, true, nil
}

// itemTokenRef reads the credential reference and status of the live item
// a provider names; status is "" when there is none.
func itemTokenRef(ctx context.Context, q querier, provider, providerItemID string) (string, string, string, error) {
	var id, ref, status string
	err := q.QueryRow(ctx, `SELECT id, COALESCE(credential_ref, ''), status FROM items
		WHERE provider = $1 AND provider_item_id = $2 AND status <> 'removed'`, provider, providerItemID).Scan(&id, &ref, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", "", nil
	}
	if err != nil {
		return "", "", "", dbErr("read item", err)
	}
	return id, ref, status, nil
}

func listItems(ctx context.Context, q querier, subjectID string, page Page) ([]Item, error) {
	after, afterID, limit := page.pageArgs()
	rows, err := q.Query(ctx, `SELECT `+itemColumns+` FROM items
		WHERE subject_id = $1 AND status <> 'removed'
		AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::text))
		ORDER BY created_at, id LIMIT $4`, subjectID, after, afterID, limit)
	if err != nil {
		return nil, dbErr("list items", err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Item, error) { return scanItem(r) })
	if err != nil {
		return nil, dbErr("list items", err)
	}
	return items, nil
}

// setItemStatus is the conditional transition of ev: from the statuses the
// machine (NextItem) moves on ev, to the one it names. It returns the new
// status and whether the item moved.
func setItemStatus(ctx context.Context, tx pgx.Tx, id string, ev ItemEvent, now time.Time) (string, bool, error) {
	from, to := itemFrom(ev)
	tag, err := tx.Exec(ctx, `UPDATE items SET status = $3, updated_at = $4 WHERE id = $1 AND status = ANY($2)`, id, from, to, now)
	if err != nil {
		return "", false, dbErr("update item", err)
	}
	return to, tag.RowsAffected() == 1, nil
}

// markItemRemoved is the removal transition: it drops the credential
// reference (the caller destroys the credential next), and takes the item's
// accounts out of use, returning their number references (and the legacy
// pending_credential_ref of a rotation from before stable refs) to destroy.
func markItemRemoved(ctx context.Context, tx pgx.Tx, id, fromStatus, credRef string, now time.Time) ([]string, bool, error) {
	to, ok := NextItem(fromStatus, ItemEventUnlinked)
	if !ok {
		return nil, false, nil
	}
	var pending string
	err := tx.QueryRow(ctx, `
		UPDATE items i SET status = $5, credential_ref = NULL, pending_credential_ref = NULL,
		       rotation_claimed_until = NULL, removed_at = $4, updated_at = $4
		FROM (SELECT id, pending_credential_ref FROM items WHERE id = $1 FOR UPDATE) o
		WHERE i.id = o.id AND i.status = $2 AND i.credential_ref IS NOT DISTINCT FROM NULLIF($3, '')
		RETURNING COALESCE(o.pending_credential_ref, '')`, id, fromStatus, credRef, now, to).Scan(&pending)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, dbErr("remove item", err)
	}
	rows, err := tx.Query(ctx, `
		WITH old AS (SELECT id, account_number_ref FROM accounts WHERE item_id = $1 AND removed_at IS NULL FOR UPDATE)
		UPDATE accounts a SET removed_at = $2, updated_at = $2, account_number_ref = NULL
		FROM old WHERE a.id = old.id RETURNING COALESCE(old.account_number_ref, '')`, id, now)
	if err != nil {
		return nil, false, dbErr("remove accounts", err)
	}
	refs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, false, dbErr("remove accounts", err)
	}
	return append(refs, pending), true, nil
}

// claimToken takes the item's token lease until until, for the one rotation
// or removal that talks to the provider about the item's token. It fails
// (false) while another holds a lease that has not expired, and for an
// item that is removed. A rotation passes due: the lease is then taken only
// if the item still needs the rotation, so that a run that listed it before
// another finished does not rotate it twice. resumed reports that an
// expired lease was taken over: a rotation or removal cut short, whose
// outcome at the provider is not known.
func claimToken(ctx context.Context, q querier, id string, now, until time.Time, due *time.Time) (resumed, ok bool, err error) {
	sql := `UPDATE items i SET rotation_claimed_until = $3, updated_at = $2
		FROM (SELECT id, rotation_claimed_until AS prev FROM items WHERE id = $1 FOR UPDATE) o
		WHERE i.id = o.id AND i.status <> 'removed' AND (o.prev IS NULL OR o.prev < $2)
		RETURNING o.prev IS NOT NULL`
	args := []any{id, now, until}
	if due != nil {
		sql = `UPDATE items i SET rotation_claimed_until = $3, updated_at = $2
		FROM (SELECT id, rotation_claimed_until AS prev FROM items WHERE id = $1 FOR UPDATE) o
		WHERE i.id = o.id AND i.status IN ('active', 'login_required') AND (o.prev < $2 OR (o.prev IS NULL
		      AND (i.pending_credential_ref IS NOT NULL OR ($4::timestamptz IS NOT NULL AND i.access_token_rotated_at < $4))))
		RETURNING o.prev IS NOT NULL`
		args = append(args, *due)
		if due.IsZero() {
			args[3] = nil
		}
	}
	err = q.QueryRow(ctx, sql, args...).Scan(&resumed)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, nil
	}
	if err != nil {
		return false, false, dbErr("claim item token", err)
	}
	return resumed, true, nil
}

// releaseToken gives the lease of until back.
func releaseToken(ctx context.Context, q querier, id string, until time.Time) error {
	if _, err := q.Exec(ctx, `UPDATE items SET rotation_claimed_until = NULL WHERE id = $1 AND rotation_claimed_until = $2`,
		id, until); err != nil {
		return dbErr("release item token", err)
	}
	return nil
}

// expireToken marks the lease of until expired (as of now), if still held.
func expireToken(ctx context.Context, q querier, id string, until, now time.Time) error {
	if _, err := q.Exec(ctx, `UPDATE items SET rotation_claimed_until = $3
		WHERE id = $1 AND rotation_claimed_until = $2`, id, until, now.Add(-time.Microsecond)); err != nil {
		return dbErr("expire item token lease", err)
	}
	return nil
}

// markRotated records a finished rotation and ends its lease.
func markRotated(ctx context.Context, tx pgx.Tx, id string, now time.Time) (bool, error) {
	tag, err := tx.Exec(ctx, `UPDATE items SET access_token_rotated_at = $2, rotation_claimed_until = NULL, updated_at = $2
		WHERE id = $1 AND status <> 'removed'`, id, now)
	if err != nil {
		return false, dbErr("record rotation", err)
	}
	return tag.RowsAffected() == 1, nil
}

// adoptLegacyPending clears the legacy pending_credential_ref once its
// token is sealed as a pending version of the item's own credential.
func adoptLegacyPending(ctx context.Context, tx pgx.Tx, id, legacyRef string, now time.Time) (bool, error) {
	tag, err := tx.Exec(ctx, `UPDATE items SET pending_credential_ref = NULL, updated_at = $3
		WHERE id = $1 AND pending_credential_ref = $2`, id, legacyRef, now)
	if err != nil {
		return false, dbErr("adopt pending token", err)
	}
	return tag.RowsAffected() == 1, nil
}

// setItemRelinkRequired moves a live item to relink_required (kluis no
// longer holds a live token) and ends any lease.
func setItemRelinkRequired(ctx context.Context, tx pgx.Tx, id string, now time.Time) (bool, error) {
	from, to := itemFrom(ItemEventTokenLost)
	tag, err := tx.Exec(ctx, `UPDATE items SET status = $4, rotation_claimed_until = NULL, updated_at = $2
		WHERE id = $1 AND status = ANY($3)`, id, now, from, to)
	if err != nil {
		return false, dbErr("mark item relink_required", err)
	}
	return tag.RowsAffected() == 1, nil
}

// revokeAccounts marks the item's live accounts (or only the one with
// providerAccountID, when set) revoked and no longer verified, returning
// their ids and number references.
func revokeAccounts(ctx context.Context, tx pgx.Tx, itemID, providerAccountID string, now time.Time) ([]Account, error) {
	rows, err := tx.Query(ctx, `
		UPDATE accounts SET status = 'revoked', revoked_at = $3, verification_status = 'unverified', updated_at = $3
		WHERE item_id = $1 AND removed_at IS NULL AND status = 'active' AND ($2 = '' OR provider_account_id = $2)
		RETURNING id, COALESCE(account_number_ref, '')`, itemID, providerAccountID, now)
	if err != nil {
		return nil, dbErr("revoke accounts", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Account, error) {
		var a Account
		return a, r.Scan(&a.ID, &a.AccountNumberRef)
	})
	if err != nil {
		return nil, dbErr("revoke accounts", err)
	}
	return out, nil
}

const accountColumns = `id, subject_id, COALESCE(item_id, ''), COALESCE(provider_account_id, ''), name, mask, type, subtype,
	verification_status, COALESCE(account_number_ref, ''), created_at, status`

func scanAccount(r pgx.Row) (Account, error) {
	var a Account
	err := r.Scan(&a.ID, &a.SubjectID, &a.ItemID, &a.ProviderAccountID, &a.Name, &a.Mask, &a.Type, &a.Subtype,
		&a.VerificationStatus, &a.AccountNumberRef, &a.CreatedAt, &a.Status)
	return a, err
}

func collectAccounts(rows pgx.Rows, err error) ([]Account, error) {
	if err != nil {
		return nil, dbErr("list accounts", err)
	}
	accts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Account, error) { return scanAccount(r) })
	if err != nil {
		return nil, dbErr("list accounts", err)
	}
	return accts, nil
}

// accountsOf lists the live accounts of the given items.
func accountsOf(ctx context.Context, q querier, itemIDs []string) ([]Account, error) {
	return collectAccounts(q.Query(ctx, `SELECT `+accountColumns+` FROM accounts
		WHERE item_id = ANY($1) AND removed_at IS NULL ORDER BY created_at, id`, itemIDs))
}

// listAccounts lists the subject's live accounts, linked and manual.
func listAccounts(ctx context.Context, q querier, subjectID string, page Page) ([]Account, error) {
	after, afterID, limit := page.pageArgs()
	return collectAccounts(q.Query(ctx, `SELECT `+accountColumns+` FROM accounts
		WHERE subject_id = $1 AND removed_at IS NULL
		AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::text))
		ORDER BY created_at, id LIMIT $4`, subjectID, after, afterID, limit))
}

// getAccount reads the subject's live account; another subject's, and every
// account for an empty subjectID, is ENotFound (internal reads use
// anyAccount).
func getAccount(ctx context.Context, q querier, id, subjectID string) (Account, error) {
	a, err := scanAccount(q.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts
		WHERE id = $1 AND removed_at IS NULL AND subject_id = $2`, id, subjectID))
	if err != nil {
		return Account{}, dbErr("read account", err)
	}
	return a, nil
}

// anyAccount reads any live account, whoever owns it: for internal services
// only.
func anyAccount(ctx context.Context, q querier, id string) (Account, error) {
	a, err := scanAccount(q.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts
		WHERE id = $1 AND removed_at IS NULL`, id))
	if err != nil {
		return Account{}, dbErr("read account", err)
	}
	return a, nil
}

// webhookSeen reports whether the event was recorded already.
func webhookSeen(ctx context.Context, q querier, provider, eventID string) (bool, error) {
	var seen bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM provider_webhook_events WHERE provider = $1 AND event_id = $2)`,
		provider, eventID).Scan(&seen)
	if err != nil {
		return false, dbErr("read webhook event", err)
	}
	return seen, nil
}

// recordWebhook inserts the event once; false means it was a duplicate.
func recordWebhook(ctx context.Context, tx pgx.Tx, provider string, ev WebhookEvent, itemID, outcome string, now time.Time) (bool, error) {
	tag, err := tx.Exec(ctx, `
		INSERT INTO provider_webhook_events (provider, event_id, kind, provider_type, provider_code, provider_item_id, item_id, outcome, received_at)
		VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), $8, $9)
		ON CONFLICT (provider, event_id) DO NOTHING`,
		provider, ev.ID, ev.Kind, clip(ev.ProviderType), clip(ev.ProviderCode), clip(ev.ProviderItemID), itemID, outcome, now)
	if err != nil {
		return false, dbErr("record webhook event", err)
	}
	return tag.RowsAffected() == 1, nil
}

func clip(s string) string {
	if len(s) > 128 {
		return s[:128]
	}
	return s
}

// rotationRow is an item whose access token is due for rotation, or
// whose rotation was cut short.
type rotationRow struct {
	ID, SubjectID, CredentialRef string
}

// itemsDueForRotation lists live items whose rotation was cut short (an
// expired lease, or a legacy pending token), then, when cutoff is not zero,
// items whose token is older than cutoff and not being rotated.
func itemsDueForRotation(ctx context.Context, q querier, now, cutoff time.Time, limit int) ([]rotationRow, error) {
	var c *time.Time
	if !cutoff.IsZero() {
		c = &cutoff
	}
	rows, err := q.Query(ctx, `
		SELECT id, subject_id, credential_ref FROM items
		WHERE status IN ('active', 'login_required') AND (rotation_claimed_until < $1
		   OR (rotation_claimed_until IS NULL AND (pending_credential_ref IS NOT NULL OR access_token_rotated_at < $2::timestamptz)))
		ORDER BY rotation_claimed_until IS NULL, pending_credential_ref IS NULL, access_token_rotated_at LIMIT $3`, now, c, limit)
	if err != nil {
		return nil, dbErr("list items to rotate", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rotationRow, error) {
		var x rotationRow
		return x, r.Scan(&x.ID, &x.SubjectID, &x.CredentialRef)
	})
	if err != nil {
		return nil, dbErr("list items to rotate", err)
	}
	return out, nil
}

// notFound is the one answer for a missing object and another subject's:
// the same code and message, so the two cannot be told apart.
func notFound() error { return kluis.Errorf(kluis.ENotFound, "not found") }

// liveItemProviders lists the providers of items not removed.
func liveItemProviders(ctx context.Context, q querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT provider FROM items WHERE status <> 'removed' ORDER BY provider`)
	if err != nil {
		return nil, dbErr("list item providers", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, dbErr("list item providers", err)
	}
	return names, nil
}

// itemsPendingCompletion lists active items of the given providers whose
// completion is pending, or that have a live account waiting on the
// provider's own micro-deposits and were not written since readBefore
// (their re-read is the backstop for a lost AUTH webhook), oldest first.
func itemsPendingCompletion(ctx context.Context, q querier, providers []string, limit int, readBefore time.Time) ([]Item, error) {
	rows, err := q.Query(ctx, `SELECT `+itemColumns+` FROM items
		WHERE status = 'active' AND provider = ANY($2) AND (completion_pending OR (updated_at <= $3 AND EXISTS (
			SELECT 1 FROM accounts a WHERE a.item_id = items.id AND a.removed_at IS NULL AND a.status = 'active'
			  AND a.provider_verification_status = ANY($4))))
		ORDER BY updated_at, id LIMIT $1`, limit, providers, readBefore, providerWaitingStatuses)
	if err != nil {
		return nil, dbErr("list items to complete", err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Item, error) { return scanItem(r) })
	if err != nil {
		return nil, dbErr("list items to complete", err)
	}
	return items, nil
}

// touchItem records that the item was read now (a waiting item's re-read).
func touchItem(ctx context.Context, tx pgx.Tx, id string, now time.Time) error {
	if _, err := tx.Exec(ctx, `UPDATE items SET updated_at = $2 WHERE id = $1`, id, now); err != nil {
		return dbErr("record item read", err)
	}
	return nil
}

// setItemCompletion records a completion: the institution where the item
// had none yet, and whether anything is still pending.
func setItemCompletion(ctx context.Context, tx pgx.Tx, id string, inst Institution, pending bool, now time.Time) error {
	_, err := tx.Exec(ctx, `UPDATE items SET completion_pending = $2,
		institution_id = CASE WHEN institution_id = '' THEN $3 ELSE institution_id END,
		institution_name = CASE WHEN institution_name = '' THEN $4 ELSE institution_name END, updated_at = $5
		WHERE id = $1`, id, pending, inst.ID, inst.Name, now)
	if err != nil {
		return dbErr("record item completion", err)
	}
	return nil
}

// setAccountNumberRef gives a live account without numbers its sealed
// numbers' reference.
func setAccountNumberRef(ctx context.Context, tx pgx.Tx, id, ref string, now time.Time) error {
	_, err := tx.Exec(ctx, `UPDATE accounts SET account_number_ref = $2, updated_at = $3
		WHERE id = $1 AND account_number_ref IS NULL AND removed_at IS NULL AND status = 'active'`, id, ref, now)
	if err != nil {
		return dbErr("record account numbers", err)
	}
	return nil
}

// itemsWithOtherWebhook lists live items of the provider, after the id
// after, whose recorded webhook URL is not url.
func itemsWithOtherWebhook(ctx context.Context, q querier, provider, url, after string, limit int) ([]Item, error) {
	rows, err := q.Query(ctx, `SELECT `+itemColumns+` FROM items
		WHERE provider = $1 AND status IN ('active', 'login_required') AND webhook_url IS DISTINCT FROM $2 AND id > $3
		ORDER BY id LIMIT $4`, provider, url, after, limit)
	if err != nil {
		return nil, dbErr("list items to update", err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Item, error) { return scanItem(r) })
	if err != nil {
		return nil, dbErr("list items to update", err)
	}
	return items, nil
}

// setItemWebhook records the webhook URL the provider now has for a live
// item.
func setItemWebhook(ctx context.Context, tx pgx.Tx, id, url string, now time.Time) (bool, error) {
	tag, err := tx.Exec(ctx, `UPDATE items SET webhook_url = $2, updated_at = $3
		WHERE id = $1 AND status <> 'removed' AND webhook_url IS DISTINCT FROM $2`, id, url, now)
	if err != nil {
		return false, dbErr("record item webhook", err)
	}
	return tag.RowsAffected() == 1, nil
}
