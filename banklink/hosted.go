package banklink

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"net/url"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/vault"
)

// What the hosted link page (docs/HOSTED.md) asks of bank linking: the
// session it works on, the sandbox's login and account choice, a provider
// UI's public token, and the public token again for an app that comes back
// by redirect. The page acts for the session's own user (Actor).

// maxRedirectURILen bounds redirect_uri (the column's check).
const maxRedirectURILen = 2048

// maxSelectedAccounts bounds how many accounts a user may pick.
const maxSelectedAccounts = 50

// checkRedirectURI accepts "" or an absolute http(s) URL with a host and no
// userinfo or fragment.
func checkRedirectURI(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || len(raw) > maxRedirectURILen || (u.Scheme != "https" && u.Scheme != "http") ||
		u.Host == "" || u.User != nil || u.Fragment != "" {
		return kluis.Errorf(kluis.EInvalid, "redirect_uri: must be an absolute http(s) URL of the app, without userinfo or fragment")
	}
	return nil
}

// AccountPreviewer is implemented by providers whose link step is kluis's
// own page (the sandbox): the accounts a public token will bring, before
// the exchange, so the user can pick them. Masks may be empty.
type AccountPreviewer interface {
	PreviewAccounts(ctx context.Context, publicToken string) ([]ProviderAccount, error)
}

// LinkSession returns the subject's session (GET /v1/link/sessions/{id}),
// with expiry computed and, while it has succeeded and is not exchanged,
// its public token.
func (s *Service) LinkSession(ctx context.Context, sub, id string) (LinkSession, error) {
	row, _, err := s.openSession(ctx, s.db.Pool, sub, id)
	if err != nil {
		return LinkSession{}, err
	}
	out := LinkSession{ID: row.ID, Mode: row.Mode, ItemID: row.ItemID, Provider: row.Provider, Status: row.Status,
		ExpiresAt: row.ExpiresAt, SubjectID: row.SubjectID, RedirectURI: row.RedirectURI}
	if row.Status == SessionSucceeded && row.PublicTokenSealed != nil {
		if out.PublicToken, err = s.openPublicToken(row.ID, row.PublicTokenSealed); err != nil {
			return LinkSession{}, err
		}
	}
	return out, nil
}

// HostedLogin is the sandbox's login step on the hosted page: it checks the
// login at the institution (CodeInvalidCredentials for a bad one), keeps
// the public token sealed on the still-open session (the app gets it once
// the user has picked accounts: HostedFinish), and returns the accounts the
// user may pick.
func (s *Service) HostedLogin(ctx context.Context, actor audit.Actor, sessionID string, login SandboxLink) ([]ProviderAccount, error) {
	row, _, err := s.openSession(ctx, s.db.Pool, actor.Name, sessionID)
	if err != nil {
		return nil, err
	}
	if row.Status != SessionCreated {
		return nil, sessionClosed(row.Status)
	}
	if row.Mode == ModeUpdate {
		// Update mode repairs a login: nothing to pick, done at once.
		_, err := s.SandboxPublicToken(ctx, actor, sessionID, login)
		return nil, err
	}
	linker, err := s.sandboxLinker(row.Provider)
	if err != nil {
		return nil, err
	}
	login.AccessToken = ""
	tok, err := linker.CompleteLink(ctx, login)
	if err != nil {
		return nil, providerErr("complete sandbox link", err)
	}
	var accts []ProviderAccount
	if pv, ok := linker.(AccountPreviewer); ok {
		if accts, err = pv.PreviewAccounts(ctx, tok); err != nil {
			return nil, providerErr("preview accounts", err)
		}
	}
	sealed, err := s.sealPublicToken(row.ID, tok)
	if err != nil {
		return nil, err
	}
	tag, err := s.db.Pool.Exec(ctx, `UPDATE link_sessions SET public_token_sealed = $2, updated_at = $3
		WHERE id = $1 AND status = 'created' AND expires_at > $3`, row.ID, sealed, s.now())
	if err != nil {
		return nil, dbErr("keep hosted public token", err)
	}
	if tag.RowsAffected() == 0 {
		return nil, sessionClosed("no longer open")
	}
	return accts, nil
}

// HostedAccounts returns the accounts the session's pending public token
// (HostedLogin) will bring, for the page that lets the user pick them.
func (s *Service) HostedAccounts(ctx context.Context, actor audit.Actor, sessionID string) ([]ProviderAccount, error) {
	row, tok, err := s.pendingToken(ctx, actor, sessionID)
	if err != nil {
		return nil, err
	}
	linker, err := s.sandboxLinker(row.Provider)
	if err != nil {
		return nil, err
	}
	pv, ok := linker.(AccountPreviewer)
	if !ok {
		return nil, nil
	}
	accts, err := pv.PreviewAccounts(ctx, tok)
	if err != nil {
		return nil, providerErr("preview accounts", err)
	}
	return accts, nil
}

// HostedFinish finishes the sandbox's hosted link with the accounts the
// user picked (names HostedLogin returned; at least one): the session
// succeeds with its public token, which is returned for the page to hand
// to the app. An update-mode session that already succeeded answers its
// token again.
func (s *Service) HostedFinish(ctx context.Context, actor audit.Actor, sessionID string, selected []string) (string, error) {
	row, tok, err := s.pendingToken(ctx, actor, sessionID)
	if err != nil {
		return "", err
	}
	if len(selected) == 0 || len(selected) > maxSelectedAccounts {
		return "", kluis.Errorf(kluis.EInvalid, "accounts: pick at least one account")
	}
	if err := s.succeed(ctx, actor, row, tok, dedupe(selected)); err != nil {
		return "", err
	}
	return tok, nil
}

// HostedProviderToken records the public token a provider's own Link UI
// (Plaid Link on the hosted page) gave: the session succeeds with it. The
// provider checks the token at the exchange.
func (s *Service) HostedProviderToken(ctx context.Context, actor audit.Actor, sessionID, publicToken string) error {
	if publicToken == "" || len(publicToken) > maxPublicTokenLen {
		return kluis.Errorf(kluis.EInvalid, "public_token is required")
	}
	row, _, err := s.openSession(ctx, s.db.Pool, actor.Name, sessionID)
	if err != nil {
		return err
	}
	if row.Status != SessionCreated {
		return sessionClosed(row.Status)
	}
	return s.succeed(ctx, actor, row, publicToken, nil)
}

// HostedExit records that the user left the hosted page: created → exited.
func (s *Service) HostedExit(ctx context.Context, actor audit.Actor, sessionID string) error {
	row, _, err := s.openSession(ctx, s.db.Pool, actor.Name, sessionID)
	if err != nil {
		return err
	}
	if row.Status != SessionCreated {
		return nil
	}
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		from, to := sessionFrom(SessionEventExited)
		tag, err := tx.Exec(ctx, `UPDATE link_sessions SET status = $4, public_token_sealed = NULL, updated_at = $2
			WHERE id = $1 AND status = ANY($3)`, row.ID, s.now(), from, to)
		if err != nil {
			return dbErr("exit link session", err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		return s.appendAudit(ctx, tx, actor, "link_session.exited", row.ID, actor.Name, nil)
	})
}

// pendingToken is the session's public token that HostedLogin kept, or, for
// a session that already succeeded through the hosted page, its token.
func (s *Service) pendingToken(ctx context.Context, actor audit.Actor, sessionID string) (sessionRow, string, error) {
	row, _, err := s.openSession(ctx, s.db.Pool, actor.Name, sessionID)
	if err != nil {
		return sessionRow{}, "", err
	}
	if row.Status != SessionCreated || row.PublicTokenSealed == nil {
		return sessionRow{}, "", sessionClosed(row.Status)
	}
	tok, err := s.openPublicToken(row.ID, row.PublicTokenSealed)
	return row, tok, err
}

// selectAccounts keeps the accounts whose names the user picked (all of
// them when the user picked none: a session not linked on the hosted page).
func selectAccounts(accts []ProviderAccount, names []string) []ProviderAccount {
	if names == nil {
		return accts
	}
	out := make([]ProviderAccount, 0, len(accts))
	for _, a := range accts {
		if slices.Contains(names, a.Name) {
			out = append(out, a)
		}
	}
	return out
}

// publicTokenKey is the AES-256 key that seals one session's public token:
// an HMAC under the named system key (SystemKey; SystemKeyHeld for what an
// earlier release sealed) of the session id, so a sealed token moved to
// another session does not open, and the key is never stored.
func (s *Service) publicTokenKey(name, sessionID string) (cipher.AEAD, error) {
	key, err := s.mac(name, "public-token-seal", []byte(sessionID))
	if err != nil {
		return nil, err
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealPublicToken seals tok for the session: nonce and AES-256-GCM
// ciphertext, the session id as additional data.
func (s *Service) sealPublicToken(sessionID, tok string) ([]byte, error) {
	gcm, err := s.publicTokenKey(SystemKey, sessionID)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	_, _ = rand.Read(nonce)
	return gcm.Seal(nonce, nonce, []byte(tok), []byte(sessionID)), nil
}

// openPublicToken opens what sealPublicToken sealed (or, acceptHeld, what
// an earlier release sealed under SystemKeyHeld); anything else is an
// internal error (integrity).
func (s *Service) openPublicToken(sessionID string, sealed []byte) (string, error) {
	plain, err := s.openPublicTokenUnder(SystemKey, sessionID, sealed)
	if err != nil && acceptHeld && kluis.ErrorCode(err) == vault.EIntegrity {
		plain, err = s.openPublicTokenUnder(SystemKeyHeld, sessionID, sealed)
	}
	return plain, err
}

func (s *Service) openPublicTokenUnder(key, sessionID string, sealed []byte) (string, error) {
	gcm, err := s.publicTokenKey(key, sessionID)
	if err != nil {
		return "", err
	}
	if len(sealed) < gcm.NonceSize() {
		return "", kluis.Errorf(kluis.EInternal, "internal error")
	}
	plain, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], []byte(sessionID))
	if err != nil {
		return "", kluis.Wrap(vault.EIntegrity, "internal error", errors.New("banklink: a sealed public token does not open under its session"))
	}
	return string(plain), nil
}

// InstitutionLister is implemented by providers whose institution choice is
// kluis's own hosted step (the sandbox); a provider with its own UI (Plaid
// Link) lists institutions there instead.
type InstitutionLister interface {
	Institutions() []Institution
}

// HostedInstitutions lists the institutions of provider whose names contain
// query (case-insensitively; all for ""), for the hosted page's search; nil
// when the provider chooses institutions in its own UI.
func (s *Service) HostedInstitutions(provider, query string) []Institution {
	p, ok := s.providers.Lookup(provider)
	if !ok {
		return nil
	}
	l, ok := p.(InstitutionLister)
	if !ok {
		return nil
	}
	q := strings.ToLower(strings.TrimSpace(query))
	var out []Institution
	for _, in := range l.Institutions() {
		if q == "" || strings.Contains(strings.ToLower(in.Name), q) {
			out = append(out, in)
		}
	}
	return out
}

// HostedLinkToken asks the session's provider for a link token for the
// hosted page's provider step (Plaid Link runs in the page with it): the
// token CreateLinkSession returned went to the app and was not kept.
func (s *Service) HostedLinkToken(ctx context.Context, actor audit.Actor, sessionID string) (string, error) {
	row, _, err := s.openSession(ctx, s.db.Pool, actor.Name, sessionID)
	if err != nil {
		return "", err
	}
	if row.Status != SessionCreated || row.Mode != ModeNew {
		return "", sessionClosed(row.Status)
	}
	p, err := s.providers.Provider(row.Provider)
	if err != nil {
		return "", err
	}
	req := LinkTokenRequest{Products: row.Products, Platform: PlatformWeb, WebhookURL: s.webhookURL(p.Name())}
	if req.ClientUserID, err = s.clientUserID(row.SubjectID); err != nil {
		return "", err
	}
	lt, err := p.CreateLinkToken(ctx, req)
	if err != nil {
		return "", providerErr("create link token", err)
	}
	return lt.Token, nil
}
