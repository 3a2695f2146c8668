package breaker

import "github.com/kluis-dev/kluis/banklink"

// Unwrap returns the provider behind the breaker, for banklink's optional
// interfaces (OAuthProvider, ExpiringTokens) whose methods call nothing
// and so need no breaker.
func (p *Provider) Unwrap() banklink.Provider { return p.next }
