package builtins

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"

	"celadon.io/celadon/engine"
)

func init() { register(createSecret{}) }

// createSecret makes a Secret exist in every namespace its policy selects:
// a copy of a source Secret (typically an image-pull secret kept in
// Celadon's namespace) or one built from inline data.
//
// Admission has no side effect: when a namespace is created it does not
// exist yet, so nothing can be created in it. The builtin only records the
// intent, in the namespace's annotation celadon.io/secrets
// ("<policy>/<secret>,..."), and its reason names the Secret. The Secret
// itself is written by its controller (create_secret_controller.go, run by
// the server on the elected leader), which evaluates the same policies for
// every namespace through PlanSecrets and keeps the copies in sync.
type createSecret struct{}

// createSecretArgs is createSecret's spec.with.
type createSecretArgs struct {
	// Name is the Secret's name in the target namespace. Required.
	Name string `json:"name"`
	// From copies a source Secret: its type and data.
	From *secretSourceArgs `json:"from"`
	// Type is an inline Secret's type. Default Opaque.
	Type string `json:"type"`
	// Data are inline base64 values; StringData inline text, with ${{ }}
	// templates. Exclusive with From.
	Data       map[string]string `json:"data"`
	StringData map[string]string `json:"stringData"`
	// AddToServiceAccount names the ServiceAccount whose imagePullSecrets
	// gets the Secret; only "default" is supported.
	AddToServiceAccount string `json:"addToServiceAccount"`
	// Labels and Annotations are set on the Secret.
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// secretSourceArgs is with.from.
type secretSourceArgs struct {
	// Namespace holds the source. Default: Celadon's own namespace.
	Namespace string `json:"namespace"`
	// Name is the source's name. Required.
	Name string `json:"name"`
}

// Labels and annotations of the Secrets createSecret manages, and of the
// namespaces it selects.
const (
	// SecretManagedByLabel, set to SecretManagedByValue, marks a Secret as
	// Celadon's: the reconciler never writes a Secret without it.
	SecretManagedByLabel = "app.kubernetes.io/managed-by"
	SecretManagedByValue = "celadon"
	// SecretPolicyAnnotation names the policy a managed Secret comes from.
	SecretPolicyAnnotation = "celadon.io/policy"
	// SecretSourceAnnotation is "<namespace>/<name>" of the source Secret,
	// or "inline".
	SecretSourceAnnotation = "celadon.io/source"
	// NamespaceSecretsAnnotation records on a namespace, at admission, the
	// Secrets that policies will create in it: "<policy>/<secret>,...".
	NamespaceSecretsAnnotation = "celadon.io/secrets"
	// DefaultServiceAccount is the only value of addToServiceAccount.
	DefaultServiceAccount = "default"
)

// Name is the policy's spec.action.
func (createSecret) Name() string { return "createSecret" }

// Type is Mutating: the only change at admission is the namespace's
// annotation.
func (createSecret) Type() engine.ActionType { return engine.Mutating }

// Access implements engine.Accessor: what the reconciler (its controller)
// does. RBAC cannot limit it by name or label: the Secrets' names come from
// the policies and live in every namespace. No delete, no patch of Secrets.
func (createSecret) Access() []engine.Access {
	return []engine.Access{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch", "create", "update"},
			Why: "list and watch feed the cache of the copies (label " + SecretManagedByLabel + "=" + SecretManagedByValue + ") and of the sources " +
				"in Celadon's namespace; get reads a Secret the cache does not hold (a name already taken by a Secret Celadon does not " +
				"manage, a source in another namespace); create and update write the copies"},
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"list", "watch", "patch"},
			Why: "addToServiceAccount: the cache of the ServiceAccounts named default, and the patch adding the Secret to their imagePullSecrets"},
		{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"},
			Why: "Events on the namespaces (SecretCreated, SecretConflict...): a Namespace is cluster-scoped, so its Events go to the namespace default"},
	}
}

// createSecretAction is a compiled createSecret policy.
type createSecretAction struct {
	args       createSecretArgs
	data       map[string][]byte       // decoded with.data
	stringData map[string]*sidecarTmpl // with.stringData, templates compiled
	keys       []string                // of stringData, sorted
}

// Compile checks spec.with and compiles the stringData templates.
func (createSecret) Compile(c *engine.CompileContext) (engine.Action, error) {
	var args createSecretArgs
	if err := c.DecodeWith(&args); err != nil {
		return nil, err
	}
	if args.Name == "" {
		return nil, c.FieldError("name", "is required: the Secret's name in the namespace")
	}
	if msgs := validation.IsDNS1123Subdomain(args.Name); len(msgs) > 0 {
		return nil, c.FieldError("name", "%q is not a valid Secret name: %s", args.Name, strings.Join(msgs, "; "))
	}
	inline := args.Data != nil || args.StringData != nil
	switch {
	case args.From != nil && inline:
		return nil, c.FieldError("from", "give either from (a source Secret to copy) or data/stringData, not both")
	case args.From == nil && !inline:
		return nil, fmt.Errorf("with: one of from (a source Secret to copy) or data/stringData is required")
	case args.From != nil:
		if args.From.Name == "" {
			return nil, c.FieldError("from.name", "is required: the source Secret's name")
		}
		if msgs := validation.IsDNS1123Subdomain(args.From.Name); len(msgs) > 0 {
			return nil, c.FieldError("from.name", "%q is not a valid Secret name: %s", args.From.Name, strings.Join(msgs, "; "))
		}
		if ns := args.From.Namespace; ns != "" {
			if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
				return nil, c.FieldError("from.namespace", "%q is not a valid namespace name: %s", ns, strings.Join(msgs, "; "))
			}
		}
		if args.Type != "" {
			return nil, c.FieldError("type", "is copied from the source Secret; remove it, or use data/stringData")
		}
	}
	a := &createSecretAction{args: args}
	if inline && a.args.Type == "" {
		a.args.Type = string(corev1.SecretTypeOpaque)
	}
	for _, k := range slices.Sorted(maps.Keys(args.Data)) {
		field := "data." + k
		if msgs := validation.IsConfigMapKey(k); len(msgs) > 0 {
			return nil, c.FieldError(field, "%q is not a valid key: %s", k, strings.Join(msgs, "; "))
		}
		v, err := base64.StdEncoding.DecodeString(args.Data[k])
		if err != nil {
			return nil, c.FieldError(field, "is not base64: %v (put text in stringData)", err)
		}
		if a.data == nil {
			a.data = map[string][]byte{}
		}
		a.data[k] = v
	}
	for _, k := range slices.Sorted(maps.Keys(args.StringData)) {
		field := "stringData." + k
		if msgs := validation.IsConfigMapKey(k); len(msgs) > 0 {
			return nil, c.FieldError(field, "%q is not a valid key: %s", k, strings.Join(msgs, "; "))
		}
		if _, dup := args.Data[k]; dup {
			return nil, c.FieldError(field, "key %q is in data too; give it once", k)
		}
		t, err := sidecarCompile(c, field, args.StringData[k])
		if err != nil {
			return nil, err
		}
		if a.stringData == nil {
			a.stringData = map[string]*sidecarTmpl{}
		}
		a.stringData[k] = t
		a.keys = append(a.keys, k)
	}
	if sa := args.AddToServiceAccount; sa != "" && sa != DefaultServiceAccount {
		return nil, c.FieldError("addToServiceAccount", "%q: only %q (the namespace's default ServiceAccount) is supported", sa, DefaultServiceAccount)
	}
	for _, k := range slices.Sorted(maps.Keys(args.Labels)) {
		field := "labels." + k
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			return nil, c.FieldError(field, "%q is not a valid label key: %s", k, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(args.Labels[k]); len(msgs) > 0 {
			return nil, c.FieldError(field, "%q is not a valid label value: %s", args.Labels[k], strings.Join(msgs, "; "))
		}
		if k == SecretManagedByLabel {
			return nil, c.FieldError(field, "is set by Celadon to mark the Secrets it manages")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(args.Annotations)) {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			return nil, c.FieldError("annotations."+k, "%q is not a valid annotation key: %s", k, strings.Join(msgs, "; "))
		}
		if k == SecretPolicyAnnotation || k == SecretSourceAnnotation {
			return nil, c.FieldError("annotations."+k, "is set by Celadon on the Secrets it manages")
		}
	}
	return a, nil
}

// source describes where the Secret's data comes from, for reasons.
func (a *createSecretAction) source() string {
	if a.args.From == nil {
		return "inline data"
	}
	if a.args.From.Namespace == "" {
		return a.args.From.Name + " in Celadon's namespace"
	}
	return a.args.From.Namespace + "/" + a.args.From.Name
}

// Run records the intent on a namespace being created or updated: the
// annotation entry "<policy>/<secret>" and a reason naming the Secret. The
// stringData templates are rendered, so that eval shows one that fails, in
// the reason. Under PlanSecrets (ActionContext.PlanEffects), it plans the
// rendered Secret (an Effect) for the reconciler, and a template that
// fails is an error.
func (a *createSecretAction) Run(ac *engine.ActionContext) (engine.Outcome, error) {
	if ac.Request != nil && ac.Request.Operation != admissionv1.Create && ac.Request.Operation != admissionv1.Update {
		return skip(fmt.Sprintf("Secrets are created for a namespace on CREATE or UPDATE, not on %s", ac.Request.Operation)), nil
	}
	if v, why := objectOfKind(ac, "Namespace"); !v.Exists() {
		return skip(why), nil
	}
	obj := ac.Object()
	md := obj.Get("metadata")
	if !md.Get("deletionTimestamp").IsNull() {
		return skip("the namespace is terminating"), nil
	}
	if phase, _ := obj.Get("status").Get("phase").Str(); phase == string(corev1.NamespaceTerminating) {
		return skip("the namespace is terminating"), nil
	}
	annotations := md.Get("annotations")
	if !annotations.IsNull() && !annotations.IsObject() {
		return engine.Outcome{}, fmt.Errorf("metadata.annotations is a %s, not an object", goType(annotations))
	}
	stringData := make(map[string]string, len(a.keys))
	var renderErr error
	for _, k := range a.keys {
		v, err := a.stringData[k].render(ac)
		if err != nil {
			renderErr = err
			break
		}
		stringData[k], _ = v.(string)
	}
	name, _ := md.Get("name").Str()
	var effects []any
	if ac.PlanEffects {
		if renderErr != nil {
			return engine.Outcome{}, renderErr
		}
		effects = []any{a.plan(ac.Policy, name, stringData)}
	}

	where := "namespace " + name
	if name == "" {
		where = "the namespace"
	}
	reason := fmt.Sprintf("Secret %s will be created in %s from %s", a.args.Name, where, a.source())
	if a.args.AddToServiceAccount != "" {
		reason += " and added to the imagePullSecrets of ServiceAccount " + a.args.AddToServiceAccount
	}
	if renderErr != nil {
		// At admission the namespace may be incomplete (a generateName
		// namespace has no name yet): the intent is recorded, and the
		// reconciler renders the templates, or reports them, once the
		// namespace exists.
		reason += fmt.Sprintf("; its stringData does not render for this object yet (%v): the reconciler renders it once the namespace exists", renderErr)
	}
	entry := ac.Policy + "/" + a.args.Name
	const path = "/metadata/annotations"
	var ops []engine.JSONPatchOp
	switch current, has := annotations.Get(NamespaceSecretsAnnotation).Str(); {
	case !md.IsObject():
		ops = append(ops, engine.Op("add", "/metadata", map[string]any{"annotations": map[string]any{NamespaceSecretsAnnotation: entry}}))
	case annotations.IsNull():
		ops = append(ops, engine.Op("add", path, map[string]any{NamespaceSecretsAnnotation: entry}))
	case !has || current == "":
		ops = append(ops, engine.Op("add", path+"/"+engine.EscapePointer(NamespaceSecretsAnnotation), entry))
	case !hasEntry(current, entry):
		ops = append(ops, engine.Op("replace", path+"/"+engine.EscapePointer(NamespaceSecretsAnnotation), current+","+entry))
	default:
		reason += " (already recorded in " + NamespaceSecretsAnnotation + ")"
	}
	return engine.Outcome{Patch: ops, Reason: reason, Effects: effects}, nil
}

// hasEntry reports whether the comma-separated list holds entry.
func hasEntry(list, entry string) bool {
	for e := range strings.SplitSeq(list, ",") {
		if strings.TrimSpace(e) == entry {
			return true
		}
	}
	return false
}

// plan returns the Secret the policy wants in namespace.
func (a *createSecretAction) plan(policy, namespace string, stringData map[string]string) SecretPlan {
	p := SecretPlan{
		Policy:              policy,
		Namespace:           namespace,
		Name:                a.args.Name,
		AddToServiceAccount: a.args.AddToServiceAccount,
		Labels:              maps.Clone(a.args.Labels),
		Annotations:         maps.Clone(a.args.Annotations),
	}
	if a.args.From != nil {
		p.From = &SecretRef{Namespace: a.args.From.Namespace, Name: a.args.From.Name}
		return p
	}
	p.Type = corev1.SecretType(a.args.Type)
	p.Data = make(map[string][]byte, len(a.data)+len(stringData))
	for k, v := range a.data {
		p.Data[k] = append([]byte(nil), v...)
	}
	for k, v := range stringData {
		p.Data[k] = []byte(v)
	}
	return p
}

// SecretRef names a Secret. An empty Namespace is Celadon's own.
type SecretRef struct {
	Namespace string
	Name      string
}

func (r SecretRef) String() string { return r.Namespace + "/" + r.Name }

// SecretPlan is a Secret a createSecret policy wants in a namespace.
type SecretPlan struct {
	// Policy is the policy's name.
	Policy string
	// Namespace and Name place the Secret.
	Namespace, Name string
	// From is the source to copy, type and data included; nil for inline
	// Secrets, which have Type and Data (stringData rendered) instead.
	From *SecretRef
	Type corev1.SecretType
	Data map[string][]byte
	// AddToServiceAccount is "default" or "".
	AddToServiceAccount string
	// Labels and Annotations are the policy's; the reconciler adds its own.
	Labels, Annotations map[string]string
}

// Source returns the value of SecretSourceAnnotation for the plan, with
// celadonNamespace standing for an empty source namespace.
func (p *SecretPlan) Source(celadonNamespace string) string {
	if p.From == nil {
		return "inline"
	}
	ns := p.From.Namespace
	if ns == "" {
		ns = celadonNamespace
	}
	return ns + "/" + p.From.Name
}

// PlanSecrets returns the Secrets that the createSecret policies of snap
// selecting ns want in it, in policy order, and those policies' results
// (an error result names a policy whose Secret cannot be planned now).
//
// It evaluates ns as the API server would send the CREATE of its current
// state: the engine's own matching decides (namespaceSelector on the
// namespace's labels, objectSelector, conditions), after the mutating
// policies that run before. opts.Phase is ignored; namespaceObject is ns.
func PlanSecrets(ctx context.Context, snap *engine.Snapshot, ns *corev1.Namespace, opts engine.EvalOptions) ([]SecretPlan, []engine.PolicyResult, error) {
	obj := ns.DeepCopy()
	obj.APIVersion, obj.Kind = "v1", "Namespace"
	obj.ManagedFields = nil
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, nil, err
	}
	req := &admissionv1.AdmissionRequest{
		UID:       "celadon-secrets-" + obj.UID,
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Namespace"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "namespaces"},
		Name:      ns.Name,
		Namespace: ns.Name, // as the API server sets it for a Namespace
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}
	opts.Phase = engine.PhaseMutating
	opts.PlanEffects = true
	opts.Namespaces = selfNamespace{ns: obj, next: opts.Namespaces}
	d, err := snap.Evaluate(ctx, req, opts)
	if err != nil {
		return nil, nil, err
	}
	planned := map[string]SecretPlan{} // by policy
	for _, e := range d.Effects {
		if p, ok := e.Value.(SecretPlan); ok {
			planned[e.Policy] = p
		}
	}
	var out []SecretPlan
	var results []engine.PolicyResult
	for _, r := range d.Results {
		if r.Action != (createSecret{}).Name() {
			continue
		}
		results = append(results, r)
		if p, ok := planned[r.Policy]; ok {
			out = append(out, p)
		}
	}
	return out, results, nil
}

// selfNamespace serves ns itself, and other namespaces from next.
type selfNamespace struct {
	ns   *corev1.Namespace
	next engine.NamespaceGetter
}

func (s selfNamespace) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	if name == s.ns.Name {
		return s.ns, nil
	}
	if s.next == nil {
		return nil, apierrors.NewNotFound(corev1.Resource("namespaces"), name)
	}
	return s.next.GetNamespace(ctx, name)
}

// SecretSources returns the source Secrets the createSecret policies of
// snap copy, sorted; an empty Namespace is Celadon's own.
func SecretSources(snap *engine.Snapshot) []SecretRef {
	seen := map[SecretRef]bool{}
	for _, p := range snap.Policies {
		if p.Policy.Spec.Action != (createSecret{}).Name() || p.Err != nil {
			continue
		}
		var args createSecretArgs
		// Compiled already: decoding again cannot fail.
		if json.Unmarshal(p.Policy.Spec.With, &args) != nil || args.From == nil {
			continue
		}
		seen[SecretRef{Namespace: args.From.Namespace, Name: args.From.Name}] = true
	}
	out := make([]SecretRef, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}
