// Package sandbox is a bank-data provider for development and tests that
// behaves like an aggregator without one: institutions, a login, public and
// access tokens, accounts with numbers, item removal, token rotation, and
// signed webhooks. Its state lives in Postgres (the sandbox_* tables), so
// every kluis instance shares it and it survives a restart of `kluis dev`.
// Tokens are random and stored only as SHA-256 hashes; account numbers are
// derived from the sandbox's secret, never stored.
//
// Institutions: ins_sandbox (instant auth), ins_sandbox_noauth (no instant
// auth: GetAuth is CodeProductNotSupported), ins_sandbox_down (every call is
// CodeInstitutionDown), and two that play Plaid's own micro-deposits:
// ins_sandbox_same_day (Same Day Micro-deposits: one account,
// pending_manual_verification until the user types the deposit's code,
// MicroDepositCode, in update mode) and ins_sandbox_automated (Automated
// Micro-deposits: one account, pending_automatic_verification until the
// AUTOMATICALLY_VERIFIED or VERIFICATION_EXPIRED webhook is fired). The one
// good login is user_good / pass_good.
//
// Webhooks are Plaid's shapes (plaidwebhook), read by the one decoding
// Plaid's go through; only the signature is the sandbox's own:
// Kluis-Sandbox-Signature: t=<unix seconds>,id=<delivery id>,v1=<hex
// HMAC-SHA256 over "<t>.<id>.<body>">, checked in constant time and refused
// outside a five-minute window. The delivery id is the event's identity
// for deduplication, as Plaid's signed claims are for Plaid's.
package sandbox

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/banklink"
	"github.com/kluis-dev/kluis/banklink/plaidwebhook"
	"github.com/kluis-dev/kluis/postgres"
)

// Name is the provider's name (the {provider} of its webhook route).
const Name = "sandbox"

// Sandbox institutions and login.
const (
	InstitutionAuth   = "ins_sandbox"
	InstitutionNoAuth = "ins_sandbox_noauth"
	InstitutionDown   = "ins_sandbox_down"
	// InstitutionSameDay and InstitutionAutomated verify their accounts by
	// the provider's own micro-deposits, as Plaid's Same Day and Automated
	// Micro-deposits do.
	InstitutionSameDay   = "ins_sandbox_same_day"
	InstitutionAutomated = "ins_sandbox_automated"
	// MicroDepositCode is the code the sandbox's Same Day deposit carries.
	MicroDepositCode = "ABC"
	GoodUsername     = "user_good"
	GoodPassword     = "pass_good"
)

// SignatureHeader carries a sandbox webhook's signature.
const SignatureHeader = "Kluis-Sandbox-Signature"

// WebhookWindow is how far a webhook's timestamp may be from now.
const WebhookWindow = 5 * time.Minute

// routingNumber is every sandbox account's routing number (a valid ABA
// checksum, of no real bank's sandbox).
const routingNumber = "011000015"

type institution struct {
	name string
	auth bool
	down bool
	// md is the provider's micro-deposit flow its items are made by
	// (mdSameDay, mdAutomated), or "".
	md string
}

// The sandbox's micro-deposit flows (sandbox_items.md_flow).
const (
	mdSameDay   = "same_day"
	mdAutomated = "automated"
)

var institutions = map[string]institution{
	InstitutionAuth:      {name: "Sandbox Bank", auth: true},
	InstitutionNoAuth:    {name: "Sandbox Credit Union", auth: false},
	InstitutionDown:      {name: "Sandbox Down Bank", auth: true, down: true},
	InstitutionSameDay:   {name: "Sandbox Same Day Savings", md: mdSameDay},
	InstitutionAutomated: {name: "Sandbox Automated Thrift", md: mdAutomated},
}

// mdFirstStatus is the verification_status of a new micro-deposit item's
// account, per flow.
var mdFirstStatus = map[string]string{mdSameDay: "pending_manual_verification", mdAutomated: "pending_automatic_verification"}

// Options configures the sandbox.
type Options struct {
	DB *postgres.DB
	// Secret signs webhooks and derives account numbers: at least 32
	// bytes, the same on every instance (kluis derives it from its
	// system keys).
	Secret []byte
	Clock  kluis.Clock
}

// Provider is the sandbox provider. It is safe for concurrent use.
type Provider struct {
	db     *postgres.DB
	secret []byte
	clock  kluis.Clock
}

var (
	_ banklink.Provider          = (*Provider)(nil)
	_ banklink.SandboxLinker     = (*Provider)(nil)
	_ banklink.AccountPreviewer  = (*Provider)(nil)
	_ banklink.InstitutionLister = (*Provider)(nil)
)

// New checks opts and returns the sandbox.
func New(opts Options) (*Provider, error) {
	if opts.DB == nil || len(opts.Secret) < 32 {
		return nil, errors.New("sandbox: a database and a secret of at least 32 bytes are required")
	}
	p := &Provider{db: opts.DB, secret: append([]byte(nil), opts.Secret...), clock: opts.Clock}
	if p.clock == nil {
		p.clock = kluis.SystemClock{}
	}
	return p, nil
}

// Name implements banklink.Provider.
func (p *Provider) Name() string { return Name }

func fail(code, message string) error { return kluis.Wrap(code, message, banklink.ErrProvider) }

func invalidToken() error {
	return fail(banklink.CodeInvalidToken, "the token is unknown, used, expired or revoked")
}

func dbFail(err error) error {
	if kluis.ErrorCode(postgres.Translate(err)) == kluis.EUnavailable {
		return kluis.Unavailable("bank provider", errors.Join(banklink.ErrProvider, err))
	}
	return kluis.Wrap(kluis.EInternal, "internal error", errors.Join(banklink.ErrProvider, postgres.Translate(err)))
}

// random returns prefix and 128 random bits in hex.
func random(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CreateLinkToken implements banklink.Provider. The token is random and
// not kept: the sandbox's Link UI is kluis's own sandbox route.
func (p *Provider) CreateLinkToken(_ context.Context, req banklink.LinkTokenRequest) (banklink.LinkToken, error) {
	if req.ClientUserID == "" {
		return banklink.LinkToken{}, fail(kluis.EInvalid, "client_user_id is required")
	}
	ttl := banklink.NewSessionTTL
	if req.AccessToken != "" {
		ttl = banklink.UpdateSessionTTL
	}
	return banklink.LinkToken{Token: random("link-sandbox-"), ExpiresAt: p.clock.Now().Add(ttl)}, nil
}

// CompleteLink implements banklink.SandboxLinker: it checks the login and
// returns a public token (single use, 30 minutes). In update mode it
// repairs the item's login.
func (p *Provider) CompleteLink(ctx context.Context, req banklink.SandboxLink) (string, error) {
	instID := req.InstitutionID
	var itemID string
	if req.AccessToken != "" {
		err := p.db.Pool.QueryRow(ctx, `SELECT provider_item_id, institution_id FROM sandbox_items
			WHERE access_token_hash = $1 AND removed_at IS NULL`, hash(req.AccessToken)).Scan(&itemID, &instID)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", invalidToken()
		}
		if err != nil {
			return "", dbFail(err)
		}
	}
	inst, ok := institutions[instID]
	if !ok {
		return "", fail(kluis.EInvalid, "unknown sandbox institution: use ins_sandbox, ins_sandbox_noauth, ins_sandbox_down, ins_sandbox_same_day or ins_sandbox_automated")
	}
	if inst.down {
		return "", fail(banklink.CodeInstitutionDown, "the institution is down, try again later")
	}
	if subtle.ConstantTimeCompare([]byte(req.Username), []byte(GoodUsername))&
		subtle.ConstantTimeCompare([]byte(req.Password), []byte(GoodPassword)) != 1 {
		return "", fail(banklink.CodeInvalidCredentials, "the username or password is incorrect")
	}
	tok := random("public-sandbox-")
	now := p.clock.Now()
	if itemID != "" {
		if _, err := p.db.Pool.Exec(ctx, `UPDATE sandbox_items SET login_required = false WHERE provider_item_id = $1`, itemID); err != nil {
			return "", dbFail(err)
		}
		if err := p.confirmCode(ctx, itemID, req.Code); err != nil {
			return "", err
		}
	}
	_, err := p.db.Pool.Exec(ctx, `INSERT INTO sandbox_public_tokens (token_hash, institution_id, provider_item_id, expires_at)
		VALUES ($1, $2, NULLIF($3, ''), $4)`, hash(tok), instID, itemID, now.Add(banklink.PublicTokenTTL))
	if err != nil {
		return "", dbFail(err)
	}
	return tok, nil
}

// Institutions implements banklink.InstitutionLister: the sandbox's
// institutions, by name.
func (p *Provider) Institutions() []banklink.Institution {
	out := make([]banklink.Institution, 0, len(institutions))
	for id, in := range institutions {
		out = append(out, banklink.Institution{ID: id, Name: in.name})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// PreviewAccounts implements banklink.AccountPreviewer: the accounts a
// new item made from the public token will have, named as GetAccounts will
// name them (masks come with the item). A token that is unknown, used or
// expired is CodeInvalidToken.
func (p *Provider) PreviewAccounts(ctx context.Context, publicToken string) ([]banklink.ProviderAccount, error) {
	var n int
	err := p.db.Pool.QueryRow(ctx, `SELECT count(*) FROM sandbox_public_tokens
		WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 AND provider_item_id IS NULL`,
		hash(publicToken), p.clock.Now()).Scan(&n)
	if err != nil {
		return nil, dbFail(err)
	}
	if n == 0 {
		return nil, invalidToken()
	}
	accts := p.accounts(sandboxItem{})
	for i := range accts {
		accts[i].ProviderAccountID, accts[i].Mask = "", ""
	}
	return accts, nil
}

// ExchangePublicToken implements banklink.Provider: a new item with two
// accounts, and its access token.
func (p *Provider) ExchangePublicToken(ctx context.Context, publicToken string) (banklink.Exchange, error) {
	now := p.clock.Now()
	ex := banklink.Exchange{AccessToken: random("access-sandbox-"), ProviderItemID: random("item-sandbox-")}
	err := p.db.InTx(ctx, func(tx pgx.Tx) error {
		var instID string
		err := tx.QueryRow(ctx, `UPDATE sandbox_public_tokens SET used_at = $2
			WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 AND provider_item_id IS NULL
			RETURNING institution_id`, hash(publicToken), now).Scan(&instID)
		if errors.Is(err, pgx.ErrNoRows) {
			return invalidToken()
		}
		if err != nil {
			return err
		}
		md := institutions[instID].md
		_, err = tx.Exec(ctx, `INSERT INTO sandbox_items (provider_item_id, institution_id, access_token_hash, created_at, md_flow, md_status, md_attempts)
			VALUES ($1, $2, $3, $4, NULLIF($5, ''), NULLIF($6, ''), $7)`, ex.ProviderItemID, instID, hash(ex.AccessToken), now, md, mdFirstStatus[md],
			sameDayAttempts)
		return err
	})
	if kluis.ErrorCode(err) == banklink.CodeInvalidToken {
		return banklink.Exchange{}, invalidToken()
	}
	if err != nil {
		return banklink.Exchange{}, dbFail(err)
	}
	return ex, nil
}

// sandboxItem is an item's state.
type sandboxItem struct {
	id            string
	institutionID string
	loginRequired bool
	newAccounts   int
	// mdStatus is the verification_status of a micro-deposit item's
	// account ("" for other items).
	mdStatus string
}

// liveItem finds the item an access token opens and refuses it as an
// aggregator would: unknown token, institution down, login required.
func (p *Provider) liveItem(ctx context.Context, token string) (sandboxItem, institution, error) {
	var it sandboxItem
	err := p.db.Pool.QueryRow(ctx, `SELECT provider_item_id, institution_id, login_required, new_accounts, COALESCE(md_status, '')
		FROM sandbox_items WHERE access_token_hash = $1 AND removed_at IS NULL`, hash(token)).
		Scan(&it.id, &it.institutionID, &it.loginRequired, &it.newAccounts, &it.mdStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return sandboxItem{}, institution{}, invalidToken()
	}
	if err != nil {
		return sandboxItem{}, institution{}, dbFail(err)
	}
	inst := institutions[it.institutionID]
	if inst.down {
		return sandboxItem{}, institution{}, fail(banklink.CodeInstitutionDown, "the institution is down, try again later")
	}
	if it.loginRequired {
		return sandboxItem{}, institution{}, fail(banklink.CodeItemLoginRequired, "the item's login is required: use update mode")
	}
	return it, inst, nil
}

// accounts are the item's accounts: a checking and a savings account, and
// one more per new-accounts webhook fired; a micro-deposit item has the
// one checking account the user typed the numbers of, with its
// verification status.
func (p *Provider) accounts(it sandboxItem) []banklink.ProviderAccount {
	if it.mdStatus != "" {
		num := p.accountNumber(it.id, 0)
		return []banklink.ProviderAccount{{ProviderAccountID: p.accountID(it.id, 0), Name: "Sandbox checking 1",
			Mask: num[len(num)-4:], Type: "depository", Subtype: "checking", VerificationStatus: it.mdStatus}}
	}
	subtypes := []string{"checking", "savings"}
	for i := 0; i < it.newAccounts; i++ {
		subtypes = append(subtypes, "savings")
	}
	out := make([]banklink.ProviderAccount, len(subtypes))
	for i, st := range subtypes {
		num := p.accountNumber(it.id, i)
		out[i] = banklink.ProviderAccount{
			ProviderAccountID: p.accountID(it.id, i), Name: fmt.Sprintf("Sandbox %s %d", st, i+1),
			Mask: num[len(num)-4:], Type: "depository", Subtype: st,
		}
	}
	return out
}

func (p *Provider) derive(label, itemID string, i int) []byte {
	m := hmac.New(sha256.New, p.secret)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(itemID))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(i))
	m.Write(n[:])
	return m.Sum(nil)
}

func (p *Provider) accountID(itemID string, i int) string {
	return "acct-sandbox-" + hex.EncodeToString(p.derive("account-id", itemID, i)[:12])
}

// accountNumber is a 12-digit number derived from the secret.
func (p *Provider) accountNumber(itemID string, i int) string {
	n := new(big.Int).SetBytes(p.derive("account-number", itemID, i))
	s := n.Mod(n, big.NewInt(1e11)).String()
	return "9" + strings.Repeat("0", 11-len(s)) + s
}

// GetAccounts implements banklink.Provider.
func (p *Provider) GetAccounts(ctx context.Context, accessToken string) (banklink.ItemAccounts, error) {
	it, inst, err := p.liveItem(ctx, accessToken)
	if err != nil {
		return banklink.ItemAccounts{}, err
	}
	return banklink.ItemAccounts{
		ProviderItemID: it.id,
		Institution:    banklink.Institution{ID: it.institutionID, Name: inst.name},
		Accounts:       p.accounts(it),
	}, nil
}

// GetAuth implements banklink.Provider.
func (p *Provider) GetAuth(ctx context.Context, accessToken string) ([]banklink.AuthNumbers, error) {
	it, inst, err := p.liveItem(ctx, accessToken)
	if err != nil {
		return nil, err
	}
	if !inst.auth && inst.md == "" {
		return nil, fail(banklink.CodeProductNotSupported, "the institution does not support instant auth")
	}
	accts := p.accounts(it)
	out := make([]banklink.AuthNumbers, len(accts))
	for i, a := range accts {
		out[i] = banklink.AuthNumbers{ProviderAccountID: a.ProviderAccountID, AccountNumber: p.accountNumber(it.id, i), RoutingNumber: routingNumber}
	}
	return out, nil
}

// RemoveItem implements banklink.Provider: the token stops working.
func (p *Provider) RemoveItem(ctx context.Context, accessToken string) error {
	tag, err := p.db.Pool.Exec(ctx, `UPDATE sandbox_items SET removed_at = $2, access_token_hash = NULL
		WHERE access_token_hash = $1 AND removed_at IS NULL`, hash(accessToken), p.clock.Now())
	if err != nil {
		return dbFail(err)
	}
	if tag.RowsAffected() == 0 {
		return invalidToken()
	}
	return nil
}

// RotateAccessToken implements banklink.Provider: the old token dies at
// once.
func (p *Provider) RotateAccessToken(ctx context.Context, accessToken string) (string, error) {
	fresh := random("access-sandbox-")
	tag, err := p.db.Pool.Exec(ctx, `UPDATE sandbox_items SET access_token_hash = $2
		WHERE access_token_hash = $1 AND removed_at IS NULL`, hash(accessToken), hash(fresh))
	if err != nil {
		return "", dbFail(err)
	}
	if tag.RowsAffected() == 0 {
		return "", invalidToken()
	}
	return fresh, nil
}

// sameDayAttempts is how many codes a Same Day item's user may try.
const sameDayAttempts = 3

// confirmCode plays the user typing a Same Day deposit's code into Link in
// update mode: the right code makes the item's account manually_verified;
// a wrong one spends one of three attempts, and the last makes it
// verification_failed (either way Link finishes, as Plaid's does). No code,
// or an item that waits for none, changes nothing. Each step is one
// conditional update.
func (p *Provider) confirmCode(ctx context.Context, itemID, code string) error {
	if code == "" {
		return nil
	}
	right := subtle.ConstantTimeCompare([]byte(strings.ToUpper(strings.TrimSpace(code))), []byte(MicroDepositCode)) == 1
	_, err := p.db.Pool.Exec(ctx, `UPDATE sandbox_items SET
			md_status = CASE WHEN $2 THEN 'manually_verified' WHEN md_attempts <= 1 THEN 'verification_failed' ELSE md_status END,
			md_attempts = CASE WHEN $2 THEN md_attempts ELSE md_attempts - 1 END
		WHERE provider_item_id = $1 AND md_flow = 'same_day' AND md_status = 'pending_manual_verification' AND md_attempts > 0`,
		itemID, right)
	if err != nil {
		return dbFail(err)
	}
	return nil
}

var codePattern = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)

// SignedWebhook implements banklink.SandboxLinker: a webhook in Plaid's
// shape (plaidwebhook.Body, environment "sandbox"), with the sandbox's
// own state changed as Plaid's would be:
//
//   - ITEM/ERROR with a login error_code (ITEM_LOGIN_REQUIRED when none is
//     named): the item's calls fail until update mode; another error_code
//     changes nothing;
//   - ITEM/LOGIN_REPAIRED: the login works again;
//   - ITEM/PENDING_EXPIRATION, ITEM/PENDING_DISCONNECT: nothing yet (access
//     would lapse in seven days, which the sandbox does not play);
//   - ITEM/USER_PERMISSION_REVOKED: the access token dies;
//   - ITEM/USER_ACCOUNT_REVOKED (with the account): nothing (the token
//     still works for the item's other accounts);
//   - ITEM/NEW_ACCOUNTS_AVAILABLE: one more account;
//   - ITEM/WEBHOOK_UPDATE_ACKNOWLEDGED: nothing (the sandbox delivers
//     to kluis in-process); it names kluis's webhook URL as the item's new
//     one (without a configured URL, EConflict: Plaid sends it only after
//     /item/webhook/update gave it one);
//   - AUTH/AUTOMATICALLY_VERIFIED, AUTH/VERIFICATION_EXPIRED: the
//     ins_sandbox_automated item's account is verified or expired (another
//     item is EConflict);
//   - AUTH/SMS_MICRODEPOSITS_VERIFICATION: the ins_sandbox_same_day item's
//     account was confirmed through Plaid's SMS flow instead of Link:
//     MANUALLY_VERIFIED (the default status) or VERIFICATION_FAILED
//     (another item, or one no longer waiting, is EConflict).
//
// Any other code (upper case, digits and underscores) is signed and sent as
// is, with no fields of its own: an event kluis records and ignores.
func (p *Provider) SignedWebhook(ctx context.Context, w banklink.SandboxWebhook) (http.Header, []byte, error) {
	if !codePattern.MatchString(w.Code) || (w.Type != "" && !codePattern.MatchString(w.Type)) ||
		(w.ErrorCode != "" && !codePattern.MatchString(w.ErrorCode)) {
		return nil, nil, kluis.Errorf(kluis.EInvalid, "webhook_type, code and error_code must be Plaid's upper-case names, such as ITEM, ERROR and ITEM_LOGIN_REQUIRED")
	}
	if w.Status != "" && (w.Code != plaidwebhook.CodeSMSMicrodepositsVerification || !smsStatuses[w.Status]) {
		return nil, nil, kluis.Errorf(kluis.EInvalid, "status: only SMS_MICRODEPOSITS_VERIFICATION takes one, MANUALLY_VERIFIED or VERIFICATION_FAILED")
	}
	b := plaidwebhook.Body{WebhookType: w.Type, WebhookCode: w.Code, ItemID: w.ProviderItemID, Environment: "sandbox"}
	if b.WebhookType == "" {
		b.WebhookType = plaidwebhook.TypeOf(w.Code)
	}
	if err := p.playWebhook(ctx, &b, w); err != nil {
		return nil, nil, err
	}
	body, err := json.Marshal(b)
	if err != nil {
		return nil, nil, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(SignatureHeader, p.Sign(p.clock.Now(), body))
	return h, body, nil
}

// playWebhook fills in b's fields for its code and changes the sandbox's
// state as the webhook says (SignedWebhook).
func (p *Provider) playWebhook(ctx context.Context, b *plaidwebhook.Body, w banklink.SandboxWebhook) error {
	const item, auth = plaidwebhook.TypeItem + "/", plaidwebhook.TypeAuth + "/"
	now := p.clock.Now().UTC()
	var sql string
	switch b.WebhookType + "/" + b.WebhookCode {
	case item + plaidwebhook.CodeError:
		code := w.ErrorCode
		if code == "" {
			code = plaidwebhook.ErrorItemLoginRequired
		}
		b.Error = itemError(code, "the sandbox fired this item error")
		if plaidwebhook.IsLoginError(code) {
			sql = `UPDATE sandbox_items SET login_required = true WHERE provider_item_id = $1 AND removed_at IS NULL`
		}
	case item + plaidwebhook.CodeLoginRepaired:
		sql = `UPDATE sandbox_items SET login_required = false WHERE provider_item_id = $1 AND removed_at IS NULL`
	case item + plaidwebhook.CodePendingExpiration:
		b.ConsentExpirationTime = now.Add(7 * 24 * time.Hour).Format(time.RFC3339)
	case item + plaidwebhook.CodePendingDisconnect:
		b.DisconnectTime, b.Reason = now.Add(7*24*time.Hour).Format(time.RFC3339), "INSTITUTION_TOKEN_EXPIRATION"
	case item + plaidwebhook.CodeUserPermissionRevoked:
		b.Error = itemError(plaidwebhook.CodeUserPermissionRevoked, "the holder of this account has revoked their permission for your application to access it")
		sql = `UPDATE sandbox_items SET removed_at = now(), access_token_hash = NULL WHERE provider_item_id = $1 AND removed_at IS NULL`
	case item + plaidwebhook.CodeUserAccountRevoked:
		if w.ProviderAccountID == "" {
			return kluis.Errorf(kluis.EInvalid, "USER_ACCOUNT_REVOKED needs the account")
		}
		b.AccountID = w.ProviderAccountID
	case item + plaidwebhook.CodeNewAccountsAvailable:
		sql = `UPDATE sandbox_items SET new_accounts = new_accounts + 1 WHERE provider_item_id = $1 AND removed_at IS NULL`
	case item + plaidwebhook.CodeWebhookUpdateAcknowledged:
		if w.WebhookURL == "" {
			return kluis.Errorf(kluis.EConflict, "WEBHOOK_UPDATE_ACKNOWLEDGED names the item's new webhook URL, and kluis has none configured (KLUIS_BANK_WEBHOOK_URL)")
		}
		b.NewWebhookURL = w.WebhookURL
	case auth + plaidwebhook.CodeAutomaticallyVerified, auth + plaidwebhook.CodeVerificationExpired:
		// About the Automated Micro-deposits item's one account.
		b.AccountID = p.accountID(w.ProviderItemID, 0)
		return p.endAutomated(ctx, w.ProviderItemID, b.WebhookCode)
	case auth + plaidwebhook.CodeSMSMicrodepositsVerification:
		// About the Same Day Micro-deposits item's one account.
		b.AccountID, b.Status = p.accountID(w.ProviderItemID, 0), w.Status
		if b.Status == "" {
			b.Status = smsVerified
		}
		return p.endSameDayBySMS(ctx, w.ProviderItemID, b.Status)
	}
	if sql == "" {
		return nil
	}
	if _, err := p.db.Pool.Exec(ctx, sql, w.ProviderItemID); err != nil {
		return dbFail(err)
	}
	return nil
}

// endAutomated ends an Automated Micro-deposits item's wait with the
// verification_status the AUTH code stands for.
func (p *Provider) endAutomated(ctx context.Context, providerItemID, code string) error {
	status := map[string]string{plaidwebhook.CodeAutomaticallyVerified: "automatically_verified",
		plaidwebhook.CodeVerificationExpired: "verification_expired"}[code]
	tag, err := p.db.Pool.Exec(ctx, `UPDATE sandbox_items SET md_status = $2
		WHERE provider_item_id = $1 AND md_flow = 'automated' AND md_status = 'pending_automatic_verification' AND removed_at IS NULL`,
		providerItemID, status)
	if err != nil {
		return dbFail(err)
	}
	if tag.RowsAffected() == 0 {
		return kluis.Errorf(kluis.EConflict, "the item has no automated micro-deposit waiting: link ins_sandbox_automated")
	}
	return nil
}

// SMS_MICRODEPOSITS_VERIFICATION's statuses (Plaid's), with the
// verification_status each leaves on the account.
const (
	smsVerified = "MANUALLY_VERIFIED"
	smsFailed   = "VERIFICATION_FAILED"
)

var smsStatuses = map[string]bool{smsVerified: true, smsFailed: true}

// endSameDayBySMS ends a Same Day Micro-deposits item's wait as Plaid's
// SMS verification does: the user confirmed the deposit by text message
// (MANUALLY_VERIFIED) or used up their attempts (VERIFICATION_FAILED),
// as a code typed in Link's update mode would (confirmCode).
func (p *Provider) endSameDayBySMS(ctx context.Context, providerItemID, status string) error {
	tag, err := p.db.Pool.Exec(ctx, `UPDATE sandbox_items
		SET md_status = $2, md_attempts = CASE WHEN $2 = 'verification_failed' THEN 0 ELSE md_attempts END
		WHERE provider_item_id = $1 AND md_flow = 'same_day' AND md_status = 'pending_manual_verification' AND removed_at IS NULL`,
		providerItemID, strings.ToLower(status))
	if err != nil {
		return dbFail(err)
	}
	if tag.RowsAffected() == 0 {
		return kluis.Errorf(kluis.EConflict, "the item has no Same Day micro-deposit waiting: link ins_sandbox_same_day")
	}
	return nil
}

// itemError is a PlaidError of type ITEM_ERROR, as Plaid's ITEM webhooks
// carry it.
func itemError(code, message string) *plaidwebhook.Error {
	return &plaidwebhook.Error{ErrorType: "ITEM_ERROR", ErrorCode: code, ErrorMessage: message, Status: http.StatusBadRequest}
}

// Sign returns the signature header value for body sent at t, as one new
// delivery (its id is random).
func (p *Provider) Sign(t time.Time, body []byte) string {
	ts, id := strconv.FormatInt(t.Unix(), 10), random("whd-sandbox-")
	return "t=" + ts + ",id=" + id + ",v1=" + hex.EncodeToString(p.mac(ts, id, body))
}

func (p *Provider) mac(ts, id string, body []byte) []byte {
	m := hmac.New(sha256.New, p.secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write([]byte(id))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}

var eventIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

func badSignature() error {
	return fail(banklink.CodeBadSignature, "sandbox webhook: signature refused")
}

// VerifyWebhook implements banklink.Provider: the signature is the
// sandbox's own; the body, in Plaid's shape, is read by
// plaidwebhook.Decode, as Plaid's are. The event's ID is the signed
// delivery id, so a replay of one delivery is a duplicate and a new
// delivery of the same body (a second ITEM_LOGIN_REQUIRED after a repair)
// is a new event.
func (p *Provider) VerifyWebhook(_ context.Context, header http.Header, body []byte) (banklink.WebhookEvent, error) {
	raw := header.Get(SignatureHeader)
	if raw == "" || len(raw) > 256 {
		return banklink.WebhookEvent{}, badSignature()
	}
	var ts, id, sig string
	for _, part := range strings.Split(raw, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "id":
			id = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || !eventIDPattern.MatchString(id) {
		return banklink.WebhookEvent{}, badSignature()
	}
	got, err := hex.DecodeString(sig)
	if err != nil || !hmac.Equal(got, p.mac(ts, id, body)) {
		return banklink.WebhookEvent{}, badSignature()
	}
	if d := p.clock.Now().Sub(time.Unix(sec, 0)); d > WebhookWindow || d < -WebhookWindow {
		return banklink.WebhookEvent{}, badSignature()
	}
	ev, err := plaidwebhook.Decode(body)
	if err != nil {
		return banklink.WebhookEvent{}, err
	}
	ev.ID = id
	return ev, nil
}
