package api

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/compliance"
)

// Statuses of bank-linking errors. A bad login, a token the provider does
// not know and a product the institution lacks are the caller's to fix
// (422); a login that must be repaired in update mode, and a link session
// that is no longer open, conflict with the item's or session's state
// (409); an institution that is down is a dependency that is down (503,
// with Retry-After); a webhook whose signature does not verify is 401, and
// one whose key cannot be fetched now is 503 (the provider retries).
// The JSON shapes of the contract (api/openapi.yaml). None of them carries a credential or a full
// account number; the internal ones add references only.
type (
	institutionJSON struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	accountJSON struct {
		ID                 string `json:"id"`
		ItemID             string `json:"item_id,omitempty"`
		Name               string `json:"name"`
		Mask               string `json:"mask"`
		Type               string `json:"type"`
		Subtype            string `json:"subtype"`
		VerificationStatus string `json:"verification_status"`
		Status             string `json:"status"`
	}
	itemJSON struct {
		ID          string          `json:"id"`
		Institution institutionJSON `json:"institution"`
		Status      string          `json:"status"`
		Provider    string          `json:"provider"`
		CreatedAt   time.Time       `json:"created_at"`
		Accounts    []accountJSON   `json:"accounts"`
	}
	internalAccountJSON struct {
		accountJSON
		AccountNumberRef *string `json:"account_number_ref"`
	}
	internalItemJSON struct {
		ID            string                `json:"id"`
		Institution   institutionJSON       `json:"institution"`
		Status        string                `json:"status"`
		Provider      string                `json:"provider"`
		CreatedAt     time.Time             `json:"created_at"`
		CredentialRef string                `json:"credential_ref"`
		Accounts      []internalAccountJSON `json:"accounts"`
	}
	linkSessionJSON struct {
		ID        string    `json:"id"`
		LinkToken string    `json:"link_token"`
		Status    string    `json:"status"`
		Mode      string    `json:"mode"`
		ItemID    string    `json:"item_id,omitempty"`
		Provider  string    `json:"provider"`
		ExpiresAt time.Time `json:"expires_at"`
		// HostedLinkURL is kluis's hosted link page with a fresh page
		// token (docs/HOSTED.md); RedirectURI the session's own.
		HostedLinkURL string `json:"hosted_link_url,omitempty"`
		RedirectURI   string `json:"redirect_uri,omitempty"`
	}
)

func toAccount(a banklink.Account) accountJSON {
	return accountJSON{ID: a.ID, ItemID: a.ItemID, Name: a.Name, Mask: a.Mask, Type: a.Type, Subtype: a.Subtype,
		VerificationStatus: a.VerificationStatus, Status: a.Status}
}

func toItem(it banklink.Item) itemJSON {
	out := itemJSON{ID: it.ID, Institution: institutionJSON{it.InstitutionID, it.InstitutionName}, Status: it.Status,
		Provider: it.Provider, CreatedAt: it.CreatedAt.UTC(), Accounts: make([]accountJSON, 0, len(it.Accounts))}
	for _, a := range it.Accounts {
		out.Accounts = append(out.Accounts, toAccount(a))
	}
	return out
}

func toInternalAccount(a banklink.Account) internalAccountJSON {
	out := internalAccountJSON{accountJSON: toAccount(a)}
	if a.AccountNumberRef != "" {
		ref := a.AccountNumberRef
		out.AccountNumberRef = &ref
	}
	return out
}

func actorOf(c echo.Context) audit.Actor { return audit.User(Subject(c), requestID(c)) }

type createLinkSessionRequest struct {
	Products []string `json:"products"`
	ItemID   string   `json:"item_id"`
	// Provider names one of the configured bank providers; empty: the
	// first configured (in update mode: the item's own).
	Provider string `json:"provider"`
	// AccountFilters limits the depository accounts Link offers.
	AccountFilters *struct {
		Depository []string `json:"depository"`
	} `json:"account_filters"`
	AccountSelection bool   `json:"account_selection"`
	Platform         string `json:"platform"`
	// RedirectURI is where the hosted page sends the browser back in the
	// redirect flow: a URL of one of the app origins (docs/HOSTED.md).
	RedirectURI string `json:"redirect_uri"`
}

func (d *Deps) createLinkSession(c echo.Context) error {
	var req createLinkSessionRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := d.checkRedirectURI(req.RedirectURI); err != nil {
		return err
	}
	opts := banklink.LinkOptions{Products: req.Products, ItemID: req.ItemID, Provider: req.Provider, Link: d.linkSettings(c),
		AccountSelection: req.AccountSelection, Platform: req.Platform, RedirectURI: req.RedirectURI}
	if req.AccountFilters != nil {
		opts.AccountSubtypes = req.AccountFilters.Depository
	}
	s, err := d.BankLink.CreateLinkSessionWith(c.Request().Context(), actorOf(c), opts)
	if err != nil {
		return err
	}
	hostedURL, err := d.linkURL(c, s)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, linkSessionJSON{ID: s.ID, LinkToken: s.LinkToken, Status: s.Status, Mode: s.Mode,
		ItemID: s.ItemID, Provider: s.Provider, ExpiresAt: s.ExpiresAt.UTC(), HostedLinkURL: hostedURL, RedirectURI: s.RedirectURI})
}

type exchangeRequest struct {
	PublicToken string `json:"public_token"`
}

func (d *Deps) exchangePublicToken(c echo.Context) error {
	var req exchangeRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	it, created, err := d.BankLink.Exchange(c.Request().Context(), actorOf(c), c.Param("id"), req.PublicToken)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, map[string]any{"item": toItem(it)})
}

// listItems is GET /v1/items: a page of the caller's items, oldest first.
func (d *Deps) listItems(c echo.Context) error {
	page, err := d.bankPage(c)
	if err != nil {
		return err
	}
	items, next, err := d.BankLink.Items(c.Request().Context(), Subject(c), page)
	if err != nil {
		return err
	}
	out := make([]itemJSON, 0, len(items))
	for _, it := range items {
		out = append(out, toItem(it))
	}
	return d.listAnswer(c, "items", out, anyPosition(next))
}

// bankPage reads a bank-link list's page: limit and cursor, and nothing
// else (an unknown query parameter is 400).
func (d *Deps) bankPage(c echo.Context) (banklink.Page, error) {
	if err := onlyQuery(c); err != nil {
		return banklink.Page{}, err
	}
	limit, err := pageLimit(c)
	if err != nil {
		return banklink.Page{}, err
	}
	var after banklink.Position
	has, err := d.openCursor(c, &after)
	if err != nil || !has {
		return banklink.Page{Limit: limit}, err
	}
	return banklink.Page{Limit: limit, After: &after}, nil
}

// anyPosition keeps a nil position nil as an interface (no next_cursor).
func anyPosition(p *banklink.Position) any {
	if p == nil {
		return nil
	}
	return p
}

func (d *Deps) getItem(c echo.Context) error {
	it, err := d.BankLink.Item(c.Request().Context(), Subject(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, toItem(it))
}

// deleteItem unlinks an item: 204 when the provider revoked its side, 200
// {"provider_revoked": false} when it could not (the token was already dead
// there); the item is removed either way.
func (d *Deps) deleteItem(c echo.Context) error {
	revoked, err := d.BankLink.DeleteItem(c.Request().Context(), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	if !revoked {
		return c.JSON(http.StatusOK, map[string]bool{"provider_revoked": false})
	}
	return c.NoContent(http.StatusNoContent)
}

// listAccounts is GET /v1/accounts: a page of the caller's accounts,
// linked and manual, oldest first.
func (d *Deps) listAccounts(c echo.Context) error {
	page, err := d.bankPage(c)
	if err != nil {
		return err
	}
	accts, next, err := d.BankLink.Accounts(c.Request().Context(), Subject(c), page)
	if err != nil {
		return err
	}
	out := make([]accountJSON, 0, len(accts))
	for _, a := range accts {
		out = append(out, toAccount(a))
	}
	return d.listAnswer(c, "accounts", out, anyPosition(next))
}

func (d *Deps) getAccount(c echo.Context) error {
	a, err := d.BankLink.Account(c.Request().Context(), Subject(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, toAccount(a))
}

func (d *Deps) internalItem(c echo.Context) error {
	it, err := d.BankLink.InternalItem(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	out := internalItemJSON{ID: it.ID, Institution: institutionJSON{it.InstitutionID, it.InstitutionName}, Status: it.Status,
		Provider: it.Provider, CreatedAt: it.CreatedAt.UTC(), CredentialRef: it.CredentialRef, Accounts: make([]internalAccountJSON, 0, len(it.Accounts))}
	for _, a := range it.Accounts {
		out.Accounts = append(out.Accounts, toInternalAccount(a))
	}
	return c.JSON(http.StatusOK, out)
}

func (d *Deps) internalAccount(c echo.Context) error {
	a, err := d.BankLink.InternalAccount(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, toInternalAccount(a))
}

type sandboxPublicTokenRequest struct {
	LinkSessionID string `json:"link_session_id"`
	InstitutionID string `json:"institution_id"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	// Code: update mode of a Same Day micro-deposit item only.
	Code string `json:"code"`
}

func (d *Deps) sandboxPublicToken(c echo.Context) error {
	var req sandboxPublicTokenRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	tok, err := d.BankLink.SandboxPublicToken(c.Request().Context(), actorOf(c), req.LinkSessionID, banklink.SandboxLink{
		InstitutionID: req.InstitutionID, Username: req.Username, Password: req.Password, Code: req.Code})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, map[string]string{"public_token": tok})
}

// fireWebhookRequest names a webhook in Plaid's terms: its webhook_type
// (default: the code's own), webhook_code, an ERROR's error_code, the
// account of a USER_ACCOUNT_REVOKED, and an SMS_MICRODEPOSITS_VERIFICATION's
// status.
type fireWebhookRequest struct {
	WebhookType string `json:"webhook_type"`
	Code        string `json:"code"`
	ErrorCode   string `json:"error_code"`
	AccountID   string `json:"account_id"`
	Status      string `json:"status"`
}

func (d *Deps) sandboxFireWebhook(c echo.Context) error {
	var req fireWebhookRequest
	if err := DecodeJSON(c, &req); err != nil {
		return err
	}
	res, err := d.BankLink.SandboxFireWebhook(c.Request().Context(), actorOf(c), c.Param("id"), banklink.SandboxFire{
		Type: req.WebhookType, Code: req.Code, ErrorCode: req.ErrorCode, AccountID: req.AccountID, Status: req.Status})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"event_id": res.EventID, "kind": res.Kind, "outcome": res.Outcome})
}

// providerWebhook takes a provider's webhook. It needs no user token: the
// provider's own signature over the raw body is checked by the provider
// adapter. A refused signature is 401, audited in aggregate (d.Refusals:
// per source and minute, without the body), so forged webhooks cannot flood
// the audit log.
func (d *Deps) providerWebhook(c echo.Context) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return kluis.Errorf(kluis.ETooLarge, "request body is larger than 1 MiB")
		}
		return kluis.Errorf(kluis.EInvalid, "request body could not be read")
	}
	provider := c.Param("provider")
	res, err := d.BankLink.HandleWebhook(c.Request().Context(), provider, c.Request().Header, body, requestID(c))
	if kluis.ErrorCode(err) == banklink.CodeBadSignature {
		d.noteRefusal(c, compliance.RefusalWebhook, "webhook signature refused", audit.ActorProvider, provider)
		return kluis.Errorf(banklink.CodeBadSignature, "the webhook signature does not verify")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"received": true, "duplicate": res.Duplicate})
}
