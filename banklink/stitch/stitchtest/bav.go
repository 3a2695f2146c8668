package stitchtest

import (
	"net/http"
	"sync"
)

// bavState holds bank account verifications the server answered pending.
type bavState struct {
	mu      sync.Mutex
	pending map[string]map[string]any // id → the result once the bank answers
	done    map[string]bool
}

func (b *bavState) init() {
	b.pending = map[string]map[string]any{}
	b.done = map[string]bool{}
}

func (s *Server) verifyBankAccount(w http.ResponseWriter, bearer string, vars map[string]any) {
	if !s.clientTokenLive(bearer) {
		gqlErr(w, http.StatusOK, "UNAUTHENTICATED")
		return
	}
	gqlErr(w, http.StatusOK, "NOT_IMPLEMENTED")
}

func (s *Server) bankAccountVerification(w http.ResponseWriter, bearer string, vars map[string]any) {
	if !s.clientTokenLive(bearer) {
		gqlErr(w, http.StatusOK, "UNAUTHENTICATED")
		return
	}
	gqlErr(w, http.StatusOK, "NOT_IMPLEMENTED")
}
