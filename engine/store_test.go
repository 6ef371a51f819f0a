package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const storePolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: %s
spec:
  match: {resources: [pods]}
  action: violate
`

func writeStoreFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStore checks that Load publishes each new set to every subscriber,
// keeps the last good set when content breaks, reports a broken content
// once, and reports its end.
func TestStore(t *testing.T) {
	dir := t.TempDir()
	writeStoreFile(t, dir, "a.yaml", fmt.Sprintf(storePolicy, "first"))
	s := NewStore(dir, Options{Registry: testRegistry()})
	if s.Current() != nil {
		t.Fatal("Current before Load: want nil")
	}
	var early, late []string
	var failures []*LoadFailure
	s.Subscribe(func(snap *Snapshot) { early = append(early, snap.Policies[0].Name()) })
	s.SubscribeFailures(func(f *LoadFailure) { failures = append(failures, f) })

	if changed, err := s.Load(); !changed || err != nil {
		t.Fatalf("first Load: %v, %v", changed, err)
	}
	// A late subscriber hears of the current set at once.
	s.Subscribe(func(snap *Snapshot) { late = append(late, snap.Policies[0].Name()) })
	if changed, err := s.Load(); changed || err != nil {
		t.Fatalf("Load of the same content: %v, %v; want nothing", changed, err)
	}

	good := s.Current()
	writeStoreFile(t, dir, "a.yaml", "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata: {name: broken}\nspec: {action: nope}\n")
	_, err1 := s.Load()
	_, err2 := s.Load()
	var el ErrorList
	if !errors.As(err1, &el) || err2 == nil {
		t.Fatalf("Load of broken content: %v / %v; want the ErrorList twice", err1, err2)
	}
	if s.Current() != good {
		t.Error("a broken set replaced the served one")
	}
	if f := s.Failure(); f == nil || f.Hash == "" || f.Err == nil {
		t.Errorf("Failure = %+v, want the broken content's", f)
	}
	if len(failures) != 1 || failures[0] == nil {
		t.Fatalf("failure notifications %v: want the broken content once", failures)
	}

	writeStoreFile(t, dir, "a.yaml", fmt.Sprintf(storePolicy, "second"))
	if changed, err := s.Load(); !changed || err != nil {
		t.Fatalf("Load of fixed content: %v, %v", changed, err)
	}
	if s.Failure() != nil || len(failures) != 2 || failures[1] != nil {
		t.Errorf("after the fix: Failure %v, notifications %v; want the failure over", s.Failure(), failures)
	}
	if want := []string{"first", "second"}; !slices.Equal(early, want) {
		t.Errorf("early subscriber saw %v, want %v", early, want)
	}
	if want := []string{"first", "second"}; !slices.Equal(late, want) {
		t.Errorf("late subscriber saw %v, want %v", late, want)
	}

	// Unreadable: a failure too, and the set stays.
	s2 := NewStore(filepath.Join(dir, "missing"), Options{Registry: testRegistry()})
	if _, err := s2.Load(); err == nil || s2.Failure() == nil || s2.Current() != nil {
		t.Errorf("Load of a missing directory: %v, failure %v", err, s2.Failure())
	}
}

// TestStoreRefusesAnEmptySet checks that content with no policy (no file,
// an empty file, only comments) is refused like a broken set, at the first
// Load and at a reload, keeping the last good set; and served with
// AllowEmpty.
func TestStoreRefusesAnEmptySet(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(dir, Options{Registry: testRegistry()})
	if changed, err := s.Load(); changed || !errors.Is(err, ErrNoPolicies) || s.Current() != nil {
		t.Fatalf("first Load of an empty directory: %v, %v; want ErrNoPolicies and nothing served", changed, err)
	}

	writeStoreFile(t, dir, "a.yaml", fmt.Sprintf(storePolicy, "first"))
	if changed, err := s.Load(); !changed || err != nil {
		t.Fatalf("Load of a policy: %v, %v", changed, err)
	}
	good := s.Current()
	var failures []*LoadFailure
	s.SubscribeFailures(func(f *LoadFailure) { failures = append(failures, f) })
	for _, content := range []string{"", "# every policy commented out\n# apiVersion: celadon.io/v1alpha1\n", "---\n---\n"} {
		writeStoreFile(t, dir, "a.yaml", content)
		if changed, err := s.Load(); changed || !errors.Is(err, ErrNoPolicies) {
			t.Errorf("Load of %q: %v, %v; want ErrNoPolicies", content, changed, err)
		}
		if s.Current() != good {
			t.Errorf("after loading %q the served set changed", content)
		}
	}
	if len(failures) != 3 || !errors.Is(failures[0].Err, ErrNoPolicies) || failures[0].Hash == "" {
		t.Errorf("failures reported: %v; want 3, each ErrNoPolicies with its hash", failures)
	}
	if f := s.Failure(); f == nil || !errors.Is(f.Err, ErrNoPolicies) {
		t.Errorf("Failure() = %v", f)
	}

	allowing := NewStore(dir, Options{Registry: testRegistry(), AllowEmpty: true})
	if changed, err := allowing.Load(); !changed || err != nil || len(allowing.Current().Policies) != 0 {
		t.Errorf("Load of an empty set with AllowEmpty: %v, %v", changed, err)
	}
}
