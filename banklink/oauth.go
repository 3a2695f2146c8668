package banklink

import (
	"context"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/vault"
)

// OAuthProvider is a provider whose users link through an OAuth 2.0
// authorization-code redirect (Stitch) rather than a Link UI that hands the
// app a public token: its link token is the authorize URL, built for the
// State banklink puts in LinkTokenRequest (bound to the link session), and
// the provider sends the user back to kluis's GET /link/callback/{provider}.
type OAuthProvider interface {
	Provider
	// PublicTokenFromCallback turns the query of the redirect back into
	// the public token ExchangePublicToken takes. A user who declined is
	// CodeAccessNotGranted; a query without a code is CodeInvalidToken.
	PublicTokenFromCallback(query url.Values) (string, error)
}

// ExpiringTokens is a provider whose access tokens expire and are renewed
// by RotateAccessToken with a single-use refresh token (Stitch: a user
// token of 15 minutes). What banklink seals is the provider's own bundle;
// a service that reveals it gets ServiceToken's answer, renewed first when
// it is near its expiry (Service.ServiceCredential).
type ExpiringTokens interface {
	// ServiceToken returns the token a service uses and when it expires;
	// never the refresh token.
	ServiceToken(token string) (string, time.Time, error)
}

// unwrapped returns the provider behind any wrapper (the circuit breaker),
// for the optional interfaces, whose methods call nothing.
func unwrapped(p Provider) Provider {
	for {
		u, ok := p.(interface{ Unwrap() Provider })
		if !ok {
			return p
		}
		p = u.Unwrap()
	}
}

// oauthProvider returns p as an OAuthProvider, if it is one.
func oauthProvider(p Provider) (OAuthProvider, bool) {
	op, ok := unwrapped(p).(OAuthProvider)
	return op, ok
}

// oauthState is the OAuth state of a link session: its id and a MAC of it
// under kluis's key, so that the callback finds the session without a
// lookup table and nobody can make a state for a session of their own
// choosing. The provider derives the PKCE verifier from it.
func (s *Service) oauthState(sessionID string) (string, error) {
	return s.oauthStateUnder(SystemKey, sessionID)
}

// sessionOfState checks a callback's state and returns its session id.
func (s *Service) sessionOfState(state string) (string, error) {
	id, _, ok := strings.Cut(state, ".")
	if !ok || !kluis.ValidID(kluis.PrefixLinkSession, id) {
		return "", errBadState()
	}
	valid, err := s.validState(id, state)
	if err != nil {
		return "", err
	}
	if !valid {
		return "", errBadState()
	}
	return id, nil
}

// OAuthSession returns the link session a callback's state names, once its
// MAC is checked (EInvalid for a state kluis did not make): the hosted
// pages use it to know whose page a callback belongs to before anything
// is taken or changed.
func (s *Service) OAuthSession(state string) (string, error) {
	return s.sessionOfState(state)
}

func errBadState() error {
	return kluis.Errorf(kluis.EInvalid, "the callback's state is not one kluis issued")
}

// AuthorizeURL is the authorize URL for this link session: where the
// hosted link page (or an app) sends the user's browser for an OAuth
// provider's step (Stitch). The session must be open (created, not past
// its deadline) and its provider an OAuthProvider; else CodeLinkSessionClosed
// or EInvalid. The URL carries no secret (the state and the PKCE
// challenge), is the same on every call for one session, and is the
// session's link_token too. The caller has already authorized access to
// the session (the user's token or the hosted page's token).
func (s *Service) AuthorizeURL(ctx context.Context, sessionID string) (string, error) {
	row, err := s.anySession(ctx, sessionID)
	if err != nil {
		return "", err
	}
	p, err := s.providers.Provider(row.Provider)
	if err != nil {
		return "", err
	}
	op, ok := oauthProvider(p)
	if !ok {
		return "", kluis.Errorf(kluis.EInvalid, "the session's provider has no authorize URL")
	}
	if row.Status != SessionCreated {
		return "", sessionClosed(row.Status)
	}
	state, err := s.oauthState(row.ID)
	if err != nil {
		return "", err
	}
	lt, err := op.CreateLinkToken(ctx, LinkTokenRequest{Products: row.Products, State: state})
	if err != nil {
		return "", providerErr("authorize url", err)
	}
	return lt.Token, nil
}

// anySession reads a session by id alone (the OAuth callback has no user
// token: the state names the session), with expiry computed.
func (s *Service) anySession(ctx context.Context, id string) (sessionRow, error) {
	if !kluis.ValidID(kluis.PrefixLinkSession, id) {
		return sessionRow{}, notFound()
	}
	var subjectID string
	if err := s.db.Pool.QueryRow(ctx, `SELECT subject_id FROM link_sessions WHERE id = $1`, id).Scan(&subjectID); err != nil {
		return sessionRow{}, dbErr("read link session", err)
	}
	row, err := getSession(ctx, s.db.Pool, id, subjectID)
	if err != nil {
		return sessionRow{}, err
	}
	if (row.Status == SessionCreated || row.Status == SessionSucceeded) && !s.now().Before(row.ExpiresAt) {
		row.Status = SessionExpired
	}
	return row, nil
}

// OAuthCallbackResult is what the OAuth callback did to the session.
type OAuthCallbackResult struct {
	SessionID string
	// Status is succeeded (PublicToken is set: the app exchanges it as any
	// other public token) or exited (the user declined at the provider).
	Status      string
	PublicToken string
}

// CompleteOAuthCallback finishes an OAuth provider's step: the provider
// sent the user back to GET /link/callback/{provider} with query. The
// state names the session (a state kluis did not issue is EInvalid); the
// session must be this provider's and open. A user who declined moves the
// session to exited; otherwise it becomes succeeded with the public token
// (kept only as its hash, as for every provider), which the answer carries
// once for the app. Both are audited under the session's user.
func (s *Service) CompleteOAuthCallback(ctx context.Context, provider string, query url.Values, requestID string) (OAuthCallbackResult, error) {
	return s.completeOAuthCallback(ctx, provider, query, requestID, false)
}

// CompleteHostedOAuthCallback is CompleteOAuthCallback for a callback the
// hosted link page has bound to the browser it sent to the provider: the
// public token is also sealed on the session, as the hosted pages' tokens
// are, so that an app that comes back by redirect reads it from
// GET /v1/link/sessions/{id}. Only then: sealed for any callback, the token
// of a session whose authorize URL was handed to someone else (a user lured
// to consent) would be readable by the session's owner.
func (s *Service) CompleteHostedOAuthCallback(ctx context.Context, provider string, query url.Values, requestID string) (OAuthCallbackResult, error) {
	return s.completeOAuthCallback(ctx, provider, query, requestID, true)
}

func (s *Service) completeOAuthCallback(ctx context.Context, provider string, query url.Values, requestID string, keep bool) (OAuthCallbackResult, error) {
	p, ok := s.providers.Lookup(provider)
	if !ok {
		return OAuthCallbackResult{}, notFound()
	}
	op, ok := oauthProvider(p)
	if !ok {
		return OAuthCallbackResult{}, notFound()
	}
	id, err := s.sessionOfState(query.Get("state"))
	if err != nil {
		return OAuthCallbackResult{}, err
	}
	row, err := s.anySession(ctx, id)
	if err != nil {
		return OAuthCallbackResult{}, err
	}
	if row.Provider != p.Name() {
		return OAuthCallbackResult{}, errBadState()
	}
	if row.Status != SessionCreated {
		return OAuthCallbackResult{}, sessionClosed(row.Status)
	}
	pub, perr := op.PublicTokenFromCallback(query)
	declined := kluis.ErrorCode(perr) == CodeAccessNotGranted
	if perr != nil && !declined {
		return OAuthCallbackResult{}, providerErr("oauth callback", perr)
	}
	res := OAuthCallbackResult{SessionID: row.ID, Status: SessionSucceeded, PublicToken: pub}
	var hash, sealed []byte
	if declined {
		res = OAuthCallbackResult{SessionID: row.ID, Status: SessionExited}
	} else if hash, err = s.publicTokenHash(pub); err != nil {
		return OAuthCallbackResult{}, err
	} else if keep {
		if sealed, err = s.sealPublicToken(row.ID, pub); err != nil {
			return OAuthCallbackResult{}, err
		}
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := vault.FenceSubject(ctx, tx, row.SubjectID); err != nil {
			return err
		}
		ok, err := markCallback(ctx, tx, row.ID, hash, sealed, declined, s.now())
		if err != nil {
			return err
		}
		if !ok {
			return sessionClosed("no longer open")
		}
		ext, err := vault.SubjectKey(ctx, tx, row.SubjectID)
		if err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, audit.User(ext, requestID), "link_session."+res.Status, row.ID, ext,
			map[string]any{"mode": row.Mode, "provider": row.Provider, "via": "oauth_callback"})
	})
	if err != nil {
		return OAuthCallbackResult{}, err
	}
	return res, nil
}

// markCallback moves an open session to succeeded with the public token's
// hash (and sealed token, if any), or to exited when the user declined.
func markCallback(ctx context.Context, tx pgx.Tx, id string, hash, sealed []byte, declined bool, now time.Time) (bool, error) {
	if !declined {
		return markSucceeded(ctx, tx, id, hash, sealed, nil, now)
	}
	from, to := sessionFrom(SessionEventExited)
	tag, err := tx.Exec(ctx, `UPDATE link_sessions SET status = $4, updated_at = $2
		WHERE id = $1 AND status = ANY($3) AND expires_at > $2`, id, now, from, to)
	if err != nil {
		return false, dbErr("mark link session exited", err)
	}
	return tag.RowsAffected() == 1, nil
}
