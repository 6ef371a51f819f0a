package atomicdir

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// listDir returns dir's entries, symlinks as "name -> target".
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		s := e.Name()
		if e.Type()&os.ModeSymlink != 0 {
			target, err := os.Readlink(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			s += " -> " + target
		} else if e.IsDir() {
			s += "/"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func readAll(t *testing.T, dir string, names ...string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		got[n] = string(b)
	}
	return got
}

func TestWriteLayoutAndSwap(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policies")
	if err := Write(dir, map[string][]byte{"a.yaml": []byte("a1"), "b.yaml": []byte("b1")}); err != nil {
		t.Fatal(err)
	}
	first, err := os.Readlink(filepath.Join(dir, DataDirName))
	if err != nil {
		t.Fatalf("..data is not a symlink: %v", err)
	}
	if !strings.HasPrefix(first, "..") || strings.Contains(first, "/") {
		t.Fatalf("..data -> %q, want a sibling ..<timestamp> directory", first)
	}
	want := []string{first + "/", DataDirName + " -> " + first, "a.yaml -> ..data/a.yaml", "b.yaml -> ..data/b.yaml"}
	sort.Strings(want)
	if got := listDir(t, dir); !reflect.DeepEqual(got, want) {
		t.Fatalf("layout:\n got %q\nwant %q", got, want)
	}
	if got := readAll(t, dir, "a.yaml", "b.yaml"); got["a.yaml"] != "a1" || got["b.yaml"] != "b1" {
		t.Fatalf("content %v", got)
	}

	// Second write: b changes, a goes, c comes.
	if err := Write(dir, map[string][]byte{"b.yaml": []byte("b2"), "c.yaml": []byte("c2")}); err != nil {
		t.Fatal(err)
	}
	second, err := os.Readlink(filepath.Join(dir, DataDirName))
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("..data still points at the first payload")
	}
	want = []string{second + "/", DataDirName + " -> " + second, "b.yaml -> ..data/b.yaml", "c.yaml -> ..data/c.yaml"}
	sort.Strings(want)
	if got := listDir(t, dir); !reflect.DeepEqual(got, want) {
		t.Fatalf("layout after the swap (stale key and old payload must be gone):\n got %q\nwant %q", got, want)
	}
	if got := readAll(t, dir, "b.yaml", "c.yaml"); got["b.yaml"] != "b2" || got["c.yaml"] != "c2" {
		t.Fatalf("content after the swap %v", got)
	}
}

func TestWriteKeepsKeySymlinks(t *testing.T) {
	// A reader holding dir/tls.crt (e.g. an inotify watch on the path)
	// must see the symlink itself unchanged: only ..data moves.
	dir := t.TempDir()
	if err := Write(dir, map[string][]byte{"tls.crt": []byte("1")}); err != nil {
		t.Fatal(err)
	}
	before, err := os.Lstat(filepath.Join(dir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, map[string][]byte{"tls.crt": []byte("2")}); err != nil {
		t.Fatal(err)
	}
	after, err := os.Lstat(filepath.Join(dir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("the key symlink was replaced; the kubelet leaves it alone")
	}
	if got := readAll(t, dir, "tls.crt")["tls.crt"]; got != "2" {
		t.Errorf("tls.crt = %q, want 2", got)
	}
}

func TestWriteModes(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, map[string][]byte{"tls.key": []byte("k"), "tls.crt": []byte("c")}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{"tls.key": 0o600, "tls.crt": 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, st.Mode().Perm(), want)
		}
	}
}

func TestWriteRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", ".", "..data", "..x", "a/b", `a\b`} {
		dir := t.TempDir()
		if err := Write(dir, map[string][]byte{name: nil}); err == nil {
			t.Errorf("Write accepted the file name %q", name)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%q: Write wrote something before failing", name)
		}
	}
}
