package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"
	"gopkg.in/yaml.v3"
)

// The API reference at /docs: one static HTML page rendered from the
// contract (OpenAPI, embedded in the binary) when first asked for, served
// on both listeners like /openapi.yaml. It carries no script at all, from
// kluis or anywhere else, and loads nothing: its one stylesheet is inline
// and allowed by its hash, so the Content-Security-Policy can forbid
// everything else.

// docsCSS is the page's only style.
const docsCSS = `body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
code,pre{font:13px ui-monospace,monospace;background:#f3f3f3;padding:0 .2em}
h2{border-bottom:1px solid #ccc;margin-top:2.5rem}
h3{margin:1.8rem 0 .3rem}
.m{display:inline-block;min-width:4.5em;font-weight:bold}
.meta{color:#555;font-size:13px}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}`

// docsCSP is the page's Content-Security-Policy: nothing but its own
// inline style, no framing, no base or form targets.
var docsCSP = func() string {
	sum := sha256.Sum256([]byte(docsCSS))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

// docsContract is the part of the contract the page shows.
type docsContract struct {
	Info struct {
		Title       string `yaml:"title"`
		Version     string `yaml:"version"`
		Description string `yaml:"description"`
	} `yaml:"info"`
	Paths      map[string]map[string]yaml.Node `yaml:"paths"`
	Components struct {
		Parameters map[string]docsParam    `yaml:"parameters"`
		Responses  map[string]docsResponse `yaml:"responses"`
	} `yaml:"components"`
}

type docsOperation struct {
	OperationID string                  `yaml:"operationId"`
	Summary     string                  `yaml:"summary"`
	Description string                  `yaml:"description"`
	Tags        []string                `yaml:"tags"`
	Security    []map[string][]string   `yaml:"security"`
	MutualTLS   string                  `yaml:"x-mutual-tls"`
	Listeners   []string                `yaml:"x-listeners"`
	Parameters  []docsParam             `yaml:"parameters"`
	Responses   map[string]docsResponse `yaml:"responses"`
}

type docsParam struct {
	Ref         string `yaml:"$ref"`
	Name        string `yaml:"name"`
	In          string `yaml:"in"`
	Required    bool   `yaml:"required"`
	Description string `yaml:"description"`
}

type docsResponse struct {
	Ref         string `yaml:"$ref"`
	Description string `yaml:"description"`
}

// docsPageOp is one operation as the page lists it: the contract's
// operation with its parameters and responses resolved, who may call it and
// where.
type docsPageOp struct {
	docsOperation
	Method, Path, Anchor string
	// Group is the first tag: the page lists operations by it.
	Group          string
	Auth, Listener string
	Params         []docsParam
	Codes          []string
	ResponseDescs  map[string]string
}

// renderDocs renders the page from the contract's bytes.
func renderDocs(contract []byte) ([]byte, error) {
	var doc docsContract
	if err := yaml.Unmarshal(contract, &doc); err != nil {
		return nil, fmt.Errorf("docs: read the contract: %w", err)
	}
	ops, err := docsOperations(&doc)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	css := template.CSS(docsCSS) // #nosec G203 -- a constant of this file, not input
	err = docsTemplate.Execute(&buf, map[string]any{"Info": doc.Info, "Ops": ops, "CSS": css})
	return buf.Bytes(), err
}

// docsOperations lists every operation, by tag and then path, with its
// parameters and responses resolved from the components.
func docsOperations(doc *docsContract) ([]docsPageOp, error) {
	var ops []docsPageOp
	for path, item := range doc.Paths {
		var shared []docsParam
		if n, ok := item["parameters"]; ok {
			if err := n.Decode(&shared); err != nil {
				return nil, fmt.Errorf("docs: %s parameters: %w", path, err)
			}
		}
		for method, node := range item {
			if method == "parameters" || strings.HasPrefix(method, "x-") {
				continue
			}
			var op docsOperation
			if err := node.Decode(&op); err != nil {
				return nil, fmt.Errorf("docs: %s %s: %w", method, path, err)
			}
			ops = append(ops, docsPage(doc, strings.ToUpper(method), path, op, shared))
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Group != ops[j].Group {
			return ops[i].Group < ops[j].Group
		}
		return ops[i].Path+" "+ops[i].Method < ops[j].Path+" "+ops[j].Method
	})
	return ops, nil
}

func docsPage(doc *docsContract, method, path string, op docsOperation, shared []docsParam) docsPageOp {
	p := docsPageOp{Method: method, Path: path, docsOperation: op, Group: "other"}
	p.Anchor = op.OperationID
	if len(op.Tags) > 0 {
		p.Group = op.Tags[0]
	}
	p.Listener = "public"
	switch {
	case len(op.Listeners) > 0:
		p.Listener = strings.Join(op.Listeners, " and ")
	case op.MutualTLS == "required":
		p.Listener = "internal (mutual TLS)"
	}
	var schemes []string
	for _, req := range op.Security {
		for name := range req {
			schemes = append(schemes, name)
		}
	}
	sort.Strings(schemes)
	p.Auth = strings.Join(schemes, ", ")
	if op.MutualTLS == "required" {
		p.Auth = strings.TrimPrefix(p.Auth+", client certificate", ", ")
	}
	for _, prm := range append(append([]docsParam{}, shared...), op.Parameters...) {
		if prm.Ref != "" {
			prm = doc.Components.Parameters[strings.TrimPrefix(prm.Ref, "#/components/parameters/")]
		}
		p.Params = append(p.Params, prm)
	}
	p.ResponseDescs = map[string]string{}
	for code, r := range op.Responses {
		if r.Ref != "" {
			r = doc.Components.Responses[strings.TrimPrefix(r.Ref, "#/components/responses/")]
		}
		p.Codes = append(p.Codes, code)
		p.ResponseDescs[code] = r.Description
	}
	sort.Strings(p.Codes)
	return p
}

// codeSpan is a Markdown code span in the contract's prose.
var codeSpan = regexp.MustCompile("`([^`]+)`")

// docsProse renders the contract's prose (Markdown-ish) as escaped HTML:
// paragraphs on blank lines and code spans; nothing else is interpreted,
// and everything is escaped before the two are applied.
func docsProse(s string) template.HTML {
	var out strings.Builder
	for _, para := range strings.Split(strings.TrimSpace(s), "\n\n") {
		if strings.TrimSpace(para) == "" {
			continue
		}
		esc := template.HTMLEscapeString(para)
		out.WriteString("<p>" + codeSpan.ReplaceAllString(esc, "<code>$1</code>") + "</p>\n")
	}
	return template.HTML(out.String()) // #nosec G203 -- escaped above; only <p> and <code> added
}

var docsTemplate = template.Must(template.New("docs").Funcs(template.FuncMap{"prose": docsProse}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Info.Title}} {{.Info.Version}}: API reference</title>
<style>{{.CSS}}</style>
</head>
<body>
<h1>{{.Info.Title}} {{.Info.Version}}: API reference</h1>
<p class="meta">Rendered from <a href="/openapi.yaml">/openapi.yaml</a>, the contract this kluis was built with.</p>
{{prose .Info.Description}}
<h2>Operations</h2>
<ul>{{range .Ops}}<li><a href="#{{.Anchor}}"><span class="m">{{.Method}}</span> {{.Path}}</a>: {{.Summary}}</li>{{end}}</ul>
{{range .Ops}}
<h3 id="{{.Anchor}}"><span class="m">{{.Method}}</span> <code>{{.Path}}</code></h3>
<p class="meta">operationId <code>{{.OperationID}}</code> · {{.Listener}} listener{{if .Auth}} · {{.Auth}}{{end}}</p>
<p><strong>{{.Summary}}</strong></p>
{{prose .Description}}
{{if .Params}}<table><tr><th>parameter</th><th>in</th><th>required</th><th></th></tr>
{{range .Params}}<tr><td><code>{{.Name}}</code></td><td>{{.In}}</td><td>{{if .Required}}yes{{end}}</td><td>{{prose .Description}}</td></tr>
{{end}}</table>{{end}}
<table><tr><th>status</th><th>answer</th></tr>
{{$r := .ResponseDescs}}{{range .Codes}}<tr><td>{{.}}</td><td>{{prose (index $r .)}}</td></tr>
{{end}}</table>
{{end}}
</body>
</html>
`))

// docsRendered is the rendered page, made once.
var docsRendered = sync.OnceValues(func() ([]byte, error) { return renderDocs(OpenAPI) })

// serveDocs is GET /docs on both listeners.
func serveDocs(c echo.Context) error {
	page, err := docsRendered()
	if err != nil {
		return err
	}
	c.Response().Header().Set("Content-Security-Policy", docsCSP)
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", page)
}
