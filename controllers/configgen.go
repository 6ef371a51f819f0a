package controllers

// Generation of the MutatingWebhookConfiguration and
// ValidatingWebhookConfiguration that route requests to Celadon, from the
// policy set it serves. They are never written by hand: what a cluster
// sends to Celadon follows from the policies' resources, operations and
// failurePolicy.

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/webhook"
)

// Defaults and fixed values of the generated configurations.
const (
	// DefaultConfigName names both configurations.
	DefaultConfigName = "celadon"
	// DefaultServicePort is the port of ServiceRef when it has none.
	DefaultServicePort int32 = 443
	// DefaultTimeoutSeconds is the webhooks' timeoutSeconds.
	DefaultTimeoutSeconds int32 = 5

	// NamespaceNameLabel is the label the API server sets on every
	// Namespace to its name; the namespaceSelector excludes namespaces by it.
	NamespaceNameLabel = "kubernetes.io/metadata.name"

	// Labels set on both configurations.
	LabelName      = "app.kubernetes.io/name"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	appName        = "celadon"

	webhookDomain = "celadon.io"
)

// AlwaysExcludedNamespaces are excluded from every webhook, in addition to
// the Service's namespace and ConfigOptions.ExcludeNamespaces, so that a
// webhook that is down cannot stop the control plane from working.
var AlwaysExcludedNamespaces = []string{"kube-system", "kube-node-lease"}

// ConfigOptions configure Configurations.
type ConfigOptions struct {
	// Name is the object name of both configurations. Default "celadon".
	Name string
	// Service is the Service in front of Celadon. Exactly one of Service and
	// URL must be set.
	Service *ServiceRef
	// URL is the base URL of Celadon, e.g. "https://127.0.0.1:9443", for
	// development and end-to-end tests; the webhook paths are appended to it.
	URL string
	// CABundle is the PEM bundle the API server verifies Celadon's
	// certificate with. It may be empty, e.g. when cert-manager injects it
	// (see Annotations).
	CABundle []byte
	// TimeoutSeconds is each webhook's timeout, 1 to 30. Default 5.
	TimeoutSeconds int32
	// ExcludeNamespaces are namespaces no webhook is called for, in addition
	// to AlwaysExcludedNamespaces and the Service's namespace.
	ExcludeNamespaces []string
	// Annotations are set on both configurations, e.g.
	// cert-manager.io/inject-ca-from.
	Annotations map[string]string
}

// ServiceRef is the Service in front of Celadon.
type ServiceRef struct {
	Namespace, Name string
	// Port is the Service's port. Default 443.
	Port int32
}

// webhookName returns the name of the webhook serving one phase and
// failurePolicy, e.g. "fail.mutate.celadon.io".
func webhookName(t engine.ActionType, fp engine.FailurePolicy) string {
	phase := "validate"
	if t == engine.Mutating {
		phase = "mutate"
	}
	return strings.ToLower(string(fp)) + "." + phase + "." + webhookDomain
}

// Configurations generates the webhook configurations routing requests to
// Celadon for the policies of snap.
//
// Each configuration has one webhook per failurePolicy its policies use
// (fail.mutate.celadon.io, ignore.mutate.celadon.io, fail.validate... and
// ignore.validate...), served at WebhookPath, so that the API server applies
// each policy's failurePolicy when Celadon cannot be reached. A webhook's
// rules are the union of its policies' resources and operations; its
// namespaceSelector excludes AlwaysExcludedNamespaces, the Service's
// namespace and o.ExcludeNamespaces. It is as narrow as its policies allow
// (narrow.go): the selector requirements all of them share, and a
// matchCondition that is the OR of each policy's own match, so that the
// API server does not call Celadon for a request no policy can match.
// Celadon still evaluates every selector and condition. A webhook's sideEffects
// is None unless one of its policies' builtins declares side effects
// (engine.SideEffectsOf), NoneOnDryRun then.
//
// A configuration whose policies need no webhook is returned with an empty
// list of webhooks, so that applying it clears a previous one. A policy
// whose builtin did not resolve (a compile error) is counted in both
// phases, as the server evaluates it in both. The output depends only on
// snap and o: the same input gives the same objects.
func Configurations(snap *engine.Snapshot, o ConfigOptions) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	c, err := newConfigGen(o)
	if err != nil {
		return nil, nil, fmt.Errorf("webhook configurations: %w", err)
	}

	sets, err := webhookSets(snap)
	if err != nil {
		return nil, nil, fmt.Errorf("webhook configurations: %w", err)
	}

	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: c.objectMeta(),
		Webhooks:   []admissionregistrationv1.MutatingWebhook{},
	}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: c.objectMeta(),
		Webhooks:   []admissionregistrationv1.ValidatingWebhook{},
	}
	for _, k := range webhookKeys {
		set := sets[k]
		rules := set.rules()
		if len(rules) == 0 {
			continue
		}
		name := webhookName(k.t, k.fp)
		n := set.narrow(name)
		if k.t == engine.Mutating {
			mwc.Webhooks = append(mwc.Webhooks, admissionregistrationv1.MutatingWebhook{
				Name:                    name,
				ClientConfig:            c.clientConfig(webhook.WebhookPath(k.t, k.fp)),
				Rules:                   rules,
				FailurePolicy:           ptr.To(admissionregistrationv1.FailurePolicyType(k.fp)),
				MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
				NamespaceSelector:       n.namespaceSelector(c.excluded),
				ObjectSelector:          n.objectSelector,
				MatchConditions:         n.matchConditions,
				SideEffects:             ptr.To(set.sideEffects()),
				TimeoutSeconds:          ptr.To(c.timeoutFor(set)),
				AdmissionReviewVersions: []string{"v1", "v1beta1"},
				ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			})
			continue
		}
		vwc.Webhooks = append(vwc.Webhooks, admissionregistrationv1.ValidatingWebhook{
			Name:                    name,
			ClientConfig:            c.clientConfig(webhook.WebhookPath(k.t, k.fp)),
			Rules:                   rules,
			FailurePolicy:           ptr.To(admissionregistrationv1.FailurePolicyType(k.fp)),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
			NamespaceSelector:       n.namespaceSelector(c.excluded),
			ObjectSelector:          n.objectSelector,
			MatchConditions:         n.matchConditions,
			SideEffects:             ptr.To(set.sideEffects()),
			TimeoutSeconds:          ptr.To(c.timeoutFor(set)),
			AdmissionReviewVersions: []string{"v1", "v1beta1"},
		})
	}
	return mwc, vwc, nil
}

// webhookKey identifies one generated webhook.
type webhookKey struct {
	t  engine.ActionType
	fp engine.FailurePolicy
}

// webhookKeys lists the generated webhooks in order: Fail before Ignore,
// the order of their names, as the API server calls the webhooks of a
// configuration in their listed order.
var webhookKeys = []webhookKey{
	{engine.Mutating, engine.Fail}, {engine.Validating, engine.Fail},
	{engine.Mutating, engine.Ignore}, {engine.Validating, engine.Ignore},
}

// webhookSets sorts the policies of snap into the webhooks serving them.
func webhookSets(snap *engine.Snapshot) (map[webhookKey]*ruleSet, error) {
	if snap == nil {
		return nil, errors.New("no policy snapshot")
	}
	sets := map[webhookKey]*ruleSet{}
	for _, p := range snap.Policies {
		fp := p.Policy.Spec.FailurePolicy
		if fp != engine.Fail && fp != engine.Ignore {
			return nil, fmt.Errorf("policy %q has failurePolicy %q, want Fail or Ignore", p.Name(), fp)
		}
		for _, t := range []engine.ActionType{engine.Mutating, engine.Validating} {
			if p.Type != 0 && p.Type != t {
				continue
			}
			k := webhookKey{t, fp}
			if sets[k] == nil {
				sets[k] = newRuleSet()
			}
			sets[k].add(p)
		}
	}
	return sets, nil
}

// timeoutFor returns a webhook's timeoutSeconds: the configured one, or the
// smallest that its policies ask for when that is shorter, so that a policy
// on a hot path (kubelets' node status) can fail open quickly.
func (c *configGen) timeoutFor(set *ruleSet) int32 {
	if set.timeout != 0 && set.timeout < c.timeout {
		return set.timeout
	}
	return c.timeout
}

// configGen holds checked ConfigOptions with defaults applied.
type configGen struct {
	name        string
	service     *ServiceRef
	url         *url.URL
	caBundle    []byte
	timeout     int32
	excluded    []string
	annotations map[string]string
}

// ExcludedNamespaces returns the namespaces no generated webhook is called
// for, sorted: AlwaysExcludedNamespaces, the Service's namespace and
// ExcludeNamespaces. A controller must not act there either: it would do
// what admission never could.
func (o ConfigOptions) ExcludedNamespaces() []string {
	out := slices.Clone(AlwaysExcludedNamespaces)
	if o.Service != nil {
		out = append(out, o.Service.Namespace)
	}
	for _, ns := range o.ExcludeNamespaces {
		if ns != "" {
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Check reports what is wrong with the options, as Configurations would.
func (o ConfigOptions) Check() error {
	_, err := newConfigGen(o)
	return err
}

func newConfigGen(o ConfigOptions) (*configGen, error) {
	c := &configGen{name: o.Name, timeout: o.TimeoutSeconds}
	if c.name == "" {
		c.name = DefaultConfigName
	}
	if msgs := validation.IsDNS1123Subdomain(c.name); len(msgs) > 0 {
		return nil, fmt.Errorf("name %q: %s", c.name, strings.Join(msgs, "; "))
	}

	switch {
	case o.Service != nil && o.URL != "":
		return nil, errors.New("set a Service or a URL, not both")
	case o.Service == nil && o.URL == "":
		return nil, errors.New("a Service or a URL is required")
	case o.Service != nil:
		s := *o.Service
		if s.Port == 0 {
			s.Port = DefaultServicePort
		}
		if msgs := validation.IsDNS1123Label(s.Namespace); len(msgs) > 0 {
			return nil, fmt.Errorf("service namespace %q: %s", s.Namespace, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsDNS1035Label(s.Name); len(msgs) > 0 {
			return nil, fmt.Errorf("service name %q: %s", s.Name, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidPortNum(int(s.Port)); len(msgs) > 0 {
			return nil, fmt.Errorf("service port %d: %s", s.Port, strings.Join(msgs, "; "))
		}
		c.service = &s
	default:
		u, err := url.Parse(o.URL)
		switch {
		case err != nil:
			return nil, fmt.Errorf("url: %v", err)
		case u.Scheme != "https":
			return nil, fmt.Errorf("url %q: the scheme must be https", o.URL)
		case u.Host == "":
			return nil, fmt.Errorf("url %q: a host is required", o.URL)
		case u.User != nil:
			return nil, fmt.Errorf("url %q: user information is not allowed", o.URL)
		case u.RawQuery != "" || u.ForceQuery:
			return nil, fmt.Errorf("url %q: a query is not allowed", o.URL)
		case u.Fragment != "" || strings.Contains(o.URL, "#"):
			return nil, fmt.Errorf("url %q: a fragment is not allowed", o.URL)
		}
		u.Path = strings.TrimRight(u.Path, "/")
		u.RawPath = ""
		c.url = u
	}

	if len(o.CABundle) > 0 {
		if err := checkCABundle(o.CABundle); err != nil {
			return nil, fmt.Errorf("caBundle: %w", err)
		}
		c.caBundle = append([]byte(nil), o.CABundle...)
	}

	switch {
	case c.timeout == 0:
		c.timeout = DefaultTimeoutSeconds
	case c.timeout < 1 || c.timeout > 30:
		return nil, fmt.Errorf("timeoutSeconds %d: must be between 1 and 30", c.timeout)
	}

	for _, ns := range o.ExcludeNamespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			return nil, fmt.Errorf("excluded namespace %q: %s", ns, strings.Join(msgs, "; "))
		}
	}
	c.excluded = o.ExcludedNamespaces()

	for k, v := range o.Annotations {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			return nil, fmt.Errorf("annotation %q: %s", k, strings.Join(msgs, "; "))
		}
		if c.annotations == nil {
			c.annotations = map[string]string{}
		}
		c.annotations[k] = v
	}
	return c, nil
}

// checkCABundle checks that b is a PEM bundle of certificates.
func checkCABundle(b []byte) error {
	n := 0
	for rest := b; ; n++ {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is %s, want CERTIFICATE", n+1, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %v", n+1, err)
		}
	}
	if n == 0 {
		return errors.New("no PEM certificate: want one or more -----BEGIN CERTIFICATE----- blocks")
	}
	return nil
}

func (c *configGen) objectMeta() metav1.ObjectMeta {
	m := metav1.ObjectMeta{
		Name:   c.name,
		Labels: map[string]string{LabelName: appName, LabelManagedBy: appName},
	}
	if len(c.annotations) > 0 {
		m.Annotations = make(map[string]string, len(c.annotations))
		for k, v := range c.annotations {
			m.Annotations[k] = v
		}
	}
	return m
}

func (c *configGen) clientConfig(path string) admissionregistrationv1.WebhookClientConfig {
	cc := admissionregistrationv1.WebhookClientConfig{}
	if len(c.caBundle) > 0 {
		cc.CABundle = append([]byte(nil), c.caBundle...)
	}
	if c.service != nil {
		cc.Service = &admissionregistrationv1.ServiceReference{
			Namespace: c.service.Namespace,
			Name:      c.service.Name,
			Path:      ptr.To(path),
			Port:      ptr.To(c.service.Port),
		}
		return cc
	}
	u := *c.url
	u.Path += path
	cc.URL = ptr.To(u.String())
	return cc
}

// Operations, as bits of an opSet, in sorted order.
var opNames = [...]admissionregistrationv1.OperationType{
	admissionregistrationv1.Connect,
	admissionregistrationv1.Create,
	admissionregistrationv1.Delete,
	admissionregistrationv1.Update,
}

type opSet uint8

const allOps = opSet(1)<<len(opNames) - 1

func opBit(op string) opSet {
	for i, n := range opNames {
		if string(n) == op {
			return 1 << i
		}
	}
	return 0
}

// operations lists the set's operations, sorted; all of them is "*".
func (s opSet) operations() []admissionregistrationv1.OperationType {
	if s == allOps {
		return []admissionregistrationv1.OperationType{admissionregistrationv1.OperationAll}
	}
	var out []admissionregistrationv1.OperationType
	for i, n := range opNames {
		if s&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// ruleSet collects the (resource, operations) pairs of the policies of one
// webhook.
type ruleSet struct {
	ops map[engine.ResourceRule]opSet
	// timeout is the smallest spec.timeoutSeconds of the policies added, 0
	// when none sets one.
	timeout int32
	// policies are the policies added, in order.
	policies []*engine.CompiledPolicy
	// connect is true when a policy added matches CONNECT.
	connect bool
	// sideEffecting is true when a policy added dispatches to a builtin
	// that acts on other systems (engine.SideEffectsOf).
	sideEffecting bool
}

// sideEffects is the webhook's sideEffects: None unless one of its
// policies' builtins declares side effects, so that the API server knows
// a dry run of the others is harmless, and NoneOnDryRun, the only other
// class Celadon's builtins may declare, otherwise.
func (s *ruleSet) sideEffects() admissionregistrationv1.SideEffectClass {
	if s.sideEffecting {
		return admissionregistrationv1.SideEffectClassNoneOnDryRun
	}
	return admissionregistrationv1.SideEffectClassNone
}

func newRuleSet() *ruleSet { return &ruleSet{ops: map[engine.ResourceRule]opSet{}} }

func (s *ruleSet) add(p *engine.CompiledPolicy) {
	s.policies = append(s.policies, p)
	s.connect = s.connect || slices.Contains(p.Operations(), "CONNECT")
	if b := p.Builtin(); b != nil && engine.SideEffectsOf(b) != engine.SideEffectsNone {
		s.sideEffecting = true
	}
	if t := p.Policy.Spec.TimeoutSeconds; t != nil && (s.timeout == 0 || *t < s.timeout) {
		s.timeout = *t
	}
	var ops opSet
	for _, op := range p.Operations() {
		ops |= opBit(op)
	}
	if ops == 0 {
		return
	}
	for _, r := range p.Resources() {
		s.ops[r] |= ops
	}
	// The pod controllers a pod policy was extended to (engine autogen).
	var aops opSet
	for _, op := range p.AutogenOperations() {
		aops |= opBit(op)
	}
	for _, r := range p.Autogen() {
		s.ops[r.ResourceRule] |= aops
	}
}

// covers reports whether every request a matches, b matches too, with the
// engine's matching semantics: "*" matches every resource but not
// subresources, "x/*" every subresource of x, "*/*" everything.
func covers(a, b engine.ResourceRule) bool {
	if a.Group != "*" && a.Group != b.Group {
		return false
	}
	if a.Resource != "*" && a.Resource != b.Resource {
		return false
	}
	return a.Subresource == b.Subresource ||
		(a.Subresource == "*" && b.Subresource != "") ||
		(a.Subresource == "*" && a.Resource == "*")
}

func resourceString(r engine.ResourceRule) string {
	if r.Subresource == "" {
		return r.Resource
	}
	return r.Resource + "/" + r.Subresource
}

// rules merges the set into admission rules matching exactly the union of
// its pairs. An operation on a resource that a wider resource of the set
// already matches (pods under "*", pods/status under "pods/*") is dropped
// first, which also keeps the rules valid: the API server rejects a rule
// listing both "*" and "pods", or "pods/*" and "pods/status". Then the
// resources of a group with the same operations share a rule, and groups
// with the same resources and operations share one too. Everything is
// sorted.
func (s *ruleSet) rules() []admissionregistrationv1.RuleWithOperations {
	if s == nil {
		return nil
	}
	// Drop what a strictly wider resource already matches. The wider
	// resources' own sets, not their reduced ones, are subtracted: covering
	// is transitive, so the widest keeps each operation.
	reduced := make(map[engine.ResourceRule]opSet, len(s.ops))
	for b, ops := range s.ops {
		for a, aops := range s.ops {
			if a != b && covers(a, b) {
				ops &^= aops
			}
		}
		if ops != 0 {
			reduced[b] = ops
		}
	}

	// Resources by (group, operations).
	type groupOps struct {
		group string
		ops   opSet
	}
	resources := map[groupOps][]string{}
	for r, ops := range reduced {
		k := groupOps{r.Group, ops}
		resources[k] = append(resources[k], resourceString(r))
	}

	// Groups by (operations, resources).
	type opsResources struct {
		ops       opSet
		resources string
	}
	groups := map[opsResources][]string{}
	for k, res := range resources {
		sort.Strings(res)
		ok := opsResources{k.ops, strings.Join(res, "\x00")}
		groups[ok] = append(groups[ok], k.group)
	}

	out := make([]admissionregistrationv1.RuleWithOperations, 0, len(groups))
	for k, gs := range groups {
		sort.Strings(gs)
		out = append(out, admissionregistrationv1.RuleWithOperations{
			Operations: k.ops.operations(),
			Rule: admissionregistrationv1.Rule{
				APIGroups:   gs,
				APIVersions: []string{"*"},
				Resources:   strings.Split(k.resources, "\x00"),
				Scope:       ptr.To(admissionregistrationv1.AllScopes),
			},
		})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if c := slices.Compare(a.APIGroups, b.APIGroups); c != 0 {
			return c < 0
		}
		if c := slices.Compare(a.Operations, b.Operations); c != 0 {
			return c < 0
		}
		return slices.Compare(a.Resources, b.Resources) < 0
	})
	return out
}
