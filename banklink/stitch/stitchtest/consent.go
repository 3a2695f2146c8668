package stitchtest

import (
	"html/template"
	"net/http"
)

// WithConsentPage makes the authorize endpoint show the user a consent
// page (Allow, Deny) instead of consenting at once, for a browser to click
// through as a user does at Stitch. Authorize and Decline still play the
// user without it.
func WithConsentPage() Option { return func(s *Server) { s.consentPage = true } }

var consentTmpl = template.Must(template.New("consent").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Stitch (test): share your accounts</title></head>
<body><main><h1>Share your bank accounts</h1>
<p>Sign in at your bank and share your accounts with the app.</p>
<form method="post" action="/connect/authorize/consent">
{{range $k, $vs := .}}{{range $vs}}<input type="hidden" name="{{$k}}" value="{{.}}">{{end}}{{end}}
<button type="submit" name="decision" value="allow" id="stitch-allow">Allow</button>
<button type="submit" name="decision" value="deny" id="stitch-deny">Deny</button>
</form></main></body></html>`))

// consentForm shows the consent page for an authorize request.
func (s *Server) consentForm(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = consentTmpl.Execute(w, r.URL.Query())
}

// decide is the consent page's answer: Allow issues a code as the
// authorize endpoint does; Deny sends the browser back with access_denied.
func (s *Server) decide(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	q := r.PostForm
	decision := q.Get("decision")
	q.Del("decision")
	if decision == "deny" {
		loc, err := s.Decline("/connect/authorize?" + q.Encode())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, loc, http.StatusFound)
		return
	}
	s.mu.Lock()
	user := s.signInAs
	s.signInAs = ""
	s.mu.Unlock()
	loc, status := s.consent(q, user)
	if status != http.StatusFound {
		http.Error(w, loc, status)
		return
	}
	http.Redirect(w, r, loc, http.StatusFound)
}

// SignInAs makes the consent page's next Allow authorize the existing
// user userID, as a user who signs in at their bank with the same login
// again does (Stitch's reauthorization: the code is for the same user, the
// id token's sub unchanged); Allow makes new users again after it.
func (s *Server) SignInAs(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signInAs = userID
}
