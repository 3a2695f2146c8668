package api

import "github.com/labstack/echo/v4"

// This file lists every route of both listeners, and the middleware in front
// of each group. A feature's routes are served only when its service is in
// Deps (a nil service means the feature is not configured).

// NewPublic builds the public listener's handler: health, readiness, the
// contract, provider webhooks, and /v1 behind a user token.
func NewPublic(d *Deps) *echo.Echo {
	e := d.base("public", d.PublicTLS)
	e.GET("/openapi.yaml", serveOpenAPI)
	e.GET("/docs", serveDocs)
	e.Pre(d.cors) // browsers' calls to /v1 from the apps' origins (origins.go)
	e.GET("/healthz", healthz)
	e.GET("/readyz", d.readyz)
	v1 := e.Group("/v1", d.requireUser, d.limitCaller, d.auditFence, d.idempotent, d.auditFence)
	if d.BankLink != nil {
		v1.POST("/link/sessions", d.createLinkSession)
		v1.GET("/link/sessions/:id", d.getLinkSession)
		v1.POST("/link/sessions/:id/exchange", d.exchangePublicToken)
		v1.GET("/items", d.listItems)
		v1.GET("/items/:id", d.getItem)
		v1.DELETE("/items/:id", d.deleteItem)
		v1.GET("/accounts", d.listAccounts)
		v1.GET("/accounts/:id", d.getAccount)
		if d.BankLink.Sandbox() {
			v1.POST("/sandbox/public-token", d.sandboxPublicToken)
			v1.POST("/sandbox/items/:id/fire-webhook", d.sandboxFireWebhook)
		}
	}
	v1.GET("/banks", d.listBanks)
	if d.Compliance != nil {
		v1.GET("/me/access-report", d.ownAccessReport)
	}
	if d.Verification != nil {
		v1.POST("/accounts", d.createManualAccount)
		v1.POST("/accounts/:id/verifications", d.startVerification)
		v1.GET("/verifications/:id", d.getVerification)
		v1.POST("/verifications/:id/confirm", d.confirmVerification)
		if d.Verification.Sandbox() != nil {
			v1.GET("/sandbox/verifications/:id/deposits", d.sandboxDeposits)
			v1.POST("/sandbox/verifications/:id/return", d.sandboxReturnDeposits)
		}
	}
	if d.testRoutes != nil {
		d.testRoutes(v1)
	}
	// Provider webhooks: outside /v1, with no user token (they carry the
	// provider's own signature).
	if d.BankLink != nil {
		e.POST("/webhooks/:provider", d.providerWebhook)
		// Where an OAuth provider (Stitch) sends the user back: no user
		// token; the state names the link session (oauth_callback.go).
		e.GET("/link/callback/:provider", d.oauthCallback)
	}
	// Hosted pages (docs/HOSTED.md): no user token; a page token opens a
	// page, and each form carries a one-time form token. The drop-in and
	// the pages' own assets are static.
	e.GET("/link.js", serveLinkJS)
	e.GET("/hosted/assets/:name", serveAsset)
	if d.Hosted != nil && d.BankLink != nil {
		e.GET("/link/:id", d.openLinkPage)
		e.POST("/link/:id", d.postLinkPage)
		// GET /link/callback/:provider is the OAuth callback above
		// (oauthCallback); the hosted pages have no Stitch step yet.
	}
	if d.Hosted != nil && d.Verification != nil {
		e.GET("/verify/:id", d.openVerifyPage)
		e.POST("/verify/:id", d.postVerifyPage)
	}
	return e
}

// NewInternal builds the internal listener's handler. Every route needs a
// client certificate of a service named in the policy; compliance routes
// also need a staff token.
func NewInternal(d *Deps) *echo.Echo {
	e := d.base("internal", true)
	// The contract and its reference hold nothing secret: outside the
	// service group, as on the public listener (the TLS handshake still
	// asks for a client certificate).
	e.GET("/openapi.yaml", serveOpenAPI)
	e.GET("/docs", serveDocs)
	svc := e.Group("", d.requireService, d.limitCaller)
	svc.GET("/metrics", d.metricsHandler())
	svc.GET("/healthz", healthz)
	svc.GET("/readyz", d.readyz)
	internal := svc.Group("/internal/v1", d.idempotent)
	comp := svc.Group("/compliance/v1", d.requireStaff, d.requireFreshMFA, d.idempotent)
	comp.POST("/audit/verify", d.verifyAudit)
	if d.BankLink != nil {
		internal.GET("/items/:id", d.internalItem)
		internal.GET("/accounts/:id", d.internalAccount)
	}
	if d.Compliance != nil {
		comp.POST("/legal-holds", d.placeHold)
		comp.DELETE("/legal-holds/:id", d.liftHold)
		comp.POST("/erasure-requests", d.requestErasure)
		comp.GET("/erasure-requests/:id", d.getErasure)
		comp.POST("/erasure-requests/:id/approve", d.approveErasure)
		comp.GET("/subjects/:id/export", d.exportSubject)
		comp.POST("/subjects/:id/export", d.exportArchive)
		comp.GET("/erasure-requests", d.listErasures)
		comp.POST("/erasure-requests/:id/reject", d.rejectErasure)
		comp.POST("/erasure-requests/:id/cancel", d.cancelErasure)
		comp.POST("/erasure-requests/:id/complete", d.completeErasure)
		comp.GET("/legal-holds", d.listHolds)
		comp.GET("/subjects/:id/access-report", d.subjectAccessReport)
	}
	comp.POST("/events/:id/replay", d.replayEvent)
	internal.POST("/credentials/:ref/reveal", d.reveal)
	if d.BankLink != nil {
		internal.POST("/accounts/:id/reveal", d.revealAccount)
		internal.POST("/items/:id/reveal", d.revealItem)
	}
	return e
}
