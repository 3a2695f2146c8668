package banklink

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/vault"
)

// Refreshing tokens that expire (ExpiringTokens: Stitch's 15-minute user
// tokens) when a service reveals them.
const (
	// RefreshMargin: a token this close to its expiry is renewed before a
	// service gets it, so that what it gets lasts for its call.
	RefreshMargin = 2 * time.Minute
	// refreshLease bounds the token lease a refresh holds: short, so that
	// an instance that dies holding it delays the item's next refresh by
	// a minute, not by the rotation job's ten. Each provider call under it
	// is bounded at a third of it (callTimeout).
	refreshLease = time.Minute
	// refreshPoll is how often a reveal looks whether another instance's
	// refresh has finished.
	refreshPoll = 20 * time.Millisecond
)

// CodeItemRelinkRequired: kluis lost the item's provider token (a refresh
// whose answer was lost, a crash between the answer and the commit): the
// user must link again. A reveal of its credential answers it (409).
const CodeItemRelinkRequired = "item_relink_required"

// ServiceSecret is what a service revealing an item's access token gets.
type ServiceSecret struct {
	// Secret is the JSON the reveal answers ({"access_token", "provider"}
	// and, for a token that expires, "expires_at"); the caller clears it.
	Secret []byte
	// ExpiresAt is the token's expiry; zero for tokens that do not expire.
	ExpiresAt time.Time
}

// sealedToken is the sealed form of an item's access token.
type sealedToken struct {
	AccessToken string `json:"access_token"`
	Provider    string `json:"provider"`
}

// ServiceCredential turns an opened bank_access_token credential into what
// a service gets. For most providers that is the sealed secret as it is.
// For a provider whose tokens expire (ExpiringTokens) it is the usable
// token alone, never the refresh token, with its expires_at; a token within
// RefreshMargin of its expiry is renewed first, under the item's token
// lease, so that however many kluis instances reveal at once one of them
// spends the refresh token and the others wait for its committed result.
// A renewal that fails while the current token still has time left gives
// the current token; past its expiry the error stands (503, or 409
// CodeItemRelinkRequired once kluis knows it lost the token). An item of a
// provider that is not configured is 503: kluis cannot tell which part of
// its sealed secret a service may have. The caller zeroes cred.
func (s *Service) ServiceCredential(ctx context.Context, cred vault.Credential) (ServiceSecret, error) {
	plain := ServiceSecret{Secret: append([]byte(nil), cred.Secret...)}
	if cred.Kind != KindAccessToken || cred.Owner.Type != vault.OwnerItem {
		return plain, nil
	}
	var sec sealedToken
	if err := json.Unmarshal(cred.Secret, &sec); err != nil || sec.Provider == "" {
		return plain, nil
	}
	p, err := s.providers.Provider(sec.Provider)
	if err != nil {
		// Only the provider's adapter can tell the usable token from what
		// must never leave (a Stitch bundle holds its refresh token): with
		// the provider no longer configured, refuse (503) rather than hand
		// out the sealed secret whole.
		clear(plain.Secret)
		return ServiceSecret{}, err
	}
	et, ok := unwrapped(p).(ExpiringTokens)
	if !ok {
		return plain, nil
	}
	clear(plain.Secret)
	tok, exp, err := et.ServiceToken(sec.AccessToken)
	if err != nil {
		return ServiceSecret{}, err
	}
	if exp.Sub(s.now()) <= RefreshMargin {
		if tok, exp, err = s.refreshForReveal(ctx, cred.Owner.ID, tok, exp); err != nil {
			return ServiceSecret{}, err
		}
	}
	out, err := json.Marshal(struct {
		AccessToken string    `json:"access_token"`
		Provider    string    `json:"provider"`
		ExpiresAt   time.Time `json:"expires_at"`
	}{tok, sec.Provider, exp.UTC()})
	if err != nil {
		return ServiceSecret{}, err
	}
	return ServiceSecret{Secret: out, ExpiresAt: exp.UTC()}, nil
}

// expiring reports whether provider's tokens expire (and are renewed by
// rotation).
func (s *Service) expiring(provider string) bool {
	_, ok := s.expiringTokens(provider)
	return ok
}

func (s *Service) expiringTokens(provider string) (ExpiringTokens, bool) {
	p, ok := s.providers.Lookup(provider)
	if !ok {
		return nil, false
	}
	et, ok := unwrapped(p).(ExpiringTokens)
	return et, ok
}

// refreshForReveal renews the item's token, or waits for the instance that
// is renewing it, and returns the token a service gets. cur and curExp are
// the token the caller holds, given when the renewal fails while it still
// has time left.
func (s *Service) refreshForReveal(ctx context.Context, itemID, cur string, curExp time.Time) (string, time.Time, error) {
	err := s.RefreshToken(ctx, itemID)
	if err == nil {
		return s.serviceToken(ctx, itemID)
	}
	if kluis.ErrorCode(err) != CodeItemRelinkRequired && s.now().Before(curExp) {
		s.log.Warn("token refresh failed; the current token, still valid, is revealed", "item_id", itemID,
			"code", kluis.ErrorCode(err), "cause", err.Error())
		return cur, curExp, nil
	}
	return "", time.Time{}, err
}

// serviceToken opens the item's current token and reads it as a service
// gets it.
func (s *Service) serviceToken(ctx context.Context, itemID string) (string, time.Time, error) {
	it, err := anyItem(ctx, s.db.Pool, itemID)
	if err != nil {
		return "", time.Time{}, err
	}
	et, ok := s.expiringTokens(it.Provider)
	if !ok {
		return "", time.Time{}, kluis.Wrap(kluis.EInternal, "internal error", errors.New("banklink: the item's provider changed"))
	}
	bundle, err := s.accessToken(ctx, it.ID, it.CredentialRef)
	if err != nil {
		return "", time.Time{}, err
	}
	return et.ServiceToken(bundle)
}

// RefreshToken renews the item's expiring token if it is within
// RefreshMargin of its expiry. It takes the item's token lease (a
// conditional UPDATE, as rotation does): the holder spends the refresh
// token, seals the new pair as the credential's pending version and
// commits it, and only then makes it current; no one uses the new pair
// before that commit. Others poll until the lease is gone and the token is
// fresh, then return. A refresh token the provider no longer accepts, or
// an answer lost after which it is spent, makes the item relink_required
// (with an item.relink_required event) and returns CodeItemRelinkRequired;
// an item already in that state returns it at once.
func (s *Service) RefreshToken(ctx context.Context, itemID string) error {
	for {
		it, err := anyItem(ctx, s.db.Pool, itemID)
		if err != nil {
			return err
		}
		if err := refreshable(it); err != nil {
			return err
		}
		fresh, err := s.tokenFresh(ctx, it)
		if err != nil || fresh {
			return err
		}
		until := s.now().Add(refreshLease)
		resumed, claimed, err := claimToken(ctx, s.db.Pool, it.ID, s.now(), until, nil)
		if err != nil {
			return err
		}
		if claimed {
			return s.refreshClaimed(ctx, it.ID, until, resumed)
		}
		select {
		case <-ctx.Done():
			return kluis.Unavailable("bank token refresh", ctx.Err())
		case <-time.After(refreshPoll):
		}
	}
}

// refreshable refuses items whose token cannot be renewed.
func refreshable(it Item) error {
	switch it.Status {
	case ItemActive, ItemLoginRequired:
		return nil
	case ItemRelinkRequired:
		return kluis.Errorf(CodeItemRelinkRequired, "kluis lost the item's token at the provider; the user must link the account again")
	}
	return kluis.Errorf(kluis.EConflict, "the item is %s", it.Status)
}

// tokenFresh reports whether the item's current token has more than
// RefreshMargin left (another instance renewed it meanwhile).
func (s *Service) tokenFresh(ctx context.Context, it Item) (bool, error) {
	et, ok := s.expiringTokens(it.Provider)
	if !ok {
		return true, nil
	}
	bundle, err := s.accessToken(ctx, it.ID, it.CredentialRef)
	if err != nil {
		return false, err
	}
	_, exp, err := et.ServiceToken(bundle)
	if err != nil {
		return false, err
	}
	return exp.Sub(s.now()) > RefreshMargin, nil
}

// refreshClaimed renews the item's token under the lease until. Whatever
// happens, the lease does not outlive the call (rotateClaimed's rules: an
// outcome not known leaves it expired, for the next caller to resume).
func (s *Service) refreshClaimed(ctx context.Context, id string, until time.Time, resumed bool) error {
	defer s.expireLease(ctx, id, until)
	it, err := anyItem(ctx, s.db.Pool, id)
	if err != nil {
		return err
	}
	if fresh, err := s.tokenFresh(ctx, it); err != nil || fresh {
		// Renewed by another instance between our read and our claim.
		s.releaseLease(ctx, id, until)
		return err
	}
	out, err := s.rotateClaimed(ctx, id, until, resumed)
	if err != nil {
		return err
	}
	if out == relink || out == skipped {
		if it, rerr := anyItem(ctx, s.db.Pool, id); rerr == nil && it.Status == ItemRelinkRequired {
			return refreshable(it)
		}
	}
	return nil
}
