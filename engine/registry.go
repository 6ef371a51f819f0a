package engine

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"unicode"
)

// Registry maps builtin names to builtins.
type Registry struct {
	mu       sync.RWMutex
	builtins map[string]Builtin
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{builtins: map[string]Builtin{}} }

// Register adds a builtin. It panics on a duplicate or empty name: both are
// programming errors found at start-up.
func (r *Registry) Register(b Builtin) {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := b.Name()
	if name == "" {
		panic("engine: builtin with empty name")
	}
	if _, dup := r.builtins[name]; dup {
		panic(fmt.Sprintf("engine: builtin %q registered twice", name))
	}
	r.builtins[name] = b
}

// Lookup returns the builtin registered under name.
func (r *Registry) Lookup(name string) (Builtin, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	b, ok := r.builtins[name]
	return b, ok
}

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.builtins))
	for n := range r.builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// FileName returns the form of a builtin's name used for its files and
// folders (examples, install components): createSecret is create-secret.
func FileName(builtin string) string {
	var b strings.Builder
	for i, r := range builtin {
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
