package builtins

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"celadon.io/celadon/engine"
)

// example is a golden example of examples/: its policy files.
type example struct {
	dir   string
	files []engine.File
}

// examplesOf returns the golden examples of a builtin: the directories
// examples/<kebab-name>-*, whose policies dispatch to it.
func examplesOf(tb testing.TB, builtin string) []example {
	tb.Helper()
	dirs, err := filepath.Glob(filepath.Join("..", "examples", kebab(builtin)+"-*"))
	if err != nil {
		tb.Fatal(err)
	}
	var out []example
	for _, dir := range dirs {
		src := filepath.Join(dir, "policy.yaml")
		if _, err := os.Stat(src); err != nil {
			src = filepath.Join(dir, "policies")
		}
		files, err := engine.ReadFiles(src)
		if err != nil {
			tb.Fatalf("example %s: %v", dir, err)
		}
		out = append(out, example{dir: dir, files: files})
	}
	return out
}

// kebab turns a builtin's name into the prefix of its examples:
// injectEnvIndex is inject-env-index.
func kebab(name string) string {
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('-')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestEveryBuiltinIsExampledAndDocumented checks, for every registered
// builtin, that it has golden examples whose policies use it and a section
// of the README, so that a new builtin cannot land without either.
func TestEveryBuiltinIsExampledAndDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Registry().Names() {
		t.Run(name, func(t *testing.T) {
			examples := examplesOf(t, name)
			if len(examples) == 0 {
				t.Errorf("no golden example: add examples/%s-<case>/ (policy.yaml, object.yaml, expected.txt)", kebab(name))
			}
			for _, ex := range examples {
				snap, err := engine.Compile(ex.files, engine.Options{Registry: Registry()})
				if err != nil {
					t.Errorf("example %s: %v", ex.dir, err)
					continue
				}
				if !snap.UsesBuiltin(name) {
					t.Errorf("example %s has no policy using %s", ex.dir, name)
				}
			}
			heading := "### `" + name + "` ("
			if !strings.Contains(string(readme), "\n"+heading) {
				t.Errorf("README.md has no section %q…", heading)
			}
		})
	}
}
