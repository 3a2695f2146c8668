// Package plaidlink holds what Plaid's /link/token/create accepts (API
// version 2020-09-14, as in Plaid's OpenAPI description) for the settings an
// app owner gives kluis: client name, countries, language, OAuth redirect
// URI, Android package name, and the depository account subtypes a link
// session may filter on. It has no dependencies, so that configuration can
// refuse a bad setting at start with the same rules the adapter applies.
package plaidlink

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// MaxClientNameLen is Plaid's limit: a longer client_name makes Link show
// "This Application" instead.
const MaxClientNameLen = 30

// CountryCodes are Plaid's CountryCode enum.
var CountryCodes = []string{"US", "GB", "ES", "NL", "FR", "IE", "CA", "DE", "IT", "PL", "DK", "NO", "SE", "EE", "LT", "LV", "PT", "BE", "AT", "FI"}

// Languages are the languages Link can be shown in.
var Languages = []string{"da", "nl", "en", "et", "fr", "de", "hi", "it", "lv", "lt", "no", "pl", "pt", "ro", "es", "sv", "vi"}

// DepositorySubtypes are the values of Plaid's DepositoryAccountSubtype that
// a link session may filter on. "limited purpose checking" is left out: it
// needs limited_purpose_types, which kluis does not send.
var DepositorySubtypes = []string{"checking", "savings", "hsa", "cd", "money market", "paypal", "prepaid", "cash management", "ebt", "all"}

// Settings are an app owner's Link settings.
type Settings struct {
	ClientName         string
	CountryCodes       []string
	Language           string
	RedirectURI        string
	AndroidPackageName string
}

// androidPackage is a Java package name: two or more dot-separated
// identifiers, each starting with a letter.
var androidPackage = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$`)

// Problems lists what Plaid would refuse in s, keyed by the setting's
// environment variable; empty when s is acceptable. Empty fields are
// acceptable (the adapter's defaults apply).
func (s Settings) Problems() map[string]string {
	out := map[string]string{}
	if n := len([]rune(s.ClientName)); n > MaxClientNameLen || (s.ClientName != "" && strings.TrimSpace(s.ClientName) == "") {
		out["KLUIS_PLAID_CLIENT_NAME"] = fmt.Sprintf("must be 1 to %d characters (Link shows a longer name as \"This Application\")", MaxClientNameLen)
	}
	for _, c := range s.CountryCodes {
		if !Contains(CountryCodes, c) {
			out["KLUIS_PLAID_COUNTRY_CODES"] = fmt.Sprintf("%q is not a country Plaid serves (one of %s)", clip(c), strings.Join(CountryCodes, ", "))
			break
		}
	}
	if s.Language != "" && !Contains(Languages, s.Language) {
		out["KLUIS_PLAID_LANGUAGE"] = "must be one of " + strings.Join(Languages, ", ")
	}
	if s.RedirectURI != "" {
		if why := redirectProblem(s.RedirectURI); why != "" {
			out["KLUIS_PLAID_REDIRECT_URI"] = why
		}
	}
	if s.AndroidPackageName != "" && (len(s.AndroidPackageName) > 255 || !androidPackage.MatchString(s.AndroidPackageName)) {
		out["KLUIS_PLAID_ANDROID_PACKAGE_NAME"] = "must be an Android package name such as com.example.app"
	}
	return out
}

// redirectProblem says why Plaid would refuse an OAuth redirect URI: it
// must be https (Plaid allows plain http only for localhost in its
// sandbox), with a host, and no query, fragment or credentials.
func redirectProblem(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "must be an absolute https URL with no query, fragment or credentials"
	}
	if u.Scheme == "https" || (u.Scheme == "http" && (u.Hostname() == "localhost" || u.Hostname() == "127.0.0.1")) {
		return ""
	}
	return "must be an https URL (plain http only on localhost)"
}

// Contains reports whether list holds s.
func Contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func clip(s string) string {
	if len(s) > 8 {
		return s[:8] + "…"
	}
	return s
}
