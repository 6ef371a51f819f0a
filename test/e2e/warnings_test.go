package e2e

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// warningsLabel scopes this file's server to the namespaces carrying it.
const warningsLabel = "e2e.celadon.io/warnings"

// warningsPolicies warn on every ConfigMap: one under Warn with a message
// of two lines, as a YAML block scalar gives it (a trailing newline
// included), one under Audit.
var warningsPolicies = map[string][]byte{"warnings.yaml": []byte(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-warn
spec:
  match:
    resources: [configmaps]
    operations: [CREATE]
  action: deny
  with:
    message: |
      line one
      line two
  enforcement: Warn
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: e2e-audit
spec:
  match:
    resources: [configmaps]
    operations: [CREATE]
  action: deny
  with:
    message: audited
  enforcement: Audit
`)}

// TestWarningsReachTheRequester checks, through the API server, that a
// client creating an object gets the warning of every Warn and Audit
// policy: the API server drops a warning holding a control character (a
// newline) without a word, so Celadon must send none.
func TestWarningsReachTheRequester(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	scope := &metav1.LabelSelector{MatchLabels: map[string]string{warningsLabel: "true"}}
	startScopedCeladon(ctx, t, "celadon-e2e-warnings", warningsPolicies, nil, scope, nil)
	ns := newNamespace(ctx, t, "warnings", map[string]string{warningsLabel: "true"})

	c, warnings := warningClient(t)
	warnings.take()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}}
	if err := c.Create(ctx, cm); err != nil {
		t.Fatalf("creating a ConfigMap: %v", err)
	}
	got := warnings.take()
	for _, want := range []string{"e2e-warn: line one line two", "e2e-audit (audit): audited"} {
		found := false
		for _, w := range got {
			found = found || w == want
		}
		if !found {
			t.Errorf("warning %q not received; the client got %q", want, got)
		}
	}
	t.Logf("warnings: %q", got)
	if strings.Contains(strings.Join(got, ""), "\n") {
		t.Errorf("a warning holds a newline: %q", got)
	}
}
