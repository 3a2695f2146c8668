package banklink

// The item and link-session state machines as pure functions of (state,
// event) → (state, allowed), in the shape of verification.Next. The store
// never writes a status of its own: each conditional UPDATE moves a row
// only from the states the machine allows for its event (itemFrom,
// sessionFrom) to the state the machine names, so the SQL and the table
// tests cannot disagree.

// ItemEvent names what happened to an item.
type ItemEvent string

// The item events.
const (
	// ItemEventLoginBroke: the provider says the user's login needs repair
	// (ITEM_LOGIN_REQUIRED, or found so while completing the item).
	ItemEventLoginBroke ItemEvent = "login_broke"
	// ItemEventLoginRepaired: the login works again (LOGIN_REPAIRED, or an
	// update-mode exchange).
	ItemEventLoginRepaired ItemEvent = "login_repaired"
	// ItemEventTokenLost: kluis no longer holds a live token (a rotation whose
	// answer never arrived): the user must link again.
	ItemEventTokenLost ItemEvent = "token_lost"
	// ItemEventReauthorized: the user authorized the item again through the
	// provider's OAuth consent (Stitch's update mode) and a new token
	// replaced the lost or broken one.
	ItemEventReauthorized ItemEvent = "reauthorized"
	// ItemEventConsentRevoked: the user withdrew consent at the provider.
	ItemEventConsentRevoked ItemEvent = "consent_revoked"
	// ItemEventUnlinked: the user (or an erasure) removed the item.
	ItemEventUnlinked ItemEvent = "unlinked"
)

// ItemStatuses are every item status, for the machine's tables.
var ItemStatuses = []string{ItemActive, ItemLoginRequired, ItemRelinkRequired, ItemRevoked, ItemRemoved}

// ItemEvents are every item event.
var ItemEvents = []ItemEvent{ItemEventLoginBroke, ItemEventLoginRepaired, ItemEventTokenLost, ItemEventReauthorized,
	ItemEventConsentRevoked, ItemEventUnlinked}

// NextItem is the item machine: active ⇄ login_required; active or
// login_required → relink_required when the token is lost; login_required
// or relink_required → active when re-authorization brings a new token;
// any live status → revoked when consent is withdrawn (but revoked stays
// revoked); any status but removed → removed. ok is false for an event the status does
// not take (the same event again included: a repeated webhook changes
// nothing). It is a pure function.
func NextItem(status string, ev ItemEvent) (next string, ok bool) {
	switch ev {
	case ItemEventLoginBroke:
		if status == ItemActive {
			return ItemLoginRequired, true
		}
	case ItemEventLoginRepaired:
		if status == ItemLoginRequired {
			return ItemActive, true
		}
	case ItemEventTokenLost:
		if status == ItemActive || status == ItemLoginRequired {
			return ItemRelinkRequired, true
		}
	case ItemEventReauthorized:
		if status == ItemLoginRequired || status == ItemRelinkRequired {
			return ItemActive, true
		}
	case ItemEventConsentRevoked:
		if status == ItemActive || status == ItemLoginRequired || status == ItemRelinkRequired {
			return ItemRevoked, true
		}
	case ItemEventUnlinked:
		if status != ItemRemoved && knownItemStatus(status) {
			return ItemRemoved, true
		}
	}
	return status, false
}

func knownItemStatus(status string) bool {
	for _, s := range ItemStatuses {
		if s == status {
			return true
		}
	}
	return false
}

// itemFrom lists the statuses ev moves an item from and the one it moves it
// to: the WHERE and SET of the event's conditional UPDATE.
func itemFrom(ev ItemEvent) (from []string, to string) {
	for _, s := range ItemStatuses {
		if next, ok := NextItem(s, ev); ok {
			from, to = append(from, s), next
		}
	}
	return from, to
}

// SessionEvent names what happened to a link session.
type SessionEvent string

// The link-session events.
const (
	// SessionEventTokenIssued: the user finished Link and a public token exists
	// (kept as a keyed hash), or one was presented to exchange.
	SessionEventTokenIssued SessionEvent = "token_issued"
	// SessionEventTokenRefused: the provider refused the public token at
	// exchange: the session is open for another.
	SessionEventTokenRefused SessionEvent = "token_refused"
	// SessionEventExchanged: the public token was exchanged for an item.
	SessionEventExchanged SessionEvent = "exchanged"
	// SessionEventDeadline: the session's deadline passed.
	SessionEventDeadline SessionEvent = "deadline"
	// SessionEventExited: the user left Link (or the provider's consent
	// step) without finishing.
	SessionEventExited SessionEvent = "user_exited"
)

// SessionStatuses are every link-session status.
var SessionStatuses = []string{SessionCreated, SessionSucceeded, SessionExchanged, SessionExpired, SessionExited}

// SessionEvents are every link-session event.
var SessionEvents = []SessionEvent{SessionEventTokenIssued, SessionEventTokenRefused, SessionEventExchanged, SessionEventDeadline, SessionEventExited}

// NextSession is the link-session machine: created → succeeded when a
// public token is issued, and back to created when the provider refuses
// it; succeeded → exchanged; created or succeeded → expired at the
// deadline; created → exited when the user leaves. Exchanged, expired and
// exited are final. ok is false for an event the status does not take. It
// is a pure function.
func NextSession(status string, ev SessionEvent) (next string, ok bool) {
	switch ev {
	case SessionEventTokenIssued, SessionEventExited:
		if status == SessionCreated {
			if ev == SessionEventExited {
				return SessionExited, true
			}
			return SessionSucceeded, true
		}
	case SessionEventTokenRefused:
		if status == SessionSucceeded {
			return SessionCreated, true
		}
	case SessionEventExchanged:
		if status == SessionSucceeded {
			return SessionExchanged, true
		}
	case SessionEventDeadline:
		if status == SessionCreated || status == SessionSucceeded {
			return SessionExpired, true
		}
	}
	return status, false
}

// sessionFrom lists the statuses ev moves a session from and the one it
// moves it to, for the event's conditional UPDATE.
func sessionFrom(ev SessionEvent) (from []string, to string) {
	for _, s := range SessionStatuses {
		if next, ok := NextSession(s, ev); ok {
			from, to = append(from, s), next
		}
	}
	return from, to
}
