package builtins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"celadon.io/celadon/engine"
)

// The cluster these tests read is a map of objects: the builtin sees it
// only through engine.ObjectGetter and engine.LiveGetter, and the real
// informer-backed getter is tested against the API server in webhook/ and
// test/e2e.

// objectMap is a cluster state: objects by resource, namespace and name.
type objectMap map[string]*unstructured.Unstructured

func objectKey(gvr schema.GroupVersionResource, ns, name string) string {
	return gvr.GroupResource().String() + "/" + ns + "/" + name
}

// newObjectMap reads YAML documents of Services, Secrets and IngressClasses.
func newObjectMap(t testing.TB, docs ...string) objectMap {
	t.Helper()
	m := objectMap{}
	for _, d := range docs {
		u := &unstructured.Unstructured{}
		if err := json.Unmarshal(yamlJSON(t, d), &u.Object); err != nil {
			t.Fatal(err)
		}
		gvr := map[string]schema.GroupVersionResource{
			"Service": servicesResource, "Secret": secretsResource, "IngressClass": ingressClassesResource,
		}[u.GetKind()]
		m[objectKey(gvr, u.GetNamespace(), u.GetName())] = u
	}
	return m
}

// Get implements engine.ObjectGetter.
func (m objectMap) Get(_ context.Context, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	if o, ok := m[objectKey(gvr, ns, name)]; ok {
		return o.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
}

// staleCluster is a cache that lags behind the cluster: Get answers from
// cache, GetLive from live, and every live read is recorded.
type staleCluster struct {
	cache, live objectMap
	liveReads   []string
}

func (s *staleCluster) Get(ctx context.Context, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	return s.cache.Get(ctx, gvr, ns, name)
}

func (s *staleCluster) GetLive(ctx context.Context, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	s.liveReads = append(s.liveReads, gvr.Resource+" "+name)
	return s.live.Get(ctx, gvr, ns, name)
}

// failingCluster fails every lookup.
type failingCluster struct{}

func (failingCluster) Get(context.Context, schema.GroupVersionResource, string, string) (*unstructured.Unstructured, error) {
	return nil, apierrors.NewServiceUnavailable("the cache is not started")
}

const (
	svcAPI = `apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9090}
`
	svcWeb = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - {name: http, port: 80}
`
	svcWebOtherNamespace = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: other}
spec:
  ports:
  - {name: grpc, port: 9090}
`
	secretTLS = `apiVersion: v1
kind: Secret
metadata: {name: shop-tls, namespace: shop}
`
	classNginx = `apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
`
)

// ingressBackendsPolicy checks Ingresses with the rest of its spec.
func ingressBackendsPolicy(rest string) string {
	return `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: backends
spec:
  match:
    resources: [networking.k8s.io/ingresses]
    operations: [CREATE, UPDATE]
  action: checkIngressBackends
` + rest
}

// ingress is an Ingress in namespace shop with spec as its spec (YAML,
// indented by two).
func ingress(spec string) string {
	return "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop, namespace: shop}\nspec:\n" + spec
}

// paths is a spec with one rule routing each path to a backend given as
// "service:port" (a number or a name) or "resource".
func paths(backends ...string) string {
	var b strings.Builder
	b.WriteString("  rules:\n  - host: shop.example.com\n    http:\n      paths:\n")
	for i, be := range backends {
		fmt.Fprintf(&b, "      - path: /p%d\n        pathType: Prefix\n        backend:\n", i)
		if be == "resource" {
			b.WriteString("          resource: {apiGroup: k8s.example.com, kind: StorageBucket, name: static}\n")
			continue
		}
		name, port, _ := strings.Cut(be, ":")
		key := "name"
		if port != "" && port[0] >= '0' && port[0] <= '9' {
			key = "number"
		}
		fmt.Fprintf(&b, "          service: {name: %s, port: {%s: %s}}\n", name, key, port)
	}
	return b.String()
}

// ingressRequest is an admission request for an Ingress.
func ingressRequest(t testing.TB, op admissionv1.Operation, obj, old string) *admissionv1.AdmissionRequest {
	t.Helper()
	return &admissionv1.AdmissionRequest{
		UID:       "5c0a5b2e-1f7a-4d0e-9a53-3c2f1b6c9e01",
		Kind:      metav1.GroupVersionKind{Group: "networking.k8s.io", Version: "v1", Kind: "Ingress"},
		Resource:  metav1.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"},
		Name:      "shop",
		Namespace: "shop",
		Operation: op,
		UserInfo:  authenticationv1.UserInfo{Username: "alice"},
		Object:    runtime.RawExtension{Raw: yamlJSON(t, obj)},
		OldObject: runtime.RawExtension{Raw: yamlJSON(t, old)},
	}
}

func TestCheckIngressBackends(t *testing.T) {
	all := newObjectMap(t, svcAPI, svcWeb, svcWebOtherNamespace, secretTLS, classNginx)
	cases := []struct {
		name    string
		with    string // the rest of the policy's spec
		spec    string
		cluster engine.ObjectGetter // default all
		state   engine.State
		message string // the denial, "" when allowed
		reason  string // checked when set
		warning string
	}{
		{name: "numeric port", spec: paths("api:80"), state: engine.StatePass, reason: "backends found: services api"},
		{name: "named port", spec: paths("api:grpc"), state: engine.StatePass},
		{name: "numeric and named ports of two services", spec: paths("api:9090", "web:http", "api:http"), state: engine.StatePass,
			reason: "backends found: services api, web"},
		{name: "missing service", spec: paths("cart:80"), state: engine.StateFail, message: `service "cart" not found`},
		{name: "missing named port", spec: paths("web:grpc"), state: engine.StateFail, message: `service "web" has no port "grpc"`},
		{name: "missing numeric port", spec: paths("web:8080"), state: engine.StateFail, message: `service "web" has no port 8080`},
		{name: "port number is not a targetPort", spec: paths("api:8080"), state: engine.StateFail, message: `service "api" has no port 8080`},
		{
			name:    "every problem at once, in order, each once",
			spec:    paths("cart:80", "web:grpc", "api:80", "cart:80", "search:http"),
			state:   engine.StateFail,
			message: `service "cart" not found; service "web" has no port "grpc"; service "search" not found`,
		},
		{
			name:    "default backend",
			spec:    "  defaultBackend:\n    service: {name: fallback, port: {number: 80}}\n" + paths("api:80"),
			state:   engine.StateFail,
			message: `service "fallback" not found`,
		},
		{
			name:  "default backend only, found",
			spec:  "  defaultBackend:\n    service: {name: web, port: {name: http}}\n",
			state: engine.StatePass, reason: "backends found: services web",
		},
		{
			name:  "resource backends are accepted",
			spec:  "  defaultBackend:\n    resource: {apiGroup: k8s.example.com, kind: StorageBucket, name: static}\n" + paths("resource", "api:80"),
			state: engine.StatePass, reason: "backends found: services api; 2 resource backends accepted",
		},
		{name: "a Service of another namespace does not count", spec: paths("web:9090"), state: engine.StateFail, message: `service "web" has no port 9090`},
		{name: "no backends", spec: "  rules:\n  - host: shop.example.com\n", state: engine.StatePass, reason: "no backends to check"},
		{
			name:    "enforcement Warn admits with a warning",
			with:    "  enforcement: Warn\n",
			spec:    paths("cart:80", "web:grpc"),
			state:   engine.StateWarn,
			warning: `backends: service "cart" not found; service "web" has no port "grpc"`,
		},
		{
			name:  "ingressClassName and TLS are not checked by default",
			spec:  "  ingressClassName: traefik\n  tls:\n  - secretName: missing-tls\n" + paths("api:80"),
			state: engine.StatePass,
		},
		{
			name:  "ingressClass and TLS secret found",
			with:  "  with: {checkIngressClass: true, checkTLSSecrets: true}\n",
			spec:  "  ingressClassName: nginx\n  tls:\n  - hosts: [shop.example.com]\n    secretName: shop-tls\n" + paths("api:80"),
			state: engine.StatePass,
		},
		{
			name:    "ingressClass and TLS secrets missing, with the backends",
			with:    "  with: {checkIngressClass: true, checkTLSSecrets: true}\n",
			spec:    "  ingressClassName: traefik\n  tls:\n  - secretName: shop-tls\n  - secretName: api-tls\n  - hosts: [no-secret.example.com]\n" + paths("cart:80"),
			state:   engine.StateFail,
			message: `service "cart" not found; ingressClass "traefik" not found; secret "api-tls" not found`,
		},
		{
			name:  "no ingressClassName: nothing to check",
			with:  "  with: {checkIngressClass: true}\n",
			spec:  paths("api:80"),
			state: engine.StatePass,
		},
		{
			name:    "no cluster state: an error under failurePolicy (Fail denies)",
			spec:    paths("api:80"),
			cluster: engine.ObjectGetter(nil),
			state:   engine.StateError,
			message: `policy "backends" failed: no cluster state to look Services up in (celadon eval: give it with --cluster)`,
		},
		{
			name:    "a failing lookup is an error, not a denial",
			spec:    paths("api:80"),
			cluster: failingCluster{},
			state:   engine.StateError,
			message: `policy "backends" failed: looking up services api: the cache is not started`,
		},
		{
			name:    "failurePolicy Ignore admits on an error",
			with:    "  failurePolicy: Ignore\n",
			spec:    paths("api:80"),
			cluster: failingCluster{},
			state:   engine.StateError,
			warning: "Evaluation failed for Celadon policy 'backends' (failurePolicy Ignore): the request was admitted without it",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := compilePolicies(t, ingressBackendsPolicy(c.with))
			cluster := c.cluster
			if cluster == nil && !strings.HasPrefix(c.name, "no cluster state") {
				cluster = all
			}
			d := evaluate(t, snap, ingressRequest(t, admissionv1.Create, ingress(c.spec), ""), engine.EvalOptions{Cluster: cluster})
			if len(d.Results) != 1 {
				t.Fatalf("results %+v", d.Results)
			}
			r := d.Results[0]
			if r.State != c.state {
				t.Fatalf("state %s (reason %q), want %s", r.State, r.Reason, c.state)
			}
			if d.Allowed != (c.message == "") || d.Message != c.message {
				t.Errorf("allowed %v, message %q; want message %q", d.Allowed, d.Message, c.message)
			}
			if c.reason != "" && r.Reason != c.reason {
				t.Errorf("reason %q, want %q", r.Reason, c.reason)
			}
			checkWarnings(t, d, c.warning)
			if len(d.Patch) != 0 {
				t.Errorf("a validating builtin patched: %v", d.Patch)
			}
		})
	}
}

// TestCheckIngressBackendsRereadsMisses: what the cache misses is read
// directly before it is reported, and only that.
func TestCheckIngressBackendsRereadsMisses(t *testing.T) {
	snap := compilePolicies(t, ingressBackendsPolicy("  with: {checkIngressClass: true, checkTLSSecrets: true}\n"))
	svcWebGRPC := strings.Replace(svcWeb, "  - {name: http, port: 80}\n", "  - {name: http, port: 80}\n  - {name: grpc, port: 9090}\n", 1)
	spec := "  ingressClassName: nginx\n  tls:\n  - secretName: shop-tls\n" + paths("api:80", "cart:80", "web:grpc")
	cases := []struct {
		name         string
		cache, live  objectMap
		state        engine.State
		message      string
		reason       string
		liveReads    string
		wantNoReRead bool
	}{
		{
			name:      "created a moment ago: missing from the cache, found live",
			cache:     newObjectMap(t, svcAPI, svcWeb),
			live:      newObjectMap(t, svcAPI, svcWebGRPC, newService("cart"), secretTLS, classNginx),
			state:     engine.StatePass,
			reason:    "backends found: services api, cart, web (4 read directly: not yet in the cache)",
			liveReads: "services cart, services web, ingressclasses nginx, secrets shop-tls",
		},
		{
			name:      "missing live too: denied",
			cache:     newObjectMap(t, svcAPI, svcWeb),
			live:      newObjectMap(t, svcAPI, svcWeb),
			state:     engine.StateFail,
			message:   `service "cart" not found; service "web" has no port "grpc"; ingressClass "nginx" not found; secret "shop-tls" not found`,
			liveReads: "services cart, services web, ingressclasses nginx, secrets shop-tls",
		},
		{
			name:      "everything cached: no direct read",
			cache:     newObjectMap(t, svcAPI, svcWebGRPC, newService("cart"), secretTLS, classNginx),
			live:      objectMap{},
			state:     engine.StatePass,
			reason:    "backends found: services api, cart, web",
			liveReads: "",
		},
		{
			name:      "deleted since the cache saw it: the cache is trusted when it has what is needed",
			cache:     newObjectMap(t, svcAPI, svcWebGRPC, newService("cart"), secretTLS, classNginx),
			live:      newObjectMap(t, svcAPI),
			state:     engine.StatePass,
			liveReads: "",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cluster := &staleCluster{cache: c.cache, live: c.live}
			d := evaluate(t, snap, ingressRequest(t, admissionv1.Create, ingress(spec), ""), engine.EvalOptions{Cluster: cluster})
			r := d.Results[0]
			if r.State != c.state || d.Message != c.message {
				t.Fatalf("state %s, message %q (reason %q); want %s, %q", r.State, d.Message, r.Reason, c.state, c.message)
			}
			if c.reason != "" && r.Reason != c.reason {
				t.Errorf("reason %q, want %q", r.Reason, c.reason)
			}
			if got := strings.Join(cluster.liveReads, ", "); got != c.liveReads {
				t.Errorf("direct reads %q, want %q", got, c.liveReads)
			}
		})
	}
}

// limitedCluster is a staleCluster whose direct reads the server's rate
// refuses after the first few.
type limitedCluster struct {
	staleCluster
	allowed int
}

func (l *limitedCluster) GetLive(ctx context.Context, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	if len(l.liveReads) >= l.allowed {
		return nil, engine.ErrLiveReadLimited
	}
	return l.staleCluster.GetLive(ctx, gvr, ns, name)
}

// TestCheckIngressBackendsBoundsLiveReads: an Ingress naming many Services
// the cache misses costs at most maxLiveReads direct reads, and fewer when
// the server's rate says so; the rest are judged from the cache, and the
// denial says so. Before the bound, each missing Service cost one GET: one
// dry-run Ingress with a thousand backends, a thousand GETs.
func TestCheckIngressBackendsBoundsLiveReads(t *testing.T) {
	snap := compilePolicies(t, ingressBackendsPolicy(""))
	var refs []string
	for i := range 20 {
		refs = append(refs, fmt.Sprintf("missing-%02d:80", i))
	}
	req := ingressRequest(t, admissionv1.Create, ingress(paths(refs...)), "")
	t.Run("over the per-request bound", func(t *testing.T) {
		cluster := &staleCluster{cache: newObjectMap(t, svcAPI), live: newObjectMap(t, svcAPI)}
		d := evaluate(t, snap, req, engine.EvalOptions{Cluster: cluster})
		checkBounded(t, d, len(cluster.liveReads), maxLiveReads, 20-maxLiveReads)
	})
	t.Run("over the server's rate", func(t *testing.T) {
		cluster := &limitedCluster{staleCluster: staleCluster{cache: newObjectMap(t, svcAPI), live: newObjectMap(t, svcAPI)}, allowed: 3}
		d := evaluate(t, snap, req, engine.EvalOptions{Cluster: cluster})
		checkBounded(t, d, len(cluster.liveReads), 3, 17)
	})
}

// checkBounded checks a denial of the 20 missing Services with reads
// direct reads made and cacheOnly lookups judged from the cache.
func checkBounded(t *testing.T, d *engine.Decision, reads, want, cacheOnly int) {
	t.Helper()
	if reads != want {
		t.Errorf("%d direct reads, want %d", reads, want)
	}
	if d.Allowed || !strings.Contains(d.Message, `service "missing-19" not found`) {
		t.Errorf("allowed %v, message %q: want every missing Service named", d.Allowed, d.Message)
	}
	if note := fmt.Sprintf("(%d of the lookups judged from Celadon's cache alone", cacheOnly); !strings.Contains(d.Message, note) {
		t.Errorf("message %q: want it to say %q", d.Message, note)
	}
}

// newService is a Service of namespace shop with port http 80.
func newService(name string) string {
	return strings.Replace(svcWeb, "name: web,", "name: "+name+",", 1)
}

// TestCheckIngressBackendsOperations: only CREATE and UPDATE of a v1
// Ingress are checked, and an UPDATE only when the spec changes.
func TestCheckIngressBackendsOperations(t *testing.T) {
	src := ingressBackendsPolicy("")
	src = strings.Replace(src, "operations: [CREATE, UPDATE]", `operations: ["*"]`, 1)
	snap := compilePolicies(t, src)
	broken := ingress(paths("cart:80"))
	fine := ingress(paths("api:80"))
	cluster := newObjectMap(t, svcAPI)
	for _, c := range []struct {
		name     string
		op       admissionv1.Operation
		obj, old string
		state    engine.State
		reason   string
	}{
		{"UPDATE that breaks a backend", admissionv1.Update, broken, fine, engine.StateFail, `service "cart" not found`},
		{"UPDATE that fixes it", admissionv1.Update, fine, broken, engine.StatePass, ""},
		{"UPDATE of labels only, backend gone since", admissionv1.Update,
			strings.Replace(broken, "name: shop, namespace: shop}", "name: shop, namespace: shop, labels: {a: b}}", 1), broken,
			engine.StateSkip, "the Ingress's spec is unchanged"},
		{"DELETE", admissionv1.Delete, "", broken, engine.StateSkip, "Ingresses are checked on CREATE and UPDATE, not on DELETE"},
		{"an older Ingress version", admissionv1.Create, strings.Replace(broken, "networking.k8s.io/v1", "networking.k8s.io/v1beta1", 1), "",
			engine.StateSkip, "only networking.k8s.io/v1 Ingresses are checked, not networking.k8s.io/v1beta1"},
		{"another kind", admissionv1.Create, strings.Replace(broken, "kind: Ingress", "kind: Service", 1), "",
			engine.StateSkip, "the object is a Service, not an Ingress"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := evaluate(t, snap, ingressRequest(t, c.op, c.obj, c.old), engine.EvalOptions{Cluster: cluster})
			r := d.Results[0]
			if r.State != c.state || (c.reason != "" && r.Reason != c.reason) {
				t.Fatalf("state %s reason %q, want %s %q", r.State, r.Reason, c.state, c.reason)
			}
		})
	}
}

func TestCheckIngressBackendsMalformed(t *testing.T) {
	snap := compilePolicies(t, ingressBackendsPolicy(""))
	cluster := newObjectMap(t, svcAPI)
	for _, c := range []struct{ spec, err string }{
		{"  defaultBackend: {}\n", "spec.defaultBackend: neither service nor resource is set"},
		{"  rules:\n  - http:\n      paths:\n      - path: /\n        backend: {service: {port: {number: 80}}}\n", "spec.rules[0].http.paths[0].backend.service.name is required"},
		{"  rules:\n  - http:\n      paths:\n      - path: /\n        backend: {service: {name: api, port: {}}}\n", "spec.rules[0].http.paths[0].backend.service.port: a number or a name is required"},
		{"  rules:\n  - http:\n      paths:\n      - path: /\n        backend: 3\n", "spec.rules[0].http.paths[0].backend: want an object"},
	} {
		d := evaluate(t, snap, ingressRequest(t, admissionv1.Create, ingress(c.spec), ""), engine.EvalOptions{Cluster: cluster})
		if r := d.Results[0]; r.State != engine.StateError || r.Reason != c.err {
			t.Errorf("%s: state %s reason %q, want error %q", c.spec, r.State, r.Reason, c.err)
		}
	}
}

func TestCheckIngressBackendsLoadErrors(t *testing.T) {
	errs := compileErrors(t, ingressBackendsPolicy("  with: {checkTLSSecret: true}\n"))
	checkLoadError(t, errs, `p.yaml:10:10: policy "backends": with.checkTLSSecret: unknown field`)
	errs = compileErrors(t, ingressBackendsPolicy("  with: {checkIngressClass: yes please}\n"))
	checkLoadError(t, errs, `p.yaml:10:10: policy "backends": with.checkIngressClass`)
}

// TestCheckIngressBackendsClusterReads: the policy set declares what it
// reads, Secrets and IngressClasses only when checked, and metadata only.
func TestCheckIngressBackendsClusterReads(t *testing.T) {
	for _, c := range []struct{ with, want string }{
		{"", "/v1, Resource=services"},
		{"  with: {checkIngressClass: true, checkTLSSecrets: true}\n",
			"/v1, Resource=secrets (metadata), /v1, Resource=services, networking.k8s.io/v1, Resource=ingressclasses (metadata)"},
	} {
		var got []string
		for _, r := range compilePolicies(t, ingressBackendsPolicy(c.with)).ClusterReads() {
			s := r.Resource.String()
			if r.MetadataOnly {
				s += " (metadata)"
			}
			got = append(got, s)
		}
		if strings.Join(got, ", ") != c.want {
			t.Errorf("with %q: reads %q, want %q", c.with, strings.Join(got, ", "), c.want)
		}
	}
}

// unreachableCluster misses in its cache and cannot reach the API server
// for the direct read: the error client-go returns then names the API
// server's URL and address.
type unreachableCluster struct{}

func (unreachableCluster) Get(_ context.Context, gvr schema.GroupVersionResource, _, name string) (*unstructured.Unstructured, error) {
	return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
}

func (unreachableCluster) GetLive(_ context.Context, _ schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	return nil, &url.Error{Op: "Get", URL: "https://10.96.0.1:443/api/v1/namespaces/" + ns + "/services/" + name,
		Err: &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.ParseIP("10.96.0.1"), Port: 443}, Err: errors.New("connect: connection refused")}}
}

// A failed direct read denies under failurePolicy Fail, and the denial the
// requester reads does not carry the API server's URL or address; the
// policy's result, which the server logs, does.
func TestCheckIngressBackendsDenialHidesAPIServerURL(t *testing.T) {
	snap := compilePolicies(t, ingressBackendsPolicy("  failurePolicy: Fail\n"))
	d := evaluate(t, snap, ingressRequest(t, admissionv1.Create, ingress(paths("cart:80")), ""), engine.EvalOptions{Cluster: unreachableCluster{}})
	r := d.Results[0]
	if d.Allowed || r.State != engine.StateError {
		t.Fatalf("allowed %v, state %s (%q): want an error denying", d.Allowed, r.State, r.Reason)
	}
	for _, leak := range []string{"https://", "10.96.0.1", ":443", "/api/v1"} {
		if strings.Contains(d.Message, leak) {
			t.Errorf("the denial %q carries %q", d.Message, leak)
		}
	}
	if want := `policy "backends" failed: reading services cart: Get "<redacted>": dial tcp <redacted>: connect: connection refused`; d.Message != want {
		t.Errorf("denial %q, want %q", d.Message, want)
	}
	if !strings.Contains(r.Reason, "https://10.96.0.1:443/api/v1/namespaces/shop/services/cart") {
		t.Errorf("the result's reason %q lost the URL the log needs", r.Reason)
	}
}
