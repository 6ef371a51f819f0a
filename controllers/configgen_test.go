package controllers_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/builtins"
	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/webhook"
)

// pol returns a policy document. kind is "deny" (validating), "drain"
// (drainBeforeDelete, validating, with side effects) or "mutate"
// (injectEnvIndex); fp and ops may be empty for the defaults.
func pol(name, kind, fp, ops string, resources ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata:\n  name: %s\nspec:\n  match:\n", name)
	fmt.Fprintf(&b, "    resources: [%s]\n", quoteAll(resources))
	if ops != "" {
		fmt.Fprintf(&b, "    operations: [%s]\n", ops)
	}
	switch kind {
	case "deny":
		// Off pod controllers, so that each case shows its own resources;
		// "deny-autogen" keeps the pod templates.
		b.WriteString("  action: deny\n  with: {message: x}\n  autogen: false\n")
	case "deny-autogen":
		b.WriteString("  action: deny\n  with: {message: x}\n")
	case "drain":
		b.WriteString("  action: drainBeforeDelete\n  with: {annotate: {key: example.com/drain, doneWhen: 'true'}}\n")
	case "mutate":
		b.WriteString("  action: injectEnvIndex\n  with: {name: INDEX}\n")
	default:
		panic("pol: kind " + kind)
	}
	if fp != "" {
		fmt.Fprintf(&b, "  failurePolicy: %s\n", fp)
	}
	return b.String()
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// compileSet compiles policy documents, one file each, with the real
// builtins.
func compileSet(t *testing.T, docs ...string) *engine.Snapshot {
	t.Helper()
	var files []engine.File
	for i, d := range docs {
		files = append(files, engine.File{Name: fmt.Sprintf("p%02d.yaml", i), Data: []byte(d)})
	}
	snap, err := engine.Compile(files, engine.Options{Registry: builtins.Registry()})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return snap
}

var svc = controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "celadon", Name: "celadon"}}

// generate runs Configurations and checks the result is valid.
func generate(t *testing.T, snap *engine.Snapshot, o controllers.ConfigOptions) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
	t.Helper()
	mwc, vwc, err := controllers.Configurations(snap, o)
	if err != nil {
		t.Fatalf("Configurations: %v", err)
	}
	checkValid(t, mwc, vwc)
	return mwc, vwc
}

// ruleString shows a rule compactly: groups|operations|resources, the core
// group as "".
func ruleString(r admissionregistrationv1.RuleWithOperations) string {
	groups := slices.Clone(r.APIGroups)
	for i, g := range groups {
		if g == "" {
			groups[i] = `""`
		}
	}
	ops := make([]string, len(r.Operations))
	for i, op := range r.Operations {
		ops[i] = string(op)
	}
	return strings.Join(groups, ",") + "|" + strings.Join(ops, ",") + "|" + strings.Join(r.Resources, ",")
}

// webhookRules maps each webhook of both configurations to its rules.
func webhookRules(mwc *admissionregistrationv1.MutatingWebhookConfiguration, vwc *admissionregistrationv1.ValidatingWebhookConfiguration) map[string][]string {
	out := map[string][]string{}
	add := func(name string, rules []admissionregistrationv1.RuleWithOperations) {
		l := []string{}
		for _, r := range rules {
			l = append(l, ruleString(r))
		}
		out[name] = l
	}
	for _, w := range mwc.Webhooks {
		add(w.Name, w.Rules)
	}
	for _, w := range vwc.Webhooks {
		add(w.Name, w.Rules)
	}
	return out
}

func TestConfigurationsRules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policies []string
		want     map[string][]string
	}{{
		name: "one webhook per failurePolicy and type",
		policies: []string{
			pol("deny-fail", "deny", "Fail", "CREATE", "pods"),
			pol("deny-ignore", "deny", "Ignore", "UPDATE", "pods"),
			pol("mutate-default", "mutate", "", "CREATE", "pods"), // Ignore by default
			pol("mutate-fail", "mutate", "Fail", "CREATE", "apps/deployments"),
			pol("deny-default", "deny", "", "DELETE", "configmaps"), // Fail by default
		},
		want: map[string][]string{
			"fail.mutate.celadon.io":     {`apps|CREATE|deployments`},
			"ignore.mutate.celadon.io":   {`""|CREATE|pods`},
			"fail.validate.celadon.io":   {`""|CREATE|pods`, `""|DELETE|configmaps`},
			"ignore.validate.celadon.io": {`""|UPDATE|pods`},
		},
	}, {
		name:     "validating only: the mutating configuration has no webhooks",
		policies: []string{pol("deny", "deny", "", "CREATE", "pods")},
		want:     map[string][]string{"fail.validate.celadon.io": {`""|CREATE|pods`}},
	}, {
		name:     "mutating only, Ignore only",
		policies: []string{pol("m", "mutate", "", "CREATE,UPDATE", "pods")},
		want:     map[string][]string{"ignore.mutate.celadon.io": {`""|CREATE,UPDATE|pods`}},
	}, {
		name: "union of resources and operations within a group",
		policies: []string{
			pol("a", "deny", "", "CREATE", "pods", "services"),
			pol("b", "deny", "", "UPDATE", "pods"),
			pol("c", "deny", "", "CREATE", "services", "configmaps"), // services twice
		},
		want: map[string][]string{"fail.validate.celadon.io": {
			`""|CREATE|configmaps,services`,
			`""|CREATE,UPDATE|pods`,
		}},
	}, {
		name: "core, apps and networking.k8s.io groups",
		policies: []string{
			pol("a", "deny", "", "CREATE,UPDATE", "apps/deployments", "apps/statefulsets", "pods"),
			pol("b", "deny", "", "CREATE,UPDATE", "networking.k8s.io/ingresses", "networking.k8s.io/networkpolicies"),
			pol("c", "deny", "", "DELETE", "networking.k8s.io/ingresses"),
		},
		want: map[string][]string{"fail.validate.celadon.io": {
			`""|CREATE,UPDATE|pods`,
			`apps|CREATE,UPDATE|deployments,statefulsets`,
			`networking.k8s.io|CREATE,DELETE,UPDATE|ingresses`,
			`networking.k8s.io|CREATE,UPDATE|networkpolicies`,
		}},
	}, {
		name: "groups with the same resources and operations share a rule",
		policies: []string{
			pol("a", "deny", "", "CREATE", "apps/deployments", "example.com/deployments", "batch/jobs"),
		},
		want: map[string][]string{"fail.validate.celadon.io": {
			`apps,example.com|CREATE|deployments`,
			`batch|CREATE|jobs`,
		}},
	}, {
		name: "subresources",
		policies: []string{
			pol("status", "deny", "", "UPDATE", "pods/status", "nodes/status"),
			pol("pods", "deny", "", "UPDATE", "pods"),
			pol("scale", "deny", "", "UPDATE", "apps/deployments/scale"),
			pol("exec", "deny", "", "CONNECT", "pods/exec", "pods/attach"),
		},
		want: map[string][]string{"fail.validate.celadon.io": {
			`""|CONNECT|pods/attach,pods/exec`,
			`""|UPDATE|nodes/status,pods,pods/status`,
			`apps|UPDATE|deployments/scale`,
		}},
	}, {
		name: "a wildcard subresource absorbs the subresources it matches",
		policies: []string{
			pol("all-pod-subresources", "deny", "", "UPDATE", "pods/*"),
			pol("status", "deny", "", "UPDATE", "pods/status", "nodes/status"),
			pol("every-status", "deny", "", "CREATE,UPDATE", "*/status"),
		},
		want: map[string][]string{"fail.validate.celadon.io": {
			`""|CREATE,UPDATE|*/status`,
			`""|UPDATE|pods/*`,
		}},
	}, {
		name: "every resource absorbs what it matches, operation by operation",
		policies: []string{
			pol("everything", "deny", "", "CREATE", "*"),
			pol("pods", "deny", "", "CREATE,UPDATE", "pods"),
			pol("deployments", "deny", "", "CREATE", "apps/deployments"),
			pol("status", "deny", "", "CREATE", "pods/status"), // "*" has no subresources
		},
		want: map[string][]string{"fail.validate.celadon.io": {
			`""|CREATE|pods/status`,
			`""|UPDATE|pods`,
			`*|CREATE|*`,
		}},
	}, {
		name: "a validating pod policy also covers the pod controllers, for CREATE and UPDATE only",
		policies: []string{
			pol("pods", "deny-autogen", "", `"*"`, "pods"),
			pol("own-deployments", "deny-autogen", "", "DELETE", "pods", "apps/deployments"),
			pol("sidecar", "mutate", "", "CREATE", "pods"), // injectEnvIndex needs a real pod
		},
		want: map[string][]string{
			"fail.validate.celadon.io": {
				`""|*|pods`,
				`apps|CREATE,DELETE,UPDATE|deployments`,
				`apps|CREATE,UPDATE|daemonsets,replicasets,statefulsets`,
				`batch|CREATE,UPDATE|cronjobs,jobs`,
			},
			"ignore.mutate.celadon.io": {`""|CREATE|pods`},
		},
	}, {
		name: "*/* absorbs everything",
		policies: []string{
			pol("all", "mutate", "", "", "*/*"),
			pol("pods", "mutate", "", "CREATE", "pods", "pods/status", "*", "apps/*"),
		},
		want: map[string][]string{"ignore.mutate.celadon.io": {`*|*|*/*`}},
	}, {
		name: "a group's * absorbs the group's resources",
		policies: []string{
			pol("apps", "deny", "", "CREATE", "apps/*"),
			pol("deployments", "deny", "", "CREATE,DELETE", "apps/deployments"),
		},
		want: map[string][]string{"fail.validate.celadon.io": {
			`apps|CREATE|*`,
			`apps|DELETE|deployments`,
		}},
	}, {
		name: "operations: all four, omitted, * and a union of all collapse to *",
		policies: []string{
			pol("four", "deny", "", "CREATE,UPDATE,DELETE,CONNECT", "pods"),
			pol("omitted", "deny", "", "", "services"),
			pol("star", "deny", "", `"*"`, "configmaps"),
			pol("half1", "deny", "", "CREATE,UPDATE", "secrets"),
			pol("half2", "deny", "", "DELETE,CONNECT", "secrets"),
			pol("three", "deny", "", "CREATE,UPDATE,DELETE", "nodes"),
		},
		want: map[string][]string{"fail.validate.celadon.io": {
			`""|*|configmaps,pods,secrets,services`,
			`""|CREATE,DELETE,UPDATE|nodes`,
		}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			mwc, vwc := generate(t, compileSet(t, tc.policies...), svc)
			if got := webhookRules(mwc, vwc); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("rules:\n got %q\nwant %q", got, tc.want)
			}
			if mwc.Webhooks == nil || vwc.Webhooks == nil {
				t.Errorf("webhooks must be an empty list, not nil, when none is needed")
			}
			// The order of the policies does not matter.
			rev := slices.Clone(tc.policies)
			slices.Reverse(rev)
			mwc2, vwc2 := generate(t, compileSet(t, rev...), svc)
			if a, b := render(t, mwc, vwc), render(t, mwc2, vwc2); a != b {
				t.Errorf("output depends on the order of the policies:\n%s\n---- reversed:\n%s", a, b)
			}
		})
	}
}

// Every webhook's settings follow the failurePolicy and type it serves.
func TestConfigurationsWebhookSettings(t *testing.T) {
	snap := compileSet(t,
		pol("deny-fail", "deny", "Fail", "CREATE", "pods"),
		pol("deny-ignore", "deny", "Ignore", "CREATE", "pods"),
		pol("mutate-fail", "mutate", "Fail", "CREATE", "pods"),
		pol("mutate-ignore", "mutate", "Ignore", "CREATE", "pods"),
	)
	mwc, vwc := generate(t, snap, svc)
	type settings struct {
		Name, Path, FailurePolicy, Reinvocation string
	}
	var got []settings
	for _, w := range mwc.Webhooks {
		got = append(got, settings{w.Name, *w.ClientConfig.Service.Path, string(*w.FailurePolicy), string(*w.ReinvocationPolicy)})
		if *w.SideEffects != admissionregistrationv1.SideEffectClassNone || *w.MatchPolicy != admissionregistrationv1.Equivalent ||
			*w.TimeoutSeconds != 5 || !slices.Equal(w.AdmissionReviewVersions, []string{"v1", "v1beta1"}) {
			t.Errorf("%s: sideEffects %s, matchPolicy %s, timeoutSeconds %d, admissionReviewVersions %v", w.Name, *w.SideEffects, *w.MatchPolicy, *w.TimeoutSeconds, w.AdmissionReviewVersions)
		}
	}
	for _, w := range vwc.Webhooks {
		got = append(got, settings{w.Name, *w.ClientConfig.Service.Path, string(*w.FailurePolicy), ""})
		if *w.SideEffects != admissionregistrationv1.SideEffectClassNone || *w.MatchPolicy != admissionregistrationv1.Equivalent ||
			*w.TimeoutSeconds != 5 || !slices.Equal(w.AdmissionReviewVersions, []string{"v1", "v1beta1"}) {
			t.Errorf("%s: sideEffects %s, matchPolicy %s, timeoutSeconds %d, admissionReviewVersions %v", w.Name, *w.SideEffects, *w.MatchPolicy, *w.TimeoutSeconds, w.AdmissionReviewVersions)
		}
	}
	want := []settings{
		{"fail.mutate.celadon.io", "/mutate/fail", "Fail", "IfNeeded"},
		{"ignore.mutate.celadon.io", "/mutate/ignore", "Ignore", "IfNeeded"},
		{"fail.validate.celadon.io", "/validate/fail", "Fail", ""},
		{"ignore.validate.celadon.io", "/validate/ignore", "Ignore", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("webhooks:\n got %+v\nwant %+v", got, want)
	}

	for _, obj := range []struct {
		apiVersion, kind, name string
		labels, annotations    map[string]string
	}{
		{mwc.APIVersion, mwc.Kind, mwc.Name, mwc.Labels, mwc.Annotations},
		{vwc.APIVersion, vwc.Kind, vwc.Name, vwc.Labels, vwc.Annotations},
	} {
		if obj.apiVersion != "admissionregistration.k8s.io/v1" || obj.name != "celadon" {
			t.Errorf("%s: apiVersion %q, name %q", obj.kind, obj.apiVersion, obj.name)
		}
		if want := map[string]string{"app.kubernetes.io/name": "celadon", "app.kubernetes.io/managed-by": "celadon"}; !reflect.DeepEqual(obj.labels, want) {
			t.Errorf("%s: labels %v, want %v", obj.kind, obj.labels, want)
		}
		if obj.annotations != nil {
			t.Errorf("%s: annotations %v, want none", obj.kind, obj.annotations)
		}
	}
	if mwc.Kind != "MutatingWebhookConfiguration" || vwc.Kind != "ValidatingWebhookConfiguration" {
		t.Errorf("kinds %q, %q", mwc.Kind, vwc.Kind)
	}
}

// TestConfigurationsPolicyTimeout: a webhook takes the shortest timeout its
// policies ask for, never a longer one than configured, and a webhook
// without such policies keeps the configured one.
// A webhook declares sideEffects NoneOnDryRun when one of its policies'
// builtins acts on other systems (drainBeforeDelete), None otherwise: the
// builtins say, not the configuration generator.
func TestConfigurationsSideEffects(t *testing.T) {
	snap := compileSet(t,
		pol("drain", "drain", "Fail", "DELETE", "pods"),
		pol("deny-fail", "deny", "Fail", "CREATE", "pods"),
		pol("deny-ignore", "deny", "Ignore", "DELETE", "pods"),
		pol("mutate-fail", "mutate", "Fail", "CREATE", "pods"),
	)
	mwc, vwc := generate(t, snap, svc)
	got := map[string]admissionregistrationv1.SideEffectClass{}
	for _, w := range mwc.Webhooks {
		got[w.Name] = *w.SideEffects
	}
	for _, w := range vwc.Webhooks {
		got[w.Name] = *w.SideEffects
	}
	want := map[string]admissionregistrationv1.SideEffectClass{
		"fail.mutate.celadon.io":     admissionregistrationv1.SideEffectClassNone,
		"fail.validate.celadon.io":   admissionregistrationv1.SideEffectClassNoneOnDryRun,
		"ignore.validate.celadon.io": admissionregistrationv1.SideEffectClassNone,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sideEffects %v, want %v", got, want)
	}
}

func TestConfigurationsPolicyTimeout(t *testing.T) {
	withTimeout := func(doc string, seconds int) string {
		return doc + fmt.Sprintf("  timeoutSeconds: %d\n", seconds)
	}
	snap := compileSet(t,
		withTimeout(pol("node-status", "mutate", "Ignore", "UPDATE", "nodes/status"), 2),
		withTimeout(pol("node-status-3", "mutate", "Ignore", "UPDATE", "nodes/status"), 3),
		pol("pods", "mutate", "Fail", "CREATE", "pods"),
		withTimeout(pol("slow-deny", "deny", "Fail", "CREATE", "pods"), 20),
	)
	mwc, vwc := generate(t, snap, svc)
	got := map[string]int32{}
	for _, w := range mwc.Webhooks {
		got[w.Name] = *w.TimeoutSeconds
	}
	for _, w := range vwc.Webhooks {
		got[w.Name] = *w.TimeoutSeconds
	}
	want := map[string]int32{"ignore.mutate.celadon.io": 2, "fail.mutate.celadon.io": 5, "fail.validate.celadon.io": 5}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("timeouts %v, want %v", got, want)
	}
}

func TestWebhookPath(t *testing.T) {
	for _, tc := range []struct {
		t    engine.ActionType
		fp   engine.FailurePolicy
		want string
	}{
		{engine.Mutating, engine.Fail, "/mutate/fail"},
		{engine.Mutating, engine.Ignore, "/mutate/ignore"},
		{engine.Validating, engine.Fail, "/validate/fail"},
		{engine.Validating, engine.Ignore, "/validate/ignore"},
		{0, engine.Fail, ""},
		{engine.Validating, "", ""},
		{engine.Validating, "fail", ""},
	} {
		if got := webhook.WebhookPath(tc.t, tc.fp); got != tc.want {
			t.Errorf("WebhookPath(%v, %q) = %q, want %q", tc.t, tc.fp, got, tc.want)
		}
	}
	if !strings.HasPrefix(webhook.WebhookPath(engine.Mutating, engine.Fail), webhook.MutatePath+"/") ||
		!strings.HasPrefix(webhook.WebhookPath(engine.Validating, engine.Fail), webhook.ValidatePath+"/") {
		t.Error("webhook paths are not under MutatePath and ValidatePath")
	}
}

// A policy whose builtin did not resolve is served in both phases, and so
// is routed by both configurations.
func TestConfigurationsUnresolvedBuiltin(t *testing.T) {
	doc := strings.Replace(pol("broken", "deny", "Ignore", "CREATE", "pods"), "action: deny", "action: nosuchbuiltin", 1)
	snap, err := engine.Compile([]engine.File{{Name: "p.yaml", Data: []byte(doc)}}, engine.Options{Registry: builtins.Registry()})
	if err == nil || snap == nil || len(snap.Policies) != 1 || snap.Policies[0].Type != 0 {
		t.Fatalf("want a snapshot with one unresolved policy and an error, got %v", err)
	}
	mwc, vwc := generate(t, snap, svc)
	want := map[string][]string{
		"ignore.mutate.celadon.io":   {`""|CREATE|pods`},
		"ignore.validate.celadon.io": {`""|CREATE|pods`},
	}
	if got := webhookRules(mwc, vwc); !reflect.DeepEqual(got, want) {
		t.Errorf("rules:\n got %q\nwant %q", got, want)
	}
}

func TestConfigurationsClientConfig(t *testing.T) {
	snap := compileSet(t,
		pol("m", "mutate", "", "CREATE", "pods"),
		pol("v", "deny", "", "CREATE", "pods"),
	)
	ca := testCAPEM(t)
	for _, tc := range []struct {
		name      string
		o         controllers.ConfigOptions
		wantURL   []string // per webhook, mutating first; or
		wantSvc   []admissionregistrationv1.ServiceReference
		wantCA    []byte
		wantNames string
		timeout   int32
	}{{
		name: "service, default port",
		o:    svc,
		wantSvc: []admissionregistrationv1.ServiceReference{
			{Namespace: "celadon", Name: "celadon", Path: ref("/mutate/ignore"), Port: ref[int32](443)},
			{Namespace: "celadon", Name: "celadon", Path: ref("/validate/fail"), Port: ref[int32](443)},
		},
		wantNames: "celadon",
		timeout:   5,
	}, {
		name: "service with a port, CA bundle, name and timeout",
		o: controllers.ConfigOptions{
			Name:           "celadon-dev",
			Service:        &controllers.ServiceRef{Namespace: "policy", Name: "webhook", Port: 8443},
			CABundle:       ca,
			TimeoutSeconds: 12,
		},
		wantSvc: []admissionregistrationv1.ServiceReference{
			{Namespace: "policy", Name: "webhook", Path: ref("/mutate/ignore"), Port: ref[int32](8443)},
			{Namespace: "policy", Name: "webhook", Path: ref("/validate/fail"), Port: ref[int32](8443)},
		},
		wantCA:    ca,
		wantNames: "celadon-dev",
		timeout:   12,
	}, {
		name:      "URL",
		o:         controllers.ConfigOptions{URL: "https://127.0.0.1:9443", CABundle: ca},
		wantURL:   []string{"https://127.0.0.1:9443/mutate/ignore", "https://127.0.0.1:9443/validate/fail"},
		wantCA:    ca,
		wantNames: "celadon",
		timeout:   5,
	}, {
		name:      "URL with a base path and a trailing slash",
		o:         controllers.ConfigOptions{URL: "https://celadon.example.com/hooks/"},
		wantURL:   []string{"https://celadon.example.com/hooks/mutate/ignore", "https://celadon.example.com/hooks/validate/fail"},
		wantNames: "celadon",
		timeout:   5,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			mwc, vwc := generate(t, snap, tc.o)
			if len(mwc.Webhooks) != 1 || len(vwc.Webhooks) != 1 {
				t.Fatalf("want one webhook each, got %d and %d", len(mwc.Webhooks), len(vwc.Webhooks))
			}
			ccs := []admissionregistrationv1.WebhookClientConfig{mwc.Webhooks[0].ClientConfig, vwc.Webhooks[0].ClientConfig}
			timeouts := []*int32{mwc.Webhooks[0].TimeoutSeconds, vwc.Webhooks[0].TimeoutSeconds}
			for i, cc := range ccs {
				switch {
				case tc.wantURL != nil:
					if cc.Service != nil || cc.URL == nil || *cc.URL != tc.wantURL[i] {
						t.Errorf("webhook %d: service %v, url %v; want url %s", i, cc.Service, deref(cc.URL), tc.wantURL[i])
					}
				default:
					if cc.URL != nil || cc.Service == nil || !reflect.DeepEqual(*cc.Service, tc.wantSvc[i]) {
						t.Errorf("webhook %d: url %v, service %+v; want service %+v", i, deref(cc.URL), cc.Service, tc.wantSvc[i])
					}
				}
				if !bytes.Equal(cc.CABundle, tc.wantCA) {
					t.Errorf("webhook %d: caBundle %q, want %q", i, cc.CABundle, tc.wantCA)
				}
				if *timeouts[i] != tc.timeout {
					t.Errorf("webhook %d: timeoutSeconds %d, want %d", i, *timeouts[i], tc.timeout)
				}
			}
			if mwc.Name != tc.wantNames || vwc.Name != tc.wantNames {
				t.Errorf("names %q, %q; want %q", mwc.Name, vwc.Name, tc.wantNames)
			}
		})
	}
}

func TestConfigurationsAnnotations(t *testing.T) {
	snap := compileSet(t, pol("v", "deny", "", "CREATE", "pods"))
	ann := map[string]string{"cert-manager.io/inject-ca-from": "celadon/celadon-webhook", "example.com/note": "x"}
	o := svc
	o.Annotations = ann
	mwc, vwc := generate(t, snap, o)
	if !reflect.DeepEqual(mwc.Annotations, ann) || !reflect.DeepEqual(vwc.Annotations, ann) {
		t.Errorf("annotations %v and %v, want %v", mwc.Annotations, vwc.Annotations, ann)
	}
	ann["example.com/note"] = "changed"
	if mwc.Annotations["example.com/note"] != "x" {
		t.Error("the configuration shares the caller's annotations map")
	}
}

func TestConfigurationsNamespaceSelector(t *testing.T) {
	snap := compileSet(t, pol("m", "mutate", "", "CREATE", "pods"), pol("v", "deny", "", "CREATE", "pods"))
	for _, tc := range []struct {
		name string
		o    controllers.ConfigOptions
		want []string
	}{
		{"service namespace", svc, []string{"celadon", "kube-node-lease", "kube-system"}},
		{"service namespace is kube-system", controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "kube-system", Name: "celadon"}},
			[]string{"kube-node-lease", "kube-system"}},
		{"extra namespaces, sorted and deduplicated", controllers.ConfigOptions{
			Service:           &controllers.ServiceRef{Namespace: "policy", Name: "celadon"},
			ExcludeNamespaces: []string{"monitoring", "cert-manager", "kube-system", "monitoring", "policy"},
		}, []string{"cert-manager", "kube-node-lease", "kube-system", "monitoring", "policy"}},
		{"URL: no service namespace", controllers.ConfigOptions{URL: "https://127.0.0.1:9443", ExcludeNamespaces: []string{"dev"}},
			[]string{"dev", "kube-node-lease", "kube-system"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mwc, vwc := generate(t, snap, tc.o)
			for _, sel := range []nsSelector{
				selectorOf(mwc.Webhooks[0].Name, mwc.Webhooks[0].NamespaceSelector),
				selectorOf(vwc.Webhooks[0].Name, vwc.Webhooks[0].NamespaceSelector),
			} {
				if sel.key != "kubernetes.io/metadata.name" || sel.op != "NotIn" || !slices.Equal(sel.values, tc.want) {
					t.Errorf("%s: namespaceSelector %s %s %v, want kubernetes.io/metadata.name NotIn %v", sel.webhook, sel.key, sel.op, sel.values, tc.want)
				}
			}
		})
	}
}

type nsSelector struct {
	webhook, key, op string
	values           []string
}

// selectorOf reads a namespaceSelector made of one expression.
func selectorOf(webhook string, s *metav1.LabelSelector) nsSelector {
	out := nsSelector{webhook: webhook}
	if s == nil || len(s.MatchLabels) > 0 || len(s.MatchExpressions) != 1 {
		out.op = fmt.Sprintf("unexpected %+v", s)
		return out
	}
	e := s.MatchExpressions[0]
	out.key, out.op, out.values = e.Key, string(e.Operator), e.Values
	return out
}

func TestConfigurationsOptionErrors(t *testing.T) {
	snap := compileSet(t, pol("v", "deny", "", "CREATE", "pods"))
	key := pemOf(t, "EC PRIVATE KEY", []byte("not a key"))
	for _, tc := range []struct {
		name string
		o    controllers.ConfigOptions
		want string
	}{
		{"neither service nor URL", controllers.ConfigOptions{}, "a Service or a URL is required"},
		{"both service and URL", controllers.ConfigOptions{Service: svc.Service, URL: "https://x:1"}, "not both"},
		{"http URL", controllers.ConfigOptions{URL: "http://127.0.0.1:9443"}, "scheme must be https"},
		{"URL without host", controllers.ConfigOptions{URL: "https:///x"}, "host is required"},
		{"URL with a query", controllers.ConfigOptions{URL: "https://x:1/?a=b"}, "query"},
		{"URL with a fragment", controllers.ConfigOptions{URL: "https://x:1/#a"}, "fragment"},
		{"URL with user info", controllers.ConfigOptions{URL: "https://u:p@x:1"}, "user information"},
		{"bad service namespace", controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "Celadon", Name: "celadon"}}, `service namespace "Celadon"`},
		{"empty service name", controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "celadon"}}, `service name ""`},
		{"bad service port", controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "celadon", Name: "celadon", Port: 70000}}, "service port 70000"},
		{"bad name", controllers.ConfigOptions{Name: "Celadon!", Service: svc.Service}, `name "Celadon!"`},
		{"timeout too long", controllers.ConfigOptions{Service: svc.Service, TimeoutSeconds: 31}, "between 1 and 30"},
		{"negative timeout", controllers.ConfigOptions{Service: svc.Service, TimeoutSeconds: -1}, "between 1 and 30"},
		{"bad excluded namespace", controllers.ConfigOptions{Service: svc.Service, ExcludeNamespaces: []string{"ok", "Not_OK"}}, `excluded namespace "Not_OK"`},
		{"CA bundle not PEM", controllers.ConfigOptions{Service: svc.Service, CABundle: []byte("hello")}, "no PEM certificate"},
		{"CA bundle of a key", controllers.ConfigOptions{Service: svc.Service, CABundle: key}, "EC PRIVATE KEY, want CERTIFICATE"},
		{"CA bundle of garbage in a PEM block", controllers.ConfigOptions{Service: svc.Service, CABundle: pemOf(t, "CERTIFICATE", []byte("junk"))}, "certificate 1"},
		{"bad annotation key", controllers.ConfigOptions{Service: svc.Service, Annotations: map[string]string{"no spaces please": "x"}}, `annotation "no spaces please"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mwc, vwc, err := controllers.Configurations(snap, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if mwc != nil || vwc != nil {
				t.Error("configurations returned with an error")
			}
		})
	}
	if _, _, err := controllers.Configurations(nil, svc); err == nil {
		t.Error("no error for a nil snapshot")
	}
}

// The output depends on nothing but the input: rendering twice, or
// generating twice, gives the same bytes.
func TestConfigurationsDeterministic(t *testing.T) {
	docs := []string{
		pol("a", "deny", "", "CREATE,UPDATE", "pods", "services", "apps/deployments", "networking.k8s.io/ingresses", "pods/status"),
		pol("b", "deny", "Ignore", "DELETE", "namespaces", "apps/statefulsets", "example.com/deployments"),
		pol("c", "mutate", "", "CREATE", "pods", "apps/deployments/scale", "batch/jobs", "batch/cronjobs"),
		pol("d", "mutate", "Fail", "", "*/status", "nodes/status", "apps/*"),
	}
	o := controllers.ConfigOptions{Service: svc.Service, ExcludeNamespaces: []string{"z", "a", "m"}, CABundle: testCAPEM(t),
		Annotations: map[string]string{"b": "2", "a": "1", "c": "3"}}
	mwc, vwc := generate(t, compileSet(t, docs...), o)
	first := render(t, mwc, vwc)
	for i := 0; i < 5; i++ {
		mwc, vwc := generate(t, compileSet(t, docs...), o)
		if again := render(t, mwc, vwc); again != first {
			t.Fatalf("run %d differs:\n%s\n---- first:\n%s", i, again, first)
		}
	}
	if again := render(t, mwc, vwc); again != first {
		t.Fatal("rendering the same objects twice differs")
	}
}

func render(t *testing.T, objs ...any) string {
	t.Helper()
	var b strings.Builder
	for _, o := range objs {
		y, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.String()
}

// checkValid checks what the API server's validation of webhook
// configurations checks, for what Configurations sets. The end-to-end
// tests create the objects on a real API server.
func checkValid(t *testing.T, mwc *admissionregistrationv1.MutatingWebhookConfiguration, vwc *admissionregistrationv1.ValidatingWebhookConfiguration) {
	t.Helper()
	if mwc == nil || vwc == nil {
		t.Fatal("nil configuration")
	}
	check := func(kind, apiVersion, gotKind, name string) {
		if apiVersion != "admissionregistration.k8s.io/v1" || gotKind != kind {
			t.Errorf("%s: apiVersion %q kind %q", kind, apiVersion, gotKind)
		}
		if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
			t.Errorf("%s: name %q: %v", kind, name, msgs)
		}
	}
	check("MutatingWebhookConfiguration", mwc.APIVersion, mwc.Kind, mwc.Name)
	check("ValidatingWebhookConfiguration", vwc.APIVersion, vwc.Kind, vwc.Name)

	type common struct {
		name     string
		cc       admissionregistrationv1.WebhookClientConfig
		rules    []admissionregistrationv1.RuleWithOperations
		fp       *admissionregistrationv1.FailurePolicyType
		mp       *admissionregistrationv1.MatchPolicyType
		se       *admissionregistrationv1.SideEffectClass
		timeout  *int32
		versions []string
	}
	var hooks []common
	for _, w := range mwc.Webhooks {
		hooks = append(hooks, common{w.Name, w.ClientConfig, w.Rules, w.FailurePolicy, w.MatchPolicy, w.SideEffects, w.TimeoutSeconds, w.AdmissionReviewVersions})
		if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
			t.Errorf("%s: reinvocationPolicy %v", w.Name, w.ReinvocationPolicy)
		}
	}
	for _, w := range vwc.Webhooks {
		hooks = append(hooks, common{w.Name, w.ClientConfig, w.Rules, w.FailurePolicy, w.MatchPolicy, w.SideEffects, w.TimeoutSeconds, w.AdmissionReviewVersions})
	}
	names := map[string]bool{} // configuration kind/webhook name
	for i, w := range hooks {
		k := "validating/" + w.name
		if i < len(mwc.Webhooks) {
			k = "mutating/" + w.name
		}
		if names[k] {
			t.Errorf("duplicate webhook %s", k)
		}
		names[k] = true
		// A fully qualified name: a DNS subdomain of at least three segments.
		if msgs := validation.IsDNS1123Subdomain(w.name); len(msgs) > 0 || strings.Count(w.name, ".") < 2 {
			t.Errorf("webhook name %q is not fully qualified: %v", w.name, msgs)
		}
		if !slices.Contains(w.versions, "v1") {
			t.Errorf("%s: admissionReviewVersions %v", w.name, w.versions)
		}
		if w.se == nil || (*w.se != admissionregistrationv1.SideEffectClassNone && *w.se != admissionregistrationv1.SideEffectClassNoneOnDryRun) {
			t.Errorf("%s: sideEffects %v", w.name, w.se)
		}
		if w.fp == nil || (*w.fp != admissionregistrationv1.Fail && *w.fp != admissionregistrationv1.Ignore) {
			t.Errorf("%s: failurePolicy %v", w.name, w.fp)
		}
		if w.mp == nil || *w.mp != admissionregistrationv1.Equivalent {
			t.Errorf("%s: matchPolicy %v", w.name, w.mp)
		}
		if w.timeout == nil || *w.timeout < 1 || *w.timeout > 30 {
			t.Errorf("%s: timeoutSeconds %v", w.name, w.timeout)
		}
		checkClientConfig(t, w.name, w.cc)
		if len(w.rules) == 0 {
			t.Errorf("%s: no rules", w.name)
		}
		for j, r := range w.rules {
			checkRule(t, fmt.Sprintf("%s: rules[%d]", w.name, j), r)
		}
	}
}

func checkClientConfig(t *testing.T, name string, cc admissionregistrationv1.WebhookClientConfig) {
	t.Helper()
	if (cc.URL == nil) == (cc.Service == nil) {
		t.Errorf("%s: want exactly one of url and service: %+v", name, cc)
		return
	}
	var path string
	if cc.Service != nil {
		s := cc.Service
		if len(validation.IsDNS1123Label(s.Namespace)) > 0 || len(validation.IsDNS1035Label(s.Name)) > 0 {
			t.Errorf("%s: service %s/%s", name, s.Namespace, s.Name)
		}
		if s.Port == nil || *s.Port < 1 || *s.Port > 65535 {
			t.Errorf("%s: service port %v", name, s.Port)
		}
		if s.Path == nil {
			t.Errorf("%s: no service path", name)
			return
		}
		path = *s.Path
	} else {
		u, err := url.Parse(*cc.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			t.Errorf("%s: url %q is not a valid webhook URL (%v)", name, *cc.URL, err)
			return
		}
		path = u.Path
	}
	if !strings.HasPrefix(path, "/") || strings.Contains(path, "//") || strings.Contains(path, "/../") {
		t.Errorf("%s: path %q", name, path)
	}
	if len(cc.CABundle) > 0 {
		if b, _ := pem.Decode(cc.CABundle); b == nil {
			t.Errorf("%s: caBundle is not PEM", name)
		}
	}
}

// checkRule checks a rule as the API server does (validateRuleWithOperations
// and validateResources in k8s.io/kubernetes/pkg/apis/admissionregistration/
// validation), plus Celadon's own conventions: sorted, no duplicates.
func checkRule(t *testing.T, where string, r admissionregistrationv1.RuleWithOperations) {
	t.Helper()
	starAlone := func(field string, l []string) {
		if len(l) == 0 {
			t.Errorf("%s: %s is empty", where, field)
		}
		if slices.Contains(l, "*") && len(l) > 1 {
			t.Errorf("%s: %s %q: '*' must be alone", where, field, l)
		}
		if !slices.IsSorted(l) || len(slices.Compact(slices.Clone(l))) != len(l) {
			t.Errorf("%s: %s %q is not sorted and unique", where, field, l)
		}
	}
	ops := make([]string, len(r.Operations))
	for i, op := range r.Operations {
		ops[i] = string(op)
		switch op {
		case "*", "CREATE", "UPDATE", "DELETE", "CONNECT":
		default:
			t.Errorf("%s: operation %q", where, op)
		}
	}
	starAlone("operations", ops)
	starAlone("apiGroups", r.APIGroups)
	if !slices.Equal(r.APIVersions, []string{"*"}) {
		t.Errorf("%s: apiVersions %q", where, r.APIVersions)
	}
	if r.Scope == nil || *r.Scope != admissionregistrationv1.AllScopes {
		t.Errorf("%s: scope %v", where, r.Scope)
	}
	res := r.Resources
	if len(res) == 0 {
		t.Errorf("%s: no resources", where)
	}
	if !slices.IsSorted(res) || len(slices.Compact(slices.Clone(res))) != len(res) {
		t.Errorf("%s: resources %q are not sorted and unique", where, res)
	}
	wildSub := map[string]bool{} // x/*
	wildRes := map[string]bool{} // */x
	hasDouble, hasSingle, hasPlain := false, false, false
	for _, rs := range res {
		if rs == "" {
			t.Errorf("%s: empty resource", where)
			continue
		}
		hasDouble = hasDouble || rs == "*/*"
		hasSingle = hasSingle || rs == "*"
		resource, sub, ok := strings.Cut(rs, "/")
		if !ok {
			hasPlain = hasPlain || rs != "*"
			continue
		}
		if wildSub[resource] {
			t.Errorf("%s: resources %q: if '%s/*' is present, must not specify %s", where, res, resource, rs)
		}
		if wildRes[sub] {
			t.Errorf("%s: resources %q: if '*/%s' is present, must not specify %s", where, res, sub, rs)
		}
		if sub == "*" {
			wildSub[resource] = true
		}
		if resource == "*" {
			wildRes[sub] = true
		}
	}
	if hasDouble && len(res) > 1 {
		t.Errorf("%s: resources %q: if '*/*' is present, must not specify other resources", where, res)
	}
	if hasSingle && hasPlain {
		t.Errorf("%s: resources %q: if '*' is present, must not specify other resources without subresources", where, res)
	}
}

func ref[T any](v T) *T { return &v }

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

func pemOf(t *testing.T, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// testCAPEM returns a throwaway self-signed CA certificate as PEM.
func testCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "celadon test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(t, "CERTIFICATE", der)
}
