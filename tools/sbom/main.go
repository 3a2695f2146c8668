// Command sbom writes a CycloneDX SBOM (JSON) of the Go modules built into
// a binary, from the build information the Go toolchain embeds in it (what
// `go version -m` prints). It lives in the tools module so that the server
// binary does not carry it.
//
//	go run ./sbom -o bin/kluis.cdx.json bin/kluis
package main

import (
	"debug/buildinfo"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
)

func main() {
	out := flag.String("o", "-", "output file (- for stdout)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: sbom [-o file] BINARY")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *out); err != nil {
		fmt.Fprintln(os.Stderr, "sbom:", err)
		os.Exit(1)
	}
}

func run(binary, out string) error {
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return fmt.Errorf("read build info of %s: %w", binary, err)
	}
	bom := build(info)
	w := os.Stdout
	if out != "-" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	enc := cdx.NewBOMEncoder(w, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	return enc.EncodeVersion(bom, cdx.SpecVersion1_6)
}

// build makes the BOM: the main module as the metadata component, each
// dependency (after replacements) as a library with its go.sum hash, and
// the toolchain and build settings as properties.
func build(info *debug.BuildInfo) *cdx.BOM {
	bom := cdx.NewBOM()
	bom.Metadata = &cdx.Metadata{
		Timestamp: time.Now().UTC().Format(time.RFC3339),
		Component: &cdx.Component{
			BOMRef: purl(info.Main.Path, info.Main.Version), Type: cdx.ComponentTypeApplication,
			Name: info.Main.Path, Version: info.Main.Version, PackageURL: purl(info.Main.Path, info.Main.Version),
		},
		Properties: &[]cdx.Property{{Name: "go:toolchain", Value: info.GoVersion}},
	}
	for _, s := range info.Settings {
		*bom.Metadata.Properties = append(*bom.Metadata.Properties, cdx.Property{Name: "go:build:" + s.Key, Value: s.Value})
	}
	var comps []cdx.Component
	var refs []string
	for _, m := range info.Deps {
		if m.Replace != nil {
			m = m.Replace
		}
		c := cdx.Component{
			BOMRef: purl(m.Path, m.Version), Type: cdx.ComponentTypeLibrary, Name: m.Path, Version: m.Version,
			PackageURL: purl(m.Path, m.Version), Scope: cdx.ScopeRequired,
		}
		if m.Sum != "" {
			c.Properties = &[]cdx.Property{{Name: "go:sum", Value: m.Sum}}
		}
		comps = append(comps, c)
		refs = append(refs, c.BOMRef)
	}
	bom.Components = &comps
	bom.Dependencies = &[]cdx.Dependency{{Ref: bom.Metadata.Component.BOMRef, Dependencies: &refs}}
	return bom
}

// purl is the package URL of a Go module.
func purl(path, version string) string {
	if version == "" || version == "(devel)" {
		return "pkg:golang/" + path
	}
	return "pkg:golang/" + path + "@" + version
}
