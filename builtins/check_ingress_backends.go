package builtins

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"celadon.io/celadon/engine"
)

func init() { register(checkIngressBackends{}) }

// Resources checkIngressBackends reads.
var (
	servicesResource       = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	secretsResource        = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	ingressClassesResource = schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingressclasses"}
)

// checkIngressBackends denies a networking.k8s.io/v1 Ingress whose service
// backends name a Service, or a port, that does not exist in its
// namespace; optionally also a missing IngressClass or TLS Secret. Lookups
// go to the cluster cache; a miss is read again directly before it is
// reported, so that a Service created a moment before its Ingress is found.
type checkIngressBackends struct{}

// checkIngressBackendsArgs is checkIngressBackends' spec.with.
type checkIngressBackendsArgs struct {
	// CheckIngressClass also requires spec.ingressClassName, when set, to
	// name an existing IngressClass. Default false.
	CheckIngressClass bool `json:"checkIngressClass"`
	// CheckTLSSecrets also requires every spec.tls[].secretName to name an
	// existing Secret in the Ingress's namespace. Default false: it needs
	// RBAC on Secrets, and the Secret is often created by cert-manager
	// after the Ingress.
	CheckTLSSecrets bool `json:"checkTLSSecrets"`
}

// Name is the policy's spec.action.
func (checkIngressBackends) Name() string { return "checkIngressBackends" }

// Type is Validating: the Ingress is never changed.
func (checkIngressBackends) Type() engine.ActionType { return engine.Validating }

// Compile checks spec.with.
func (checkIngressBackends) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args checkIngressBackendsArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	return ingressBackendsAction{args}, nil
}

// Access implements engine.Accessor: what the informer caches behind
// ClusterReads list and watch, and get for the re-read of a miss.
func (checkIngressBackends) Access() []engine.Access {
	return []engine.Access{
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "list", "watch"},
			Why: "the Services an Ingress names (an informer cache; get re-reads a miss before denying)"},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingressclasses"}, Verbs: []string{"get", "list", "watch"},
			Why: "the IngressClass an Ingress names, with checkIngressClass"},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}, Optional: true,
			Why: "with checkTLSSecrets: true, the Secrets an Ingress's tls names. Only their metadata is read (metadata.k8s.io), " +
				"but RBAC cannot tell: list and watch on Secrets let the holder read every Secret's data. Not granted by default; " +
				"a policy with checkTLSSecrets errors (its failurePolicy decides) and the server is not ready until this is granted"},
	}
}

// ingressBackendsAction is a compiled checkIngressBackends.
type ingressBackendsAction struct{ args checkIngressBackendsArgs }

// ClusterReads implements engine.ClusterReader: Services in full (their
// ports are needed); IngressClasses and Secrets only to know they exist,
// so their metadata is enough, and only when checked.
func (a ingressBackendsAction) ClusterReads() []engine.ClusterRead {
	reads := []engine.ClusterRead{{Resource: servicesResource}}
	if a.args.CheckIngressClass {
		reads = append(reads, engine.ClusterRead{Resource: ingressClassesResource, MetadataOnly: true})
	}
	if a.args.CheckTLSSecrets {
		reads = append(reads, engine.ClusterRead{Resource: secretsResource, MetadataOnly: true})
	}
	return reads
}

// serviceBackend is a backend.service of the Ingress.
type serviceBackend struct {
	name string
	// port is a port number (digits) or a port name.
	port    string
	numeric bool
}

func (b serviceBackend) portText() string {
	if b.numeric {
		return b.port
	}
	return strconv.Quote(b.port)
}

// Run checks the Ingress's references.
func (a ingressBackendsAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	ing, why := ingressToCheck(ac)
	if !ing.Exists() {
		return skip(why), nil
	}
	if ac.Cluster == nil {
		return engine.Outcome{}, errors.New("no cluster state to look Services up in (celadon eval: give it with --cluster)")
	}
	ns, _ := ing.Get("metadata").Get("namespace").Str()
	if ns == "" && ac.Request != nil {
		ns = ac.Request.Namespace
	}
	spec := ing.Get("spec")
	backends, resources, err := ingressBackends(spec)
	if err != nil {
		return engine.Outcome{}, err
	}

	l := lookup{ac: ac}
	var problems []string
	seen := map[string]bool{}
	report := func(p string) {
		if !seen[p] {
			seen[p] = true
			problems = append(problems, p)
		}
	}
	services := map[string]bool{}
	var serviceNames []string
	for _, b := range backends {
		if !services[b.name] {
			services[b.name] = true
			serviceNames = append(serviceNames, b.name)
		}
		svc, err := l.get(servicesResource, ns, b.name, func(o *unstructured.Unstructured) bool { return servicePort(o, b) })
		switch {
		case err != nil:
			return engine.Outcome{}, err
		case svc == nil:
			report(fmt.Sprintf("service %q not found", b.name))
		case !servicePort(svc, b):
			report(fmt.Sprintf("service %q has no port %s", b.name, b.portText()))
		}
	}
	if class, _ := spec.Get("ingressClassName").Str(); a.args.CheckIngressClass && class != "" {
		o, err := l.get(ingressClassesResource, "", class, nil)
		if err != nil {
			return engine.Outcome{}, err
		}
		if o == nil {
			report(fmt.Sprintf("ingressClass %q not found", class))
		}
	}
	if a.args.CheckTLSSecrets {
		for _, t := range spec.Get("tls").Elements() {
			name, _ := t.Get("secretName").Str()
			if name == "" {
				continue
			}
			o, err := l.get(secretsResource, ns, name, nil)
			if err != nil {
				return engine.Outcome{}, err
			}
			if o == nil {
				report(fmt.Sprintf("secret %q not found", name))
			}
		}
	}

	if len(problems) > 0 {
		violation := strings.Join(problems, "; ")
		if l.cacheOnly > 0 {
			violation += fmt.Sprintf(" (%d of the lookups judged from Celadon's cache alone, which follows the API server a moment behind: over %d direct reads for one request, or too many for the server right now)", l.cacheOnly, maxLiveReads)
		}
		return engine.Outcome{Violation: violation}, nil
	}
	var found []string
	if len(serviceNames) > 0 {
		found = append(found, "services "+strings.Join(serviceNames, ", "))
	}
	if resources > 0 {
		found = append(found, fmt.Sprintf("%d resource backend%s accepted", resources, pluralS(resources)))
	}
	if len(found) == 0 {
		return engine.Outcome{Reason: "no backends to check"}, nil
	}
	reason := "backends found: " + strings.Join(found, "; ")
	if l.live > 0 {
		reason += fmt.Sprintf(" (%d read directly: not yet in the cache)", l.live)
	}
	return engine.Outcome{Reason: reason}, nil
}

// ingressToCheck returns the Ingress of a CREATE or UPDATE request, or why
// there is nothing to check. An UPDATE that leaves spec as it was (labels,
// finalizers, deletion) is not checked: a Service deleted since must not
// block the Ingress's own cleanup.
func ingressToCheck(ac *engine.ActionContext) (engine.Value, string) {
	if ac.Request != nil && ac.Request.Operation != admissionv1.Create && ac.Request.Operation != admissionv1.Update {
		return engine.Value{}, fmt.Sprintf("Ingresses are checked on CREATE and UPDATE, not on %s", ac.Request.Operation)
	}
	obj, why := objectOfKind(ac, "Ingress")
	if !obj.Exists() {
		return engine.Value{}, why
	}
	if av, _ := obj.Get("apiVersion").Str(); av != "" && av != "networking.k8s.io/v1" {
		return engine.Value{}, fmt.Sprintf("only networking.k8s.io/v1 Ingresses are checked, not %s", av)
	}
	if old := ac.OldObject(); old.Exists() && sameValue(obj.Get("spec"), old.Get("spec")) {
		return engine.Value{}, "the Ingress's spec is unchanged"
	}
	return obj, ""
}

// ingressBackends returns the service backends of spec, defaultBackend
// first, then the rules' paths in order, and the number of resource
// backends. A backend that is neither is an error naming its field.
func ingressBackends(spec engine.Value) ([]serviceBackend, int, error) {
	var out []serviceBackend
	resources := 0
	add := func(field string, b engine.Value) error {
		if !b.IsObject() {
			return fmt.Errorf("spec.%s: want an object", field)
		}
		if b.Get("resource").Exists() {
			resources++
			return nil
		}
		svc := b.Get("service")
		if !svc.IsObject() {
			return fmt.Errorf("spec.%s: neither service nor resource is set", field)
		}
		sb := serviceBackend{}
		sb.name, _ = svc.Get("name").Str()
		if sb.name == "" {
			return fmt.Errorf("spec.%s.service.name is required", field)
		}
		port := svc.Get("port")
		switch n := port.Get("number").Interface().(type) {
		case int64:
			sb.port, sb.numeric = strconv.FormatInt(n, 10), true
		case float64:
			sb.port, sb.numeric = strconv.FormatFloat(n, 'f', -1, 64), true
		}
		if !sb.numeric {
			if sb.port, _ = port.Get("name").Str(); sb.port == "" {
				return fmt.Errorf("spec.%s.service.port: a number or a name is required", field)
			}
		}
		out = append(out, sb)
		return nil
	}
	if d := spec.Get("defaultBackend"); !d.IsNull() {
		if err := add("defaultBackend", d); err != nil {
			return nil, 0, err
		}
	}
	for i, r := range spec.Get("rules").Elements() {
		for j, p := range r.Get("http").Get("paths").Elements() {
			if err := add(fmt.Sprintf("rules[%d].http.paths[%d].backend", i, j), p.Get("backend")); err != nil {
				return nil, 0, err
			}
		}
	}
	return out, resources, nil
}

// servicePort says whether svc exposes the backend's port: by number,
// spec.ports[].port; by name, spec.ports[].name.
func servicePort(svc *unstructured.Unstructured, b serviceBackend) bool {
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	for _, p := range ports {
		pm, _ := p.(map[string]any)
		if b.numeric {
			if n, ok := quantityText(pm["port"]); ok && n == b.port {
				return true
			}
		} else if name, _ := pm["name"].(string); name == b.port {
			return true
		}
	}
	return false
}

// maxLiveReads bounds the direct reads of one request: an Ingress naming a
// thousand missing Services must not cost a thousand GETs.
const maxLiveReads = 8

// lookup reads objects from the cache, and once more directly when the
// cache has not got what is looked for, at most maxLiveReads times.
type lookup struct {
	ac *engine.ActionContext
	// live counts the objects found only by a direct read.
	live int
	// fresh holds the objects read directly, so each is read once.
	fresh map[string]*unstructured.Unstructured
	// cacheOnly counts the lookups judged from the cache alone: over
	// maxLiveReads, or the server's rate of direct reads.
	cacheOnly int
}

// get returns the object, or nil when it does not exist. ok, when set,
// says whether the cached object has what is needed; when it has not, or
// the cache has no such object, the object is read directly (when the
// cluster can) before the answer is trusted.
func (l *lookup) get(gvr schema.GroupVersionResource, ns, name string, ok func(*unstructured.Unstructured) bool) (*unstructured.Unstructured, error) {
	key := gvr.String() + "/" + ns + "/" + name
	if o, done := l.fresh[key]; done {
		return o, nil
	}
	o, err := l.ac.Cluster.Get(l.ac, gvr, ns, name)
	switch {
	case apierrors.IsNotFound(err):
		o = nil
	case err != nil:
		return nil, fmt.Errorf("looking up %s %s: %w", gvr.Resource, name, err)
	}
	if o != nil && (ok == nil || ok(o)) {
		return o, nil
	}
	live, canRead := l.ac.Cluster.(engine.LiveGetter)
	if !canRead {
		return o, nil
	}
	if len(l.fresh) >= maxLiveReads {
		l.cacheOnly++
		return o, nil
	}
	fresh, err := live.GetLive(l.ac, gvr, ns, name)
	switch {
	case errors.Is(err, engine.ErrLiveReadLimited):
		l.cacheOnly++
		return o, nil
	case apierrors.IsNotFound(err):
		fresh = nil
	case err != nil:
		return nil, fmt.Errorf("reading %s %s: %w", gvr.Resource, name, err)
	}
	if l.fresh == nil {
		l.fresh = map[string]*unstructured.Unstructured{}
	}
	l.fresh[key] = fresh
	if fresh != nil && (ok == nil || ok(fresh)) {
		l.live++
	}
	return fresh, nil
}

func pluralS(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
