package main

import (
	"context"
	"sync"
	"time"

	"github.com/kluis-dev/kluis/vault"
)

// providerCheckTTL is how long a key-provider readiness answer is reused:
// /readyz is polled often, and KMS bills and rate-limits every DescribeKey.
const providerCheckTTL = 5 * time.Second

// providerCheck asks the key provider to describe its root key, at most once
// per providerCheckTTL.
type providerCheck struct {
	keys vault.KeyProvider
	mu   sync.Mutex
	at   time.Time
	err  error
}

func newProviderCheck(keys vault.KeyProvider) *providerCheck { return &providerCheck{keys: keys} }

func (p *providerCheck) check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.at.IsZero() && time.Since(p.at) < providerCheckTTL {
		return p.err
	}
	_, p.err = p.keys.Describe(ctx)
	p.at = time.Now()
	return p.err
}
