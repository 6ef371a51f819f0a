package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"celadon.io/celadon/engine"
)

// testRegistry holds test-only builtins, so these tests do not depend on
// package builtins' behaviour.
func testRegistry() *engine.Registry {
	r := engine.NewRegistry()
	r.Register(setLabelBuiltin{})
	r.Register(violateBuiltin{})
	r.Register(explodeBuiltin{})
	r.Register(gateBuiltin{})
	r.Register(probeBuiltin{})
	return r
}

// setLabelBuiltin adds metadata.labels[key]=value and warns.
type setLabelBuiltin struct{}

func (setLabelBuiltin) Name() string            { return "setLabel" }
func (setLabelBuiltin) Type() engine.ActionType { return engine.Mutating }
func (setLabelBuiltin) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args struct {
		Key   string `json:"key"`
		Value string `json:"value"`
		Warn  string `json:"warn"`
	}
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	if args.Key == "" {
		return nil, c.FieldError("key", "is required")
	}
	return engine.ActionFunc(func(ac *engine.ActionContext) (engine.Outcome, error) {
		var warnings []string
		if args.Warn != "" {
			warnings = []string{args.Warn}
		}
		labels := ac.Object().Get("metadata").Get("labels")
		if v, ok := labels.Get(args.Key).Str(); ok && v == args.Value {
			return engine.Outcome{Warnings: warnings}, nil
		}
		if !labels.IsObject() {
			return engine.Outcome{Warnings: warnings, Patch: []engine.JSONPatchOp{engine.Op("add", "/metadata/labels", map[string]any{args.Key: args.Value})}}, nil
		}
		return engine.Outcome{Warnings: warnings, Patch: []engine.JSONPatchOp{engine.Op("add", "/metadata/labels/"+engine.EscapePointer(args.Key), args.Value)}}, nil
	}), nil
}

// violateBuiltin reports with.message as a violation.
type violateBuiltin struct{}

func (violateBuiltin) Name() string            { return "violate" }
func (violateBuiltin) Type() engine.ActionType { return engine.Validating }
func (violateBuiltin) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args struct {
		Message string `json:"message"`
	}
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	return engine.ActionFunc(func(*engine.ActionContext) (engine.Outcome, error) {
		return engine.Outcome{Violation: args.Message}, nil
	}), nil
}

// explodeBuiltin panics, for real, in a validating or mutating policy.
type explodeBuiltin struct{}

func (explodeBuiltin) Name() string            { return "explode" }
func (explodeBuiltin) Type() engine.ActionType { return engine.Validating }
func (explodeBuiltin) Compile(*engine.CompileContext) (engine.Action, error) {
	return engine.ActionFunc(func(*engine.ActionContext) (engine.Outcome, error) {
		var m map[string]int
		m["boom"]++ // a nil-map panic
		return engine.Outcome{}, nil
	}), nil
}

// gates let a test hold gateBuiltin's actions until it releases them.
var gates sync.Map // name -> *gate

type gate struct {
	entered chan struct{} // receives once per action entering the gate
	release chan struct{} // closed to let every action through
}

func newGate(t *testing.T, name string) *gate {
	g := &gate{entered: make(chan struct{}, 16), release: make(chan struct{})}
	gates.Store(name, g)
	t.Cleanup(func() {
		gates.Delete(name)
		select {
		case <-g.release:
		default:
			close(g.release)
		}
	})
	return g
}

// gateBuiltin waits at the gate named with.gate, then reports with.message
// as a violation when it is not empty.
type gateBuiltin struct{}

func (gateBuiltin) Name() string            { return "gate" }
func (gateBuiltin) Type() engine.ActionType { return engine.Validating }
func (gateBuiltin) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args struct {
		Gate    string `json:"gate"`
		Message string `json:"message"`
	}
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	return engine.ActionFunc(func(ac *engine.ActionContext) (engine.Outcome, error) {
		v, ok := gates.Load(args.Gate)
		if !ok {
			return engine.Outcome{}, fmt.Errorf("no gate %q", args.Gate)
		}
		g := v.(*gate)
		g.entered <- struct{}{}
		select {
		case <-g.release:
		case <-ac.Done():
			return engine.Outcome{}, ac.Err()
		}
		return engine.Outcome{Violation: args.Message}, nil
	}), nil
}

// probeBuiltin reports what the action saw of the request as warnings:
// dryRun, the deadline left, and the namespace's labels.
type probeBuiltin struct{}

func (probeBuiltin) Name() string            { return "probe" }
func (probeBuiltin) Type() engine.ActionType { return engine.Mutating }
func (probeBuiltin) Compile(*engine.CompileContext) (engine.Action, error) {
	return engine.ActionFunc(func(ac *engine.ActionContext) (engine.Outcome, error) {
		w := []string{fmt.Sprintf("dryRun=%v", ac.DryRun)}
		if dl, ok := ac.Deadline(); ok {
			w = append(w, "deadline="+time.Until(dl).String())
		}
		if ac.Namespace != nil {
			w = append(w, fmt.Sprintf("namespace=%s team=%s", ac.Namespace.Name, ac.Namespace.Labels["team"]))
		}
		return engine.Outcome{Warnings: w}, nil
	}), nil
}

// policy returns one policy document.
func policy(name, body string) string {
	return fmt.Sprintf("apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata:\n  name: %s\nspec:\n%s", name, body)
}

// writePolicies writes files into a fresh plain directory.
func writePolicies(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// newTestServer builds a server on files with the test registry, its own
// metrics registry and a logger writing to the test log.
func newTestServer(t testing.TB, files map[string]string, mod ...func(*Options)) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts := Options{
		PoliciesDir:       writePolicies(t, files),
		Registry:          testRegistry(),
		Namespaces:        staticNamespaces{},
		MetricsRegisterer: reg,
		Logger:            testr.NewWithInterface(t, testr.Options{}),
	}
	for _, m := range mod {
		m(&opts)
	}
	s, err := NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	return s, reg
}

// review builds an AdmissionReview of apiVersion for a pod CREATE.
func review(apiVersion string, uid string, mod ...func(*admissionv1.AdmissionRequest)) []byte {
	req := &admissionv1.AdmissionRequest{
		UID:       types.UID(uid),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Name:      "web-0",
		Namespace: "default",
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: "alice"},
		Object: runtime.RawExtension{Raw: []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"default"},` +
			`"spec":{"containers":[{"name":"app","image":"nginx"}]}}`)},
	}
	for _, m := range mod {
		m(req)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"},
		Request:  req,
	})
	if err != nil {
		panic(err)
	}
	return b
}

const v1 = "admission.k8s.io/v1"
const v1beta1 = "admission.k8s.io/v1beta1"

// post sends body to h at target with the given content type.
func post(h http.Handler, target string, body []byte, contentType string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// reviewOut is a decoded response review.
type reviewOut struct {
	APIVersion string                         `json:"apiVersion"`
	Kind       string                         `json:"kind"`
	Response   *admissionv1.AdmissionResponse `json:"response"`
}

// mustReview checks w is an HTTP 200 review and decodes it.
func mustReview(t *testing.T, w *httptest.ResponseRecorder) *reviewOut {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("HTTP %d, want 200: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var out reviewOut
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, w.Body)
	}
	if out.Response == nil {
		t.Fatalf("review has no response: %s", w.Body)
	}
	return &out
}

// counter reads a counter or gauge with the given labels from reg; 0 when
// it does not exist.
func counter(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			return metricValue(m)
		}
	}
	return 0
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// eventually polls cond until it holds or the bounded timeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// statusMessage decodes the metav1.Status body of a rejected request.
func statusMessage(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatalf("body is not a Status: %v\n%s", err, w.Body)
	}
	if int(st.Code) != w.Code || st.Kind != "Status" || st.Status != metav1.StatusFailure {
		t.Errorf("Status %+v does not match HTTP %d", st, w.Code)
	}
	return st.Message
}

// staticNamespaces is an engine.NamespaceGetter over a fixed set.
type staticNamespaces map[string]map[string]string

func (s staticNamespaces) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	labels, ok := s[name]
	if !ok {
		return nil, apierrors.NewNotFound(corev1.Resource("namespaces"), name)
	}
	return &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}, nil
}

// panickyNamespaces panics when asked: the engine calls it outside any
// builtin, so the panic escapes Evaluate.
type panickyNamespaces struct{}

func (panickyNamespaces) GetNamespace(context.Context, string) (*corev1.Namespace, error) {
	panic("namespace getter exploded")
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }

func init() {
	// controller-runtime's packages log through its global logger; tests
	// pass their own to the Server, so keep the global one quiet.
	ctrllog.SetLogger(logr.Discard())
}
