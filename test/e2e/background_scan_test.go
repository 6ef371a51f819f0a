package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"celadon.io/celadon/internal/controlplane"
	"celadon.io/celadon/reports"
	"celadon.io/celadon/server"
)

const scanPolicy = `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: configmap-owner
spec:
  match:
    resources: [configmaps]
    operations: [CREATE, UPDATE]
    objectSelector: {matchLabels: {e2e-scan: "true"}}
  action: deny
  with:
    messageExpression: "'configmap ' + object.metadata.name + ' has no owner label'"
  variables: []
  enforcement: Audit
  failurePolicy: Ignore
---
`

// scanPolicyWithCondition denies, in Audit mode, labelled ConfigMaps
// without an owner label.
var scanPolicyWithCondition = strings.Replace(scanPolicy, "  action: deny", `    conditions:
    - {expression: "!has(object.metadata.labels.owner)"}
  action: deny`, 1)

// TestBackgroundScanReports proves the background scan through the real
// API server: ConfigMaps that violate a policy before Celadon starts
// appear in their namespace's OpenReports Report within one scan
// interval, fixing one clears its result, and deleting the policy clears
// them all, deleting the report.
func TestBackgroundScanReports(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := envtest.InstallCRDs(suite.cp.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(root, "deploy/components/background-scan/crds")},
	}); err != nil {
		t.Fatal(err)
	}

	ns := newNamespace(ctx, t, "scan", nil)
	cm := func(name string, labels map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
	}
	bad := cm("bad", map[string]string{"e2e-scan": "true"})
	fixable := cm("fixable", map[string]string{"e2e-scan": "true"})
	for _, obj := range []client.Object{bad, fixable, cm("good", map[string]string{"e2e-scan": "true", "owner": "team-a"}), cm("unselected", nil)} {
		if err := suite.c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	s, err := runCeladon(ctx, "celadon-scan", map[string][]byte{"scan.yaml": []byte(scanPolicyWithCondition)}, func(_ *celadon, o *server.Options) {
		o.BackgroundScan = time.Second
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.stop() })

	report := func(ctx context.Context) (*unstructured.Unstructured, error) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(reports.GroupVersion.WithKind("Report"))
		err := suite.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: reports.ReportName}, u)
		return u, err
	}
	// results lists "name/policy=result" of the report's results.
	results := func(u *unstructured.Unstructured) string {
		rs, _, _ := unstructured.NestedSlice(u.Object, "results")
		var out []string
		for _, r := range rs {
			m := r.(map[string]any)
			subjects, _, _ := unstructured.NestedSlice(m, "resources")
			name := ""
			if len(subjects) == 1 {
				name, _, _ = unstructured.NestedString(subjects[0].(map[string]any), "name")
			}
			out = append(out, fmt.Sprintf("%s/%v=%v", name, m["policy"], m["result"]))
		}
		return strings.Join(out, ",")
	}
	waitForResultsWithin := func(ctx context.Context, what, want string) {
		t.Helper()
		var last string
		defer func() {
			if t.Failed() {
				t.Logf("%s: last seen %q", what, last)
			}
		}()
		waitFor(ctx, t, what, func(ctx context.Context) (bool, error) {
			u, err := report(ctx)
			if apierrors.IsNotFound(err) {
				last = "no report"
				return want == "", nil
			}
			if err != nil {
				return false, err
			}
			last = results(u)
			return last == want, nil
		})
	}
	waitForResults := func(what, want string) {
		t.Helper()
		waitForResultsWithin(ctx, what, want)
	}

	// good and unselected do not match the policy: no result.
	waitForResults("the pre-existing violations in the report", "bad/configmap-owner=fail,fixable/configmap-owner=fail")

	u, err := report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if src, _, _ := unstructured.NestedString(u.Object, "source"); src != reports.Source {
		t.Errorf("report source %q", src)
	}
	if fail, _, _ := unstructured.NestedInt64(u.Object, "summary", "fail"); fail != 2 {
		t.Errorf("summary.fail = %d, want 2", fail)
	}

	rs, _, _ := unstructured.NestedSlice(u.Object, "results")
	if enf, _, _ := unstructured.NestedString(rs[0].(map[string]any), "properties", "enforcement"); enf != "Audit" {
		t.Errorf("the first result's enforcement property is %q, want Audit: %v", enf, rs[0])
	}

	// /status has the last scan's counts of the policy.
	waitFor(ctx, t, "the scan's counts at /status", func(ctx context.Context) (bool, error) {
		st, err := s.status(ctx)
		if err != nil {
			return false, err
		}
		for _, p := range st.Policies {
			if p.Name == "configmap-owner" && p.LastScan != nil {
				return p.LastScan.Counts.Fail == 2, nil
			}
		}
		return false, nil
	})

	// Fixing an object clears its result.
	fixable.Labels["owner"] = "team-b"
	if err := suite.c.Update(ctx, fixable); err != nil {
		t.Fatal(err)
	}
	waitForResults("the fixed object's result to go", "bad/configmap-owner=fail")

	// An exception turns the violation into a skip that the report shows,
	// naming the exception.
	exception := `apiVersion: celadon.io/v1alpha1
kind: PolicyException
metadata: {name: bad-is-fine}
spec:
  policies: [configmap-owner]
  match: {names: [bad]}
  reason: e2e
  owner: e2e
---
`
	s.setPolicies(t, map[string][]byte{"scan.yaml": []byte(scanPolicyWithCondition + exception)})
	waitForResults("the excepted result", "bad/configmap-owner=skip")
	u, err = report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs, _, _ = unstructured.NestedSlice(u.Object, "results")
	if ex, _, _ := unstructured.NestedString(rs[0].(map[string]any), "properties", reports.PropertyException); ex != "bad-is-fine" {
		t.Errorf("the excepted result names exception %q, want bad-is-fine: %v", ex, rs[0])
	}

	// An UPDATE-only policy is not scanned, but its Audit results from
	// admission join the report.
	updateAudit := strings.NewReplacer("configmap-owner", "no-update", "[CREATE, UPDATE]", "[UPDATE]", "has no owner label", "was updated").Replace(scanPolicy)
	s.setPolicies(t, map[string][]byte{"scan.yaml": []byte(scanPolicyWithCondition + updateAudit)})
	waitFor(ctx, t, "the reload", func(context.Context) (bool, error) { return s.srv.Snapshot().Policy("no-update") != nil, nil })
	if err := s.installConfigs(ctx, s.srv.Snapshot(), s.ca); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = s.uninstallConfigs(ctx)
	})
	bad.Data = map[string]string{"k": "v"}
	if err := suite.c.Update(ctx, bad); err != nil {
		t.Fatal(err)
	}
	waitForResults("the UPDATE's Audit result in the report", "bad/configmap-owner=fail,bad/no-update=fail")

	// A deleted object's results go, its admission one too, though its
	// DELETE does not reach Celadon.
	if err := suite.c.Create(ctx, cm("late", map[string]string{"e2e-scan": "true"})); err != nil {
		t.Fatal(err)
	}
	waitForResults("the new object's result", "bad/configmap-owner=fail,bad/no-update=fail,late/configmap-owner=fail")
	if err := suite.c.Delete(ctx, bad); err != nil {
		t.Fatal(err)
	}
	// Well within the minute an admission result may otherwise live.
	soon, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	waitForResultsWithin(soon, "the deleted object's results to go", "late/configmap-owner=fail")

	// Deleting the policy clears its results, and the report goes.
	s.setPolicies(t, map[string][]byte{"other.yaml": []byte(strings.ReplaceAll(strings.ReplaceAll(scanPolicy, "configmap-owner", "other"), "configmaps", "secrets"))})
	waitForResults("the report to go with the policy", "")
}
