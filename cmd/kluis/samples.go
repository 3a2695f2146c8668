package main

import (
	"crypto/ecdsa"
	"fmt"
	"io"
	"path/filepath"
	"text/template"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// samplesText is what `kluis dev` prints once it listens: tokens for a
// sandbox user and a compliance officer, and requests to try.
var samplesText = template.Must(template.New("samples").Parse(`
kluis is running (development: local root key, sandbox bank provider).

  public listener:   http://{{.Public}}
  internal listener: https://{{.Internal}} (mutual TLS; certificates in {{.Dir}})

USER_TOKEN is valid for 12 hours; STAFF_TOKEN for 90 minutes, and for erasure
and legal-hold actions only in its first 15 (restart for a fresh one):

  export USER_TOKEN={{.UserToken}}
  export STAFF_TOKEN={{.StaffToken}}

Try:

  curl -s http://{{.Public}}/healthz
  curl -s http://{{.Public}}/readyz
  curl -s http://{{.Public}}/v1/items -H "Authorization: Bearer $USER_TOKEN"
  curl -s http://{{.Public}}/v1/items                      # 401: no token

Link a sandbox bank (replace lks_…, the public token and itm_… with what each step answers):

  J='Content-Type: application/json'; A="Authorization: Bearer $USER_TOKEN"
  curl -s -X POST http://{{.Public}}/v1/link/sessions -H "$A" -H "$J" -d '{"products":["auth"]}'
  curl -s -X POST http://{{.Public}}/v1/sandbox/public-token -H "$A" -H "$J" \
    -d '{"link_session_id":"lks_…","institution_id":"ins_sandbox","username":"user_good","password":"pass_good"}'
  curl -s -X POST http://{{.Public}}/v1/link/sessions/lks_…/exchange -H "$A" -H "$J" -d '{"public_token":"…"}'
  curl -s --cacert {{.Dir}}/ca.crt --cert {{.Dir}}/payments.crt --key {{.Dir}}/payments.key \
    https://{{.Internal}}/internal/v1/items/itm_…                       # credential_ref for the next step
  curl -s --cacert {{.Dir}}/ca.crt --cert {{.Dir}}/payments.crt --key {{.Dir}}/payments.key -H "$J" \
    -X POST https://{{.Internal}}/internal/v1/credentials/cred_…/reveal -d '{"purpose":"payment_initiation"}'

Verify a manual account with micro-deposits:

  curl -s -X POST http://{{.Public}}/v1/accounts -H "$A" -H "$J" \
    -d '{"account_number":"000123456789","routing_number":"011000015","account_type":"checking","holder_name":"Dev User"}'
  curl -s -X POST http://{{.Public}}/v1/accounts/acc_…/verifications -H "$A" -H "$J" -d '{"method":"auto"}'
  curl -s http://{{.Public}}/v1/sandbox/verifications/ver_…/deposits -H "$A"
  curl -s -X POST http://{{.Public}}/v1/verifications/ver_…/confirm -H "$A" -H "$J" -d '{"amounts":[12,34]}'

Plaid's own micro-deposits, played by the sandbox (docs/PLAID.md): link ins_sandbox_same_day
as above; the account's verification is provider-checked and posted (409 names it):

  curl -s -X POST http://{{.Public}}/v1/accounts/acc_…/verifications -H "$A" -H "$J" -d '{"method":"auto"}'
  curl -s http://{{.Public}}/v1/verifications/ver_… -H "$A"
  curl -s -X POST http://{{.Public}}/v1/link/sessions -H "$A" -H "$J" -d '{"products":["auth"],"item_id":"itm_…"}'
  curl -s -X POST http://{{.Public}}/v1/sandbox/public-token -H "$A" -H "$J" \
    -d '{"link_session_id":"lks_…","username":"user_good","password":"pass_good","code":"ABC"}'
  curl -s -X POST http://{{.Public}}/v1/link/sessions/lks_…/exchange -H "$A" -H "$J" -d '{"public_token":"…"}'
  curl -s http://{{.Public}}/v1/verifications/ver_… -H "$A"                # verified

or link ins_sandbox_automated and have "Plaid" confirm the deposit itself:

  curl -s -X POST http://{{.Public}}/v1/sandbox/items/itm_…/fire-webhook -H "$A" -H "$J" -d '{"code":"AUTOMATICALLY_VERIFIED"}'

A South African manual account (the banks: GET /v1/banks?country=ZA), verified
by the bank (bank account verification; the sandbox bank answers by the number's
last four digits: 0001 verified, 0002 no such account, 0003 closed, 0004 ID
mismatch, 0005 name mismatch, 0006 and 0007 pending until the
verification-bank-poll job runs, 0008 unknown):

  curl -s "http://{{.Public}}/v1/banks?country=ZA" -H "$A"
  curl -s -X POST http://{{.Public}}/v1/accounts -H "$A" -H "$J" \
    -d '{"country":"ZA","bank_id":"za_capitec","account_number":"1479260001","account_type":"savings","holder_name":"Dev User","holder_id_number":"8001015009087"}'
  curl -s -X POST http://{{.Public}}/v1/accounts/acc_…/verifications -H "$A" -H "$J" -d '{"method":"bank_account_verification"}'

A holder without a South African ID number gives their passport and its country
instead (the same test accounts):

  curl -s -X POST http://{{.Public}}/v1/accounts -H "$A" -H "$J" \
    -d '{"country":"ZA","bank_id":"za_capitec","account_number":"1479260004","account_type":"savings","holder_name":"Dev User","holder_passport_number":"FN1234567","holder_passport_country":"ZW"}'

  curl -s --cacert {{.Dir}}/ca.crt --cert {{.Dir}}/payments.crt --key {{.Dir}}/payments.key \
    https://{{.Internal}}/metrics | head
  curl -s --cacert {{.Dir}}/ca.crt --cert {{.Dir}}/compliance-console.crt --key {{.Dir}}/compliance-console.key \
    -X POST https://{{.Internal}}/compliance/v1/audit/verify -H "Authorization: Bearer $STAFF_TOKEN"

The contract: http://{{.Public}}/openapi.yaml. Stop with Ctrl-C.
`))

func printSamples(out io.Writer, dir string, addrs [2]string, signer *ecdsa.PrivateKey) {
	data := map[string]string{
		"Public": addrs[0], "Internal": addrs[1], "Dir": filepath.Clean(dir),
		"UserToken": mintDev(signer, jwt.MapClaims{"sub": "user_dev_1", "aud": "kluis"}),
		// A staff token as the compliance routes want it: MFA just now
		// (auth_time) and a lifetime within KLUIS_STAFF_TOKEN_MAX_LIFETIME's
		// default, so erasure and legal-hold actions take it.
		"StaffToken": mintDev(signer, jwt.MapClaims{
			"sub": "staff_dev_1", "aud": "kluis-staff", "roles": []string{"compliance"}, "amr": []string{"pwd", "mfa"},
			"auth_time": time.Now().Unix(), "exp": time.Now().Add(90 * time.Minute).Unix(),
		}),
	}
	if err := samplesText.Execute(out, data); err != nil {
		fmt.Fprintln(out, "could not print the samples:", err)
	}
}
