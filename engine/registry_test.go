package engine

import "testing"

func TestFileName(t *testing.T) {
	for name, want := range map[string]string{
		"deny": "deny", "createSecret": "create-secret", "injectEnvIndex": "inject-env-index", "drainBeforeDelete": "drain-before-delete",
	} {
		if got := FileName(name); got != want {
			t.Errorf("FileName(%q) = %q, want %q", name, got, want)
		}
	}
}
