package builtins

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/cel-go/cel"
	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"celadon.io/celadon/engine"
)

func init() { register(drainBeforeDelete{}) }

// drainBeforeDelete holds the DELETE of a pod until a cleanup outside the
// pod is done: the first DELETE starts the cleanup and is denied; the
// DELETEs that follow (controllers retry) are denied until the cleanup is
// done, or until timeoutSeconds have passed since it started, when the pod
// goes with a warning. When the cleanup started is recorded on the pod
// itself, in the annotation celadon.io/drain-started, so that every
// replica of the webhook agrees.
//
// It is written on the engine's extension points only: it changes other
// systems at admission (SideEffecter, never on dry run), writes the pod
// through the server's cluster access (engine.ObjectPatcher) and declares
// the RBAC it needs (Accessor).
type drainBeforeDelete struct{}

// drainArgs is drainBeforeDelete's spec.with: exactly one of Consul,
// Endpoint and Annotate says what the cleanup is.
type drainArgs struct {
	// Consul deregisters the pod's instance from Consul.
	Consul *drainConsulArgs `json:"consul"`
	// Endpoint asks an HTTPS service to drain the pod.
	Endpoint *drainEndpointArgs `json:"endpoint"`
	// Annotate sets an annotation that another controller acts on.
	Annotate *drainAnnotateArgs `json:"annotate"`
	// TimeoutSeconds bounds the wait: once this long has passed since the
	// cleanup started, the pod is deleted with a warning. Default 300.
	TimeoutSeconds int `json:"timeoutSeconds"`
}

// drainConsulArgs is with.consul. Its fields are consulLifecycle's agent
// settings, with the same names and defaults, so that a policy pair can
// share them; Address is the one addition.
type drainConsulArgs struct {
	// Service is the Consul service name; the pod's annotation
	// consul.celadon.io/service overrides it when AllowAnnotations, whose
	// default is consulLifecycle's (consulAnnotationsAllowed).
	Service          string `json:"service"`
	AllowAnnotations *bool  `json:"allowAnnotations"`
	// Address is the agent's host. Default: the pod's status.hostIP, the
	// agent consulLifecycle's hooks registered the pod with.
	Address     string            `json:"address"`
	AgentPort   int               `json:"agentPort"`
	AgentScheme string            `json:"agentScheme"`
	ACLToken    *consulSecretArgs `json:"aclTokenSecret"`
}

// drainEndpointArgs is with.endpoint.
type drainEndpointArgs struct {
	// URL is POSTed the pod as {"namespace", "name", "uid"}; it answers
	// {"done": bool, "message": string}. https only.
	URL string `json:"url"`
	// CABundle is the PEM bundle the endpoint's certificate is verified
	// with. Default: the system's roots.
	CABundle string `json:"caBundle"`
}

// drainAnnotateArgs is with.annotate.
type drainAnnotateArgs struct {
	// Key and Value are the annotation set on the pod. Value default "true".
	Key   string `json:"key"`
	Value string `json:"value"`
	// DoneWhen is a CEL condition on oldObject, the pod as stored when the
	// DELETE is retried, that holds once the other controller is done.
	DoneWhen string `json:"doneWhen"`
}

// Defaults and limits of drainArgs, and the annotation recording the start.
const (
	drainDefaultTimeout = 300 * time.Second
	drainMaxTimeout     = 24 * time.Hour
	// drainStartedAnnotation holds "<RFC 3339 time> <pod UID>": when the
	// cleanup started, and for which pod. The UID is what makes a value
	// trustworthy: the API server assigns it after admission of the CREATE,
	// so a value in a pod template or a CREATE request cannot carry it.
	drainStartedAnnotation = "celadon.io/drain-started"
	// drainClockSkew is how far in the future a start time may be, for
	// replicas whose clocks differ a little.
	drainClockSkew = time.Minute
	// drainHTTPTimeout bounds each call to Consul or an endpoint; the
	// webhook's own timeout usually cuts it shorter.
	drainHTTPTimeout = 5 * time.Second
	// drainMaxAnswer bounds what is read of an answer.
	drainMaxAnswer = 64 << 10
)

// drainNow is the clock; tests replace it.
var drainNow = time.Now

// podsResource is the resource the start is written to.
var podsResource = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// Name is the policy's spec.action.
func (drainBeforeDelete) Name() string { return "drainBeforeDelete" }

// Type is Validating: the answer is a denial, and the pod is written
// through the API server rather than patched in the request.
func (drainBeforeDelete) Type() engine.ActionType { return engine.Validating }

// PodOnly implements engine.PodOnly: it drains and writes a real pod.
func (drainBeforeDelete) PodOnly() bool { return true }

// SideEffects implements engine.SideEffecter: the cleanup changes Consul,
// an endpoint's service or the pod, but a dry run starts nothing.
func (drainBeforeDelete) SideEffects() engine.SideEffectClass {
	return engine.SideEffectsNoneOnDryRun
}

// Access implements engine.Accessor. Pods need patch only: the pod being
// deleted comes with the request, so it is never read.
func (drainBeforeDelete) Access() []engine.Access {
	return []engine.Access{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"patch"}, Optional: true,
			Why: "records when a pod's cleanup started (annotation " + drainStartedAnnotation + ") and, with annotate, sets the annotation. " +
				"Patching every pod is a wide grant, so it is not given by default: grant it when a policy uses drainBeforeDelete; " +
				"until then its DELETEs error and its failurePolicy decides"},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}, Optional: true,
			Why: "with consul.aclTokenSecret, reads the Consul ACL token (one GET per call, no cache)"},
	}
}

// Compile checks spec.with.
func (drainBeforeDelete) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args drainArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	a := &drainAction{timeout: drainDefaultTimeout}
	switch {
	case args.TimeoutSeconds < 0 || time.Duration(args.TimeoutSeconds)*time.Second > drainMaxTimeout:
		return nil, c.FieldError("timeoutSeconds", "%d is not between 1 and %d (a day)", args.TimeoutSeconds, int(drainMaxTimeout/time.Second))
	case args.TimeoutSeconds > 0:
		a.timeout = time.Duration(args.TimeoutSeconds) * time.Second
	}

	var modes []string
	for _, m := range []struct {
		name string
		set  bool
	}{{"consul", args.Consul != nil}, {"endpoint", args.Endpoint != nil}, {"annotate", args.Annotate != nil}} {
		if m.set {
			modes = append(modes, m.name)
		}
	}
	switch len(modes) {
	case 0:
		return nil, errors.New("with: set one of consul, endpoint and annotate: the cleanup to run before a pod goes")
	case 1:
	default:
		return nil, c.FieldError(modes[1], "set only one of consul, endpoint and annotate; %s is set too", modes[0])
	}

	var err error
	switch {
	case args.Consul != nil:
		a.cleanup, err = compileDrainConsul(c, args.Consul)
	case args.Endpoint != nil:
		a.cleanup, err = compileDrainEndpoint(c, args.Endpoint)
	default:
		a.cleanup, err = compileDrainAnnotate(c, args.Annotate)
	}
	if err != nil {
		return nil, err
	}
	return a, nil
}

// drainAction is a compiled drainBeforeDelete. It is immutable, hence safe
// for concurrent use.
type drainAction struct {
	timeout time.Duration
	cleanup drainCleanup
}

// drainCleanup is one kind of cleanup.
type drainCleanup interface {
	// target says which instance the pod is, or why there is nothing to
	// clean up (skip), or, with warn, why the pod goes with a warning.
	target(ac *engine.ActionContext, p *drainPod) (t drainTarget, skip, warn string, err error)
	// start starts the cleanup and returns the annotations to write with
	// the start; "started" describes what it did, in the past tense.
	start(ac *engine.ActionContext, p *drainPod, t drainTarget) (annotations map[string]string, started string, err error)
	// done reports whether the cleanup is over; not done, status says
	// what is awaited, for the denial.
	done(ac *engine.ActionContext, p *drainPod, t drainTarget) (ok bool, status string, err error)
	// callsOut is true when start and done reach a system outside the
	// cluster, which a dry run and celadon eval must not.
	callsOut() bool
}

// drainTarget is what a cleanup works on, resolved per pod.
type drainTarget struct {
	// plan says, in the infinitive, what starting does, e.g. "deregister
	// service instance web.shop.web-0 from the Consul agent at ...".
	plan string
	// awaited says what the later DELETEs wait for.
	awaited string
	// consul mode: the agent's base URL, the service and its instance ID.
	agent, service, id string
}

// drainPod is what the builtin reads of the pod being deleted.
type drainPod struct {
	namespace, name, uid, resourceVersion string
	created                               time.Time
	deleting                              bool
	hostIP                                string
	annotations                           map[string]any
}

func (p *drainPod) String() string { return p.namespace + "/" + p.name }

// Run drives the cleanup from the pod's DELETE.
func (a *drainAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	p, why := drainPodOnDelete(ac)
	if p == nil {
		return skip(why), nil
	}
	if p.deleting {
		// A DELETE was admitted already (graceful deletion in progress):
		// this is its follow-up, e.g. the kubelet's final delete.
		return skip("the pod is being deleted already: an earlier DELETE was admitted"), nil
	}
	t, skipWhy, warn, err := a.cleanup.target(ac, p)
	switch {
	case err != nil:
		return engine.Outcome{}, err
	case skipWhy != "":
		return skip(skipWhy), nil
	case warn != "":
		return engine.Outcome{Reason: warn, Warnings: []string{ac.Policy + ": " + warn}}, nil
	}
	offline := !canPatch(ac)
	now := drainNow()
	start, ignored := drainStartOf(p, now)

	if start.IsZero() {
		// The first DELETE: start the cleanup, record it, deny.
		head := fmt.Sprintf("pod %s must drain before it is deleted: ", p)
		var tail string
		switch {
		case ac.DryRun:
			tail = " (dry run: nothing was started)"
		case offline:
			tail = fmt.Sprintf(", and record the start in the annotation %s (no cluster to write to: nothing was started)", drainStartedAnnotation)
		}
		if tail != "" {
			msg := head + "would " + t.plan + tail + ignored
			return engine.Outcome{Violation: msg}, nil
		}
		annotations, started, err := a.cleanup.start(ac, p, t)
		if err != nil {
			return engine.Outcome{}, err
		}
		if err := recordDrainStart(ac, p, now, annotations); err != nil {
			if apierrors.IsConflict(err) {
				// Another replica, or a controller, changed the pod since
				// the request was sent: its retry reads the new pod.
				return engine.Outcome{Violation: head + started + "; the pod changed meanwhile, so the start was not recorded: retry the delete"}, nil
			}
			return engine.Outcome{}, fmt.Errorf("%s; recording the start on pod %s: %w", started, p, err)
		}
		msg := fmt.Sprintf("%s%s; waiting until %s (at most %s): retry the delete%s", head, started, t.awaited, a.timeout, ignored)
		return engine.Outcome{Violation: msg}, nil
	}

	// Messages name the start rather than the time since, so that the
	// same pod gives the same message (and eval the same output).
	since := start.UTC().Format(time.RFC3339)
	timedOut := now.Sub(start) >= a.timeout
	// Past the timeout nothing outside is asked, so that an unreachable
	// Consul cannot hold the pod longer; a local check (doneWhen) still
	// runs, as a drained pod deserves no warning.
	if !timedOut || !a.cleanup.callsOut() {
		waiting := fmt.Sprintf("pod %s is draining before it is deleted: waiting until %s (started at %s, at most %s)", p, t.awaited, since, a.timeout)
		if a.cleanup.callsOut() && (ac.DryRun || offline) {
			why := "dry run"
			if offline {
				why = "no cluster: offline"
			}
			return engine.Outcome{Violation: waiting + " (" + why + ": not checked)"}, nil
		}
		done, status, err := a.cleanup.done(ac, p, t)
		switch {
		case err != nil && !timedOut:
			return engine.Outcome{}, err
		case err == nil && done:
			return engine.Outcome{Reason: fmt.Sprintf("drained: %s (the cleanup started at %s)", t.awaited, since)}, nil
		case !timedOut:
			if status != "" {
				waiting += ": " + status
			}
			return engine.Outcome{Violation: waiting + "; retry the delete"}, nil
		}
	}
	warning := fmt.Sprintf("pod %s deleted before its cleanup was confirmed: not seen that %s within timeoutSeconds %d of the start at %s", p, t.awaited, int(a.timeout/time.Second), since)
	return engine.Outcome{Reason: warning, Warnings: []string{ac.Policy + ": " + warning}}, nil
}

// canPatch reports whether the pod can be written: the server's cluster
// can, celadon eval's cannot.
func canPatch(ac *engine.ActionContext) bool {
	_, ok := ac.Cluster.(engine.ObjectPatcher)
	return ok
}

// drainPodOnDelete returns the pod of a DELETE request, or why the builtin
// does not apply.
func drainPodOnDelete(ac *engine.ActionContext) (*drainPod, string) {
	if ac.Request != nil && ac.Request.Operation != admissionv1.Delete {
		return nil, fmt.Sprintf("pods drain on DELETE, not on %s", ac.Request.Operation)
	}
	old := ac.OldObject()
	if !old.Exists() || old.IsNull() {
		return nil, "there is no object being deleted (a DELETE of a collection sends one request per pod)"
	}
	if k, _ := old.Get("kind").Str(); k != "" && k != "Pod" {
		return nil, fmt.Sprintf("the object is a %s, not a Pod", k)
	}
	md := old.Get("metadata")
	p := &drainPod{}
	p.namespace, _ = md.Get("namespace").Str()
	if p.namespace == "" && ac.Request != nil {
		p.namespace = ac.Request.Namespace
	}
	p.name, _ = md.Get("name").Str()
	p.uid, _ = md.Get("uid").Str()
	p.resourceVersion, _ = md.Get("resourceVersion").Str()
	if s, _ := md.Get("creationTimestamp").Str(); s != "" {
		p.created, _ = time.Parse(time.RFC3339, s)
	}
	p.deleting = !md.Get("deletionTimestamp").IsNull()
	if a := md.Get("annotations"); a.IsObject() {
		_ = a.Decode(&p.annotations) // an object decodes into a map
	}
	p.hostIP, _ = old.Get("status").Get("hostIP").Str()
	return p, ""
}

// drainStartOf returns when the pod's cleanup started; zero when it has
// not, or when the annotation cannot be trusted, which ignored then
// explains for the denial. A trusted value names the pod's own UID (no
// template or CREATE can: the UID is assigned after admission), and a
// time between the pod's creation and now: a forged old time would skip
// the wait, a forged future one would hold the pod for ever.
func drainStartOf(p *drainPod, now time.Time) (start time.Time, ignored string) {
	raw, ok := p.annotations[drainStartedAnnotation]
	if !ok {
		return time.Time{}, ""
	}
	value, _ := raw.(string)
	ignore := func(why string) (time.Time, string) {
		return time.Time{}, fmt.Sprintf(" (ignored the pod's annotation %s=%q: %s)", drainStartedAnnotation, value, why)
	}
	when, uid, ok := strings.Cut(value, " ")
	if !ok {
		return ignore("not \"<time> <pod UID>\" as Celadon writes it")
	}
	t, err := time.Parse(time.RFC3339, when)
	switch {
	case err != nil:
		return ignore("not \"<time> <pod UID>\" as Celadon writes it")
	case p.uid == "" || uid != p.uid:
		return ignore("it names another pod's UID: copied from a template, or forged")
	case !p.created.IsZero() && t.Before(p.created):
		return ignore("it is earlier than the pod's creation")
	case t.After(now.Add(drainClockSkew)):
		return ignore("it is in the future")
	}
	return t, ""
}

// recordDrainStart writes the start, and the cleanup's annotations, on the
// pod with one merge patch carrying the request's resourceVersion: if the
// pod changed since (another replica recorded a start), the API server
// answers Conflict rather than overwrite it.
func recordDrainStart(ac *engine.ActionContext, p *drainPod, now time.Time, annotations map[string]string) error {
	set := map[string]string{drainStartedAnnotation: now.UTC().Format(time.RFC3339) + " " + p.uid}
	for k, v := range annotations {
		set[k] = v
	}
	md := map[string]any{"annotations": set}
	if p.resourceVersion != "" {
		md["resourceVersion"] = p.resourceVersion
	}
	patch, err := json.Marshal(map[string]any{"metadata": md})
	if err != nil {
		return err
	}
	_, err = ac.Cluster.(engine.ObjectPatcher).Patch(ac.Context, podsResource, p.namespace, p.name, types.MergePatchType, patch)
	return err
}

// --- consul ---

// drainConsul deregisters the pod's instance, which consulLifecycle's
// postStart hook registered, from the agent of its node, and waits until
// neither the agent nor the catalog lists it.
type drainConsul struct {
	service          string
	allowAnnotations bool
	address          string // "": the pod's status.hostIP
	port             int
	scheme           string
	token            *consulSecretArgs
	client           *http.Client
}

func compileDrainConsul(c *engine.CompileContext, args *drainConsulArgs) (*drainConsul, error) {
	d := &drainConsul{
		service:          args.Service,
		allowAnnotations: consulAnnotationsAllowed(args.AllowAnnotations, args.Service),
		address:          args.Address,
		port:             args.AgentPort,
		scheme:           args.AgentScheme,
		token:            args.ACLToken,
		client:           &http.Client{Timeout: drainHTTPTimeout},
	}
	if d.service != "" {
		if err := consulValidService(d.service); err != nil {
			return nil, c.FieldError("consul.service", "%v", err)
		}
	} else if !d.allowAnnotations {
		return nil, c.FieldError("consul.service", "is required when allowAnnotations is false: no pod could name its service")
	}
	if d.address != "" && net.ParseIP(d.address) == nil {
		if msgs := validation.IsDNS1123Subdomain(d.address); len(msgs) > 0 {
			return nil, c.FieldError("consul.address", "%q is neither an IP address nor a host name: %s", d.address, strings.Join(msgs, "; "))
		}
	}
	if err := consulAgentSettings(c, "consul.", &d.port, &d.scheme, d.token); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *drainConsul) callsOut() bool { return true }

// consulServiceID is the ID consulLifecycle's postStart hook registers a
// pod under (id="$service.$POD_NAMESPACE.$POD_NAME" in its script).
func consulServiceID(service, namespace, pod string) string {
	return service + "." + namespace + "." + pod
}

func (d *drainConsul) target(_ *engine.ActionContext, p *drainPod) (drainTarget, string, string, error) {
	service := d.service
	if v, ok := p.annotations[consulAnnotationService]; ok && d.allowAnnotations {
		s, isString := v.(string)
		if !isString {
			return drainTarget{}, "", "", fmt.Errorf("annotation %s is a %T, not a string", consulAnnotationService, v)
		}
		if err := consulValidService(s); err != nil {
			return drainTarget{}, "", "", fmt.Errorf("annotation %s: %v", consulAnnotationService, err)
		}
		service = s
	}
	if service == "" {
		return drainTarget{}, "not in Consul: with.consul.service is not set and the pod has no annotation " + consulAnnotationService, "", nil
	}
	host := d.address
	if host == "" {
		host = p.hostIP
	}
	id := consulServiceID(service, p.namespace, p.name)
	if host == "" {
		// The hooks reach the agent at the node's IP, which the pod has
		// once it runs on a node: without one, no hook ever registered it.
		return drainTarget{}, "", fmt.Sprintf("pod %s has no status.hostIP, so it never ran on a node and no Consul agent registered %s: nothing to drain", p, id), nil
	}
	agent := d.scheme + "://" + net.JoinHostPort(host, strconv.Itoa(d.port))
	return drainTarget{
		plan:    fmt.Sprintf("deregister service instance %s from the Consul agent at %s", id, agent),
		awaited: fmt.Sprintf("Consul no longer lists service instance %s", id),
		agent:   agent, service: service, id: id,
	}, "", "", nil
}

func (d *drainConsul) start(ac *engine.ActionContext, p *drainPod, t drainTarget) (map[string]string, string, error) {
	token, err := d.aclToken(ac, p)
	if err != nil {
		return nil, "", err
	}
	gone, err := d.deregister(ac, t, token)
	if err != nil {
		return nil, "", err
	}
	if gone {
		return nil, fmt.Sprintf("the Consul agent at %s no longer had service instance %s", t.agent, t.id), nil
	}
	return nil, fmt.Sprintf("deregistered service instance %s from the Consul agent at %s", t.id, t.agent), nil
}

// done checks the agent first: an instance it still holds (registered
// again, e.g. by a postStart hook still retrying) is deregistered again.
// Then the catalog, which is what clients resolve: the agent syncs a
// deregistration to it a moment later.
func (d *drainConsul) done(ac *engine.ActionContext, p *drainPod, t drainTarget) (bool, string, error) {
	token, err := d.aclToken(ac, p)
	if err != nil {
		return false, "", err
	}
	code, _, err := d.call(ac, http.MethodGet, t.agent+"/v1/agent/service/"+url.PathEscape(t.id), token)
	switch {
	case err != nil:
		return false, "", err
	case code == http.StatusOK:
		if _, err := d.deregister(ac, t, token); err != nil {
			return false, "", err
		}
		return false, "the agent listed it again, and it was deregistered again", nil
	case code != http.StatusNotFound:
		return false, "", fmt.Errorf("Consul agent at %s: GET /v1/agent/service/%s: HTTP %d", t.agent, t.id, code)
	}
	code, body, err := d.call(ac, http.MethodGet, t.agent+"/v1/catalog/service/"+url.PathEscape(t.service), token)
	if err != nil {
		return false, "", err
	}
	if code != http.StatusOK {
		return false, "", fmt.Errorf("Consul agent at %s: GET /v1/catalog/service/%s: HTTP %d: %s", t.agent, t.service, code, drainPrintable(body))
	}
	var entries []struct{ ServiceID string }
	if err := json.Unmarshal(body, &entries); err != nil {
		return false, "", fmt.Errorf("Consul agent at %s: GET /v1/catalog/service/%s: %v", t.agent, t.service, err)
	}
	for _, e := range entries {
		if e.ServiceID == t.id {
			return false, "the Consul catalog still lists it", nil
		}
	}
	return true, "", nil
}

// deregister deregisters the instance; gone is true when the agent did
// not have it (HTTP 404), which is as good.
func (d *drainConsul) deregister(ac *engine.ActionContext, t drainTarget, token string) (gone bool, err error) {
	code, body, err := d.call(ac, http.MethodPut, t.agent+"/v1/agent/service/deregister/"+url.PathEscape(t.id), token)
	switch {
	case err != nil:
		return false, err
	case code == http.StatusOK:
		return false, nil
	case code == http.StatusNotFound:
		return true, nil
	}
	return false, fmt.Errorf("Consul agent at %s: deregistering %s: HTTP %d: %s", t.agent, t.id, code, drainPrintable(body))
}

// call makes one request to the agent and returns the status and body; an
// unreachable agent is an error saying so, which failurePolicy decides.
func (d *drainConsul) call(ac *engine.ActionContext, method, u, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ac.Context, method, u, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("the Consul agent cannot be reached: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, drainMaxAnswer))
	if err != nil {
		return 0, nil, fmt.Errorf("the Consul agent's answer to %s %s: %w", method, u, err)
	}
	return resp.StatusCode, body, nil
}

// aclToken reads the ACL token from the pod's namespace, as the hooks get
// it, directly from the API server when it can: a cache would watch every
// Secret of the cluster for one key.
func (d *drainConsul) aclToken(ac *engine.ActionContext, p *drainPod) (string, error) {
	if d.token == nil {
		return "", nil
	}
	if ac.Cluster == nil {
		return "", fmt.Errorf("the ACL token Secret %s/%s cannot be read: no cluster", p.namespace, d.token.Name)
	}
	get := ac.Cluster.Get
	if live, ok := ac.Cluster.(engine.LiveGetter); ok {
		get = live.GetLive
	}
	secret, err := get(ac.Context, secretsResource, p.namespace, d.token.Name)
	if err != nil {
		return "", fmt.Errorf("the ACL token Secret %s/%s: %w", p.namespace, d.token.Name, err)
	}
	data, _ := secret.Object["data"].(map[string]any)
	encoded, ok := data[d.token.Key].(string)
	if !ok {
		return "", fmt.Errorf("the ACL token Secret %s/%s has no key %q", p.namespace, d.token.Name, d.token.Key)
	}
	token, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return "", fmt.Errorf("the ACL token Secret %s/%s, key %q: %v", p.namespace, d.token.Name, d.token.Key, err)
	}
	return strings.TrimSpace(string(token)), nil
}

// --- endpoint ---

// drainEndpoint asks an HTTPS service to drain the pod. Protocol: every
// DELETE POSTs {"namespace", "name", "uid"}; the service starts draining
// on the first and answers 2xx with {"done": true} once it is over, or
// {"done": false, "message": "..."} meanwhile. Any other answer is an
// error.
type drainEndpoint struct {
	url    string
	client *http.Client
}

func compileDrainEndpoint(c *engine.CompileContext, args *drainEndpointArgs) (*drainEndpoint, error) {
	u, err := url.Parse(args.URL)
	switch {
	case args.URL == "":
		return nil, c.FieldError("endpoint.url", "is required")
	case err != nil:
		return nil, c.FieldError("endpoint.url", "%v", err)
	case u.Scheme != "https":
		return nil, c.FieldError("endpoint.url", "%q: the scheme must be https: the pod's identity is sent", args.URL)
	case u.Host == "":
		return nil, c.FieldError("endpoint.url", "%q: a host is required", args.URL)
	case u.User != nil:
		return nil, c.FieldError("endpoint.url", "%q: user information is not allowed (it would be logged with the URL)", args.URL)
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if args.CABundle != "" {
		pool, err := drainCertPool(args.CABundle)
		if err != nil {
			return nil, c.FieldError("endpoint.caBundle", "%v", err)
		}
		tlsConfig.RootCAs = pool
	}
	return &drainEndpoint{url: u.String(), client: &http.Client{
		Timeout:   drainHTTPTimeout,
		Transport: &http.Transport{TLSClientConfig: tlsConfig, Proxy: http.ProxyFromEnvironment},
		// A redirect would turn the POST into a GET, maybe to http.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// drainCertPool parses a PEM bundle of certificates.
func drainCertPool(bundle string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := []byte(bundle); ; n++ {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %s, want CERTIFICATE", n+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %v", n+1, err)
		}
		pool.AddCert(cert)
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate: want one or more -----BEGIN CERTIFICATE----- blocks")
	}
	return pool, nil
}

func (e *drainEndpoint) callsOut() bool { return true }

func (e *drainEndpoint) target(_ *engine.ActionContext, p *drainPod) (drainTarget, string, string, error) {
	return drainTarget{
		plan:    "ask " + e.url + " to drain it",
		awaited: e.url + " answers done",
	}, "", "", nil
}

func (e *drainEndpoint) start(ac *engine.ActionContext, p *drainPod, t drainTarget) (map[string]string, string, error) {
	done, message, err := e.post(ac, p)
	if err != nil {
		return nil, "", err
	}
	started := "asked " + e.url + " to drain it"
	switch {
	case done:
		started += " (it answered done)"
	case message != "":
		started += " (it says: " + message + ")"
	}
	return nil, started, nil
}

func (e *drainEndpoint) done(ac *engine.ActionContext, p *drainPod, _ drainTarget) (bool, string, error) {
	done, message, err := e.post(ac, p)
	if message != "" {
		message = "it says: " + message
	}
	return done, message, err
}

// post makes one call of the protocol.
func (e *drainEndpoint) post(ac *engine.ActionContext, p *drainPod) (done bool, message string, err error) {
	body, err := json.Marshal(map[string]string{"namespace": p.namespace, "name": p.name, "uid": p.uid})
	if err != nil {
		return false, "", err
	}
	req, err := http.NewRequestWithContext(ac.Context, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return false, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return false, "", fmt.Errorf("the drain endpoint cannot be reached: %w", err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, drainMaxAnswer))
	if err != nil {
		return false, "", fmt.Errorf("the drain endpoint %s: %w", e.url, err)
	}
	if resp.StatusCode/100 != 2 {
		return false, "", fmt.Errorf("the drain endpoint %s answered HTTP %d: %s", e.url, resp.StatusCode, drainPrintable(answer))
	}
	var a struct {
		Done    *bool  `json:"done"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(answer, &a); err != nil || a.Done == nil {
		return false, "", fmt.Errorf(`the drain endpoint %s answered %s, not {"done": true|false}`, e.url, drainPrintable(answer))
	}
	return *a.Done, drainPrintable([]byte(a.Message)), nil
}

// drainPrintable shortens text from another system for a message, without
// control characters.
func drainPrintable(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.TrimSpace(string(b)))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// --- annotate ---

// drainAnnotate sets an annotation on the pod, written with the start,
// that another controller acts on, and waits until doneWhen holds on the
// pod as stored.
type drainAnnotate struct {
	key, value string
	doneWhen   *engine.Expression
	source     string
}

func compileDrainAnnotate(c *engine.CompileContext, args *drainAnnotateArgs) (*drainAnnotate, error) {
	switch {
	case args.Key == "":
		return nil, c.FieldError("annotate.key", "is required")
	case args.Key == drainStartedAnnotation:
		return nil, c.FieldError("annotate.key", "%s is where the builtin records the start; choose another key", drainStartedAnnotation)
	}
	if msgs := validation.IsQualifiedName(args.Key); len(msgs) > 0 {
		return nil, c.FieldError("annotate.key", "%q is not a valid annotation key: %s", args.Key, strings.Join(msgs, "; "))
	}
	a := &drainAnnotate{key: args.Key, value: args.Value, source: strings.TrimSpace(args.DoneWhen)}
	if a.value == "" {
		a.value = "true"
	}
	if a.source == "" {
		return nil, c.FieldError("annotate.doneWhen", "is required: a condition on oldObject (the pod as stored) that holds once the cleanup is done")
	}
	var err error
	if a.doneWhen, err = c.CompileExpression("annotate.doneWhen", args.DoneWhen, cel.BoolType); err != nil {
		return nil, err
	}
	return a, nil
}

// callsOut is false: doneWhen reads the request's oldObject only.
func (a *drainAnnotate) callsOut() bool { return false }

func (a *drainAnnotate) target(_ *engine.ActionContext, p *drainPod) (drainTarget, string, string, error) {
	return drainTarget{
		plan:    fmt.Sprintf("set the annotation %s=%q", a.key, a.value),
		awaited: fmt.Sprintf("doneWhen holds (%s)", a.source),
	}, "", "", nil
}

func (a *drainAnnotate) start(*engine.ActionContext, *drainPod, drainTarget) (map[string]string, string, error) {
	return map[string]string{a.key: a.value}, fmt.Sprintf("set the annotation %s=%q", a.key, a.value), nil
}

func (a *drainAnnotate) done(ac *engine.ActionContext, _ *drainPod, _ drainTarget) (bool, string, error) {
	v, err := ac.Eval(a.doneWhen)
	if err != nil {
		return false, "", err
	}
	done, _ := v.(bool)
	return done, "", nil
}

// Compile-time checks of the extension points.
var (
	_ engine.SideEffecter = drainBeforeDelete{}
	_ engine.Accessor     = drainBeforeDelete{}
)
