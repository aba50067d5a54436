// Package layout holds the test that keeps the README's picture of the
// packages true: dependencies point one way, and the libraries carry no
// more than the README says they do. It reads the module with `go list`.
package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/natsaga/natsaga/"

// pkg is what `go list -json` says of one package.
type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Standard   bool
}

// list returns every package of the module, and the standard library's,
// by import path.
func list(t *testing.T) (mine map[string]pkg, std map[string]bool) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH")
	}
	out, err := exec.Command("go", "list", "-json", "-deps", "../../...").Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("go list: %v\n%s", err, exit.Stderr)
	}
	require.NoError(t, err)
	mine, std = map[string]pkg{}, map[string]bool{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		switch {
		case p.Standard:
			std[p.ImportPath] = true
		case strings.HasPrefix(p.ImportPath, module):
			mine[strings.TrimPrefix(p.ImportPath, module)] = p
		}
	}
	require.Contains(t, mine, "messages", "go list did not list the module")
	return mine, std
}

// outside returns what paths holds beyond the standard library, the
// module's packages named without the module's prefix.
func outside(paths []string, std map[string]bool) []string {
	var out []string
	for _, p := range paths {
		if !std[p] {
			out = append(out, strings.TrimPrefix(p, module))
		}
	}
	return out
}

// TestDependenciesPointOneWay checks the rules README.md ("Dependencies
// point one way") states, against what the packages import.
func TestDependenciesPointOneWay(t *testing.T) {
	mine, std := list(t)
	deps := func(name string) []string {
		p, ok := mine[name]
		require.True(t, ok, "package %s is gone: README.md names it", name)
		return outside(p.Deps, std)
	}
	only := func(name string, allowed ...string) {
		t.Helper()
		for _, d := range deps(name) {
			if !slices.Contains(allowed, d) {
				t.Errorf("%s depends on %s; README.md says it takes only %v", name, d, allowed)
			}
		}
	}
	only("messages")
	only("saga", "messages", "github.com/google/uuid")
	only("agent", "messages")
	only("flood", "messages", "saga", "agent", "github.com/google/uuid")

	// The libraries take OpenTelemetry's API for trace context, never its
	// SDK or an exporter, and no Prometheus: those come with agentmain
	// and the programs.
	forbidden := []string{"github.com/prometheus/", "go.opentelemetry.io/otel/sdk", "go.opentelemetry.io/otel/exporters"}
	for _, lib := range []string{"messages", "saga", "agent", "flood", "coordinator", "participant", "client"} {
		for _, d := range deps(lib) {
			for _, f := range forbidden {
				if strings.HasPrefix(d, f) {
					t.Errorf("library %s depends on %s", lib, d)
				}
			}
		}
	}

	// No library depends on a program, on the flood model (which only the
	// programs wire in), or on another model; the edges run from the
	// runtimes to the cores, never back.
	libraries := []string{"messages", "saga", "agent", "coordinator", "participant", "client", "agentmain"}
	for _, lib := range libraries {
		for _, d := range deps(lib) {
			if d == "flood" || strings.HasPrefix(d, "cmd/") || strings.HasPrefix(d, "examples/") {
				t.Errorf("library %s depends on %s", lib, d)
			}
		}
	}
}

// TestPictureIsTheImports checks README.md's picture of the packages
// against what they import: each public package of the module is drawn,
// and imports, of the public packages, exactly those after its arrow.
func TestPictureIsTheImports(t *testing.T) {
	mine, std := list(t)
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	drawn := picture(t, string(readme))

	for name := range mine {
		if public(name) {
			require.Contains(t, drawn, name, "README.md's picture does not draw package %s", name)
		}
	}
	for name, want := range drawn {
		p, ok := mine[name]
		require.True(t, ok, "README.md's picture draws %s, which is not a package of the module", name)
		got := []string{}
		for _, imp := range outside(p.Imports, std) {
			if public(imp) {
				got = append(got, imp)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		require.Equal(t, want, got, "what %s imports of the public packages; README.md's picture says %v", name, want)
	}
}

// public reports whether name, a package of the module named without the
// module's prefix, is one an adopter imports: not internal, not a program,
// an example or a test.
func public(name string) bool {
	first, _, _ := strings.Cut(name, "/")
	switch first {
	case "internal", "cmd", "examples", "e2e", "deploy":
		return false
	}
	return !strings.Contains(name, "/internal/") && !strings.Contains(name, ".")
}

// picture reads README.md's picture of the packages: the code block after
// "Dependencies point one way", a line for each package, its name, then
// after "→" the packages it imports, up to two spaces before what it is.
// Lines of more than one package (a "*"), and lines that go on the line
// before (indented), are not read.
func picture(t *testing.T, readme string) map[string][]string {
	t.Helper()
	_, after, ok := strings.Cut(readme, "Dependencies point one way")
	require.True(t, ok, "README.md has no picture of the packages")
	_, block, ok := strings.Cut(after, "```\n")
	require.True(t, ok, "README.md's picture of the packages is not a code block")
	block, _, ok = strings.Cut(block, "```")
	require.True(t, ok, "README.md's picture of the packages has no end")
	drawn := map[string][]string{}
	for _, line := range strings.Split(block, "\n") {
		name, rest, _ := strings.Cut(line, " ")
		if name == "" || strings.Contains(name, "*") || !public(name) {
			continue
		}
		imports := []string{}
		if arrow, ok := strings.CutPrefix(strings.TrimSpace(rest), "→"); ok {
			list, _, _ := strings.Cut(strings.TrimSpace(arrow), "  ")
			imports = strings.Fields(list)
		}
		require.NotContains(t, drawn, name, "README.md's picture draws %s twice", name)
		drawn[name] = imports
	}
	require.NotEmpty(t, drawn, "README.md's picture draws no package")
	return drawn
}

// TestExamplesUseThePublicPackages checks that another model is built on
// what an adopter can import: an example imports none of the module's
// internal packages.
func TestExamplesUseThePublicPackages(t *testing.T) {
	mine, std := list(t)
	n := 0
	for name, p := range mine {
		if !strings.HasPrefix(name, "examples/") {
			continue
		}
		n++
		for _, imp := range outside(p.Imports, std) {
			if strings.HasPrefix(imp, "internal/") || strings.Contains(imp, "/internal/") {
				t.Errorf("%s imports %s, which an adopter's module cannot", name, imp)
			}
		}
	}
	require.NotZero(t, n, "no example package was listed")
}
