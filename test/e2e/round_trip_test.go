package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/internal/controlplane"
	"celadon.io/celadon/internal/devenv"
)

// roundTripLabel says which side of the round trip a namespace is on: the
// native policies are bound to "native", the converted ones to "celadon".
const roundTripLabel = "e2e.celadon.io/roundtrip"

// TestRoundTrip takes ValidatingAdmissionPolicies and
// MutatingAdmissionPolicies with their bindings (testdata/roundtrip), runs
// them natively in the API server, bound to one namespace, and, converted
// by `celadon convert` (the built binary, as a user runs it), in a Celadon
// server of its own, bound to another. Every object of a corpus is created
// in both namespaces with a server-side dry run (both the policies and
// Celadon's webhooks, sideEffects None, run on dry run), or updated so
// after a real create of its old version, and the outcomes are compared:
//
//   - allowed or denied;
//   - a denial's status reason and HTTP code: the first failing
//     validation's reason (Invalid by default) and its code (422 for
//     Invalid, 403 for Forbidden...), which Celadon's validate answers
//     with and the API server passes on from its webhook;
//   - a denial's message: the API server names the first failing
//     validation ("ValidatingAdmissionPolicy '<p>' with binding '<b>'
//     denied request: <message>"), Celadon every failing one, in order
//     ("admission webhook \"<webhook>\" denied the request: <m1>; <m2>"),
//     so the native message must be Celadon's first;
//   - warnings of Warn validations: the API server sends one per failing
//     validation ("Validation failed for ValidatingAdmissionPolicy '<p>'
//     with binding '<b>': <message>"), Celadon one per policy
//     ("<policy>: <m1>; <m2>"); the (policy, message) pairs must be equal;
//   - for ConfigMaps, what the API server's audit log (main_test.go) holds
//     for the request: the failing Audit validations (the API server's
//     validation.policy.admission.k8s.io/validation_failure, Celadon's
//     <webhook>/<policy> annotation) and the auditAnnotations' values
//     (<policy>/<key>, Celadon's <webhook>/<policy>.<key>);
//   - the object the API server returns, mutated: equal but for what the
//     API server makes different per namespace (namespace, uid,
//     timestamps, managedFields, the service account token volume's
//     random suffix).
//
// What differs by design, and is checked as such: an Audit validation's
// failure, which Celadon also sends the requester as a warning
// "<policy> (audit): <message>".
func TestRoundTrip(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	requireMAPServed(t)

	policies, err := os.ReadFile(filepath.Join("testdata", "roundtrip", "policies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	paramsPath, err := filepath.Abs(filepath.Join("testdata", "roundtrip", "params.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The same policies, bound to the other namespace.
	celadonSide := bytes.ReplaceAll(policies, []byte(roundTripLabel+": native"), []byte(roundTripLabel+": celadon"))
	if bytes.Equal(celadonSide, policies) {
		t.Fatalf("no binding selects %s: native", roundTripLabel)
	}
	converted := celadonConvert(ctx, t, celadonSide, paramsPath)

	nss := map[string]string{}
	for _, side := range []string{"native", "celadon"} {
		nss[side] = newNamespace(ctx, t, "rt-"+side, map[string]string{roundTripLabel: side})
	}
	applyManifests(ctx, t, paramsPath)
	applyManifests(ctx, t, filepath.Join("testdata", "roundtrip", "policies.yaml"))
	startScopedCeladon(ctx, t, "celadon-e2e-roundtrip", map[string][]byte{"converted.yaml": converted}, nil,
		&metav1.LabelSelector{MatchLabels: map[string]string{roundTripLabel: "celadon"}}, nil)

	c, warnings := warningClient(t)
	create := func(ns string, obj client.Object, update bool) rtOutcome {
		t.Helper()
		return rtAdmit(ctx, t, c, warnings, ns, obj, update)
	}
	// The API server takes up new policies, bindings and parameters
	// within seconds: wait until each is in force.
	for _, probe := range []struct {
		what string
		obj  func() client.Object
		ok   func(rtOutcome) bool
	}{
		{"rt-deployment-rules", func() client.Object { return rtDeployment("probe", 9, "nginx:1", nil) }, func(o rtOutcome) bool { return !o.allowed }},
		{"rt-deployment-history", func() client.Object { return rtDeployment("probe", 1, "nginx:1", map[string]string{"team": "a"}) }, func(o rtOutcome) bool {
			v, _, _ := unstructured.NestedInt64(o.object, "spec", "revisionHistoryLimit")
			return o.allowed && v == 3
		}},
		{"rt-configmap-limits", func() client.Object { return rtConfigMap("probe", nil, "a", "b", "c", "d") }, func(o rtOutcome) bool { return !o.allowed }},
		{"rt-configmap-advice", func() client.Object { return rtConfigMap("probe", nil) }, func(o rtOutcome) bool { return len(o.warnings) > 0 }},
		{"rt-pod-defaults", func() client.Object { return rtPod("probe", nil, "nginx:1") }, func(o rtOutcome) bool {
			v, _, _ := unstructured.NestedString(o.object, "metadata", "labels", "roundtrip.celadon.io/mutated")
			return o.allowed && v == "true"
		}},
		{"rt-pod-images", func() client.Object {
			return rtPod("probe", map[string]string{"roundtrip.celadon.io/no-mutate": "true"}, "docker.io/nginx:1")
		}, func(o rtOutcome) bool { return !o.allowed }},
	} {
		waitFor(ctx, t, "native policy "+probe.what+" in force", func(context.Context) (bool, error) {
			return probe.ok(create(nss["native"], probe.obj(), false)), nil
		})
	}

	corpus := roundTripCorpus()
	if len(corpus) < 15 {
		t.Fatalf("the corpus has %d objects, want at least 15", len(corpus))
	}
	var denied, warned, mutated int
	codes := map[int32]int{} // the denials' codes
	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			if tc.base != nil {
				for _, ns := range nss {
					base := tc.base()
					base.SetNamespace(ns)
					if err := suite.c.Create(ctx, base); err != nil {
						t.Fatalf("creating the object to update in %s: %v", ns, err)
					}
				}
			}
			native := create(nss["native"], tc.obj(), tc.base != nil)
			cel := create(nss["celadon"], tc.obj(), tc.base != nil)
			t.Logf("native: allowed=%v %d %s %q warnings=%q audit warnings=%q audited=%q %q", native.allowed, native.code, native.reason, native.messages, native.warnings, native.audit, native.auditFailures, native.auditValues)
			t.Logf("Celadon: allowed=%v %d %s %q warnings=%q audit warnings=%q audited=%q %q", cel.allowed, cel.code, cel.reason, cel.messages, cel.warnings, cel.audit, cel.auditFailures, cel.auditValues)
			if native.other != nil || cel.other != nil {
				t.Fatalf("refused for another reason than the policies:\n  native: %v\n  Celadon: %v", native.other, cel.other)
			}
			// The corpus hits what it says it does.
			if native.allowed == tc.denied {
				t.Errorf("the API server allowed=%v, the case expects denied=%v: the corpus is wrong", native.allowed, tc.denied)
			}
			if !reflect.DeepEqual(native.auditFailures, cel.auditFailures) || !reflect.DeepEqual(native.auditValues, cel.auditValues) {
				t.Errorf("audit records differ:\n  the API server: %q %q\n  Celadon:        %q %q", native.auditFailures, native.auditValues, cel.auditFailures, cel.auditValues)
			}
			if !reflect.DeepEqual(native.auditFailures, tc.audit) {
				t.Errorf("the API server audited %q, the case expects %q: the corpus is wrong", native.auditFailures, tc.audit)
			}
			if native.allowed != cel.allowed {
				t.Fatalf("the API server allowed=%v (%q), Celadon allowed=%v (%q)", native.allowed, native.messages, cel.allowed, cel.messages)
			}
			if !native.allowed {
				denied++
				if len(native.messages) != 1 || len(cel.messages) == 0 || native.messages[0] != cel.messages[0] {
					t.Errorf("denial messages differ: the API server's %q is not the first of Celadon's %q", native.messages, cel.messages)
				}
				if native.code != cel.code || native.reason != cel.reason {
					t.Errorf("denials differ: the API server's is %d %s, Celadon's %d %s", native.code, native.reason, cel.code, cel.reason)
				}
				codes[native.code]++
				return
			}
			if !reflect.DeepEqual(native.warnings, cel.warnings) {
				t.Errorf("warnings differ:\n  the API server: %q\n  Celadon:        %q", native.warnings, cel.warnings)
			}
			if len(native.warnings) > 0 {
				warned++
			}
			if len(native.audit) > 0 {
				t.Errorf("the API server warned of an Audit validation: %q", native.audit)
			}
			if !reflect.DeepEqual(cel.audit, tc.audit) {
				t.Errorf("Celadon's audit warnings: %q, want %q", cel.audit, tc.audit)
			}
			nj, cj := normalizedJSON(t, native.object), normalizedJSON(t, cel.object)
			if nj != cj {
				t.Errorf("the objects differ:\n  the API server: %s\n  Celadon:        %s", nj, cj)
			}
			if got := rtMutated(native.object); got != tc.mutated {
				t.Errorf("the native policies mutated=%v, the case expects %v: the corpus is wrong", got, tc.mutated)
			}
			if tc.mutated {
				mutated++
			}
		})
	}
	t.Logf("%d objects: %d denied (codes %v), %d warned, %d mutated, each way", len(corpus), denied, codes, warned, mutated)
	// The corpus denies with both the default reason and another.
	if codes[http.StatusUnprocessableEntity] == 0 || codes[http.StatusForbidden] == 0 {
		t.Errorf("the denials' codes are %v: the corpus has no 422 or no 403 denial", codes)
	}
}

// rtOutcome is what the API server answered to a dry-run create.
type rtOutcome struct {
	allowed bool
	// messages of a denial by the policies: the native one, or Celadon's
	// joined validations split.
	messages []string
	reason   metav1.StatusReason
	// code is a denial's HTTP status code, as the client sees it.
	code int32
	// warnings maps each rt- policy to its messages, sorted, from the Warn
	// validations; audit does so for Celadon's audit warnings.
	warnings, audit map[string][]string
	// object is the object as created (dry run).
	object map[string]any
	// For ConfigMaps, from the API server's audit log: auditFailures maps
	// each rt- policy to the messages of its failing Audit validations,
	// auditValues "<policy>/<key>" to its auditAnnotations' values.
	auditFailures map[string][]string
	auditValues   map[string]string
	// other is an error that is no denial by a policy.
	other error
}

var (
	nativeDenial  = regexp.MustCompile(`ValidatingAdmissionPolicy '(rt-[a-z-]+)' with binding '[a-z-]+' denied request: (.*)$`)
	celadonDenial = regexp.MustCompile(`admission webhook "[^"]*" denied the request: (.*)$`)
	nativeWarning = regexp.MustCompile(`^Validation failed for ValidatingAdmissionPolicy '(rt-[a-z-]+)' with binding '[a-z-]+': (.*)$`)
	celadonWarn   = regexp.MustCompile(`^(rt-[a-z-]+)( \(audit\))?: (.*)$`)
)

// rtAdmit creates obj in ns, or updates it, with a server-side dry run.
func rtAdmit(ctx context.Context, t *testing.T, c client.Client, rec *warningRecorder, ns string, obj client.Object, update bool) rtOutcome {
	t.Helper()
	obj.SetNamespace(ns)
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	rec.take()
	var offset int64
	if st, err := os.Stat(suite.auditLog); err == nil {
		offset = st.Size()
	}
	if update {
		err = c.Update(ctx, u, client.DryRunAll)
	} else {
		err = c.Create(ctx, u, client.DryRunAll)
	}
	out := rtOutcome{allowed: err == nil, object: u.Object}
	if u.GetKind() == "ConfigMap" && !update {
		out.auditFailures, out.auditValues = rtAudit(ctx, t, offset, ns, obj.GetName())
	}
	for _, w := range rec.take() {
		if sm := nativeWarning.FindStringSubmatch(w); sm != nil {
			out.warnings = addWarning(out.warnings, sm[1], sm[2])
		} else if sm := celadonWarn.FindStringSubmatch(w); sm != nil {
			for _, msg := range strings.Split(sm[3], "; ") {
				if sm[2] != "" {
					out.audit = addWarning(out.audit, sm[1], msg)
				} else {
					out.warnings = addWarning(out.warnings, sm[1], msg)
				}
			}
		}
	}
	if err == nil {
		return out
	}
	out.reason = apierrors.ReasonForError(err)
	if st := apierrors.APIStatus(nil); errors.As(err, &st) {
		out.code = st.Status().Code
	}
	switch msg := err.Error(); {
	case nativeDenial.MatchString(msg):
		out.messages = []string{nativeDenial.FindStringSubmatch(msg)[2]}
	case celadonDenial.MatchString(msg):
		out.messages = strings.Split(celadonDenial.FindStringSubmatch(msg)[1], "; ")
	default:
		out.other = err
	}
	return out
}

func addWarning(m map[string][]string, policy, msg string) map[string][]string {
	if m == nil {
		m = map[string][]string{}
	}
	m[policy] = append(m[policy], msg)
	sort.Strings(m[policy])
	return m
}

// rtAudit reads the audit event of the create of ConfigMap ns/name from
// the audit log, past offset, waiting for it to be written, and returns
// what the native policies or Celadon recorded: the Audit validations'
// failures, by policy, and the auditAnnotations' values as
// "<policy>/<key>". The API server records a VAP's failures under
// validation.policy.admission.k8s.io/validation_failure and its
// annotations as <policy>/<key>; a webhook's annotation <key> as
// <webhook>/<key>, and Celadon's keys are <policy> (the violation of an
// Audit policy, validations joined by "; ") and <policy>.<key>.
func rtAudit(ctx context.Context, t *testing.T, offset int64, ns, name string) (map[string][]string, map[string]string) {
	t.Helper()
	var annotations map[string]string
	waitFor(ctx, t, "the audit event of ConfigMap "+ns+"/"+name, func(context.Context) (bool, error) {
		f, err := os.Open(suite.auditLog)
		if err != nil {
			return false, err
		}
		defer f.Close()
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return false, err
		}
		dec := json.NewDecoder(f)
		for {
			var ev struct {
				Stage     string `json:"stage"`
				ObjectRef struct {
					Namespace string `json:"namespace"`
					Name      string `json:"name"`
				} `json:"objectRef"`
				Annotations map[string]string `json:"annotations"`
			}
			if err := dec.Decode(&ev); err != nil {
				return false, nil // the end, or a line being written
			}
			if ev.Stage == "ResponseComplete" && ev.ObjectRef.Namespace == ns && ev.ObjectRef.Name == name {
				annotations = ev.Annotations
				return true, nil
			}
		}
	})
	var failures map[string][]string
	values := map[string]string{}
	for k, v := range annotations {
		if k == "validation.policy.admission.k8s.io/validation_failure" {
			var list []struct {
				Message string `json:"message"`
				Policy  string `json:"policy"`
			}
			if err := json.Unmarshal([]byte(v), &list); err != nil {
				t.Fatalf("audit annotation %s: %v", k, err)
			}
			for _, f := range list {
				failures = addWarning(failures, f.Policy, f.Message)
			}
			continue
		}
		prefix, key, _ := strings.Cut(k, "/")
		switch {
		case strings.HasPrefix(prefix, "rt-"): // a VAP's <policy>/<key>
			values[k] = v
		case strings.HasPrefix(key, "rt-") && strings.Contains(key, "."): // Celadon's <policy>.<key>
			policy, annotation, _ := strings.Cut(key, ".")
			values[policy+"/"+annotation] = v
		case strings.HasPrefix(key, "rt-"): // Celadon's Audit violation
			for _, msg := range strings.Split(v, "; ") {
				failures = addWarning(failures, key, msg)
			}
		}
	}
	return failures, values
}

// tokenVolume is the service account token volume's name, random per pod.
var tokenVolume = regexp.MustCompile(`kube-api-access-[a-z0-9]{5}`)

// normalizedJSON is obj as JSON without what differs between namespaces
// whatever the policies do.
func normalizedJSON(t *testing.T, obj map[string]any) string {
	t.Helper()
	u := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(obj)}
	for _, f := range []string{"namespace", "uid", "creationTimestamp", "resourceVersion", "managedFields", "generation"} {
		unstructured.RemoveNestedField(u.Object, "metadata", f)
	}
	// An updated object's status is the controllers', set in their time.
	unstructured.RemoveNestedField(u.Object, "status")
	data, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	return tokenVolume.ReplaceAllString(string(data), "kube-api-access-xxxxx")
}

// requireMAPServed fails t unless the API server serves
// admissionregistration.k8s.io/v1 MutatingAdmissionPolicies (GA, on by
// default, since Kubernetes 1.36).
func requireMAPServed(t *testing.T) {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(suite.cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	list, err := dc.ServerResourcesForGroupVersion("admissionregistration.k8s.io/v1")
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	for _, r := range list.APIResources {
		served = append(served, r.Name)
	}
	for _, want := range []string{"validatingadmissionpolicies", "validatingadmissionpolicybindings", "mutatingadmissionpolicies", "mutatingadmissionpolicybindings"} {
		if !slices.Contains(served, want) {
			t.Fatalf("the API server does not serve admissionregistration.k8s.io/v1 %s (it serves %v)", want, served)
		}
	}
}

// celadonConvert builds the celadon binary and converts policies with
// it, as a user would: `celadon convert - --params <params>`.
func celadonConvert(ctx context.Context, t *testing.T, policies []byte, params string) []byte {
	t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "celadon")
	if err := devenv.BuildCeladon(ctx, root, bin); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	conv := exec.CommandContext(ctx, bin, "convert", "-", "--params", params)
	conv.Stdin = bytes.NewReader(policies)
	conv.Stdout, conv.Stderr = &stdout, &stderr
	if err := conv.Run(); err != nil {
		t.Fatalf("celadon convert: %v\n%s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Logf("celadon convert's notes:\n%s", stderr.String())
	}
	return stdout.Bytes()
}

// applyManifests creates every object of a YAML file, deleted when the
// test ends.
func applyManifests(ctx context.Context, t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			t.Fatalf("%s: %v", path, err)
		}
		if m == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if err := suite.c.Create(ctx, u); err != nil {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		t.Cleanup(func() {
			if err := suite.c.Delete(context.Background(), u); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting %s %s: %v", u.GetKind(), u.GetName(), err)
			}
		})
	}
}

// rtMutated says whether a MAP changed obj: a pod labelled by
// rt-pod-defaults, a Deployment whose revisionHistoryLimit (defaulted to
// 10) rt-deployment-history lowered to 3.
func rtMutated(obj map[string]any) bool {
	u := &unstructured.Unstructured{Object: obj}
	switch u.GetKind() {
	case "Pod":
		return u.GetLabels()["roundtrip.celadon.io/mutated"] == "true"
	case "Deployment":
		v, _, _ := unstructured.NestedInt64(obj, "spec", "revisionHistoryLimit")
		return v == 3
	}
	return false
}

// rtCase is one object of the corpus and what the native policies do
// with it, so that the corpus is checked to hit what it means to.
type rtCase struct {
	name    string
	obj     func() client.Object
	denied  bool
	mutated bool
	// audit is Celadon's expected audit warnings.
	audit map[string][]string
	// base, when set, is created (for real) first, and obj is an UPDATE
	// of it.
	base func() client.Object
}

func rtDeployment(name string, replicas int32, image string, labels map[string]string) *appsv1.Deployment {
	sel := map[string]string{"app": name}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
			},
		},
	}
}

func rtConfigMap(name string, annotations map[string]string, keys ...string) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
	}
	for _, k := range keys {
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[k] = "v"
	}
	return cm
}

// rtPod is a pod with one container per image, named c0, c1, ...
func rtPod(name string, labels map[string]string, images ...string) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	return p
}

func roundTripCorpus() []rtCase {
	team := map[string]string{"team": "payments"}
	owner := map[string]string{"owner": "team-payments"}
	withTeam := func(extra map[string]string) map[string]string {
		out := map[string]string{"team": "payments"}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	return []rtCase{
		// Deployments: rt-deployment-rules (Deny) and rt-deployment-history.
		{name: "deployment allowed", mutated: true, obj: func() client.Object { return rtDeployment("web", 2, "nginx:1.27", team) }},
		{name: "deployment history kept", obj: func() client.Object {
			d := rtDeployment("web", 2, "nginx:1.27", team)
			d.Spec.RevisionHistoryLimit = ptr.To[int32](2)
			return d
		}},
		{name: "deployment too many replicas", denied: true, obj: func() client.Object { return rtDeployment("web", 7, "nginx:1.27", team) }},
		{name: "deployment without team", denied: true, obj: func() client.Object { return rtDeployment("web", 2, "nginx:1.27", nil) }},
		{name: "deployment latest", denied: true, obj: func() client.Object { return rtDeployment("web", 2, "nginx:latest", team) }},
		{name: "deployment latest with a note", denied: true, obj: func() client.Object {
			d := rtDeployment("web", 2, "nginx:latest", team)
			d.Annotations = map[string]string{"latest-note": "pin a version"}
			return d
		}},
		{name: "deployment every validation fails", denied: true, obj: func() client.Object { return rtDeployment("web", 8, "nginx:latest", nil) }},
		// UPDATEs: the growth rule reads oldObject.
		{name: "deployment update grows by 2", base: func() client.Object { return rtDeployment("grow-ok", 0, "nginx:1.27", team) },
			obj: func() client.Object { return rtDeployment("grow-ok", 2, "nginx:1.27", team) }},
		{name: "deployment update grows by 3", denied: true, base: func() client.Object { return rtDeployment("grow-fast", 0, "nginx:1.27", team) },
			obj: func() client.Object { return rtDeployment("grow-fast", 3, "nginx:1.27", team) }},
		{name: "deployment skipped by matchCondition", mutated: true, obj: func() client.Object {
			return rtDeployment("web", 8, "nginx:latest", map[string]string{"roundtrip.celadon.io/skip": "yes"})
		}},
		// ConfigMaps: rt-configmap-limits (Deny, params), rt-configmap-advice
		// (Warn), rt-configmap-names (Audit).
		{name: "configmap allowed", obj: func() client.Object { return rtConfigMap("settings", owner, "a", "b") }},
		{name: "configmap too many keys", denied: true, obj: func() client.Object { return rtConfigMap("settings", owner, "a", "b", "c", "d") }},
		{name: "configmap forbidden prefix", denied: true, obj: func() client.Object { return rtConfigMap("settings", owner, "a", "secret-token") }},
		{name: "configmap both limits", denied: true, obj: func() client.Object { return rtConfigMap("settings", owner, "a", "b", "c", "secret-token") }},
		{name: "configmap without owner warns", obj: func() client.Object { return rtConfigMap("settings", nil, "a") }},
		{name: "configmap password key warns twice", obj: func() client.Object { return rtConfigMap("settings", nil, "db-password") }},
		{name: "configmap excluded by name", obj: func() client.Object { return rtConfigMap("legacy-settings", owner, "a", "b", "c", "secret-d") }},
		{name: "configmap quiet not warned", obj: func() client.Object {
			cm := rtConfigMap("settings", nil, "db-password")
			cm.Labels = map[string]string{"roundtrip.celadon.io/quiet": "true"}
			return cm
		}},
		{name: "configmap long name audited", obj: func() client.Object { return rtConfigMap("settings-of-the-payments-team", owner) },
			audit: map[string][]string{"rt-configmap-names": {"name settings-of-the-payments-team is longer than 20 characters"}}},
		{name: "configmap warned and denied", denied: true, obj: func() client.Object { return rtConfigMap("settings", nil, "secret-password") }},
		// Pods: rt-pod-defaults (ApplyConfiguration, JSONPatch), then
		// rt-pod-images (Deny) on the mutated pod.
		{name: "pod mutated", mutated: true, obj: func() client.Object { return rtPod("app", nil, "docker.io/library/nginx:1.27") }},
		{name: "pod two containers one mirrored", mutated: true, obj: func() client.Object {
			return rtPod("app", withTeam(nil), "quay.io/app/api:2", "docker.io/library/redis:7")
		}},
		{name: "pod runAsNonRoot kept", mutated: true, obj: func() client.Object {
			p := rtPod("app", nil, "quay.io/app/api:2")
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(false)}
			return p
		}},
		{name: "pod annotations kept", mutated: true, obj: func() client.Object {
			p := rtPod("app", nil, "quay.io/app/api:2")
			p.Annotations = map[string]string{"example.com/note": "hello"}
			return p
		}},
		{name: "pod latest denied after mutation", denied: true, obj: func() client.Object {
			return rtPod("app", nil, "docker.io/library/nginx:latest")
		}},
		{name: "pod opted out not mirrored", denied: true, obj: func() client.Object {
			return rtPod("app", map[string]string{"roundtrip.celadon.io/no-mutate": "true"}, "docker.io/library/nginx:1.27")
		}},
		{name: "pod opted out allowed", obj: func() client.Object {
			return rtPod("app", map[string]string{"roundtrip.celadon.io/no-mutate": "true"}, "quay.io/app/api:2")
		}},
	}
}
