package stitch

import (
	"context"
	"net/url"
	"sync"
	"time"
)

// clientTokenMargin: a client token this close to its expiry is renewed
// before use.
const clientTokenMargin = time.Minute

// clientTokenCache holds one client token per scope. Client tokens (client
// credentials, an hour by default) have no refresh token: a new one is
// asked for when the old one nears its end. Concurrent callers share one
// request.
type clientTokenCache struct {
	mu     sync.Mutex
	tokens map[string]clientToken
}

type clientToken struct {
	token   string
	expires time.Time
}

// clientToken returns a client token with scope, from the cache or the
// token endpoint (grant client_credentials, client_secret_post).
func (p *Provider) clientToken(ctx context.Context, scope string) (string, error) {
	c := &p.clientTokens
	c.mu.Lock()
	defer c.mu.Unlock()
	now := p.clock.Now()
	if t, ok := c.tokens[scope]; ok && now.Add(clientTokenMargin).Before(t.expires) {
		return t.token, nil
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope},
		"audience": {p.authURL + "/connect/token"}}
	var ans tokenAnswer
	if err := p.postForm(ctx, "client token", p.authURL+"/connect/token", form, &ans); err != nil {
		return "", err
	}
	if ans.AccessToken == "" || ans.ExpiresIn <= 0 {
		return "", providerError("provider_error", "stitch client token: the answer lacks a token or an expiry", nil)
	}
	if c.tokens == nil {
		c.tokens = map[string]clientToken{}
	}
	c.tokens[scope] = clientToken{token: ans.AccessToken, expires: now.Add(time.Duration(ans.ExpiresIn) * time.Second)}
	return ans.AccessToken, nil
}

// forgetClientToken drops a client token Stitch refused, so that the next
// call asks for a new one.
func (p *Provider) forgetClientToken(scope string) {
	p.clientTokens.mu.Lock()
	delete(p.clientTokens.tokens, scope)
	p.clientTokens.mu.Unlock()
}
