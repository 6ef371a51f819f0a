package engine

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	fakediscovery "k8s.io/client-go/discovery/fake"
	openapiclient "k8s.io/client-go/openapi"
	"k8s.io/client-go/openapi/openapitest"
	clienttesting "k8s.io/client-go/testing"
)

// TestTypeCheckErrors checks that CEL is type-checked against the schema
// of the kinds a policy matches, and that each defect is a load error
// displayed at file:line:col with its source line and a caret. Before type
// checking, object was dyn, and each of these policies loaded.
func TestTypeCheckErrors(t *testing.T) {
	cases := []struct {
		name   string
		yaml   string
		want   string // the whole Display of the one error
		wantOK bool
	}{
		{name: "a field that does not exist", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: replicas}
spec:
  match:
    resources: [pods]
    conditions:
    - expression: object.spec.replicas > 3
  action: violate
`, want: `policies.yaml:8:30: policy "replicas": match.conditions[0].expression: CEL: undefined field 'replicas' (object is a core.v1.Pod)
 |     - expression: object.spec.replicas > 3
 | .............................^`},
		{name: "a type mismatch", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: mismatch}
spec:
  match:
    resources: [pods]
    conditions:
    - expression: object.metadata.name > 3
  action: violate
`, want: `policies.yaml:8:40: policy "mismatch": match.conditions[0].expression: CEL: found no matching overload for '_>_' applied to '(string, int)' (object is a core.v1.Pod)
 |     - expression: object.metadata.name > 3
 | .......................................^`},
		{name: "a condition that is not bool", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: notbool}
spec:
  match:
    resources: [pods]
    conditions:
    - expression: object.metadata.name
  action: violate
`, want: `policies.yaml:8:19: policy "notbool": match.conditions[0].expression: CEL: must evaluate to bool, not string (object is a core.v1.Pod)
 |     - expression: object.metadata.name
 | ..................^`},
		{name: "a variable's type flows from object", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: flows}
spec:
  variables:
  - {name: name, expression: object.metadata.name}
  match:
    resources: [apps/deployments]
    conditions:
    - expression: variables.name > 3
  action: violate
`, want: `policies.yaml:10:34: policy "flows": match.conditions[0].expression: CEL: found no matching overload for '_>_' applied to '(string, int)' (object is a apps.v1.Deployment)
 |     - expression: variables.name > 3
 | .................................^`},
		{name: "a variable that does not type-check", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: badvar}
spec:
  variables:
  - {name: n, expression: object.spec.replicas}
  match: {resources: [configmaps]}
  action: violate
`, want: `policies.yaml:6:33: policy "badvar": variables[0].expression: CEL: undefined field 'spec' (object is a core.v1.ConfigMap)
 |   - {name: n, expression: object.spec.replicas}
 | ................................^`},
		{name: "every matched kind fails", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: all}
spec:
  match:
    resources: [pods, apps/deployments]
    conditions:
    - expression: object.spec.nope
  action: violate
`, want: `policies.yaml:8:30: policy "all": match.conditions[0].expression: CEL: undefined field 'nope' (object is a core.v1.Pod)
 |     - expression: object.spec.nope
 | .............................^`},
		{name: "one matched kind of two has the field: no error", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: some}
spec:
  match:
    resources: [pods, apps/deployments]
    conditions:
    - expression: object.spec.replicas > 3
  action: violate
`, wantOK: true},
		{name: "a CRD's kind, unknown offline, is dyn", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: crd}
spec:
  match:
    resources: [example.com/widgets]
    conditions:
    - expression: object.spec.anything > 3
  action: violate
`, wantOK: true},
		{name: "a wildcard is dyn", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: wild}
spec:
  match:
    resources: ["*"]
    conditions:
    - expression: object.spec.anything > 3
  action: violate
`, wantOK: true},
		{name: "a subresource other than status has an object of its own: dyn", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: evict}
spec:
  match:
    resources: [pods/eviction]
    conditions:
    - expression: object.deleteOptions.gracePeriodSeconds > 3
  action: violate
`, wantOK: true},
		{name: "status is the object's kind", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: status}
spec:
  match:
    resources: [pods/status]
    conditions:
    - expression: object.status.phaze == 'Running'
  action: violate
`, want: `policies.yaml:8:32: policy "status": match.conditions[0].expression: CEL: undefined field 'phaze' (object is a core.v1.Pod)
 |     - expression: object.status.phaze == 'Running'
 | ...............................^`},
		{name: "containers and initContainers are one type", yaml: `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: concat}
spec:
  match:
    resources: [pods]
    conditions:
    - expression: (object.spec.initContainers + object.spec.containers).exists(c, c.resources.limits['memory'] == '1Gi')
  action: violate
`, wantOK: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile([]File{{Name: "policies.yaml", Data: []byte(tc.yaml)}}, Options{Registry: testRegistry()})
			if tc.wantOK {
				if err != nil {
					t.Fatalf("want no error, got:\n%v", err)
				}
				return
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("want an ErrorList, got %v", err)
			}
			if len(list) != 1 {
				t.Fatalf("want 1 error, got %d:\n%v", len(list), err)
			}
			if got := list[0].Display(); got != tc.want {
				t.Errorf("Display:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// TestSnapshotCoversBuiltinResources checks that the OpenAPI snapshot
// (make openapi-snapshot) has the kind and schema of every built-in
// resource (engine/kuberesources.go, make generate): both come from the
// discovery of the same kube-apiserver.
func TestSnapshotCoversBuiltinResources(t *testing.T) {
	s := BuiltinSchemas()
	for _, r := range builtinResources {
		gvk, ok := s.KindOf(r.Group, r.Resource)
		if !ok {
			t.Errorf("%s: not in the snapshot's kinds.json", r.name())
			continue
		}
		if gvk.Kind != r.Kind || gvk.Group != r.Group {
			t.Errorf("%s: the snapshot says %s, kuberesources.go %s", r.name(), gvk, r.Kind)
		}
		if !s.HasSchema(gvk) {
			t.Errorf("%s: the snapshot has no schema for %s", r.name(), gvk)
		}
	}
	if n := s.Resources(); n != len(builtinResources) {
		t.Errorf("the snapshot has %d resources, kuberesources.go %d: regenerate both from the same kube-apiserver", n, len(builtinResources))
	}
}

// TestTypeCheckErrorsAllReported checks that type errors of several
// policies and expressions are all reported in one run.
func TestTypeCheckErrorsAllReported(t *testing.T) {
	doc := func(name string) string {
		return policyYAML(name, "  match:\n    resources: [pods]\n    conditions:\n    - expression: object.spec.nope\n    - expression: object.metadata.name\n  action: violate\n")
	}
	_, err := Compile([]File{{Name: "p.yaml", Data: []byte(doc("a") + "\n---\n" + doc("b"))}}, Options{Registry: testRegistry()})
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 4 {
		t.Fatalf("want 4 errors, got %v", err)
	}
	for _, e := range list {
		if !strings.Contains(e.Error(), "core.v1.Pod") {
			t.Errorf("not a type error: %v", e)
		}
	}
}

// fakeOpenAPIDiscovery is a fake discovery that serves OpenAPI v3 too.
type fakeOpenAPIDiscovery struct {
	*fakediscovery.FakeDiscovery
	openapi *openapitest.FakeClient
}

func (d fakeOpenAPIDiscovery) OpenAPIV3() openapiclient.Client { return d.openapi }

// TestDiscoverySchemasCheckCRDs checks that with a cluster's schemas
// (DiscoverySchemas, as `celadon serve` reads them), a CRD's kind is
// type-checked: the same policy that loads offline, where the kind is dyn,
// is an error.
func TestDiscoverySchemasCheckCRDs(t *testing.T) {
	fake := &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{Resources: []*metav1.APIResourceList{{
		GroupVersion: "example.com/v1",
		APIResources: []metav1.APIResource{{Name: "widgets", Kind: "Widget"}, {Name: "widgets/status", Kind: "Widget"}},
	}}}}
	oc := openapitest.NewFakeClient()
	oc.PathsMap["apis/example.com/v1"] = openapitest.FakeGroupVersion{GVSpec: []byte(`{"components": {"schemas": {"com.example.v1.Widget": {
		"type": "object",
		"x-kubernetes-group-version-kind": [{"group": "example.com", "version": "v1", "kind": "Widget"}],
		"properties": {
			"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
			"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
		}
	}}}}`)}
	schemas, err := DiscoverySchemas(fakeOpenAPIDiscovery{fake, oc})
	if err != nil {
		t.Fatal(err)
	}
	policy := func(expr string) []File {
		return []File{{Name: "p.yaml", Data: []byte(policyYAML("widgets", "  match:\n    resources: [example.com/widgets]\n    conditions:\n    - expression: "+expr+"\n  action: violate\n"))}}
	}
	if _, err := Compile(policy("object.spec.size > 3"), Options{Registry: testRegistry(), Schemas: schemas}); err != nil {
		t.Errorf("a field of the CRD's schema: %v", err)
	}
	_, err = Compile(policy("object.spec.colour == 'red'"), Options{Registry: testRegistry(), Schemas: schemas})
	if err == nil || !strings.Contains(err.Error(), `p.yaml:9:30: policy "widgets": match.conditions[0].expression: CEL: undefined field 'colour' (object is a example.com.v1.Widget)`) {
		t.Errorf("a field the CRD's schema does not have: want an undefined field, got %v", err)
	}
	// Offline the kind is unknown: no error.
	if _, err := Compile(policy("object.spec.colour == 'red'"), Options{Registry: testRegistry()}); err != nil {
		t.Errorf("offline, a CRD's kind is dyn: %v", err)
	}
}

// TestTypeCheckWarnings checks that an expression that type-checks against
// some of the kinds its policy matches only is no error but a warning,
// located and naming the kinds.
func TestTypeCheckWarnings(t *testing.T) {
	snap := mustCompile(t, policyYAML("some", `  variables:
  - {name: replicas, expression: object.spec.replicas}
  match:
    resources: [pods, apps/deployments]
    conditions:
    - expression: object.spec.replicas > 3
  action: violate
`))
	var got []string
	for _, w := range snap.Policy("some").Warnings() {
		got = append(got, w.Error())
	}
	want := []string{
		`policies.yaml:7:45: policy "some": warning: variables[0].expression: CEL: undefined field 'replicas' (object is a core.v1.Pod); it type-checks against apps.v1.Deployment`,
		`policies.yaml:11:30: policy "some": warning: match.conditions[0].expression: CEL: undefined field 'replicas' (object is a core.v1.Pod); it type-checks against apps.v1.Deployment`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
