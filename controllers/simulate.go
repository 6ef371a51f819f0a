package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/webhook"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/object"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/rules"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
)

// Call says whether the API server would call one webhook for a request.
type Call struct {
	Webhook string `json:"webhook"`
	Called  bool   `json:"called"`
	// Reason says why not: the rules, a selector or the matchCondition.
	Reason string `json:"reason,omitempty"`
}

// SimulateCalls says which webhooks of the configurations the API server
// would call for req, in their order, evaluating their rules, selectors and
// matchConditions with the API server's own matchers. nsLabels are the
// labels of the request's namespace; nil when unknown, which matches every
// namespaceSelector. A matchCondition's error is reported as the API server
// acts on it: under Fail the call is made (the request fails), under
// Ignore it is skipped.
func SimulateCalls(mwc *admissionregistrationv1.MutatingWebhookConfiguration, vwc *admissionregistrationv1.ValidatingWebhookConfiguration, req *admissionv1.AdmissionRequest, nsLabels map[string]string) ([]Call, error) {
	attr, err := attributesOf(req)
	if err != nil {
		return nil, err
	}
	// The API server defaults an absent selector to {}, matching everything.
	orEmpty := func(s *metav1.LabelSelector) *metav1.LabelSelector {
		if s == nil {
			return &metav1.LabelSelector{}
		}
		return s
	}
	var accessors []webhook.WebhookAccessor
	if mwc != nil {
		for _, wh := range mwc.Webhooks {
			wh.ObjectSelector, wh.NamespaceSelector = orEmpty(wh.ObjectSelector), orEmpty(wh.NamespaceSelector)
			accessors = append(accessors, webhook.NewMutatingWebhookAccessor(wh.Name, mwc.Name, &wh))
		}
	}
	if vwc != nil {
		for _, wh := range vwc.Webhooks {
			wh.ObjectSelector, wh.NamespaceSelector = orEmpty(wh.ObjectSelector), orEmpty(wh.NamespaceSelector)
			accessors = append(accessors, webhook.NewValidatingWebhookAccessor(wh.Name, vwc.Name, &wh))
		}
	}
	var out []Call
	for _, a := range accessors {
		c := Call{Webhook: a.GetName()}
		c.Called, c.Reason, err = wouldCall(a, attr, req, nsLabels)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: %w", a.GetName(), err)
		}
		out = append(out, c)
	}
	return out, nil
}

var conditionCompiler = cel.NewConditionCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))

func wouldCall(a webhook.WebhookAccessor, attr *admission.VersionedAttributes, req *admissionv1.AdmissionRequest, nsLabels map[string]string) (bool, string, error) {
	matched := false
	for _, r := range a.GetRules() {
		if (&rules.Matcher{Rule: r, Attr: attr}).Matches() {
			matched = true
			break
		}
	}
	if !matched {
		return false, "no rule matches", nil
	}
	nsSel, err := a.GetParsedNamespaceSelector()
	if err != nil {
		return false, "", err
	}
	switch {
	case req.Resource.Group == "" && req.Resource.Resource == "namespaces" && req.SubResource == "":
		// A Namespace is matched by its own labels, new or old.
		if !matchesObject(nsSel, attr.GetObject()) && !matchesObject(nsSel, attr.GetOldObject()) {
			return false, "namespaceSelector does not match", nil
		}
	case req.Namespace != "" && nsLabels != nil:
		if !nsSel.Matches(labels.Set(nsLabels)) {
			return false, "namespaceSelector does not match", nil
		}
	}
	if ok, serr := (&object.Matcher{}).MatchObjectSelector(a, attr); serr != nil {
		return false, "", serr
	} else if !ok {
		return false, "objectSelector does not match", nil
	}
	res := a.GetCompiledMatcher(conditionCompiler).Match(context.Background(), attr, nil, nil)
	switch {
	case res.Error != nil:
		return true, "matchCondition error: " + res.Error.Error(), nil
	case !res.Matches:
		if res.FailedConditionName != "" {
			return false, "matchCondition " + res.FailedConditionName + " is false", nil
		}
		return false, "matchCondition error, failurePolicy Ignore", nil
	}
	return true, "", nil
}

func matchesObject(sel labels.Selector, obj runtime.Object) bool {
	u, ok := obj.(*unstructured.Unstructured)
	return ok && u != nil && sel.Matches(labels.Set(u.GetLabels()))
}

// attributesOf builds the API server's view of a review's request.
func attributesOf(req *admissionv1.AdmissionRequest) (*admission.VersionedAttributes, error) {
	decode := func(what string, raw runtime.RawExtension) (runtime.Object, error) {
		if len(raw.Raw) == 0 || string(raw.Raw) == "null" {
			return nil, nil
		}
		u := &unstructured.Unstructured{}
		if err := json.Unmarshal(raw.Raw, &u.Object); err != nil {
			return nil, fmt.Errorf("request %s: %v", what, err)
		}
		return u, nil
	}
	obj, err := decode("object", req.Object)
	if err != nil {
		return nil, err
	}
	old, err := decode("oldObject", req.OldObject)
	if err != nil {
		return nil, err
	}
	opts, err := decode("options", req.Options)
	if err != nil {
		return nil, err
	}
	gvk := schema.GroupVersionKind{Group: req.Kind.Group, Version: req.Kind.Version, Kind: req.Kind.Kind}
	gvr := schema.GroupVersionResource{Group: req.Resource.Group, Version: req.Resource.Version, Resource: req.Resource.Resource}
	u := &user.DefaultInfo{Name: req.UserInfo.Username, UID: req.UserInfo.UID, Groups: req.UserInfo.Groups}
	if len(req.UserInfo.Extra) > 0 {
		u.Extra = map[string][]string{}
		for k, v := range req.UserInfo.Extra {
			u.Extra[k] = v
		}
	}
	attr := admission.NewAttributesRecord(obj, old, gvk, req.Namespace, req.Name, gvr, req.SubResource,
		admission.Operation(req.Operation), opts, req.DryRun != nil && *req.DryRun, u)
	va := &admission.VersionedAttributes{Attributes: attr, VersionedKind: gvk}
	if obj != nil {
		va.VersionedObject = admission.NewLazyObject(obj)
	}
	if old != nil {
		va.VersionedOldObject = admission.NewLazyObject(old)
	}
	return va, nil
}
