package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
)

// maxCallbackQuery bounds the callback's query string.
const maxCallbackQuery = 4096

// oauthCallbackJSON is the callback's answer: the session and, once the
// user authorized kluis, the public token the app exchanges (as any
// provider's). The hosted link pages (issue 16) render this step for a
// browser; the JSON is for apps that drive the redirect themselves.
type oauthCallbackJSON struct {
	LinkSessionID string `json:"link_session_id"`
	Status        string `json:"status"`
	PublicToken   string `json:"public_token,omitempty"`
}

// oauthCallback is GET /link/callback/{provider}: an OAuth provider
// (Stitch) sends the user's browser back here with the authorization code
// and the state kluis gave it. No user token: the state, which only kluis
// can make, names the link session. The answer is no-store (as every
// answer) and never carries the code.
func (d *Deps) oauthCallback(c echo.Context) error {
	if len(c.Request().URL.RawQuery) > maxCallbackQuery {
		return kluis.Errorf(kluis.EInvalid, "the callback's query is too long")
	}
	res, err := d.BankLink.CompleteOAuthCallback(c.Request().Context(), c.Param("provider"),
		c.Request().URL.Query(), requestID(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, oauthCallbackJSON{LinkSessionID: res.SessionID, Status: res.Status, PublicToken: res.PublicToken})
}
