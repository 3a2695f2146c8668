package events_test

import (
	"testing"

	"github.com/kluis-dev/kluis/events"
)

// TestEveryItemEventOfTheContractIsKnown: the item events the contract lists (docs/WEBHOOKS.md) are
// types Enqueue takes, with an item's id and status as their data, and a
// secret in their data is refused (issue 14 point 6).
func TestEveryItemEventOfTheContractIsKnown(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"item.created", "item.login_required", "item.repaired", "item.relink_required",
		"item.revoked", "item.removed", "item.token_rotated", "item.accounts_added"} {
		ok := events.Event{Type: typ, Data: map[string]string{"item_id": "itm_" + "abcdefghijklmnopqrstuvwxyz234567", "status": "active"}}
		if err := ok.Validate(); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
		for _, secret := range []string{"access-sandbox-4f1c2c1e-6b5a", "987650432109876", "ABC 12"} {
			bad := events.Event{Type: typ, Data: map[string]string{"item_id": secret}}
			if err := bad.Validate(); err == nil {
				t.Errorf("%s took %q in its data", typ, secret)
			}
		}
	}
}
