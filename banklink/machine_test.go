package banklink

import (
	"slices"
	"testing"
)

// Every item status × every event: the allowed moves are listed, and every
// pair not listed is refused and leaves the status as it was.
func TestTheItemMachineTakesEveryEventOnlyWhereItIsAllowed(t *testing.T) {
	allowed := map[string]map[ItemEvent]string{
		ItemActive: {
			ItemEventLoginBroke: ItemLoginRequired, ItemEventTokenLost: ItemRelinkRequired,
			ItemEventConsentRevoked: ItemRevoked, ItemEventUnlinked: ItemRemoved,
		},
		ItemLoginRequired: {
			ItemEventLoginRepaired: ItemActive, ItemEventTokenLost: ItemRelinkRequired, ItemEventReauthorized: ItemActive,
			ItemEventConsentRevoked: ItemRevoked, ItemEventUnlinked: ItemRemoved,
		},
		ItemRelinkRequired: {ItemEventReauthorized: ItemActive, ItemEventConsentRevoked: ItemRevoked, ItemEventUnlinked: ItemRemoved},
		ItemRevoked:        {ItemEventUnlinked: ItemRemoved},
		ItemRemoved:        {},
	}
	if len(allowed) != len(ItemStatuses) {
		t.Fatalf("the table names %d statuses, the machine %d", len(allowed), len(ItemStatuses))
	}
	for _, st := range ItemStatuses {
		for _, ev := range ItemEvents {
			want, ok := allowed[st][ev]
			if !ok {
				want = st
			}
			t.Run(st+"/"+string(ev), func(t *testing.T) {
				got, gotOK := NextItem(st, ev)
				if got != want || gotOK != ok {
					t.Fatalf("NextItem(%s, %s) = %s, %v; want %s, %v", st, ev, got, gotOK, want, ok)
				}
			})
		}
	}
	if got, ok := NextItem("bogus", ItemEventUnlinked); ok || got != "bogus" {
		t.Fatalf("an unknown status moved: %s, %v", got, ok)
	}
	if got, ok := NextItem(ItemActive, "bogus"); ok || got != ItemActive {
		t.Fatalf("an unknown event moved an item: %s, %v", got, ok)
	}
}

// Every link-session status × every event.
func TestTheLinkSessionMachineTakesEveryEventOnlyWhereItIsAllowed(t *testing.T) {
	allowed := map[string]map[SessionEvent]string{
		SessionCreated: {
			SessionEventTokenIssued: SessionSucceeded, SessionEventDeadline: SessionExpired, SessionEventExited: SessionExited,
		},
		SessionSucceeded: {
			SessionEventTokenRefused: SessionCreated, SessionEventExchanged: SessionExchanged, SessionEventDeadline: SessionExpired,
		},
		SessionExchanged: {},
		SessionExpired:   {},
		SessionExited:    {},
	}
	if len(allowed) != len(SessionStatuses) {
		t.Fatalf("the table names %d statuses, the machine %d", len(allowed), len(SessionStatuses))
	}
	for _, st := range SessionStatuses {
		for _, ev := range SessionEvents {
			want, ok := allowed[st][ev]
			if !ok {
				want = st
			}
			t.Run(st+"/"+string(ev), func(t *testing.T) {
				got, gotOK := NextSession(st, ev)
				if got != want || gotOK != ok {
					t.Fatalf("NextSession(%s, %s) = %s, %v; want %s, %v", st, ev, got, gotOK, want, ok)
				}
			})
		}
	}
	if got, ok := NextSession(SessionCreated, "bogus"); ok || got != SessionCreated {
		t.Fatalf("an unknown event moved a session: %s, %v", got, ok)
	}
}

// The store's conditional updates take their WHERE and SET from the
// machine: each event has one target, and the source lists are the ones
// the updates always had.
func TestTheConditionalUpdatesMoveFromTheMachinesSources(t *testing.T) {
	for _, tc := range []struct {
		ev   ItemEvent
		from []string
		to   string
	}{
		{ItemEventLoginBroke, []string{ItemActive}, ItemLoginRequired},
		{ItemEventLoginRepaired, []string{ItemLoginRequired}, ItemActive},
		{ItemEventTokenLost, []string{ItemActive, ItemLoginRequired}, ItemRelinkRequired},
		{ItemEventReauthorized, []string{ItemLoginRequired, ItemRelinkRequired}, ItemActive},
		{ItemEventConsentRevoked, []string{ItemActive, ItemLoginRequired, ItemRelinkRequired}, ItemRevoked},
		{ItemEventUnlinked, []string{ItemActive, ItemLoginRequired, ItemRelinkRequired, ItemRevoked}, ItemRemoved},
	} {
		from, to := itemFrom(tc.ev)
		if !slices.Equal(from, tc.from) || to != tc.to {
			t.Errorf("itemFrom(%s) = %v → %s; want %v → %s", tc.ev, from, to, tc.from, tc.to)
		}
	}
	for _, tc := range []struct {
		ev   SessionEvent
		from []string
		to   string
	}{
		{SessionEventTokenIssued, []string{SessionCreated}, SessionSucceeded},
		{SessionEventTokenRefused, []string{SessionSucceeded}, SessionCreated},
		{SessionEventExchanged, []string{SessionSucceeded}, SessionExchanged},
		{SessionEventDeadline, []string{SessionCreated, SessionSucceeded}, SessionExpired},
		{SessionEventExited, []string{SessionCreated}, SessionExited},
	} {
		from, to := sessionFrom(tc.ev)
		if !slices.Equal(from, tc.from) || to != tc.to {
			t.Errorf("sessionFrom(%s) = %v → %s; want %v → %s", tc.ev, from, to, tc.from, tc.to)
		}
	}
}
