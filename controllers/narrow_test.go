package controllers_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
)

// policyDoc is a deny or injectEnvIndex policy on pods CREATE with a match
// body (YAML, indented under match:) and an optional variables block.
func policyDoc(name, action, fp, match, variables string) string {
	with := "{message: x}"
	if action == "injectEnvIndex" {
		with = "{name: INDEX}"
	}
	return "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata:\n  name: " + name + "\nspec:\n  match:\n    resources: [pods]\n    operations: [CREATE]\n" +
		match + variables + "  action: " + action + "\n  with: " + with + "\n  failurePolicy: " + fp + "\n" + autogenOff
}

// autogenOff keeps the narrowing tests' pod policies off pod controllers:
// autogenNarrowing tests those.
const autogenOff = "  autogen: false\n"

func podRequest(t *testing.T, ns string, labels map[string]string, owner string) *admissionv1.AdmissionRequest {
	t.Helper()
	md := map[string]any{"name": "p", "namespace": ns}
	if labels != nil {
		md["labels"] = labels
	}
	if owner != "" {
		md["ownerReferences"] = []any{map[string]any{"apiVersion": "apps/v1", "kind": owner, "name": "o", "uid": "u"}}
	}
	raw, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "i"}}}})
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		UID:       "1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: ns, Name: "p", Operation: admissionv1.Create,
		Object: runtime.RawExtension{Raw: raw},
	}
}

func calledWebhooks(t *testing.T, snap *engine.Snapshot, req *admissionv1.AdmissionRequest, nsLabels map[string]string) string {
	t.Helper()
	mwc, vwc := generate(t, snap, controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "celadon", Name: "celadon"}})
	calls, err := controllers.SimulateCalls(mwc, vwc, req, nsLabels)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range calls {
		if c.Called {
			out = append(out, c.Webhook)
		}
	}
	return strings.Join(out, ",")
}

func pushdownOf(t *testing.T, snap *engine.Snapshot, policy string) controllers.PolicyPushdown {
	t.Helper()
	pds, err := controllers.Pushdown(snap)
	if err != nil {
		t.Fatal(err)
	}
	for _, pd := range pds {
		if pd.Policy == policy {
			return pd
		}
	}
	t.Fatalf("no pushdown for %s in %+v", policy, pds)
	return controllers.PolicyPushdown{}
}

func TestNarrowing(t *testing.T) {
	const sts = "    conditions:\n    - {name: sts, expression: \"has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, r.kind == 'StatefulSet')\"}\n"

	t.Run("common selectors go to the webhook, conditions to its matchCondition", func(t *testing.T) {
		snap := compileSet(t, policyDoc("a", "deny", "Fail", "    objectSelector: {matchLabels: {team: a}}\n    namespaceSelector: {matchLabels: {env: prod}}\n"+sts, ""))
		_, vwc := generate(t, snap, controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "celadon", Name: "celadon"}})
		wh := vwc.Webhooks[0]
		if wh.ObjectSelector == nil || len(wh.ObjectSelector.MatchExpressions) != 1 || wh.ObjectSelector.MatchExpressions[0].Key != "team" {
			t.Errorf("objectSelector = %+v, want team In [a]", wh.ObjectSelector)
		}
		if got := len(wh.NamespaceSelector.MatchExpressions); got != 2 {
			t.Errorf("namespaceSelector = %+v, want env In [prod] and the exclusion", wh.NamespaceSelector)
		}
		if len(wh.MatchConditions) != 1 || !strings.Contains(wh.MatchConditions[0].Expression, "StatefulSet") {
			t.Errorf("matchConditions = %+v", wh.MatchConditions)
		}
		prod := map[string]string{"env": "prod"}
		for _, c := range []struct {
			req  *admissionv1.AdmissionRequest
			ns   map[string]string
			want string
		}{
			{podRequest(t, "shop", map[string]string{"team": "a"}, "StatefulSet"), prod, "fail.validate.celadon.io"},
			{podRequest(t, "shop", map[string]string{"team": "a"}, "ReplicaSet"), prod, ""},
			{podRequest(t, "shop", map[string]string{"team": "b"}, "StatefulSet"), prod, ""},
			{podRequest(t, "shop", map[string]string{"team": "a"}, "StatefulSet"), map[string]string{"env": "dev"}, ""},
			{podRequest(t, "kube-system", map[string]string{"team": "a"}, "StatefulSet"), map[string]string{"env": "prod", "kubernetes.io/metadata.name": "kube-system"}, ""},
		} {
			if got := calledWebhooks(t, snap, c.req, c.ns); got != c.want {
				t.Errorf("%s in %v: called %q, want %q", c.req.Object.Raw, c.ns, got, c.want)
			}
		}
	})

	t.Run("different selectors stay per policy, in CEL", func(t *testing.T) {
		snap := compileSet(t,
			policyDoc("a", "deny", "Fail", "    objectSelector: {matchLabels: {team: a}}\n", ""),
			policyDoc("b", "deny", "Fail", "    objectSelector: {matchExpressions: [{key: team, operator: NotIn, values: [a, c]}, {key: tier, operator: Exists}]}\n", ""))
		_, vwc := generate(t, snap, controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "celadon", Name: "celadon"}})
		if vwc.Webhooks[0].ObjectSelector != nil {
			t.Errorf("objectSelector = %+v, want none: the policies share no requirement", vwc.Webhooks[0].ObjectSelector)
		}
		for labels, want := range map[string]string{
			"team=a":        "fail.validate.celadon.io",
			"tier=x":        "fail.validate.celadon.io",
			"team=c,tier=x": "",
			"team=b":        "",
			"":              "",
		} {
			m := map[string]string{}
			for _, kv := range strings.Split(labels, ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					m[k] = v
				}
			}
			if got := calledWebhooks(t, snap, podRequest(t, "shop", m, ""), nil); got != want {
				t.Errorf("labels %q: called %q, want %q", labels, got, want)
			}
		}
	})

	t.Run("variables are inlined; namespaceObject is not pushed down", func(t *testing.T) {
		snap := compileSet(t,
			policyDoc("vars", "deny", "Fail", "    conditions:\n    - {expression: \"variables.owned && variables.owned\"}\n",
				"  variables:\n  - {name: refs, expression: \"object.metadata.?ownerReferences.orValue([])\"}\n  - {name: owned, expression: \"variables.refs.exists(r, r.kind == 'StatefulSet')\"}\n"),
			policyDoc("ns", "deny", "Fail", "    conditions:\n    - {expression: \"namespaceObject.metadata.name == 'x'\"}\n", ""))
		if pd := pushdownOf(t, snap, "vars"); !pd.Conditions || strings.Contains(pd.Expression, "variables.") {
			t.Errorf("vars: %+v, want its conditions pushed down with the variables inlined", pd)
		}
		if pd := pushdownOf(t, snap, "ns"); pd.Conditions || pd.Expression != "true" || !strings.Contains(pd.Reason, "namespaceObject") {
			t.Errorf("ns: %+v, want nothing pushed down, naming namespaceObject", pd)
		}
		// ns keeps the webhook called for every pod.
		if got := calledWebhooks(t, snap, podRequest(t, "shop", nil, ""), nil); got != "fail.validate.celadon.io" {
			t.Errorf("called %q", got)
		}
	})

	t.Run("a Fail policy's conditions need its namespaceSelector as a guard", func(t *testing.T) {
		snap := compileSet(t,
			policyDoc("guarded", "deny", "Fail", "    namespaceSelector: {matchLabels: {env: prod}}\n"+sts, ""),
			policyDoc("other", "deny", "Fail", "    objectSelector: {matchLabels: {x: y}}\n", ""))
		if pd := pushdownOf(t, snap, "guarded"); pd.Conditions || !strings.Contains(pd.Reason, "namespaceSelector") {
			t.Errorf("guarded: %+v, want conditions not pushed down", pd)
		}
		// The same under Ignore: an error only skips the call.
		snap = compileSet(t,
			policyDoc("guarded", "injectEnvIndex", "Ignore", "    namespaceSelector: {matchLabels: {env: prod}}\n"+sts, ""),
			policyDoc("other", "injectEnvIndex", "Ignore", "    objectSelector: {matchLabels: {x: y}}\n", ""))
		if pd := pushdownOf(t, snap, "guarded"); !pd.Conditions {
			t.Errorf("guarded (Ignore): %+v, want conditions pushed down", pd)
		}
	})

	t.Run("conditions keep the engine's order", func(t *testing.T) {
		// The first condition errors on a pod without labels; CEL's &&
		// would let the second, false, hide it, while the engine fails.
		snap := compileSet(t, policyDoc("order", "deny", "Fail", "    conditions:\n    - {expression: \"object.metadata.labels.a == 'b'\"}\n    - {expression: \"false\"}\n", ""))
		mwc, vwc := generate(t, snap, controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "celadon", Name: "celadon"}})
		calls, err := controllers.SimulateCalls(mwc, vwc, podRequest(t, "shop", nil, ""), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(calls) != 1 || !calls[0].Called || !strings.Contains(calls[0].Reason, "error") {
			t.Errorf("calls = %+v, want the call made on the matchCondition's error, as the engine fails the policy", calls)
		}
	})

	t.Run("a dyn condition is not pushed down", func(t *testing.T) {
		snap := compileSet(t, policyDoc("dyn", "deny", "Fail", "    conditions:\n    - {expression: \"object.spec.hostNetwork\"}\n", ""))
		if pd := pushdownOf(t, snap, "dyn"); pd.Conditions || !strings.Contains(pd.Reason, "not bool") {
			t.Errorf("dyn: %+v", pd)
		}
	})
}

func TestAutogenNarrowing(t *testing.T) {
	const sts = "    conditions:\n    - {name: sts, expression: \"has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, r.kind == 'StatefulSet')\"}\n"
	doc := strings.TrimSuffix(policyDoc("a", "deny", "Fail", "    objectSelector: {matchLabels: {team: a}}\n"+sts, ""), autogenOff)
	snap := compileSet(t, doc)
	_, vwc := generate(t, snap, controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "celadon", Name: "celadon"}})
	// The selector is the template's labels, which the API server cannot
	// read on a Deployment.
	if sel := vwc.Webhooks[0].ObjectSelector; sel != nil {
		t.Errorf("objectSelector = %+v, want none", sel)
	}
	deployment := func(op admissionv1.Operation) *admissionv1.AdmissionRequest {
		raw, _ := json.Marshal(map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "d", "namespace": "shop"}})
		req := &admissionv1.AdmissionRequest{
			UID:       "1",
			Kind:      metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"},
			Resource:  metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"},
			Namespace: "shop", Name: "d", Operation: op,
		}
		if op == admissionv1.Delete {
			req.OldObject = runtime.RawExtension{Raw: raw}
		} else {
			req.Object = runtime.RawExtension{Raw: raw}
		}
		return req
	}
	for _, c := range []struct {
		what string
		req  *admissionv1.AdmissionRequest
		want string
	}{
		{"a Deployment without the pod's labels or owner", deployment(admissionv1.Create), "fail.validate.celadon.io"},
		{"a Deployment's DELETE", deployment(admissionv1.Delete), ""},
		{"a pod of the StatefulSet with the label", podRequest(t, "shop", map[string]string{"team": "a"}, "StatefulSet"), "fail.validate.celadon.io"},
		{"a pod without the label", podRequest(t, "shop", nil, "StatefulSet"), ""},
		{"a pod of a ReplicaSet", podRequest(t, "shop", map[string]string{"team": "a"}, "ReplicaSet"), ""},
	} {
		if got := calledWebhooks(t, snap, c.req, nil); got != c.want {
			t.Errorf("%s: called %q, want %q", c.what, got, c.want)
		}
	}
	if pd := pushdownOf(t, snap, "a"); !slices.Contains(pd.Autogen, "apps/deployments") || !slices.Contains(pd.Autogen, "batch/cronjobs") {
		t.Errorf("pushdown %+v, want the pod controllers listed", pd)
	}
}
