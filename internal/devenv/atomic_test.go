package devenv

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// The atomic writer's own tests are in internal/atomicdir.

func TestReadPolicyFiles(t *testing.T) {
	src := t.TempDir()
	for name, data := range map[string]string{"a.yaml": "A", "b.yml": "B", "c.json": "{}", "README.md": "no", ".hidden.yaml": "no"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(src, "dir.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := ReadPolicyFiles(src)
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(maps.Keys(files))
	if want := []string{"a.yaml", "b.yml", "c.json"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}

	// A ConfigMap-style copy reads back the same.
	dst := t.TempDir()
	if err := WriteAtomic(dst, files); err != nil {
		t.Fatal(err)
	}
	again, err := ReadPolicyFiles(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, files) {
		t.Fatalf("copy reads back %v, want %v", again, files)
	}

	if _, err := ReadPolicyFiles(t.TempDir()); err == nil {
		t.Error("an empty directory gave no error")
	}
}
