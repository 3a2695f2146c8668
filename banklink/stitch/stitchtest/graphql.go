package stitchtest

import (
	"encoding/json"
	"net/http"
	"strings"
)

// gqlRequest is a GraphQL request; the server dispatches on the operation
// name and checks that the query asks for the operation's root field.
type gqlRequest struct {
	Query         string         `json:"query"`
	Variables     map[string]any `json:"variables"`
	OperationName string         `json:"operationName"`
}

func (s *Server) graphql(w http.ResponseWriter, r *http.Request) {
	var req gqlRequest
	if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req) != nil {
		gqlErr(w, http.StatusBadRequest, "BAD_REQUEST")
		return
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		gqlErr(w, http.StatusOK, "UNAUTHENTICATED")
		return
	}
	switch {
	case strings.Contains(req.Query, "bankAccounts"):
		s.bankAccounts(w, bearer)
	case strings.Contains(req.Query, "verifyBankAccountDetails"):
		s.verifyBankAccount(w, bearer, req.Variables)
	case strings.Contains(req.Query, "bankAccountVerification"):
		s.bankAccountVerification(w, bearer, req.Variables)
	default:
		gqlErr(w, http.StatusOK, "GRAPHQL_VALIDATION_FAILED")
	}
}

// bankAccounts answers user { bankAccounts { … } } for a live user token.
func (s *Server) bankAccounts(w http.ResponseWriter, bearer string) {
	s.mu.Lock()
	t := s.access[bearer]
	if t == nil || t.dead || !s.clock.Now().Before(t.expires) || s.users[t.user].Revoked {
		s.mu.Unlock()
		gqlErr(w, http.StatusOK, "UNAUTHENTICATED")
		return
	}
	now := s.clock.Now()
	if su := s.users[t.user]; !su.LastUsed.IsZero() && now.Sub(su.LastUsed) >= UnusedReauthAfter {
		su.ReauthRequired = true
	} else if !su.ReauthRequired {
		su.LastUsed = now
	}
	u := *s.users[t.user]
	s.mu.Unlock()
	if u.ReauthRequired {
		gqlErr(w, http.StatusOK, "USER_INTERACTION_REQUIRED")
		return
	}
	var accts []map[string]any
	for _, a := range u.Accounts {
		accts = append(accts, map[string]any{"id": a.ID, "name": a.Name, "accountNumber": a.Number,
			"accountType": a.Type, "bankId": u.Bank, "branchCode": a.BranchCode,
			"accountHolder": map[string]any{"__typename": "Individual", "fullName": "Thandi Mokoena"}})
	}
	writeJSON(w, map[string]any{"data": map[string]any{"user": map[string]any{"bankAccounts": accts}}})
}

// clientTokenLive reports whether bearer is a live client token.
func (s *Server) clientTokenLive(bearer string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.clients[bearer]
	return ok && s.clock.Now().Before(exp)
}

func gqlErr(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []any{map[string]any{
		"message": "refused by stitchtest", "extensions": map[string]string{"code": code}}}})
}
