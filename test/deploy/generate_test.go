package deploy

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"testing"
)

// root is the repository root, from this package's directory.
const root = "../.."

// TestGeneratedFilesUpToDate fails when a generated file (the policy
// copies of deploy/base and of the chart, their ConfigMap generator, the
// chart's copy of the PrometheusRule, the RBAC) differs from what `go
// generate ./test/deploy` writes now, or when a generated directory holds
// a file the generator would remove.
func TestGeneratedFilesUpToDate(t *testing.T) {
	files, err := Generate(root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, f := range files {
		want[f.Path] = true
		got, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f.Path)))
		if err != nil {
			t.Errorf("%s: %v; run `go generate ./test/deploy`", f.Path, err)
			continue
		}
		if !bytes.Equal(got, f.Data) {
			t.Errorf("%s is out of date with policies/: run `go generate ./test/deploy`", f.Path)
		}
	}
	for _, dir := range GeneratedDirs {
		entries, err := os.ReadDir(filepath.Join(root, filepath.FromSlash(dir)))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if p := path.Join(dir, e.Name()); !want[p] {
				t.Errorf("%s is not generated from policies/ (a removed policy?): run `go generate ./test/deploy`", p)
			}
		}
	}
}
