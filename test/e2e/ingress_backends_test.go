package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"celadon.io/celadon/cluster"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/server"
)

// ingressBackendsLabel scopes this file's server: its webhooks are called
// only for namespaces carrying it; the value picks the policy, "deny" or
// "warn".
const ingressBackendsLabel = "e2e.celadon.io/ingress-backends"

// ingressBackendsPolicies are the policies of this file's server.
var ingressBackendsPolicies = map[string][]byte{"ingress-backends.yaml": []byte(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: ingress-backends
spec:
  match:
    resources: [networking.k8s.io/ingresses]
    operations: [CREATE, UPDATE]
    namespaceSelector: {matchLabels: {` + ingressBackendsLabel + `: deny}}
  action: checkIngressBackends
  with:
    checkIngressClass: true
    checkTLSSecrets: true
---
apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: ingress-backends-warn
spec:
  match:
    resources: [networking.k8s.io/ingresses]
    operations: [CREATE, UPDATE]
    namespaceSelector: {matchLabels: {` + ingressBackendsLabel + `: warn}}
  action: checkIngressBackends
  enforcement: Warn
`)}

// startIngressBackendsServer starts a Celadon server for policies
// (ingressBackendsPolicies or a set with the same webhooks), its options
// adjusted by configure (may be nil; by default its cluster cache runs on
// the real API server), and installs its webhook configurations limited
// to namespaces labelled ingressBackendsLabel. Both go away when the test
// ends.
// ingressBackendsScope limits the test servers' webhooks to the test's
// namespaces.
var ingressBackendsScope = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: ingressBackendsLabel, Operator: metav1.LabelSelectorOpExists}}}

func startIngressBackendsServer(ctx context.Context, t *testing.T, name string, policies map[string][]byte, configure func(*celadon, *server.Options)) *celadon {
	t.Helper()
	s := startScopedCeladon(ctx, t, name, policies, configure, ingressBackendsScope, nil)
	if names := webhookNames(t, s); names != "fail.validate.celadon.io" {
		t.Fatalf("generated webhooks %q, want one validating webhook", names)
	}
	return s
}

// newService returns a Service with the given ports, each "name:port".
func newService(ns, name string, ports ...string) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}}}
	for _, p := range ports {
		pname, num, _ := strings.Cut(p, ":")
		var n int32
		fmt.Sscan(num, &n)
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: pname, Port: n})
	}
	return svc
}

// backend is an Ingress backend for "service:port", the port a number or
// a name.
func backend(ref string) networkingv1.IngressBackend {
	name, port, _ := strings.Cut(ref, ":")
	sb := &networkingv1.IngressServiceBackend{Name: name}
	if _, err := fmt.Sscan(port, &sb.Port.Number); err != nil {
		sb.Port = networkingv1.ServiceBackendPort{Name: port}
	}
	return networkingv1.IngressBackend{Service: sb}
}

// newIngress returns an Ingress with one rule routing a path to each
// backend ref.
func newIngress(ns, name string, refs ...string) *networkingv1.Ingress {
	prefix := networkingv1.PathTypePrefix
	rule := networkingv1.IngressRule{Host: name + ".example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{}}}
	for i, ref := range refs {
		rule.HTTP.Paths = append(rule.HTTP.Paths, networkingv1.HTTPIngressPath{Path: fmt.Sprintf("/p%d", i), PathType: &prefix, Backend: backend(ref)})
	}
	return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{rule}}}
}

// TestIngressBackends creates Ingresses through the API server, which calls
// a Celadon server whose checkIngressBackends reads Services, Secrets and
// IngressClasses from informer caches on the same API server.
func TestIngressBackends(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	startIngressBackendsServer(ctx, t, "celadon-e2e-ingress", ingressBackendsPolicies, nil)
	c, warnings := warningClient(t)
	ns := newNamespace(ctx, t, "ingress", map[string]string{ingressBackendsLabel: "deny"})
	for _, svc := range []*corev1.Service{newService(ns, "api", "http:80", "grpc:9090"), newService(ns, "web", "http:80")} {
		if err := c.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
	}
	waitForNamespaceSeen(ctx, t, c, ns)

	for _, tc := range []struct {
		name   string
		ing    *networkingv1.Ingress
		denial string // "" when admitted
	}{
		{"an existing Service with a numeric port", newIngress(ns, "numeric", "api:80", "web:80"), ""},
		{"a named port", newIngress(ns, "named", "api:grpc", "web:http"), ""},
		{"a missing Service", newIngress(ns, "missing-service", "cart:80"), `service "cart" not found`},
		{"a missing port by name", newIngress(ns, "missing-named-port", "web:grpc"), `service "web" has no port "grpc"`},
		{"a missing port by number", newIngress(ns, "missing-numeric-port", "web:8080"), `service "web" has no port 8080`},
		{"several problems in one Ingress", newIngress(ns, "several", "cart:80", "api:http", "web:grpc", "search:http", "cart:80"),
			`service "cart" not found; service "web" has no port "grpc"; service "search" not found`},
		{"the default backend", withDefaultBackend(newIngress(ns, "default-missing", "web:80"), "fallback:80"), `service "fallback" not found`},
		{"the default backend alone, found", withDefaultBackend(newIngress(ns, "default-found"), "api:grpc"), ""},
		{"an IngressClass and a TLS Secret that do not exist", withClassAndTLS(newIngress(ns, "class-tls", "web:80"), "e2e-missing-class", "missing-tls"),
			`ingressClass "e2e-missing-class" not found; secret "missing-tls" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Create(ctx, tc.ing)
			checkAdmission(t, err, tc.denial)
		})
	}

	t.Run("an UPDATE that breaks a backend", func(t *testing.T) {
		ing := &networkingv1.Ingress{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "numeric"}, ing); err != nil {
			t.Fatal(err)
		}
		ing.Spec.Rules[0].HTTP.Paths[0].Backend = backend("api:8443")
		checkAdmission(t, c.Update(ctx, ing), `service "api" has no port 8443`)
	})

	t.Run("an IngressClass and a TLS Secret created just before", func(t *testing.T) {
		class := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-class-"}, Spec: networkingv1.IngressClassSpec{Controller: "example.com/e2e"}}
		if err := c.Create(ctx, class); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = suite.c.Delete(context.Background(), class) })
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop-tls"}, Data: map[string][]byte{"tls.crt": []byte("x"), "tls.key": []byte("y")}}
		if err := c.Create(ctx, secret); err != nil {
			t.Fatal(err)
		}
		checkAdmission(t, c.Create(ctx, withClassAndTLS(newIngress(ns, "class-tls-found", "web:80"), class.Name, "shop-tls")), "")
	})

	// A Service created a moment before its Ingress may not be in the
	// cache yet: the direct read before denying must find it. On loopback
	// the cache usually wins the race; TestIngressBackendsCacheLag makes
	// it lose.
	t.Run("a Service created just before the Ingress", func(t *testing.T) {
		for i := range 10 {
			name := fmt.Sprintf("fresh-%d", i)
			if err := c.Create(ctx, newService(ns, name, "http:80")); err != nil {
				t.Fatal(err)
			}
			if err := c.Create(ctx, newIngress(ns, name, name+":http", name+":80")); err != nil {
				t.Fatalf("round %d: the Ingress of a Service created just before was refused: %v", i, err)
			}
		}
	})

	t.Run("warn mode", func(t *testing.T) {
		wns := newNamespace(ctx, t, "ingress-warn", map[string]string{ingressBackendsLabel: "warn"})
		if err := c.Create(ctx, newService(wns, "web", "http:80")); err != nil {
			t.Fatal(err)
		}
		waitForNamespaceSeen(ctx, t, c, wns)
		warnings.take()
		if err := c.Create(ctx, newIngress(wns, "several", "cart:80", "web:grpc")); err != nil {
			t.Fatalf("under enforcement Warn the Ingress was refused: %v", err)
		}
		want := `ingress-backends-warn: service "cart" not found; service "web" has no port "grpc"`
		if got := warnings.take(); len(got) != 1 || got[0] != want {
			t.Errorf("warnings %q, want [%q]", got, want)
		}
		if err := suite.c.Get(ctx, client.ObjectKey{Namespace: wns, Name: "several"}, &networkingv1.Ingress{}); err != nil {
			t.Errorf("the warned Ingress is not stored: %v", err)
		}
	})
}

// waitForNamespaceSeen creates Ingresses to web:80 in ns until one is
// admitted: the server's namespace cache, which follows the API server a
// moment behind, then has the namespace its namespaceSelector needs.
func waitForNamespaceSeen(ctx context.Context, t *testing.T, c client.Client, ns string) {
	t.Helper()
	n := 0
	err := devenv.Retry(ctx, waitTimeout, "Celadon to see namespace "+ns, func(ctx context.Context) error {
		n++
		return c.Create(ctx, newIngress(ns, fmt.Sprintf("probe-%d", n), "web:80"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func withDefaultBackend(ing *networkingv1.Ingress, ref string) *networkingv1.Ingress {
	b := backend(ref)
	ing.Spec.DefaultBackend = &b
	if len(ing.Spec.Rules[0].HTTP.Paths) == 0 {
		ing.Spec.Rules = nil
	}
	return ing
}

func withClassAndTLS(ing *networkingv1.Ingress, class, secret string) *networkingv1.Ingress {
	ing.Spec.IngressClassName = &class
	ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{ing.Spec.Rules[0].Host}, SecretName: secret}}
	return ing
}

// checkAdmission checks err is nil when denial is "", else a webhook
// denial with exactly that message.
func checkAdmission(t *testing.T, err error, denial string) {
	t.Helper()
	switch {
	case denial == "" && err != nil:
		t.Fatalf("refused: %v", err)
	case denial == "":
	case err == nil:
		t.Fatalf("admitted, want denied: %s", denial)
	default:
		want := `admission webhook "fail.validate.celadon.io" denied the request: ` + denial
		var status apierrors.APIStatus
		if !errors.As(err, &status) || status.Status().Message != want {
			t.Fatalf("error %v\nwant the message %q", err, want)
		}
	}
}

// TestClusterCache runs the informer-backed ObjectGetter on the API server:
// Services in full, Secrets and IngressClasses as metadata only (no
// Secret data in memory), cluster-scoped lookups, direct reads, an
// informer started on first use, and a metadata-only informer replaced by
// a full one.
func TestClusterCache(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	var (
		services       = schema.GroupVersionResource{Version: "v1", Resource: "services"}
		secrets        = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
		configMaps     = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
		ingressClasses = schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingressclasses"}
	)
	cc := cluster.New(true)
	runCtx, stop := context.WithCancel(ctx)
	defer func() { stop(); cc.Wait() }()
	ready, err := cc.Start(runCtx, suite.cp.Config, []engine.ClusterRead{{Resource: services}, {Resource: secrets, MetadataOnly: true}, {Resource: ingressClasses, MetadataOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the cluster cache to sync", func(context.Context) (bool, error) { return ready() == nil, nil })

	ns := newNamespace(ctx, t, "cache", nil)
	class := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-cache-"}, Spec: networkingv1.IngressClassSpec{Controller: "example.com/e2e"}}
	objs := []client.Object{
		newService(ns, "api", "http:80"),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "creds"}, Data: map[string][]byte{"password": []byte("hunter2")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}, Data: map[string]string{"k": "v"}},
		class,
	}
	for _, o := range objs {
		if err := suite.c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = suite.c.Delete(context.Background(), class) })

	// Direct reads see them at once.
	if svc, err := cc.GetLive(ctx, services, ns, "api"); err != nil || len(svc.Object["spec"].(map[string]any)["ports"].([]any)) != 1 {
		t.Errorf("GetLive service: %v, %v", svc, err)
	}
	if sec, err := cc.GetLive(ctx, secrets, ns, "creds"); err != nil || sec.GetName() != "creds" || sec.Object["data"] != nil {
		t.Errorf("GetLive secret (metadata only): %v, %v", sec, err)
	}

	// The caches catch up.
	waitFor(ctx, t, "the cache to hold the Service, the Secret and the IngressClass", func(ctx context.Context) (bool, error) {
		for _, k := range []struct {
			gvr      schema.GroupVersionResource
			ns, name string
		}{{services, ns, "api"}, {secrets, ns, "creds"}, {ingressClasses, "", class.Name}} {
			if _, err := cc.Get(ctx, k.gvr, k.ns, k.name); apierrors.IsNotFound(err) {
				return false, nil
			} else if err != nil {
				return false, err
			}
		}
		return true, nil
	})
	svc, _ := cc.Get(ctx, services, ns, "api")
	if ports, _ := svc.Object["spec"].(map[string]any)["ports"].([]any); len(ports) != 1 || svc.GetManagedFields() != nil {
		t.Errorf("cached Service: ports %v, managedFields %v; want one port and no managed fields", ports, svc.GetManagedFields())
	}
	sec, _ := cc.Get(ctx, secrets, ns, "creds")
	if sec.Object["data"] != nil || sec.GetAPIVersion() != "v1" || sec.GetNamespace() != ns {
		t.Errorf("cached Secret: %v; want metadata only", sec.Object)
	}
	if _, err := cc.Get(ctx, services, ns, "nope"); !apierrors.IsNotFound(err) {
		t.Errorf("missing Service: %v, want NotFound", err)
	}
	if _, err := cc.Get(ctx, ingressClasses, "", "e2e-no-such-class"); !apierrors.IsNotFound(err) {
		t.Errorf("missing IngressClass: %v, want NotFound", err)
	}

	// A resource no policy declared: served at once (directly until its
	// informer syncs).
	if cm, err := cc.Get(ctx, configMaps, ns, "settings"); err != nil || cm.Object["data"].(map[string]any)["k"] != "v" {
		t.Errorf("ConfigMap on first use: %v, %v", cm, err)
	}

	// Full Secrets wanted now: the metadata-only informer is replaced.
	cc.Ensure([]engine.ClusterRead{{Resource: secrets}})
	waitFor(ctx, t, "the Secret's data in the cache", func(ctx context.Context) (bool, error) {
		sec, err := cc.Get(ctx, secrets, ns, "creds")
		if err != nil {
			return false, err
		}
		data, _ := sec.Object["data"].(map[string]any)
		return data["password"] != nil, nil
	})
}

// TestClusterCacheForbidden: an informer RBAC forbids keeps the cache
// unready, and readiness says why.
func TestClusterCacheForbidden(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	cfg := rest.CopyConfig(suite.cp.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:default:e2e-nobody"}
	cc := cluster.New(false) // the object informers' readiness, not the namespaces'
	runCtx, stop := context.WithCancel(ctx)
	defer func() { stop(); cc.Wait() }()
	ready, err := cc.Start(runCtx, cfg, []engine.ClusterRead{{Resource: schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, MetadataOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := `cluster cache: /v1, Resource=secrets not synced: failed to list *v1.PartialObjectMetadata: secrets is forbidden: User "system:serviceaccount:default:e2e-nobody" cannot list resource "secrets"`
	waitFor(ctx, t, "readiness to name the forbidden list", func(context.Context) (bool, error) {
		err := ready()
		return err != nil && strings.HasPrefix(err.Error(), want), nil
	})
}

// TestIngressBackendsCacheLag: a Service created just before its Ingress
// is not in a cache that lags, and the direct read before denying finds
// it. The server's cluster cache is a real cluster.Cache on the API server
// whose watch responses arrive watchDelay late, so that the lag is certain
// rather than a race the cache usually wins on loopback.
func TestIngressBackendsCacheLag(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	const watchDelay = 3 * time.Second
	cfg := rest.CopyConfig(suite.cp.Config)
	lag := &atomic.Bool{}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return slowWatches{rt: rt, delay: watchDelay, on: lag} })
	cc := cluster.New(true)
	runCtx, stop := context.WithCancel(context.Background())
	t.Cleanup(func() { stop(); cc.Wait() })
	ready, err := cc.Start(runCtx, cfg, []engine.ClusterRead{
		{Resource: schema.GroupVersionResource{Version: "v1", Resource: "services"}},
		{Resource: schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingressclasses"}, MetadataOnly: true},
		{Resource: schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, MetadataOnly: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the cluster cache to sync", func(context.Context) (bool, error) { return ready() == nil, nil })
	lag.Store(true) // from now on: the initial sync need not wait
	startIngressBackendsServer(ctx, t, "celadon-e2e-ingress-lag", ingressBackendsPolicies, func(_ *celadon, o *server.Options) { o.Cluster = cc })

	ns := newNamespace(ctx, t, "ingress-lag", map[string]string{ingressBackendsLabel: "deny"})
	if err := suite.c.Create(ctx, newService(ns, "web", "http:80")); err != nil {
		t.Fatal(err)
	}
	waitForNamespaceSeen(ctx, t, suite.c, ns)
	for i := range 3 {
		name := fmt.Sprintf("fresh-%d", i)
		if err := suite.c.Create(ctx, newService(ns, name, "http:80")); err != nil {
			t.Fatal(err)
		}
		if _, err := cc.Get(ctx, schema.GroupVersionResource{Version: "v1", Resource: "services"}, ns, name); !apierrors.IsNotFound(err) {
			t.Fatalf("round %d: the cache already has Service %s (%v): the lag this test needs is missing", i, name, err)
		}
		if err := suite.c.Create(ctx, newIngress(ns, name, name+":http")); err != nil {
			t.Fatalf("round %d: the Ingress of a Service created just before was refused: %v", i, err)
		}
	}
	// The direct read is only for misses: a Service that does not exist
	// is still denied.
	checkAdmission(t, suite.c.Create(ctx, newIngress(ns, "missing", "cart:80")), `service "cart" not found`)
}

// slowWatches delays every chunk of a watch response by delay while on is
// set: a network that brings the API server's events late.
type slowWatches struct {
	rt    http.RoundTripper
	delay time.Duration
	on    *atomic.Bool
}

func (s slowWatches) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.rt.RoundTrip(r)
	if err != nil || r.URL.Query().Get("watch") != "true" {
		return resp, err
	}
	resp.Body = &slowBody{ReadCloser: resp.Body, delay: s.delay, on: s.on}
	return resp, nil
}

type slowBody struct {
	io.ReadCloser
	delay time.Duration
	on    *atomic.Bool
}

func (b *slowBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && b.on.Load() {
		time.Sleep(b.delay)
	}
	return n, err
}

// TestIngressBackendsAfterReload: a policy set that starts reading
// Services on a hot reload gets its informer then, and is answered (by
// direct reads until the informer syncs) without a restart.
func TestIngressBackendsAfterReload(t *testing.T) {
	requireSuite(t)
	ctx := testContext(t)
	// The same webhook, but a policy that reads nothing and never denies.
	initial := map[string][]byte{"ingress-backends.yaml": []byte(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: ingress-placeholder
spec:
  match:
    resources: [networking.k8s.io/ingresses]
    operations: [CREATE, UPDATE]
    conditions:
    - {name: never, expression: "false"}
  action: deny
  with: {message: never}
`)}
	s := startIngressBackendsServer(ctx, t, "celadon-e2e-ingress-reload", initial, nil)
	ns := newNamespace(ctx, t, "ingress-reload", map[string]string{ingressBackendsLabel: "deny"})
	if err := suite.c.Create(ctx, newService(ns, "web", "http:80")); err != nil {
		t.Fatal(err)
	}
	if err := suite.c.Create(ctx, newIngress(ns, "before", "cart:80")); err != nil {
		t.Fatalf("before the reload nothing checks backends, yet: %v", err)
	}
	s.setPolicies(t, ingressBackendsPolicies)
	// The placeholder's webhook is narrowed to nothing (its condition is
	// false): install the reloaded set's, as --manage-webhooks does after
	// a reload.
	waitFor(ctx, t, "the reload", func(context.Context) (bool, error) {
		return s.srv.Snapshot().Policy("ingress-placeholder") == nil, nil
	})
	installScoped(ctx, t, s, ingressBackendsScope, nil)
	n := 0
	waitFor(ctx, t, "the reloaded policy to deny a missing backend", func(ctx context.Context) (bool, error) {
		n++
		err := suite.c.Create(ctx, newIngress(ns, fmt.Sprintf("after-%d", n), "cart:80"))
		return err != nil && strings.Contains(err.Error(), `service "cart" not found`), nil
	})
	checkAdmission(t, suite.c.Create(ctx, newIngress(ns, "found", "web:http")), "")
}
