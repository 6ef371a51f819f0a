package builtins

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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
	dirs, err := filepath.Glob(filepath.Join("..", "examples", engine.FileName(builtin)+"-*"))
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

// libraryOf returns the policies of the policy library
// (policies/library/*.yaml) that dispatch to a builtin, one file each, as
// examples: the fuzz targets run them beside the golden examples.
func libraryOf(tb testing.TB, builtin string) []example {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join("..", "policies", "library", "*.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	var out []example
	for _, path := range paths {
		files, err := engine.ReadFiles(path)
		if err != nil {
			tb.Fatalf("library policy %s: %v", path, err)
		}
		snap, err := engine.Compile(files, engine.Options{Registry: Registry()})
		if err != nil {
			tb.Fatalf("library policy %s: %v", path, err)
		}
		if slices.ContainsFunc(snap.Policies, func(p *engine.CompiledPolicy) bool { return p.Policy.Spec.Action == builtin }) {
			out = append(out, example{dir: path, files: files})
		}
	}
	return out
}

// TestEveryBuiltinIsExampledAndDocumented checks, for every registered
// builtin, that it has golden examples whose policies use it, a section of
// the README and a row in its Security model, so that a new builtin cannot
// land without them.
func TestEveryBuiltinIsExampledAndDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Registry().Names() {
		t.Run(name, func(t *testing.T) {
			examples := examplesOf(t, name)
			if len(examples) == 0 {
				t.Errorf("no golden example: add examples/%s-<case>/ (policy.yaml, object.yaml, expected.txt)", engine.FileName(name))
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
			_, security, _ := strings.Cut(string(readme), "\n## Security model\n")
			security, _, _ = strings.Cut(security, "\n## ")
			if row := "\n| `" + name + "` |"; !strings.Contains(security, row) {
				t.Errorf("README.md's Security model has no row for %s: what it reads and writes", name)
			}
		})
	}
}

// TestClusterReadsAreDeclaredAccess checks that what a builtin's policies
// read from the cluster (ClusterReads, which the server caches) is covered
// by the access the builtin declares (Access, from which the install's
// RBAC is generated): list and watch for the cache, get for the re-read.
func TestClusterReadsAreDeclaredAccess(t *testing.T) {
	for _, name := range Registry().Names() {
		b, _ := Registry().Lookup(name)
		for _, ex := range examplesOf(t, name) {
			snap, err := engine.Compile(ex.files, engine.Options{Registry: Registry()})
			if err != nil {
				t.Fatalf("example %s: %v", ex.dir, err)
			}
			for _, read := range snap.ClusterReads() {
				for _, verb := range []string{"get", "list", "watch"} {
					if !granted(engine.AccessOf(b), read.Resource.Group, read.Resource.Resource, verb) {
						t.Errorf("%s (example %s) reads %s, but its Access grants no %s on it", name, ex.dir, read.Resource, verb)
					}
				}
			}
		}
	}
}

// granted reports whether a rule of access grants verb on the resource.
func granted(access []engine.Access, group, resource, verb string) bool {
	for _, a := range access {
		if slices.Contains(a.APIGroups, group) && slices.Contains(a.Resources, resource) && slices.Contains(a.Verbs, verb) {
			return true
		}
	}
	return false
}
