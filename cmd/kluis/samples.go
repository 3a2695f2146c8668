package main

import (
	"crypto/ecdsa"
	"fmt"
	"io"
	"path/filepath"
	"text/template"

	"github.com/golang-jwt/jwt/v5"
)

// samplesText is what `kluis dev` prints once it listens: tokens for a
// sandbox user and a compliance officer, and requests to try.
var samplesText = template.Must(template.New("samples").Parse(`
kluis is running (development: local root key, sandbox bank provider).

  public listener:   http://{{.Public}}
  internal listener: https://{{.Internal}} (mutual TLS; certificates in {{.Dir}})

Tokens, valid for 12 hours:

  export USER_TOKEN={{.UserToken}}
  export STAFF_TOKEN={{.StaffToken}}

Try:

  curl -s http://{{.Public}}/healthz
  curl -s http://{{.Public}}/readyz
  curl -s http://{{.Public}}/v1/items -H "Authorization: Bearer $USER_TOKEN"
  curl -s http://{{.Public}}/v1/items                      # 401: no token

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
		"StaffToken": mintDev(signer, jwt.MapClaims{
			"sub": "staff_dev_1", "aud": "kluis-staff", "roles": []string{"compliance"}, "amr": []string{"pwd", "mfa"},
		}),
	}
	if err := samplesText.Execute(out, data); err != nil {
		fmt.Fprintln(out, "could not print the samples:", err)
	}
}
