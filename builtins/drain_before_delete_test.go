package builtins

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/consulagent"
)

// The drain tests run at a fixed time, an hour after the pod's creation.
var (
	drainTestCreated = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	drainTestNow     = drainTestCreated.Add(time.Hour)
)

const drainTestUID = "5b1e2c3d-0000-4000-8000-00000000aa01"

// fixDrainClock sets the builtin's clock to drainTestNow for the test.
func fixDrainClock(t *testing.T) {
	saved := drainNow
	drainNow = func() time.Time { return drainTestNow }
	t.Cleanup(func() { drainNow = saved })
}

// drainPolicy is a drainBeforeDelete policy on pod DELETEs with the given
// with (lines indented by four).
func drainPolicy(with string) string {
	return `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: drain
spec:
  match:
    resources: [pods]
    operations: [DELETE]
  action: drainBeforeDelete
  with:
` + with
}

// drainStarted is the annotation value the builtin writes for a start at
// t on the test pod.
func drainStarted(t time.Time) string {
	return t.UTC().Format(time.RFC3339) + " " + drainTestUID
}

// drainTestPod is pod shop/web-0 as the API server sends it on DELETE,
// with annotations and, unless "", status.hostIP.
func drainTestPod(t testing.TB, annotations map[string]string, hostIP string) []byte {
	t.Helper()
	md := map[string]any{
		"name": "web-0", "namespace": "shop", "uid": drainTestUID, "resourceVersion": "42",
		"creationTimestamp": drainTestCreated.Format(time.RFC3339),
	}
	if len(annotations) > 0 {
		md["annotations"] = annotations
	}
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod", "metadata": md,
		"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "app"}}},
	}
	if hostIP != "" {
		pod["status"] = map[string]any{"hostIP": hostIP}
	}
	b, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// drainCluster is the server's cluster as the builtin sees it: Secrets to
// read, and patches recorded (engine.ObjectPatcher).
type drainCluster struct {
	mu       sync.Mutex
	secrets  map[string]map[string]string // name: key: value, in namespace shop
	patchErr error
	patches  []string // "namespace/name type data"
}

func (c *drainCluster) Get(_ context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	data, ok := c.secrets[name]
	if gvr.Resource != "secrets" || namespace != "shop" || !ok {
		return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
	}
	encoded := map[string]any{}
	for k, v := range data {
		encoded[k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret", "data": encoded}}, nil
}

func (c *drainCluster) Patch(_ context.Context, gvr schema.GroupVersionResource, namespace, name string, pt types.PatchType, data []byte) (*unstructured.Unstructured, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gvr != podsResource {
		return nil, fmt.Errorf("patch of %s, want pods", gvr)
	}
	c.patches = append(c.patches, fmt.Sprintf("%s/%s %s %s", namespace, name, pt, data))
	return nil, c.patchErr
}

// readOnlyCluster is celadon eval's: it reads, it cannot write.
type readOnlyCluster struct{ c *drainCluster }

func (r readOnlyCluster) Get(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	return r.c.Get(ctx, gvr, namespace, name)
}

// runDrain evaluates a DELETE of pod against snap.
func runDrain(t *testing.T, snap *engine.Snapshot, pod []byte, dryRun bool, cluster engine.ObjectGetter) *engine.Decision {
	t.Helper()
	req := admissionRequest(t, admissionv1.Delete, nil, pod)
	if dryRun {
		req.DryRun = ptr.To(true)
	}
	return evaluate(t, snap, req, engine.EvalOptions{Cluster: cluster})
}

// startPatch is the patch the builtin writes on its first DELETE, with
// the cleanup's annotations (JSON members, may be "").
func startPatch(extra string) string {
	if extra != "" {
		extra = "," + extra
	}
	return `shop/web-0 application/merge-patch+json {"metadata":{"annotations":{"celadon.io/drain-started":"` + drainStarted(drainTestNow) + `"` + extra + `},"resourceVersion":"42"}}`
}

// drainCase is one DELETE and what must come of it.
type drainCase struct {
	name        string
	annotations map[string]string
	hostIP      string
	dryRun      bool
	offline     bool  // a cluster that cannot write
	patchErr    error // the API server's answer to the patch
	// want: "allow", "skip", "deny" or "error"; message is a substring of
	// the denial (or the error), warning of the only warning.
	want, message, warning string
	patch                  string // the one patch written; "" for none
}

func checkDrainCase(t *testing.T, snap *engine.Snapshot, c drainCase, cluster *drainCluster) {
	t.Helper()
	cluster.patchErr = c.patchErr
	var getter engine.ObjectGetter = cluster
	if c.offline {
		getter = readOnlyCluster{cluster}
	}
	d := runDrain(t, snap, drainTestPod(t, c.annotations, c.hostIP), c.dryRun, getter)
	state := d.Results[0].State
	switch c.want {
	case "allow":
		if !d.Allowed || state != engine.StatePass {
			t.Errorf("allowed %v, state %s (%s), want allowed: %s", d.Allowed, state, d.Results[0].Reason, d.Message)
		}
	case "skip":
		if !d.Allowed || state != engine.StateSkip {
			t.Errorf("allowed %v, state %s, want skipped: %s", d.Allowed, state, d.Message)
		}
	case "deny":
		if d.Allowed || state != engine.StateFail {
			t.Errorf("allowed %v, state %s (%s), want denied", d.Allowed, state, d.Results[0].Reason)
		}
	case "error":
		if d.Allowed || state != engine.StateError {
			t.Errorf("allowed %v, state %s, want an error denied by failurePolicy Fail", d.Allowed, state)
		}
	}
	if !strings.Contains(d.Message+d.Results[0].Reason, c.message) {
		t.Errorf("message %q (reason %q), want it to contain %q", d.Message, d.Results[0].Reason, c.message)
	}
	if c.warning == "" {
		checkWarnings(t, d, "")
	} else if len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], c.warning) {
		t.Errorf("warnings %q, want one containing %q", d.Warnings, c.warning)
	}
	var patches []string
	if c.patch != "" {
		patches = []string{c.patch}
	}
	if fmt.Sprint(cluster.patches) != fmt.Sprint(patches) {
		t.Errorf("patches:\n got %q\nwant %q", cluster.patches, patches)
	}
	cluster.patches = nil
}

// TestDrainBeforeDeleteAnnotate drives the annotate cleanup, and with it
// what every mode shares: the first DELETE starts and denies, a dry run or
// an offline eval starts nothing, later DELETEs wait for doneWhen or the
// timeout, and a start time the pod's creator could have written is not
// trusted.
func TestDrainBeforeDeleteAnnotate(t *testing.T) {
	fixDrainClock(t)
	snap := compilePolicies(t, drainPolicy(`    timeoutSeconds: 600
    annotate:
      key: example.com/drain
      value: requested
      doneWhen: oldObject.metadata.?annotations[?"example.com/drained"].orValue("") == "true"
`))
	started := drainStarted(drainTestNow.Add(-time.Minute))
	first := startPatch(`"example.com/drain":"requested"`)
	for _, c := range []drainCase{
		{name: "the first DELETE sets the annotation, records the start and denies", want: "deny",
			message: `pod shop/web-0 must drain before it is deleted: set the annotation example.com/drain="requested"; waiting until doneWhen holds`, patch: first},
		{name: "a dry run starts nothing", dryRun: true, want: "deny",
			message: `would set the annotation example.com/drain="requested" (dry run: nothing was started)`},
		{name: "offline, nothing is written", offline: true, want: "deny",
			message: "and record the start in the annotation celadon.io/drain-started (no cluster to write to: nothing was started)"},
		{name: "started, not done: denied", annotations: map[string]string{drainStartedAnnotation: started}, want: "deny",
			message: "is draining before it is deleted: waiting until doneWhen holds (" + `oldObject.metadata.?annotations[?"example.com/drained"].orValue("") == "true") (started at 2026-01-01T00:59:00Z, at most 10m0s); retry the delete`},
		{name: "started, done: allowed", annotations: map[string]string{drainStartedAnnotation: started, "example.com/drained": "true"}, want: "allow",
			message: "drained: doneWhen holds"},
		{name: "a dry run after done is allowed too: doneWhen calls nothing", dryRun: true, annotations: map[string]string{drainStartedAnnotation: started, "example.com/drained": "true"}, want: "allow"},
		{name: "timed out: allowed with a warning", annotations: map[string]string{drainStartedAnnotation: drainStarted(drainTestNow.Add(-10 * time.Minute))}, want: "allow",
			warning: "drain: pod shop/web-0 deleted before its cleanup was confirmed: not seen that doneWhen holds"},
		{name: "timed out but done: allowed with no warning", annotations: map[string]string{drainStartedAnnotation: drainStarted(drainTestNow.Add(-10 * time.Minute)), "example.com/drained": "true"}, want: "allow",
			message: "drained: doneWhen holds"},
		{name: "one second before the timeout: denied", annotations: map[string]string{drainStartedAnnotation: drainStarted(drainTestNow.Add(-10*time.Minute + time.Second))}, want: "deny",
			message: "waiting until doneWhen holds"},
		// A start the pod's creator wrote (a template's annotation, copied
		// onto every pod) would skip the wait: it is ignored and rewritten.
		{name: "forged start without the pod's UID, as a template would carry", annotations: map[string]string{drainStartedAnnotation: "2020-01-01T00:00:00Z"}, want: "deny",
			message: `(ignored the pod's annotation celadon.io/drain-started="2020-01-01T00:00:00Z": not "<time> <pod UID>" as Celadon writes it)`, patch: first},
		{name: "forged start with another pod's UID", annotations: map[string]string{drainStartedAnnotation: "2026-01-01T00:00:00Z 11111111-2222-4333-8444-555555555555"}, want: "deny",
			message: "it names another pod's UID", patch: first},
		{name: "forged start before the pod was created", annotations: map[string]string{drainStartedAnnotation: drainStarted(drainTestCreated.Add(-time.Hour))}, want: "deny",
			message: "it is earlier than the pod's creation", patch: first},
		{name: "forged start in the future, which would hold the pod for ever", annotations: map[string]string{drainStartedAnnotation: drainStarted(drainTestNow.Add(time.Hour))}, want: "deny",
			message: "it is in the future", patch: first},
		{name: "another replica recorded a start meanwhile: denied, not overwritten", patchErr: apierrors.NewConflict(podsResource.GroupResource(), "web-0", fmt.Errorf("the object has been modified")), want: "deny",
			message: "the pod changed meanwhile, so the start was not recorded: retry the delete", patch: first},
		{name: "the start cannot be recorded: an error, which failurePolicy decides", patchErr: apierrors.NewForbidden(podsResource.GroupResource(), "web-0", fmt.Errorf("RBAC")), want: "error",
			message: `recording the start on pod shop/web-0: pods "web-0" is forbidden`, patch: first},
	} {
		t.Run(c.name, func(t *testing.T) { checkDrainCase(t, snap, c, &drainCluster{}) })
	}

	t.Run("a pod being deleted already is let go", func(t *testing.T) {
		var pod map[string]any
		if err := json.Unmarshal(drainTestPod(t, nil, ""), &pod); err != nil {
			t.Fatal(err)
		}
		pod["metadata"].(map[string]any)["deletionTimestamp"] = drainTestNow.Format(time.RFC3339)
		b, _ := json.Marshal(pod)
		cluster := &drainCluster{}
		d := runDrain(t, snap, b, false, cluster)
		if !d.Allowed || d.Results[0].State != engine.StateSkip || len(cluster.patches) != 0 {
			t.Errorf("allowed %v, %s, patches %q; want skipped", d.Allowed, statesOf(d), cluster.patches)
		}
	})
}

// consulStub is a Consul agent's HTTP API as far as drainBeforeDelete
// uses it; the real agent is in TestDrainBeforeDeleteConsulAgent.
type consulStub struct {
	mu         sync.Mutex
	agentHas   bool // /v1/agent/service/<id> answers 200
	catalogHas bool // /v1/catalog/service/<name> lists the ID
	calls      []string
}

func (s *consulStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, r.Method+" "+r.URL.Path+" token="+r.Header.Get("X-Consul-Token"))
	id := "web.shop.web-0"
	switch {
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v1/agent/service/deregister/"):
		if !s.agentHas {
			http.Error(w, "Unknown service ID", http.StatusNotFound)
			return
		}
		s.agentHas = false
	case r.Method == http.MethodGet && r.URL.Path == "/v1/agent/service/"+id:
		if !s.agentHas {
			http.Error(w, "unknown service ID", http.StatusNotFound)
			return
		}
		_, _ = io.WriteString(w, `{"ID":"`+id+`"}`)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/catalog/service/web":
		if s.catalogHas {
			_, _ = io.WriteString(w, `[{"ServiceID":"web.shop.web-1"},{"ServiceID":"`+id+`"}]`)
			return
		}
		_, _ = io.WriteString(w, `[{"ServiceID":"web.shop.web-1"}]`)
	default:
		http.NotFound(w, r)
	}
}

func (s *consulStub) takeCalls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

// TestDrainBeforeDeleteConsul drives the consul cleanup against a stub
// agent: the calls made (none on a dry run), the token from the Secret,
// the service ID consulLifecycle registers, and the failures.
func TestDrainBeforeDeleteConsul(t *testing.T) {
	fixDrainClock(t)
	stub := &consulStub{}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	host, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	snap := compilePolicies(t, drainPolicy(`    consul:
      service: web
      agentPort: `+port+`
      aclTokenSecret: {name: consul-acl, key: token}
`))
	cluster := &drainCluster{secrets: map[string]map[string]string{"consul-acl": {"token": "s3cret\n"}}}
	started := map[string]string{drainStartedAnnotation: drainStarted(drainTestNow.Add(-time.Minute))}
	agent := "http://" + host + ":" + port
	for _, c := range []struct {
		drainCase
		agentHas, catalogHas bool
		calls                []string
	}{
		{drainCase: drainCase{name: "the first DELETE deregisters, records the start and denies", hostIP: host, want: "deny",
			message: "deregistered service instance web.shop.web-0 from the Consul agent at " + agent + "; waiting until Consul no longer lists service instance web.shop.web-0 (at most 5m0s)", patch: startPatch("")},
			agentHas: true, catalogHas: true, calls: []string{"PUT /v1/agent/service/deregister/web.shop.web-0 token=s3cret"}},
		{drainCase: drainCase{name: "an instance the agent no longer has is as good", hostIP: host, want: "deny",
			message: "the Consul agent at " + agent + " no longer had service instance web.shop.web-0", patch: startPatch("")},
			calls: []string{"PUT /v1/agent/service/deregister/web.shop.web-0 token=s3cret"}},
		{drainCase: drainCase{name: "a dry run calls nothing", hostIP: host, dryRun: true, want: "deny",
			message: "would deregister service instance web.shop.web-0 from the Consul agent at " + agent + " (dry run: nothing was started)"},
			agentHas: true, catalogHas: true},
		{drainCase: drainCase{name: "a dry run of a later DELETE calls nothing", hostIP: host, dryRun: true, annotations: started, want: "deny",
			message: "(dry run: not checked)"}, agentHas: true},
		{drainCase: drainCase{name: "offline, nothing is called", hostIP: host, offline: true, want: "deny", message: "no cluster to write to: nothing was started"}, agentHas: true},
		{drainCase: drainCase{name: "the catalog still lists it: denied", hostIP: host, annotations: started, want: "deny",
			message: "waiting until Consul no longer lists service instance web.shop.web-0 (started at 2026-01-01T00:59:00Z, at most 5m0s): the Consul catalog still lists it; retry the delete"},
			catalogHas: true, calls: []string{"GET /v1/agent/service/web.shop.web-0 token=s3cret", "GET /v1/catalog/service/web token=s3cret"}},
		{drainCase: drainCase{name: "registered again: deregistered again, denied", hostIP: host, annotations: started, want: "deny",
			message: "the agent listed it again, and it was deregistered again"},
			agentHas: true, catalogHas: true, calls: []string{"GET /v1/agent/service/web.shop.web-0 token=s3cret", "PUT /v1/agent/service/deregister/web.shop.web-0 token=s3cret"}},
		{drainCase: drainCase{name: "gone from the agent and the catalog: allowed", hostIP: host, annotations: started, want: "allow",
			message: "drained: Consul no longer lists service instance web.shop.web-0"},
			calls: []string{"GET /v1/agent/service/web.shop.web-0 token=s3cret", "GET /v1/catalog/service/web token=s3cret"}},
		{drainCase: drainCase{name: "timed out: allowed with a warning, Consul not asked", hostIP: host, annotations: map[string]string{drainStartedAnnotation: drainStarted(drainTestNow.Add(-5 * time.Minute))}, want: "allow",
			warning: "not seen that Consul no longer lists service instance web.shop.web-0 within timeoutSeconds 300 of the start at 2026-01-01T00:55:00Z"},
			agentHas: true, catalogHas: true},
		{drainCase: drainCase{name: "the policy's service names the instance, not the pod's annotation, as for consulLifecycle", hostIP: host, annotations: map[string]string{consulAnnotationService: "api"}, want: "deny",
			message: "deregistered service instance web.shop.web-0", patch: startPatch("")},
			agentHas: true, calls: []string{"PUT /v1/agent/service/deregister/web.shop.web-0 token=s3cret"}},
		{drainCase: drainCase{name: "a pod that never ran on a node was never registered: allowed with a warning", want: "allow",
			warning: "pod shop/web-0 has no status.hostIP, so it never ran on a node and no Consul agent registered web.shop.web-0: nothing to drain"}},
		{drainCase: drainCase{name: "an agent that cannot be reached is an error", hostIP: "127.0.0.1:1", want: "error", message: "the Consul agent cannot be reached"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			stub.agentHas, stub.catalogHas = c.agentHas, c.catalogHas
			if c.hostIP == "127.0.0.1:1" {
				// Nothing listens on port 1: the error path, not a stub.
				unreachable := compilePolicies(t, drainPolicy("    consul: {service: web, address: 127.0.0.1, agentPort: 1}\n"))
				c.hostIP = host
				checkDrainCase(t, unreachable, c.drainCase, cluster)
				return
			}
			checkDrainCase(t, snap, c.drainCase, cluster)
			if got := stub.takeCalls(); fmt.Sprint(got) != fmt.Sprint(c.calls) {
				t.Errorf("calls to the agent:\n got %q\nwant %q", got, c.calls)
			}
		})
	}

	t.Run("a missing token Secret is an error, and Consul is not called", func(t *testing.T) {
		d := runDrain(t, snap, drainTestPod(t, nil, host), false, &drainCluster{})
		if d.Allowed || d.Results[0].State != engine.StateError || !strings.Contains(d.Message, `the ACL token Secret shop/consul-acl: secrets "consul-acl" not found`) {
			t.Errorf("allowed %v, %s: %s", d.Allowed, statesOf(d), d.Message)
		}
		if calls := stub.takeCalls(); len(calls) != 0 {
			t.Errorf("calls %q", calls)
		}
	})
	t.Run("allowAnnotations true: the pod's service annotation names the instance, as for consulLifecycle", func(t *testing.T) {
		stub.agentHas = true
		allowed := compilePolicies(t, drainPolicy("    consul: {service: web, allowAnnotations: true, agentPort: "+port+"}\n"))
		d := runDrain(t, allowed, drainTestPod(t, map[string]string{consulAnnotationService: "api"}, host), false, &drainCluster{})
		if d.Allowed || !strings.Contains(d.Message, "deregistered service instance api.shop.web-0") {
			t.Errorf("allowed %v: %s", d.Allowed, d.Message)
		}
		if calls := stub.takeCalls(); fmt.Sprint(calls) != "[PUT /v1/agent/service/deregister/api.shop.web-0 token=]" {
			t.Errorf("calls %q", calls)
		}
	})
	t.Run("an explicit address replaces the pod's hostIP", func(t *testing.T) {
		stub.agentHas = true
		explicit := compilePolicies(t, drainPolicy("    consul: {service: web, address: "+host+", agentPort: "+port+"}\n"))
		d := runDrain(t, explicit, drainTestPod(t, nil, "10.9.9.9"), false, &drainCluster{})
		if d.Allowed || !strings.Contains(d.Message, "deregistered service instance web.shop.web-0 from the Consul agent at "+agent) {
			t.Errorf("allowed %v: %s", d.Allowed, d.Message)
		}
		if calls := stub.takeCalls(); fmt.Sprint(calls) != "[PUT /v1/agent/service/deregister/web.shop.web-0 token=]" {
			t.Errorf("calls %q", calls)
		}
	})
}

// drainEndpointServer is an HTTPS drain endpoint on loopback that records
// the bodies it is POSTed and answers answer.
type drainEndpointServer struct {
	*httptest.Server
	mu     sync.Mutex
	status int
	answer string
	bodies []string
}

func newDrainEndpoint(t *testing.T) *drainEndpointServer {
	e := &drainEndpointServer{status: http.StatusOK}
	e.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		defer e.mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		e.bodies = append(e.bodies, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+string(b))
		w.WriteHeader(e.status)
		_, _ = io.WriteString(w, e.answer)
	}))
	// The untrusted-certificate case makes the server log a handshake error.
	e.Config.ErrorLog = log.New(io.Discard, "", 0)
	e.StartTLS()
	t.Cleanup(e.Close)
	return e
}

func (e *drainEndpointServer) set(status int, answer string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status, e.answer, e.bodies = status, answer, nil
}

func (e *drainEndpointServer) calls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bodies
}

// caPEM is the server's certificate as a PEM bundle.
func (e *drainEndpointServer) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.Certificate().Raw}))
}

// TestDrainBeforeDeleteEndpoint drives the endpoint cleanup against a real
// HTTPS server on loopback, trusted through caBundle.
func TestDrainBeforeDeleteEndpoint(t *testing.T) {
	fixDrainClock(t)
	e := newDrainEndpoint(t)
	url := e.URL + "/drain"
	indent := func(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n        ") }
	snap := compilePolicies(t, drainPolicy("    timeoutSeconds: 120\n    endpoint:\n      url: "+url+"\n      caBundle: |\n        "+indent(e.caPEM())+"\n"))
	started := map[string]string{drainStartedAnnotation: drainStarted(drainTestNow.Add(-time.Minute))}
	body := `POST /drain application/json {"name":"web-0","namespace":"shop","uid":"` + drainTestUID + `"}`
	for _, c := range []struct {
		drainCase
		status int
		answer string
		calls  int
	}{
		{drainCase: drainCase{name: "the first DELETE POSTs the pod and denies", want: "deny",
			message: "asked " + url + ` to drain it (it says: 3 connections left); waiting until ` + url + " answers done (at most 2m0s)", patch: startPatch("")},
			answer: `{"done": false, "message": "3 connections\nleft"}`, calls: 1},
		{drainCase: drainCase{name: "the first DELETE denies even when the endpoint is done at once", want: "deny", message: "(it answered done)", patch: startPatch("")},
			answer: `{"done": true}`, calls: 1},
		{drainCase: drainCase{name: "a dry run calls nothing", dryRun: true, want: "deny", message: "would ask " + url + " to drain it (dry run: nothing was started)"},
			answer: `{"done": true}`},
		{drainCase: drainCase{name: "not done: denied with the endpoint's message", annotations: started, want: "deny", message: "answers done (started at 2026-01-01T00:59:00Z, at most 2m0s): it says: draining; retry the delete"},
			answer: `{"done": false, "message": "draining"}`, calls: 1},
		{drainCase: drainCase{name: "done: allowed", annotations: started, want: "allow", message: "drained"},
			answer: `{"done": true}`, calls: 1},
		{drainCase: drainCase{name: "an HTTP error is an error", annotations: started, want: "error", message: "answered HTTP 503: busy"},
			status: http.StatusServiceUnavailable, answer: "busy", calls: 1},
		{drainCase: drainCase{name: "an answer without done is an error, not an allow", annotations: started, want: "error", message: `answered {"ok": true}, not {"done": true|false}`},
			answer: `{"ok": true}`, calls: 1},
		{drainCase: drainCase{name: "a redirect is not followed", annotations: started, want: "error", message: "answered HTTP 302"},
			status: http.StatusFound, calls: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			status := c.status
			if status == 0 {
				status = http.StatusOK
			}
			e.set(status, c.answer)
			checkDrainCase(t, snap, c.drainCase, &drainCluster{})
			calls := e.calls()
			if len(calls) != c.calls {
				t.Fatalf("%d calls %q, want %d", len(calls), calls, c.calls)
			}
			for _, got := range calls {
				if got != body {
					t.Errorf("call %q, want %q", got, body)
				}
			}
		})
	}

	t.Run("without caBundle the test server's certificate is not trusted", func(t *testing.T) {
		e.set(http.StatusOK, `{"done": true}`)
		untrusted := compilePolicies(t, drainPolicy("    endpoint: {url: "+url+"}\n"))
		d := runDrain(t, untrusted, drainTestPod(t, nil, ""), false, &drainCluster{})
		if d.Allowed || d.Results[0].State != engine.StateError || !strings.Contains(d.Message, "certificate") {
			t.Errorf("allowed %v, %s: %s", d.Allowed, statesOf(d), d.Message)
		}
	})
}

// TestDrainBeforeDeleteLoadErrors checks that bad arguments are load
// errors naming the field, at its line.
func TestDrainBeforeDeleteLoadErrors(t *testing.T) {
	// drainPolicy's "  with:" is line 10.
	for _, c := range []struct{ name, with, want string }{
		{"no cleanup", "    timeoutSeconds: 60\n", `p.yaml:10:3: policy "drain": with: set one of consul, endpoint and annotate`},
		{"two cleanups", "    consul: {service: web}\n    endpoint: {url: https://drain.example}\n", `p.yaml:12:5: policy "drain": with.endpoint: set only one of consul, endpoint and annotate; consul is set too`},
		{"negative timeout", "    timeoutSeconds: -1\n    consul: {service: web}\n", `p.yaml:11:5: policy "drain": with.timeoutSeconds: -1 is not between 1 and 86400`},
		{"timeout over a day", "    timeoutSeconds: 86401\n    consul: {service: web}\n", `p.yaml:11:5: policy "drain": with.timeoutSeconds: 86401 is not between 1 and 86400`},
		{"unknown field", "    consul: {service: web, agent: x}\n", `p.yaml:11:28: policy "drain": with.consul.agent: unknown field`},
		{"bad service", "    consul: {service: Web_1}\n", `p.yaml:11:14: policy "drain": with.consul.service: "Web_1" is not a valid Consul service name`},
		{"no service and no annotations", "    consul: {allowAnnotations: false}\n", `p.yaml:11:5: policy "drain": with.consul.service: is required when allowAnnotations is false`},
		{"bad address", "    consul:\n      service: web\n      address: http://10.0.0.1\n", `p.yaml:13:7: policy "drain": with.consul.address: "http://10.0.0.1" is neither an IP address nor a host name`},
		{"bad port", "    consul:\n      service: web\n      agentPort: 70000\n", `p.yaml:13:7: policy "drain": with.consul.agentPort: 70000 is not a port number`},
		{"bad scheme", "    consul:\n      service: web\n      agentScheme: grpc\n", `p.yaml:13:7: policy "drain": with.consul.agentScheme: must be http or https, not "grpc"`},
		{"bad secret key", "    consul:\n      service: web\n      aclTokenSecret: {name: acl, key: \"a/b\"}\n", `p.yaml:13:35: policy "drain": with.consul.aclTokenSecret.key: "a/b" is not a valid Secret key`},
		{"endpoint without url", "    endpoint: {}\n", `p.yaml:11:5: policy "drain": with.endpoint.url: is required`},
		{"plain http endpoint", "    endpoint:\n      url: http://drain.example/drain\n", `p.yaml:12:7: policy "drain": with.endpoint.url: "http://drain.example/drain": the scheme must be https`},
		{"endpoint with a password", "    endpoint:\n      url: https://u:p@drain.example/drain\n", `p.yaml:12:7: policy "drain": with.endpoint.url: "https://u:p@drain.example/drain": user information is not allowed`},
		{"caBundle not PEM", "    endpoint:\n      url: https://drain.example\n      caBundle: hello\n", `p.yaml:13:7: policy "drain": with.endpoint.caBundle: no PEM certificate`},
		{"annotate without key", "    annotate: {doneWhen: 'true'}\n", `p.yaml:11:5: policy "drain": with.annotate.key: is required`},
		{"annotate the start's key", "    annotate:\n      key: celadon.io/drain-started\n      doneWhen: 'true'\n", `p.yaml:12:7: policy "drain": with.annotate.key: celadon.io/drain-started is where the builtin records the start`},
		{"annotate a bad key", "    annotate:\n      key: -bad-\n      doneWhen: 'true'\n", `p.yaml:12:7: policy "drain": with.annotate.key: "-bad-" is not a valid annotation key`},
		{"annotate without doneWhen", "    annotate: {key: example.com/drain}\n", `p.yaml:11:5: policy "drain": with.annotate.doneWhen: is required`},
		{"doneWhen not a bool", "    annotate:\n      key: example.com/drain\n      doneWhen: '\"done\"'\n", `p.yaml:13:18: policy "drain": with.annotate.doneWhen: CEL: must evaluate to bool, not string`},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkLoadError(t, compileErrors(t, drainPolicy(c.with)), c.want)
		})
	}
}

// TestDrainBeforeDeleteDeclarations checks what the server reads of the
// builtin: side effects, for the webhook configurations, and access, for
// RBAC.
func TestDrainBeforeDeleteDeclarations(t *testing.T) {
	b, ok := Registry().Lookup("drainBeforeDelete")
	if !ok {
		t.Fatal("drainBeforeDelete is not registered")
	}
	if got := engine.SideEffectsOf(b); got != engine.SideEffectsNoneOnDryRun {
		t.Errorf("side effects %q, want NoneOnDryRun", got)
	}
	var rules []string
	for _, a := range engine.AccessOf(b) {
		rules = append(rules, fmt.Sprintf("%v %v optional=%v", a.Resources, a.Verbs, a.Optional))
	}
	if want := []string{"[pods] [patch] optional=true", "[secrets] [get] optional=true"}; fmt.Sprint(rules) != fmt.Sprint(want) {
		t.Errorf("access %q, want %q", rules, want)
	}
}

// TestDrainBeforeDeleteConsulAgent runs the consul cleanup against a real
// Consul agent enforcing ACLs, on a pod that consulLifecycle's own
// postStart hook registered: the instance is found by the same ID, a token
// the agent refuses is an error that leaves it listed, the first DELETE
// deregisters it, an instance registered again is deregistered again, and
// the DELETE is allowed once the catalog no longer lists it.
func TestDrainBeforeDeleteConsulAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	const aclToken = "0b6e4f3a-8d2c-4e71-9a5b-3c2d1e0f9a87"
	httpPort := freePort(t)
	agent := startConsulAgent(t, httpPort, consulagent.ACLConfig(aclToken), aclToken)
	pod := consulHookPod(t, fmt.Sprintf("    service: web\n    port: 8080\n    agentPort: %d\n    aclTokenSecret: {name: consul-acl, key: token}\n", httpPort),
		"  containers:\n  - {name: app, image: app}\n")
	kubelet := consulagent.Kubelet{HostIP: consulHostIP, PodIP: consulPodIP, Secrets: map[string]map[string]string{"consul-acl": {"token": aclToken}}}
	env := environ(t, kubelet, pod, "app", toolDir(t, "curl", "sleep"))
	register := func() {
		t.Helper()
		if code, stdout, stderr := runHook(t, pod.Spec.Containers[0].Lifecycle.PostStart, env, t.TempDir()); code != 0 {
			t.Fatalf("consulLifecycle's postStart exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		waitCatalog(t, agent, "web", consulID, true)
	}
	listed := func() bool {
		t.Helper()
		_, ok := services(t, agent)[consulID]
		return ok
	}
	register()

	// The pod as the API server sends it on DELETE.
	pod.UID = drainTestUID
	pod.ResourceVersion = "42"
	pod.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	pod.Status.HostIP = consulHostIP
	deleted := func(annotations map[string]string) []byte {
		p := pod.DeepCopy()
		p.Annotations = annotations
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	snap := compilePolicies(t, drainPolicy(fmt.Sprintf("    consul: {service: web, agentPort: %d, aclTokenSecret: {name: consul-acl, key: token}}\n", httpPort)))

	t.Run("a token the agent refuses is an error, and the instance stays", func(t *testing.T) {
		wrong := &drainCluster{secrets: map[string]map[string]string{"consul-acl": {"token": "00000000-0000-4000-8000-000000000000"}}}
		d := runDrain(t, snap, deleted(nil), false, wrong)
		if d.Allowed || d.Results[0].State != engine.StateError || !strings.Contains(d.Message, "deregistering web.shop.web-0: HTTP 403") {
			t.Errorf("allowed %v, %s: %s", d.Allowed, statesOf(d), d.Message)
		}
		if !listed() || len(wrong.patches) != 0 {
			t.Errorf("listed %v, patches %q: want the instance listed and no start recorded", listed(), wrong.patches)
		}
	})

	cluster := &drainCluster{secrets: map[string]map[string]string{"consul-acl": {"token": aclToken}}}
	d := runDrain(t, snap, deleted(nil), false, cluster)
	if d.Allowed || !strings.Contains(d.Message, "deregistered service instance web.shop.web-0 from the Consul agent at http://127.0.0.1:") {
		t.Fatalf("first DELETE: allowed %v, %s: %s", d.Allowed, statesOf(d), d.Message)
	}
	if listed() {
		t.Fatal("the agent still lists the instance after the first DELETE")
	}
	if len(cluster.patches) != 1 {
		t.Fatalf("patches %q, want the start", cluster.patches)
	}
	var patch struct {
		Metadata struct{ Annotations map[string]string }
	}
	if err := json.Unmarshal([]byte(cluster.patches[0][strings.Index(cluster.patches[0], "{"):]), &patch); err != nil {
		t.Fatal(err)
	}
	started := patch.Metadata.Annotations

	// A postStart still retrying registers the instance again.
	register()
	d = runDrain(t, snap, deleted(started), false, cluster)
	if d.Allowed || !strings.Contains(d.Message, "the agent listed it again, and it was deregistered again") || listed() {
		t.Fatalf("DELETE with the instance registered again: allowed %v, listed %v: %s", d.Allowed, listed(), d.Message)
	}

	waitCatalog(t, agent, "web", consulID, false)
	d = runDrain(t, snap, deleted(started), false, cluster)
	if !d.Allowed || len(d.Warnings) != 0 {
		t.Fatalf("DELETE after the catalog dropped the instance: allowed %v, warnings %q, %s: %s", d.Allowed, d.Warnings, statesOf(d), d.Message)
	}
	if len(cluster.patches) != 1 {
		t.Errorf("patches %q: only the first DELETE records the start", cluster.patches)
	}
}

// FuzzDrainBeforeDelete checks, on arbitrary pods being deleted, the
// builtin's promise: a pod goes with no warning only when a start it can
// trust (the pod's own UID) is recorded and doneWhen holds; and a dry run
// writes nothing.
func FuzzDrainBeforeDelete(f *testing.F) {
	snap, err := engine.Compile([]engine.File{{Name: "fuzz.yaml", Data: []byte(drainPolicy(`    annotate:
      key: example.com/drain
      doneWhen: oldObject.metadata.?annotations[?"example.com/drained"].orValue("") == "true"
`))}}, engine.Options{Registry: Registry()})
	if err != nil {
		f.Fatal(err)
	}
	done := map[string]string{"example.com/drained": "true"}
	f.Add(drainTestPod(f, nil, ""), false)
	f.Add(drainTestPod(f, done, ""), true)
	f.Add(drainTestPod(f, map[string]string{drainStartedAnnotation: drainStarted(time.Now()), "example.com/drained": "true"}, ""), false)
	f.Add(drainTestPod(f, map[string]string{drainStartedAnnotation: "2020-01-01T00:00:00Z " + drainTestUID, "example.com/drained": "true"}, ""), false)
	f.Add([]byte(`{"kind":"Pod","metadata":{"name":"x","uid":"","annotations":{"celadon.io/drain-started":"2020-01-01T00:00:00Z ","example.com/drained":"true"}}}`), false)
	f.Fuzz(func(t *testing.T, pod []byte, dryRun bool) {
		var probe map[string]any
		if json.Unmarshal(pod, &probe) != nil || probe == nil {
			return // not an object: the server would refuse it before the engine
		}
		req := &admissionv1.AdmissionRequest{
			UID:       "fuzz",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "default",
			Operation: admissionv1.Delete,
			OldObject: runtime.RawExtension{Raw: pod},
			DryRun:    &dryRun,
		}
		cluster := &drainCluster{}
		d, err := snap.Evaluate(context.Background(), req, engine.EvalOptions{Cluster: cluster})
		if err != nil || len(d.Results) == 0 {
			return
		}
		if dryRun && len(cluster.patches) > 0 {
			t.Fatalf("a dry run wrote %q", cluster.patches)
		}
		if !d.Allowed || d.Results[0].State != engine.StatePass || len(d.Warnings) > 0 {
			return
		}
		md, _ := probe["metadata"].(map[string]any)
		uid, _ := md["uid"].(string)
		annotations, _ := md["annotations"].(map[string]any)
		start, _ := annotations[drainStartedAnnotation].(string)
		if uid == "" || !strings.HasSuffix(start, " "+uid) || annotations["example.com/drained"] != "true" {
			t.Fatalf("allowed with no warning, without a trusted start and done: %s (%s)", pod, d.Results[0].Reason)
		}
	})
}

// TestDrainBeforeDeleteConsulAgreesWithConsulLifecycle checks, under every
// combination of service and allowAnnotations, with and without the pod's
// service annotation, that drainBeforeDelete deregisters the service
// consulLifecycle registers (or neither acts).
func TestDrainBeforeDeleteConsulAgreesWithConsulLifecycle(t *testing.T) {
	fixDrainClock(t)
	for _, with := range []string{"service: web", "service: web, allowAnnotations: true", "service: web, allowAnnotations: false", "allowAnnotations: true", ""} {
		for _, annotated := range []bool{false, true} {
			t.Run(fmt.Sprintf("{%s} annotated=%v", with, annotated), func(t *testing.T) {
				annotations, yamlAnnotations := map[string]string{}, ""
				if annotated {
					annotations[consulAnnotationService] = "api"
					yamlAnnotations = "    " + consulAnnotationService + ": api\n"
				}
				registered := "none"
				lc := compilePolicies(t, consulPolicy("    {"+strings.TrimPrefix(with+", port: 8080", ", ")+"}\n", ""))
				d := evaluate(t, lc, admissionRequest(t, admissionv1.Create, yamlJSON(t, consulPod(yamlAnnotations, "  containers: [{name: app, image: app}]\n")), nil), engine.EvalOptions{})
				if s, ok := strings.CutPrefix(d.Results[0].Reason, "Consul service "); ok {
					registered, _, _ = strings.Cut(s, " ")
				}
				deregistered := "none"
				dr := compilePolicies(t, drainPolicy("    consul: {"+with+"}\n"))
				d = runDrain(t, dr, drainTestPod(t, annotations, "10.0.0.1"), true, &drainCluster{})
				if _, s, ok := strings.Cut(d.Message, "would deregister service instance "); ok {
					deregistered, _, _ = strings.Cut(s, ".")
				}
				if registered != deregistered {
					t.Errorf("consulLifecycle registers %s, drainBeforeDelete deregisters %s (%s; %s)", registered, deregistered, statesOf(d), d.Message)
				}
				if with == "service: web" && registered != "web" {
					t.Errorf("the policy's service web is not authoritative: %s registered", registered)
				}
			})
		}
	}
}
