// Package config reads kluis's settings from the environment, exactly as
// README names them, and validates them at start: every bad value is reported
// with its variable's name, and production refuses insecure settings rather
// than falling back to them.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kluis-dev/kluis/banklink/plaid/plaidlink"
	"github.com/kluis-dev/kluis/compliance"
	"github.com/kluis-dev/kluis/verification"
)

// Config is kluis's whole configuration.
type Config struct {
	Env         string // "development" or "production"
	DatabaseURL string
	// MigrateDatabaseURL is the owner's URL that `kluis migrate` uses; empty
	// means DatabaseURL (development, one role for both).
	MigrateDatabaseURL string

	PublicAddr        string
	InternalAddr      string
	PublicTLSCert     string
	PublicTLSKey      string
	InternalTLSCert   string
	InternalTLSKey    string
	InternalClientCA  string
	ServicePolicyFile string
	// SPIFFETrustDomain, if set, is the only trust domain whose SPIFFE IDs name
	// internal services.
	SPIFFETrustDomain string
	TrustedProxies    []netip.Prefix
	RequestTimeout    time.Duration
	AuditSealInterval time.Duration
	// AuditHeadInterval is how often the signed audit chain head is
	// published (an audit.head event and a log line).
	AuditHeadInterval time.Duration
	ShutdownGrace     time.Duration
	JWKSFile          string
	JWKSURL           string
	JWTIssuer         string
	JWTAudience       string
	StaffJWTAudience  string
	KeyProvider       string // "local", "awskms" or "transit"
	LocalKEKFile      string
	AWSKMSKeyID       string
	TransitMount      string
	TransitKey        string
	BankProvider      string // the default bank provider: the first of BankProviders
	PlaidClientID     string
	PlaidSecret       string
	PlaidBaseURL      string
	RedisURL          string
	LogLevel          string
	// BankTokenMaxAge: bank access tokens that never expire (Plaid's) older
	// than this are rotated at the provider by the bank-token-rotation job;
	// 0 (KLUIS_BANK_TOKEN_MAX_AGE=off, the default) turns scheduled rotation
	// off, since a lost answer to a rotation loses the item.
	BankTokenMaxAge time.Duration
	// BankWebhookURL is the public URL providers send item webhooks to.
	BankWebhookURL string
	// PublicURL is the public listener's origin as browsers reach it
	// (KLUIS_PUBLIC_URL); AppOrigins are the frontend apps' origins
	// (KLUIS_APP_ORIGINS), canonical; HostedPageTTL bounds page tokens
	// (KLUIS_HOSTED_PAGE_TTL); PlaidLinkScriptURL and
	// PlaidLinkScriptIntegrity are where the hosted Plaid step loads
	// Plaid Link from (KLUIS_PLAID_LINK_SCRIPT_*). config/hosted.go.
	PublicURL                string
	AppOrigins               []string
	HostedPageTTL            time.Duration
	PlaidLinkScriptURL       string
	PlaidLinkScriptIntegrity string
	// BankProviders are the bank providers kluis links through, in the
	// order of KLUIS_BANK_PROVIDERS (or the one KLUIS_BANK_PROVIDER names).
	BankProviders []string
	// bankProvidersListed: they came from KLUIS_BANK_PROVIDERS.
	bankProvidersListed bool

	// Plaid Link settings (KLUIS_PLAID_*): the name Link shows, the
	// countries whose institutions it lists, its language, and where an
	// OAuth institution returns to (web and iOS, or the Android app).
	PlaidClientName         string
	PlaidCountryCodes       []string
	PlaidLanguage           string
	PlaidRedirectURI        string
	PlaidAndroidPackageName string
	// PlaidSameDayMicrodeposits and PlaidAutomatedMicrodeposits turn on
	// Plaid's own micro-deposit flows in link sessions
	// (KLUIS_PLAID_SAME_DAY_MICRODEPOSITS, KLUIS_PLAID_AUTOMATED_MICRODEPOSITS;
	// true or false, default false).
	PlaidSameDayMicrodeposits   bool
	PlaidAutomatedMicrodeposits bool

	// Stitch (issue 15, docs/STITCH.md): client credentials, the API and
	// identity-server URLs, kluis's OAuth callback as registered with
	// Stitch, and the webhook signing secret.
	StitchClientID      string
	StitchClientSecret  string
	StitchBaseURL       string
	StitchAuthURL       string
	StitchRedirectURI   string
	StitchWebhookSecret string
	// StitchKeepAliveAfter: a Stitch item whose refresh token no refresh
	// has spent for this long has it renewed by the keep-alive job, before
	// Stitch's sliding expiry (365 days unused) kills it.
	StitchKeepAliveAfter time.Duration
	// BAVRequiredChecks are the bank account verification checks that
	// must all be true to verify an account (KLUIS_BAV_REQUIRED_CHECKS).
	BAVRequiredChecks []string

	// KeyCryptoperiod: subject keys older than this get a new version when
	// the rotation job runs.
	KeyCryptoperiod time.Duration
	// KeyringRecheck: an unwrapped keyring key is used at most this long
	// without the key provider confirming it.
	KeyringRecheck time.Duration
	// KeyringCryptoperiod: the rotation job starts a new keyring epoch when
	// the active one is older than this.
	KeyringCryptoperiod time.Duration
	// KeyRotationBatch is how many subject keys one re-wrap transaction of
	// the rotation job takes.
	KeyRotationBatch int
	// Bounds of the unwrapped subject-key cache.
	KeyCacheMaxAge  time.Duration
	KeyCacheMaxUses int
	KeyCacheMaxKeys int
	// Rate limits: every public request per client address, every /v1
	// request per user, every internal request per service, and per caller
	// on the sensitive operations.
	RateAddress, RateSubject, RateService                                   Rate
	RateLinkSession, RateTokenExchange, RateVerificationConfirm, RateReveal Rate
	// RateLimitIPv6Prefix: the address limit counts an IPv6 client by this
	// many leading bits of its address.
	RateLimitIPv6Prefix int
	// IdempotencyTTL is how long an Idempotency-Key's answer is kept.
	IdempotencyTTL time.Duration
	// Retention is the period kept per retention class, by class name
	// (RetentionClasses), each from KLUIS_RETENTION_<CLASS>.
	Retention map[string]time.Duration
	// RetentionClasses is every feature's retention classes
	// (RetentionRegistry), which the purge runs.
	RetentionClasses *compliance.Registry
	// RetentionBatch is how many rows one purge transaction deletes, and
	// RetentionBatchPause the pause between batches; RetentionDryRun makes
	// the scheduled purge report what it would delete and delete nothing.
	RetentionBatch      int
	RetentionBatchPause time.Duration
	RetentionDryRun     bool
	// DormantSubjects, from KLUIS_RETENTION_DORMANT_SUBJECTS, is how long a
	// subject may go unseen before the retention job erases them (0: off,
	// the default; compliance.DormantClass).
	DormantSubjects time.Duration
	// ErasureRevokeAttempts is how many revoke passes of one erasure may
	// leave items unrevoked before it is needs_attention
	// (KLUIS_ERASURE_REVOKE_ATTEMPTS).
	ErasureRevokeAttempts int
	// Verification: attempts per micro-deposit verification, the window to
	// confirm in, amounts or a code, and the sandbox rail's posting delay.
	VerificationAttempts int
	VerificationWindow   time.Duration
	MicroDepositKind     string
	SandboxRailDelay     time.Duration
	// VerificationLockout is how long failed verifications count against
	// their account and number; VerificationNumberFailures how many of
	// one account number, across users, refuse new ones; the per-user
	// limits on manual accounts and verification starts.
	VerificationLockout                      time.Duration
	VerificationNumberFailures               int
	RateManualAccount, RateVerificationStart Rate
	// Event webhooks to client apps: the endpoints, the signing secret (or
	// a file holding it), and how long deliveries are retried.
	WebhookEndpoints  []string
	WebhookSecret     string
	WebhookSecretFile string
	WebhookRetryFor   time.Duration
	// WebhookPreviousSecretFile and WebhookPreviousSecretRetireAt rotate the
	// single app's secret without an apps file: until the date, deliveries
	// are signed with both secrets.
	WebhookPreviousSecretFile     string
	WebhookPreviousSecretRetireAt time.Time

	// AppsFile defines kluis's apps (KLUIS_APPS_FILE); without it, the
	// single-app settings are the one app "default".
	AppsFile string
	// AllowedOrigins and RedirectURIs are the default app's, for the
	// hosted pages (KLUIS_ALLOWED_ORIGINS, KLUIS_REDIRECT_URIS).
	AllowedOrigins, RedirectURIs []string

	// StaffMFAMaxAge bounds how long ago a staff token's auth_time may be,
	// and StaffTokenMaxLifetime its exp - iat, for erasure and legal holds.
	StaffMFAMaxAge        time.Duration
	StaffTokenMaxLifetime time.Duration
}

// Rate is a limit of Events per Per (a burst of Events); zero Events is no
// limit. Read from "N/s", "N/m", "N/h" or "off".
type Rate struct {
	Events int
	Per    time.Duration
}

// Production reports whether kluis runs with production's safety rules.
func (c *Config) Production() bool { return c.Env == "production" }

// InternalTLS reports whether the internal listener is configured (it is
// served only with mutual TLS).
func (c *Config) InternalTLS() bool {
	return c.InternalTLSCert != "" || c.InternalTLSKey != "" || c.InternalClientCA != ""
}

// Getenv looks a variable up; os.Getenv in production, a map in tests.
type Getenv func(string) string

// FromEnv reads the configuration from the process environment.
func FromEnv() (*Config, error) { return Load(os.Getenv) }

// Load reads the configuration through getenv and validates it. The error
// lists every problem found, one per line, each naming its variable.
func Load(getenv Getenv) (*Config, error) {
	r := reader{getenv: getenv}
	c := &Config{
		Env:               r.str("KLUIS_ENV", "development"),
		DatabaseURL:       r.str("KLUIS_DATABASE_URL", ""),
		PublicAddr:        r.str("KLUIS_PUBLIC_ADDR", "127.0.0.1:8080"),
		InternalAddr:      r.str("KLUIS_INTERNAL_ADDR", "127.0.0.1:8081"),
		PublicTLSCert:     r.str("KLUIS_PUBLIC_TLS_CERT", ""),
		PublicTLSKey:      r.str("KLUIS_PUBLIC_TLS_KEY", ""),
		InternalTLSCert:   r.str("KLUIS_INTERNAL_TLS_CERT", ""),
		InternalTLSKey:    r.str("KLUIS_INTERNAL_TLS_KEY", ""),
		InternalClientCA:  r.str("KLUIS_INTERNAL_CLIENT_CA", ""),
		ServicePolicyFile: r.str("KLUIS_SERVICE_POLICY_FILE", ""),
		SPIFFETrustDomain: r.str("KLUIS_SPIFFE_TRUST_DOMAIN", ""),
		TrustedProxies:    r.cidrs("KLUIS_TRUSTED_PROXIES"),
		RequestTimeout:    r.duration("KLUIS_REQUEST_TIMEOUT", 10*time.Second, time.Second, 5*time.Minute),
		AuditSealInterval: r.duration("KLUIS_AUDIT_SEAL_INTERVAL", time.Second, 10*time.Millisecond, time.Minute),
		ShutdownGrace:     r.duration("KLUIS_SHUTDOWN_GRACE", 15*time.Second, 0, 5*time.Minute),
		JWKSFile:          r.str("KLUIS_JWT_JWKS_FILE", ""),
		JWKSURL:           r.str("KLUIS_JWT_JWKS_URL", ""),
		JWTIssuer:         r.str("KLUIS_JWT_ISSUER", ""),
		JWTAudience:       r.str("KLUIS_JWT_AUDIENCE", "kluis"),
		StaffJWTAudience:  r.str("KLUIS_STAFF_JWT_AUDIENCE", "kluis-staff"),
		KeyProvider:       r.str("KLUIS_KEY_PROVIDER", "local"),
		LocalKEKFile:      r.str("KLUIS_LOCAL_KEK_FILE", ""),
		AWSKMSKeyID:       r.str("KLUIS_AWSKMS_KEY_ID", ""),
		TransitMount:      r.str("KLUIS_TRANSIT_MOUNT", "transit"),
		TransitKey:        r.str("KLUIS_TRANSIT_KEY", "kluis"),
		BankProvider:      r.str("KLUIS_BANK_PROVIDER", "sandbox"),
		PlaidClientID:     r.str("PLAID_CLIENT_ID", ""),
		PlaidSecret:       r.str("PLAID_SECRET", ""),
		PlaidBaseURL:      r.str("PLAID_BASE_URL", ""),
		RedisURL:          r.str("KLUIS_REDIS_URL", ""),
		LogLevel:          r.str("KLUIS_LOG_LEVEL", "info"),
		KeyCryptoperiod:   r.duration("KLUIS_KEY_CRYPTOPERIOD", 365*24*time.Hour, time.Hour, 5*365*24*time.Hour),
		BankTokenMaxAge:   r.durationOrOff("KLUIS_BANK_TOKEN_MAX_AGE", 10*365*24*time.Hour),
		BankWebhookURL:    r.str("KLUIS_BANK_WEBHOOK_URL", ""),
		KeyCacheMaxAge:    r.duration("KLUIS_KEY_CACHE_MAX_AGE", 5*time.Minute, time.Second, 24*time.Hour),
		KeyCacheMaxUses:   r.integer("KLUIS_KEY_CACHE_MAX_USES", 10000, 1, 100000000),
		KeyCacheMaxKeys:   r.integer("KLUIS_KEY_CACHE_MAX_KEYS", 10000, 1, 10000000),
		RateAddress:       r.rate("KLUIS_RATE_LIMIT_ADDRESS", Rate{6000, time.Minute}),
		RateSubject:       r.rate("KLUIS_RATE_LIMIT_SUBJECT", Rate{600, time.Minute}),
		RateService:       r.rate("KLUIS_RATE_LIMIT_SERVICE", Rate{10000, time.Second}),
		RateLinkSession:   r.rate("KLUIS_RATE_LIMIT_LINK_SESSION", Rate{60, time.Minute}),
		RateTokenExchange: r.rate("KLUIS_RATE_LIMIT_TOKEN_EXCHANGE", Rate{60, time.Minute}),
		RateReveal:        r.rate("KLUIS_RATE_LIMIT_REVEAL", Rate{2000, time.Second}),
		IdempotencyTTL:    r.duration("KLUIS_IDEMPOTENCY_TTL", 24*time.Hour, 24*time.Hour, 30*24*time.Hour),
	}
	c.KeyringRecheck = r.duration("KLUIS_KEYRING_RECHECK", 5*time.Minute, time.Second, time.Hour)
	c.KeyringCryptoperiod = r.duration("KLUIS_KEYRING_CRYPTOPERIOD", 90*24*time.Hour, time.Hour, 5*365*24*time.Hour)
	c.KeyRotationBatch = r.integer("KLUIS_KEY_ROTATION_BATCH", 1000, 1, 100000)
	c.RateVerificationConfirm = r.rate("KLUIS_RATE_LIMIT_VERIFICATION_CONFIRM", Rate{60, time.Minute})
	c.RateLimitIPv6Prefix = r.integer("KLUIS_RATE_LIMIT_IPV6_PREFIX", 64, 32, 128)
	c.StaffMFAMaxAge = r.duration("KLUIS_STAFF_MFA_MAX_AGE", 15*time.Minute, time.Minute, 12*time.Hour)
	c.StaffTokenMaxLifetime = r.duration("KLUIS_STAFF_TOKEN_MAX_LIFETIME", 90*time.Minute, time.Minute, 24*time.Hour)
	c.MigrateDatabaseURL = r.str("KLUIS_MIGRATE_DATABASE_URL", "")
	c.AuditHeadInterval = r.duration("KLUIS_AUDIT_HEAD_INTERVAL", 5*time.Minute, time.Second, 24*time.Hour)
	c.readPlaidLink(&r)
	c.readHosted(&r)
	c.readRetention(&r)
	c.readVerification(&r)
	c.readBankProviders(&r)
	c.readStitch(&r)
	c.validate(&r)
	if len(r.problems) > 0 {
		return nil, errors.New("configuration: " + strings.Join(r.problems, "\n  "))
	}
	return c, nil
}

// readPlaidLink reads the Plaid Link settings, checked against what Plaid's
// /link/token/create accepts (plaidlink), so that a bad one stops kluis at
// start instead of failing every link session.
func (c *Config) readPlaidLink(r *reader) {
	c.PlaidClientName = r.str("KLUIS_PLAID_CLIENT_NAME", "kluis")
	for _, cc := range strings.Split(r.str("KLUIS_PLAID_COUNTRY_CODES", "US"), ",") {
		if cc = strings.ToUpper(strings.TrimSpace(cc)); cc != "" {
			c.PlaidCountryCodes = append(c.PlaidCountryCodes, cc)
		}
	}
	c.PlaidLanguage = r.str("KLUIS_PLAID_LANGUAGE", "en")
	c.PlaidRedirectURI = r.str("KLUIS_PLAID_REDIRECT_URI", "")
	c.PlaidAndroidPackageName = r.str("KLUIS_PLAID_ANDROID_PACKAGE_NAME", "")
	c.PlaidSameDayMicrodeposits = r.boolean("KLUIS_PLAID_SAME_DAY_MICRODEPOSITS")
	c.PlaidAutomatedMicrodeposits = r.boolean("KLUIS_PLAID_AUTOMATED_MICRODEPOSITS")
	if len(c.PlaidCountryCodes) == 0 {
		r.bad("KLUIS_PLAID_COUNTRY_CODES", "must name at least one country")
	}
	problems := plaidlink.Settings{ClientName: c.PlaidClientName, CountryCodes: c.PlaidCountryCodes, Language: c.PlaidLanguage,
		RedirectURI: c.PlaidRedirectURI, AndroidPackageName: c.PlaidAndroidPackageName}.Problems()
	for _, name := range []string{"KLUIS_PLAID_CLIENT_NAME", "KLUIS_PLAID_COUNTRY_CODES", "KLUIS_PLAID_LANGUAGE",
		"KLUIS_PLAID_REDIRECT_URI", "KLUIS_PLAID_ANDROID_PACKAGE_NAME"} {
		if why, ok := problems[name]; ok {
			r.bad(name, why)
		}
	}
	if c.Env == "production" && strings.HasPrefix(c.PlaidRedirectURI, "http://") {
		r.bad("KLUIS_PLAID_REDIRECT_URI", "production requires https")
	}
}

// LoadDatabaseOnly reads just what the database commands (migrate, jobs,
// audit verify) need, so that they run without the listeners' settings.
func LoadDatabaseOnly(getenv Getenv) (*Config, error) {
	r := reader{getenv: getenv}
	c := &Config{DatabaseURL: r.str("KLUIS_DATABASE_URL", ""), LogLevel: r.str("KLUIS_LOG_LEVEL", "info")}
	c.MigrateDatabaseURL = r.str("KLUIS_MIGRATE_DATABASE_URL", "")
	c.AuditSealInterval = r.duration("KLUIS_AUDIT_SEAL_INTERVAL", time.Second, 10*time.Millisecond, time.Minute)
	r.require("KLUIS_DATABASE_URL", c.DatabaseURL)
	r.databaseURL(c.DatabaseURL)
	if c.MigrateDatabaseURL != "" {
		r.databaseURLNamed("KLUIS_MIGRATE_DATABASE_URL", c.MigrateDatabaseURL)
	}
	r.oneOf("KLUIS_LOG_LEVEL", c.LogLevel, "debug", "info", "warn", "error")
	if len(r.problems) > 0 {
		return nil, errors.New("configuration: " + strings.Join(r.problems, "\n  "))
	}
	return c, nil
}

// readRetention reads a period per registered retention class, each bounded
// below by the class's minimum (audit entries: 365 days, PCI DSS 10.5.1).
func (c *Config) readRetention(r *reader) {
	reg, err := RetentionRegistry()
	if err != nil {
		r.problems = append(r.problems, err.Error())
		return
	}
	c.RetentionClasses = reg
	c.Retention = map[string]time.Duration{}
	for _, rc := range reg.Classes() {
		c.Retention[rc.Name] = r.duration(rc.Setting(), rc.Default, rc.Min, compliance.MaxRetention)
	}
	c.RetentionBatch = r.integer("KLUIS_RETENTION_BATCH", compliance.DefaultPurgeBatch, 100, 100000)
	c.RetentionBatchPause = r.duration("KLUIS_RETENTION_BATCH_PAUSE", compliance.DefaultPurgePause, 0, 10*time.Second)
	dry := r.str("KLUIS_RETENTION_DRY_RUN", "false")
	r.oneOf("KLUIS_RETENTION_DRY_RUN", dry, "true", "false")
	c.RetentionDryRun = dry == "true"
	c.readDormant(r)
	c.ErasureRevokeAttempts = r.integer("KLUIS_ERASURE_REVOKE_ATTEMPTS", compliance.DefaultRevokeAttempts, 1, 1000)
}

func (c *Config) validate(r *reader) {
	r.oneOf("KLUIS_ENV", c.Env, "development", "production")
	r.require("KLUIS_DATABASE_URL", c.DatabaseURL)
	r.databaseURL(c.DatabaseURL)
	if c.MigrateDatabaseURL != "" {
		r.databaseURLNamed("KLUIS_MIGRATE_DATABASE_URL", c.MigrateDatabaseURL)
	}
	r.addr("KLUIS_PUBLIC_ADDR", c.PublicAddr)
	r.addr("KLUIS_INTERNAL_ADDR", c.InternalAddr)
	r.pair("KLUIS_PUBLIC_TLS_CERT", c.PublicTLSCert, "KLUIS_PUBLIC_TLS_KEY", c.PublicTLSKey)
	c.validateInternal(r)
	if c.SPIFFETrustDomain != "" && !validTrustDomain(c.SPIFFETrustDomain) {
		r.bad("KLUIS_SPIFFE_TRUST_DOMAIN", "must be a SPIFFE trust domain: lower-case letters, digits, '.', '-' and '_' (no scheme, no path)")
	}
	c.validateJWT(r)
	c.validateKeys(r)
	c.validateBank(r)
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			r.bad("KLUIS_REDIS_URL", "must be a redis:// or rediss:// URL")
		}
	}
	r.oneOf("KLUIS_LOG_LEVEL", c.LogLevel, "debug", "info", "warn", "error")
	if c.Production() {
		c.validateProduction(r)
	}
}

func (c *Config) validateInternal(r *reader) {
	if !c.InternalTLS() {
		return
	}
	r.require("KLUIS_INTERNAL_TLS_CERT", c.InternalTLSCert)
	r.require("KLUIS_INTERNAL_TLS_KEY", c.InternalTLSKey)
	r.require("KLUIS_INTERNAL_CLIENT_CA", c.InternalClientCA)
	r.require("KLUIS_SERVICE_POLICY_FILE", c.ServicePolicyFile)
	r.file("KLUIS_INTERNAL_TLS_CERT", c.InternalTLSCert)
	r.file("KLUIS_INTERNAL_TLS_KEY", c.InternalTLSKey)
	r.file("KLUIS_INTERNAL_CLIENT_CA", c.InternalClientCA)
	r.file("KLUIS_SERVICE_POLICY_FILE", c.ServicePolicyFile)
}

// validTrustDomain is the SPIFFE specification's trust domain name: what
// api.ParseSPIFFEID compares a certificate's trust domain to byte for byte.
func validTrustDomain(td string) bool {
	if len(td) > 255 {
		return false
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (c *Config) validateJWT(r *reader) {
	switch {
	case c.JWKSFile == "" && c.JWKSURL == "":
		r.bad("KLUIS_JWT_JWKS_FILE", "one of KLUIS_JWT_JWKS_FILE or KLUIS_JWT_JWKS_URL is required")
	case c.JWKSFile != "" && c.JWKSURL != "":
		r.bad("KLUIS_JWT_JWKS_FILE", "set KLUIS_JWT_JWKS_FILE or KLUIS_JWT_JWKS_URL, not both")
	case c.JWKSFile != "":
		r.file("KLUIS_JWT_JWKS_FILE", c.JWKSFile)
	default:
		if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			r.bad("KLUIS_JWT_JWKS_URL", "must be an https URL")
		}
	}
	r.require("KLUIS_JWT_ISSUER", c.JWTIssuer)
	r.require("KLUIS_JWT_AUDIENCE", c.JWTAudience)
	r.require("KLUIS_STAFF_JWT_AUDIENCE", c.StaffJWTAudience)
	if c.JWTAudience != "" && c.JWTAudience == c.StaffJWTAudience {
		r.bad("KLUIS_STAFF_JWT_AUDIENCE", "must differ from KLUIS_JWT_AUDIENCE, or a user token would pass as a staff token")
	}
}

func (c *Config) validateKeys(r *reader) {
	switch c.KeyProvider {
	case "local":
		r.require("KLUIS_LOCAL_KEK_FILE", c.LocalKEKFile)
	case "awskms":
		r.require("KLUIS_AWSKMS_KEY_ID", c.AWSKMSKeyID)
	case "transit":
		r.require("KLUIS_TRANSIT_MOUNT", c.TransitMount)
		r.require("KLUIS_TRANSIT_KEY", c.TransitKey)
	default:
		r.bad("KLUIS_KEY_PROVIDER", "must be local, awskms or transit")
	}
}

// knownBankProviders are the names KLUIS_BANK_PROVIDERS may hold.
var knownBankProviders = map[string]bool{"sandbox": true, "plaid": true, "stitch": true}

// readBankProviders reads KLUIS_BANK_PROVIDERS (comma-separated, the first
// the default), or else the older single KLUIS_BANK_PROVIDER.
func (c *Config) readBankProviders(r *reader) {
	list := strings.TrimSpace(r.getenv("KLUIS_BANK_PROVIDERS"))
	if list == "" {
		c.BankProviders = []string{c.BankProvider}
		return
	}
	if strings.TrimSpace(r.getenv("KLUIS_BANK_PROVIDER")) != "" {
		r.bad("KLUIS_BANK_PROVIDERS", "set KLUIS_BANK_PROVIDERS or the older KLUIS_BANK_PROVIDER, not both")
	}
	c.bankProvidersListed = true
	seen := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		switch {
		case !knownBankProviders[name]:
			r.bad("KLUIS_BANK_PROVIDERS", "must be a comma-separated list of sandbox, plaid and stitch")
			return
		case seen[name]:
			r.bad("KLUIS_BANK_PROVIDERS", "names "+name+" twice")
			return
		}
		seen[name] = true
		c.BankProviders = append(c.BankProviders, name)
	}
	c.BankProvider = c.BankProviders[0]
}

// HasBankProvider reports whether name is among the configured bank
// providers.
func (c *Config) HasBankProvider(name string) bool {
	for _, p := range c.BankProviders {
		if p == name {
			return true
		}
	}
	return false
}

func (c *Config) validateBank(r *reader) {
	if len(c.BankProviders) > 1 && c.BankWebhookURL != "" && !strings.Contains(c.BankWebhookURL, "{provider}") {
		r.bad("KLUIS_BANK_WEBHOOK_URL", "with several bank providers it must name each one's route: https://…/webhooks/{provider}")
	}
	for _, name := range c.BankProviders {
		c.validateBankProvider(r, name)
	}
}

func (c *Config) validateBankProvider(r *reader, name string) {
	switch name {
	case "sandbox":
	case "plaid":
		r.require("PLAID_CLIENT_ID", c.PlaidClientID)
		r.require("PLAID_SECRET", c.PlaidSecret)
		r.require("PLAID_BASE_URL", c.PlaidBaseURL)
		if c.PlaidBaseURL != "" {
			if u, err := url.Parse(c.PlaidBaseURL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
				r.bad("PLAID_BASE_URL", "must be an https URL")
			}
		}
	case "stitch":
		c.validateStitch(r)
	default:
		r.bad("KLUIS_BANK_PROVIDER", "must be sandbox, plaid or stitch")
	}
}

// validateProduction refuses what is fine on a laptop and dangerous with real
// data: the local root key, the sandbox bank, an internal listener without
// mutual TLS, and plain-HTTP endpoints for keys and banks.
func (c *Config) validateProduction(r *reader) {
	if c.KeyProvider == "local" {
		r.bad("KLUIS_KEY_PROVIDER", "production refuses the local root key: use awskms or transit")
	}
	if c.HasBankProvider("sandbox") {
		r.bad(c.bankProvidersSetting(), "production refuses the sandbox provider")
	}
	if !c.InternalTLS() {
		r.bad("KLUIS_INTERNAL_TLS_CERT", "production requires mutual TLS on the internal listener (KLUIS_INTERNAL_TLS_CERT, KLUIS_INTERNAL_TLS_KEY, KLUIS_INTERNAL_CLIENT_CA)")
	}
	if strings.HasPrefix(c.JWKSURL, "http://") {
		r.bad("KLUIS_JWT_JWKS_URL", "production requires https")
	}
	if strings.HasPrefix(c.PlaidBaseURL, "http://") {
		r.bad("PLAID_BASE_URL", "production requires https")
	}
	for name, u := range map[string]string{"STITCH_BASE_URL": c.StitchBaseURL, "STITCH_AUTH_URL": c.StitchAuthURL,
		"KLUIS_STITCH_REDIRECT_URI": c.StitchRedirectURI} {
		if strings.HasPrefix(u, "http://") {
			r.bad(name, "production requires https")
		}
	}
}

// reader collects problems instead of stopping at the first, so that an
// operator fixes the whole environment in one go.
type reader struct {
	getenv   Getenv
	problems []string
}

func (r *reader) bad(name, why string) { r.problems = append(r.problems, name+": "+why) }

func (r *reader) str(name, def string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

// boolean reads a true/false setting (default false); anything else is a
// problem naming the variable.
func (r *reader) boolean(name string) bool {
	v := r.str(name, "false")
	r.oneOf(name, v, "true", "false")
	return v == "true"
}

func (r *reader) require(name, v string) {
	if v == "" {
		r.bad(name, "is required")
	}
}

func (r *reader) oneOf(name, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	r.bad(name, fmt.Sprintf("must be one of %s", strings.Join(allowed, ", ")))
}

// databaseURL checks the URL's shape without ever echoing it: it may hold a
// password.
func (r *reader) databaseURL(v string) { r.databaseURLNamed("KLUIS_DATABASE_URL", v) }

func (r *reader) databaseURLNamed(name, v string) {
	if v == "" {
		return
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		r.bad(name, "must be a postgres:// URL")
	}
}

func (r *reader) addr(name, v string) {
	if _, err := netip.ParseAddrPort(v); err == nil {
		return
	}
	host, port, ok := strings.Cut(v, ":")
	if p, err := strconv.Atoi(port); !ok || err != nil || p < 0 || p > 65535 || strings.ContainsAny(host, "/ ") {
		r.bad(name, "must be host:port")
	}
}

func (r *reader) pair(nameA, a, nameB, b string) {
	if (a == "") != (b == "") {
		r.bad(nameA, "must be set together with "+nameB)
	}
	r.file(nameA, a)
	r.file(nameB, b)
}

func (r *reader) file(name, path string) {
	if path == "" {
		return
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		r.bad(name, "is not a readable file")
	}
}

func (r *reader) cidrs(name string) []netip.Prefix {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return nil
	}
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				r.bad(name, fmt.Sprintf("%q is not a CIDR", s))
				continue
			}
		}
		out = append(out, p.Masked())
	}
	return out
}

func (r *reader) integer(name string, def, lo, hi int) int {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.bad(name, fmt.Sprintf("must be a whole number between %d and %d", lo, hi))
		return def
	}
	return n
}

func (r *reader) duration(name string, def, lo, hi time.Duration) time.Duration {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	d, err := parseDuration(v)
	if err != nil || d < lo || d > hi {
		r.bad(name, fmt.Sprintf("must be a duration between %s and %s (Go syntax, or whole days as 90d)", lo, hi))
		return def
	}
	return d
}

// durationOrOff reads "off" (the default: 0) or any positive duration up
// to hi.
func (r *reader) durationOrOff(name string, hi time.Duration) time.Duration {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" || v == "off" {
		return 0
	}
	d, err := parseDuration(v)
	if err != nil || d <= 0 || d > hi {
		r.bad(name, fmt.Sprintf("must be off or a positive duration up to %s (Go syntax, or whole days as 90d)", hi))
		return 0
	}
	return d
}

// parseDuration reads a Go duration, or a whole number of days as "<n>d",
// since retention and rotation periods are spoken of in days.
func parseDuration(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > 100*365 {
			return 0, fmt.Errorf("bad number of days")
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

// rate reads "N/s", "N/m" or "N/h" (1 <= N <= 1000000), or "off".
func (r *reader) rate(name string, def Rate) Rate {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	if v == "off" || v == "0" {
		return Rate{}
	}
	n, unit, ok := strings.Cut(v, "/")
	events, err := strconv.Atoi(n)
	per, known := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	if !ok || err != nil || !known || events < 1 || events > 1000000 {
		r.bad(name, "must be N/s, N/m or N/h (1 <= N <= 1000000), or off")
		return def
	}
	return Rate{Events: events, Per: per}
}

// readVerification reads the verification and event-webhook settings. In
// production every endpoint must be https and a secret of at least 32
// bytes is required once there are endpoints.
func (c *Config) readVerification(r *reader) {
	c.VerificationAttempts = r.integer("KLUIS_VERIFICATION_ATTEMPTS", 3, 1, 10)
	c.VerificationWindow = r.duration("KLUIS_VERIFICATION_WINDOW", 10*24*time.Hour, time.Hour, 90*24*time.Hour)
	c.MicroDepositKind = r.str("KLUIS_MICRO_DEPOSIT_KIND", "amounts")
	r.oneOf("KLUIS_MICRO_DEPOSIT_KIND", c.MicroDepositKind, "amounts", "code")
	c.SandboxRailDelay = r.duration("KLUIS_SANDBOX_RAIL_DELAY", 0, 0, 30*24*time.Hour)
	c.readVerificationLimits(r)
	for _, e := range strings.Split(r.str("KLUIS_WEBHOOK_ENDPOINTS", ""), ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		u, err := url.Parse(e)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			// The URL is not quoted: it may carry a token.
			r.bad("KLUIS_WEBHOOK_ENDPOINTS", "every endpoint must be an http(s) URL")
		case u.Scheme != "https" && c.Production():
			r.bad("KLUIS_WEBHOOK_ENDPOINTS", "every endpoint must be https in production")
		}
		c.WebhookEndpoints = append(c.WebhookEndpoints, e)
	}
	c.WebhookSecret = r.str("KLUIS_WEBHOOK_SECRET", "")
	c.WebhookSecretFile = r.str("KLUIS_WEBHOOK_SECRET_FILE", "")
	if c.WebhookSecret != "" && c.WebhookSecretFile != "" {
		r.bad("KLUIS_WEBHOOK_SECRET", "set KLUIS_WEBHOOK_SECRET or KLUIS_WEBHOOK_SECRET_FILE, not both")
	}
	r.file("KLUIS_WEBHOOK_SECRET_FILE", c.WebhookSecretFile)
	if c.WebhookSecret != "" && len(c.WebhookSecret) < 32 {
		r.bad("KLUIS_WEBHOOK_SECRET", "must be at least 32 bytes")
	}
	if len(c.WebhookEndpoints) > 0 && c.WebhookSecret == "" && c.WebhookSecretFile == "" {
		r.bad("KLUIS_WEBHOOK_SECRET", "is required when KLUIS_WEBHOOK_ENDPOINTS is set")
	}
	c.WebhookRetryFor = r.duration("KLUIS_WEBHOOK_RETRY_FOR", 72*time.Hour, 24*time.Hour, 30*24*time.Hour)
	c.readPreviousSecret(r)
	c.AppsFile = r.str("KLUIS_APPS_FILE", "")
	r.file("KLUIS_APPS_FILE", c.AppsFile)
	if c.AppsFile != "" && (len(c.WebhookEndpoints) > 0 || c.WebhookPreviousSecretFile != "") {
		r.bad("KLUIS_APPS_FILE", "with an apps file, event endpoints and their secrets are set per app in it, not in KLUIS_WEBHOOK_*")
	}
	c.AllowedOrigins = r.list("KLUIS_ALLOWED_ORIGINS")
	c.RedirectURIs = r.list("KLUIS_REDIRECT_URIS")
	if c.AppsFile != "" && (len(c.AllowedOrigins) > 0 || len(c.RedirectURIs) > 0) {
		r.bad("KLUIS_APPS_FILE", "with an apps file, allowed origins and redirect URIs are set per app in it")
	}
}

// list reads a comma-separated setting, without empty entries.
func (r *reader) list(name string) []string {
	var out []string
	for _, v := range strings.Split(r.str(name, ""), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// readPreviousSecret reads the secret being rotated out of the single
// app's endpoints and the date it stops signing.
func (c *Config) readPreviousSecret(r *reader) {
	c.WebhookPreviousSecretFile = r.str("KLUIS_WEBHOOK_PREVIOUS_SECRET_FILE", "")
	until := r.str("KLUIS_WEBHOOK_PREVIOUS_SECRET_RETIRE_AT", "")
	if (c.WebhookPreviousSecretFile == "") != (until == "") {
		r.bad("KLUIS_WEBHOOK_PREVIOUS_SECRET_FILE", "set it together with KLUIS_WEBHOOK_PREVIOUS_SECRET_RETIRE_AT, or neither")
		return
	}
	if until == "" {
		return
	}
	r.file("KLUIS_WEBHOOK_PREVIOUS_SECRET_FILE", c.WebhookPreviousSecretFile)
	t, err := time.Parse(time.RFC3339, until)
	if err != nil {
		r.bad("KLUIS_WEBHOOK_PREVIOUS_SECRET_RETIRE_AT", "must be an RFC 3339 time, such as 2027-01-31T00:00:00Z")
	}
	c.WebhookPreviousSecretRetireAt = t
}

// readVerificationLimits reads the limits on guessing micro-deposits
// (docs/SECURITY.md, "Verification limits"). Failed verifications must be kept at
// least as long as they count, or the purge would lift locks early.
func (c *Config) readVerificationLimits(r *reader) {
	c.VerificationLockout = r.duration("KLUIS_VERIFICATION_LOCKOUT", 30*24*time.Hour, time.Hour, 365*24*time.Hour)
	// At least 3: one user adds at most 2 failures to a number, so one
	// attacker alone cannot reach the limit and lock the owner out.
	c.VerificationNumberFailures = r.integer("KLUIS_VERIFICATION_NUMBER_FAILURES", 6, 3, 1000)
	c.RateManualAccount = r.rate("KLUIS_RATE_LIMIT_MANUAL_ACCOUNT", Rate{20, time.Hour})
	c.RateVerificationStart = r.rate("KLUIS_RATE_LIMIT_VERIFICATION_START", Rate{20, time.Hour})
	if keep, ok := c.Retention[verification.FailuresRetentionClass]; ok && keep < c.VerificationLockout {
		r.bad("KLUIS_RETENTION_VERIFICATION_FAILURES", "must be at least KLUIS_VERIFICATION_LOCKOUT: failed verifications are kept as long as they count")
	}
}

// minDormancy is the shortest dormancy period: erasing people is not a
// setting to try in minutes.
const minDormancy = 30 * 24 * time.Hour

// readDormant reads the dormant-subject period. A subject's reveals and
// links are judged from the audit log, so the log must keep entries at
// least that long, or a reveal it no longer holds would not count.
func (c *Config) readDormant(r *reader) {
	c.DormantSubjects = r.durationOrOff("KLUIS_RETENTION_DORMANT_SUBJECTS", compliance.MaxRetention)
	if c.DormantSubjects == 0 {
		return
	}
	if c.DormantSubjects < minDormancy {
		r.bad("KLUIS_RETENTION_DORMANT_SUBJECTS", "must be off or at least 720h (30 days)")
	}
	if keep := c.Retention[compliance.AuditClass]; keep < c.DormantSubjects {
		r.bad("KLUIS_RETENTION_DORMANT_SUBJECTS", "must not be longer than KLUIS_RETENTION_AUDIT_ENTRIES: reveals and links are read from the audit log")
	}
}

// bankProvidersSetting names the variable the bank providers came from, for
// problems about them.
func (c *Config) bankProvidersSetting() string {
	if c.bankProvidersListed {
		return "KLUIS_BANK_PROVIDERS"
	}
	return "KLUIS_BANK_PROVIDER"
}
