package builtins

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"

	"celadon.io/celadon/engine"
)

func init() { register(protectNamespaceContents{}) }

// protectNamespaceContents denies the DELETE of a Namespace that holds
// protected objects, naming them. Without it, deleting the namespace of a
// protected Deployment lets the namespace controller delete everything else
// in it, then stop at the Deployment (protect-delete denies its DELETE),
// leaving a half-emptied namespace stuck in Terminating: the opposite of
// protecting it. Refused at the namespace's DELETE, nothing is deleted.
//
// Lookups go to the cluster cache (engine.ObjectLister) and are confirmed
// by one direct LIST per resource (engine.LiveLister), bounded: the cache
// alone may deny, never allow.
type protectNamespaceContents struct{}

// protectNamespaceContentsArgs is protectNamespaceContents' spec.with.
type protectNamespaceContentsArgs struct {
	// Resources are the namespaced resources to look in, each
	// "group/version/resource" ("v1/services" for the core group): a list
	// needs the version. Default: those protect-delete covers.
	Resources []string `json:"resources"`
	// Selector says which objects are protected. Default: the label
	// celadon.io/protected=true, as protect-delete's objectSelector.
	Selector *metav1.LabelSelector `json:"selector"`
}

// The defaults: what policies/protect-delete.yaml protects.
var (
	defaultProtectedResources = []string{"apps/v1/deployments", "apps/v1/statefulsets", "v1/services"}
	defaultProtectedSelector  = metav1.LabelSelector{MatchLabels: map[string]string{"celadon.io/protected": "true"}}
)

// Bounds of one request's work, whatever the namespace holds.
const (
	// maxProtectedResources bounds the resources listed: each may cost a
	// direct LIST.
	maxProtectedResources = 16
	// maxNamedProtected is how many objects a denial names; it counts the
	// rest. Each direct LIST asks for no more than one beyond it.
	maxNamedProtected = 10
)

// Name is the policy's spec.action.
func (protectNamespaceContents) Name() string { return "protectNamespaceContents" }

// Type is Validating: the namespace is never changed.
func (protectNamespaceContents) Type() engine.ActionType { return engine.Validating }

// Compile checks spec.with.
func (protectNamespaceContents) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args protectNamespaceContentsArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	a := namespaceContentsAction{}
	resources := args.Resources
	if resources == nil {
		resources = defaultProtectedResources
	}
	switch {
	case len(resources) == 0:
		return nil, c.FieldError("resources", "is empty: the policy would protect nothing; leave it out for %s", strings.Join(defaultProtectedResources, ", "))
	case len(resources) > maxProtectedResources:
		return nil, c.FieldError("resources", "has %d entries, more than %d: each may cost a direct LIST at every namespace DELETE", len(resources), maxProtectedResources)
	}
	seen := map[schema.GroupVersionResource]bool{}
	for i, r := range resources {
		field := fmt.Sprintf("resources[%d]", i)
		gvr, err := parseGroupVersionResource(r)
		if err != nil {
			return nil, c.FieldError(field, "%v", err)
		}
		if gvr.Group == "" && gvr.Resource == "namespaces" {
			return nil, c.FieldError(field, "namespaces are cluster-scoped: a namespace holds none")
		}
		if seen[gvr] {
			return nil, c.FieldError(field, "%q is listed twice", r)
		}
		seen[gvr] = true
		a.resources = append(a.resources, gvr)
	}
	sel := defaultProtectedSelector
	if args.Selector != nil {
		sel = *args.Selector
	}
	if len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0 {
		// An empty selector matches every object: no namespace that holds
		// anything could be deleted.
		return nil, c.FieldError("selector", "is empty: it would protect every object; name the protection label")
	}
	selector, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		return nil, c.FieldError("selector", "%v", err)
	}
	a.selector = selector
	return a, nil
}

// apiVersion is the form of a Kubernetes API version.
var apiVersion = regexp.MustCompile(`^v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?$`)

// parseGroupVersionResource reads "v1/services" or "apps/v1/deployments".
func parseGroupVersionResource(s string) (schema.GroupVersionResource, error) {
	parts := strings.Split(s, "/")
	var gvr schema.GroupVersionResource
	switch len(parts) {
	case 2:
		gvr = schema.GroupVersionResource{Version: parts[0], Resource: parts[1]}
	case 3:
		gvr = schema.GroupVersionResource{Group: parts[0], Version: parts[1], Resource: parts[2]}
		if gvr.Group == "" {
			return gvr, fmt.Errorf("%q: the group is empty; write v1/%s for the core group", s, gvr.Resource)
		}
	default:
		return gvr, fmt.Errorf("%q is not group/version/resource (apps/v1/deployments) nor version/resource (v1/services)", s)
	}
	if !apiVersion.MatchString(gvr.Version) {
		// apps/deployments, as match.resources writes it, would otherwise
		// read as version "apps" of the core group, and fail every DELETE.
		return gvr, fmt.Errorf("%q: %q is not a version such as v1 or v1beta1: a list needs the version (apps/v1/deployments)", s, gvr.Version)
	}
	if msgs := validation.IsDNS1123Subdomain(gvr.Resource); len(msgs) > 0 || strings.Contains(gvr.Resource, ".") {
		return gvr, fmt.Errorf("%q: resource %q is not a plural resource name such as deployments", s, gvr.Resource)
	}
	return gvr, nil
}

// Access implements engine.Accessor: the informer caches behind
// ClusterReads list and watch, and the check before allowing lists.
func (protectNamespaceContents) Access() []engine.Access {
	return []engine.Access{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments", "statefulsets"}, Verbs: []string{"get", "list", "watch"},
			Why: "the protected objects a namespace holds, before it is deleted (a metadata-only informer cache; list re-checks a namespace the cache finds empty)"},
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "list", "watch"},
			Why: "the protected Services a namespace holds, as above"},
	}
}

// namespaceContentsAction is a compiled protectNamespaceContents.
type namespaceContentsAction struct {
	resources []schema.GroupVersionResource
	selector  labels.Selector
}

// ClusterReads implements engine.ClusterReader: only names and labels are
// read, so metadata is enough. The cache answers when the direct reads are
// over the server's rate, and for a cluster that cannot list directly.
func (a namespaceContentsAction) ClusterReads() []engine.ClusterRead {
	reads := make([]engine.ClusterRead, len(a.resources))
	for i, r := range a.resources {
		reads[i] = engine.ClusterRead{Resource: r, MetadataOnly: true}
	}
	return reads
}

// Run denies the DELETE of a namespace that holds protected objects.
func (a namespaceContentsAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	if ac.Request != nil && ac.Request.Operation != admissionv1.Delete {
		return skip(fmt.Sprintf("namespaces are checked on DELETE, not on %s", ac.Request.Operation)), nil
	}
	old := ac.OldObject()
	if k, _ := old.Get("kind").Str(); k != "" && k != "Namespace" {
		return skip(fmt.Sprintf("the object is a %s, not a Namespace", k)), nil
	}
	ns, _ := old.Get("metadata").Get("name").Str()
	if ns == "" && ac.Request != nil {
		ns = ac.Request.Name
	}
	if ns == "" {
		return engine.Outcome{}, errors.New("the namespace being deleted has no name (neither oldObject.metadata.name nor the request's name)")
	}
	if ts, _ := old.Get("metadata").Get("deletionTimestamp").Str(); ts != "" {
		// Its contents are being deleted already: refusing the repeated
		// DELETE saves nothing, and would block the namespace
		// controller's last step (it DELETEs the namespace once emptied).
		return skip("the namespace is being deleted already"), nil
	}
	lister, ok := ac.Cluster.(engine.ObjectLister)
	if !ok {
		return engine.Outcome{}, errors.New("no cluster state to list the namespace's objects in (celadon eval: give it with --cluster)")
	}
	live, canRecheck := ac.Cluster.(engine.LiveLister)

	var named []string
	total, unknown, rechecked, cacheOnly := 0, false, 0, 0
	for _, gvr := range a.resources {
		items, n, err := lister.List(ac, gvr, ns, a.selector, maxNamedProtected+1)
		if err != nil {
			return engine.Outcome{}, fmt.Errorf("listing %s in namespace %s: %w", gvr.GroupResource(), ns, err)
		}
		if canRecheck {
			// The cache follows the API server a moment behind, both ways:
			// allowing on its "none" loses an object labelled just before
			// the DELETE; denying on its "some" refuses an operator who has
			// just removed the label. The API server decides when it can be
			// asked; the cache alone may only deny.
			fresh, fn, err := live.ListLive(ac, gvr, ns, a.selector, maxNamedProtected+1)
			switch {
			case errors.Is(err, engine.ErrLiveReadLimited) && n == 0:
				return engine.Outcome{}, fmt.Errorf("could not confirm that namespace %s holds no protected %s: %w; retry the DELETE", ns, gvr.GroupResource(), err)
			case errors.Is(err, engine.ErrLiveReadLimited):
				cacheOnly++
			case err != nil:
				return engine.Outcome{}, fmt.Errorf("listing %s in namespace %s directly: %w", gvr.GroupResource(), ns, err)
			default:
				items, n = fresh, fn
				rechecked++
			}
		}
		if n < 0 {
			unknown = true
			n = len(items)
		}
		total += n
		for _, o := range items {
			if len(named) < maxNamedProtected {
				named = append(named, describeProtected(gvr, o))
			}
		}
	}
	if total == 0 {
		reason := fmt.Sprintf("namespace %s holds no protected objects (%s)", ns, a.selector)
		if rechecked > 0 {
			reason += fmt.Sprintf("; confirmed by %d direct list%s", rechecked, pluralS(rechecked))
		}
		return engine.Outcome{Reason: reason}, nil
	}
	list := strings.Join(named, ", ")
	switch more := total - len(named); {
	case unknown:
		list += " and more"
	case more > 0:
		list += fmt.Sprintf(" and %d more", more)
	}
	count := fmt.Sprintf("%d protected object%s", total, pluralS(total))
	if unknown {
		count = fmt.Sprintf("at least %d protected objects", total)
	}
	violation := fmt.Sprintf(
		"namespace %s holds %s (%s): %s; deleting it would delete everything else in it and leave it stuck in Terminating. Remove the protection from them first",
		ns, count, a.selector, list)
	if cacheOnly > 0 {
		violation += fmt.Sprintf(" (%d of the resources judged from Celadon's cache alone, which follows the API server a moment behind: too many direct reads right now)", cacheOnly)
	}
	return engine.Outcome{Violation: violation}, nil
}

// describeProtected names an object as kubectl accepts it:
// deployments.apps/api, services/db.
func describeProtected(gvr schema.GroupVersionResource, o *unstructured.Unstructured) string {
	return gvr.GroupResource().String() + "/" + o.GetName()
}
