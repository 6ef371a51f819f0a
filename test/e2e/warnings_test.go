package e2e

import (
	"encoding/json"
	"fmt"
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

	// Both results are in the server's decision logs, with the request as
	// the API server sent it.
	found := map[string]bool{}
	for _, line := range strings.Split(suite.logs.tail(2000), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) != nil || l["msg"] != "policy decision" || l["namespace"] != ns || l["name"] != "settings" {
			continue // the controller manager's kube-root-ca.crt is logged too
		}
		want := map[string]any{"resource": "v1/configmaps", "name": "settings", "operation": "CREATE", "denied": false, "dryRun": false}
		switch l["policy"] {
		case "e2e-warn":
			want["state"], want["message"] = "warn", "line one line two"
		case "e2e-audit":
			want["state"], want["enforcement"], want["message"] = "fail", "Audit", "audited"
		}
		for k, v := range want {
			if l[k] != v {
				t.Errorf("decision line of %v: %s = %#v, want %#v", l["policy"], k, l[k], v)
			}
		}
		if u, _ := l["user"].(string); u == "" || l["uid"] == "" {
			t.Errorf("decision line of %v without the user or uid: %v", l["policy"], l)
		}
		found[fmt.Sprint(l["policy"])] = true
	}
	if !found["e2e-warn"] || !found["e2e-audit"] {
		t.Errorf("decision lines found for %v, want e2e-warn and e2e-audit", found)
	}
}
