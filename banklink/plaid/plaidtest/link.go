package plaidtest

import (
	"encoding/json"
	"net/http"
)

// checkLinkRequest records a /link/token/create request and refuses what
// Plaid refuses beyond the spec's shape: the balance product (the spec's
// Products enum lists it, but /link/token/create rejects it) and an
// android_package_name sent together with a redirect_uri. It runs under
// s.mu.
func (s *Server) checkLinkRequest(req map[string]any) (answer, bool) {
	s.linkRequests = append(s.linkRequests, req)
	products, _ := req["products"].([]any)
	for _, p := range products {
		if p == "balance" {
			return plaidError(http.StatusBadRequest, "INVALID_REQUEST", "INVALID_PRODUCT", "balance is not a valid product for /link/token/create"), true
		}
	}
	if a, refused := checkAuthOptions(req); refused {
		return a, true
	}
	if str(req, "android_package_name") != "" && str(req, "redirect_uri") != "" {
		return plaidError(http.StatusBadRequest, "INVALID_REQUEST", "INVALID_FIELD", "android_package_name and redirect_uri cannot both be set"), true
	}
	return answer{}, false
}

// LinkTokenRequests returns the bodies of the /link/token/create requests
// the server took, oldest first, as decoded JSON (a copy).
func (s *Server) LinkTokenRequests() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]map[string]any, 0, len(s.linkRequests))
	for _, r := range s.linkRequests {
		raw, _ := json.Marshal(r)
		var c map[string]any
		_ = json.Unmarshal(raw, &c)
		out = append(out, c)
	}
	return out
}

// itemWebhookUpdate is /item/webhook/update: the item's webhook becomes
// the one given (a login that needs repair does not stop it, as at Plaid).
func (s *Server) itemWebhookUpdate(req map[string]any) answer {
	id, found := s.accessTokens[str(req, "access_token")]
	if !found {
		return faultFor("INVALID_ACCESS_TOKEN").answer(EndpointItemWebhookUpdate, nil)
	}
	it := s.items[id]
	it.Webhook = str(req, "webhook")
	return ok(map[string]any{"item": itemJSON(it, s.institutions[it.InstitutionID])})
}
