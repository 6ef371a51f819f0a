package builtins

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"celadon.io/celadon/engine"
)

// validateCase is the validations of one validate example, as a validate
// policy and, validation by validation, as deny policies that say the same.
type validateCase struct {
	dir      string
	resource metav1.GroupVersionResource
	validate *engine.Snapshot
	// denies[i] denies when validation i fails, with its message.
	denies []*engine.Snapshot
	// fallbacks[i] is validation i's message when its messageExpression
	// gives none.
	fallbacks []string
}

// FuzzValidate checks, on arbitrary objects, that validate reports what
// its validations, each run alone as a deny policy, report: an error when
// one of them errors (failurePolicy Fail), else the messages of those that
// fail, in order; and that it never panics. The validations are those of
// the examples/validate-* policies and of the library's validate policies
// (policies/library: Pod Security Standards, labels, images, resources).
func FuzzValidate(f *testing.F) {
	cases := validateCases(f)
	seeds, _ := filepath.Glob("../examples/*/object.yaml")
	for _, s := range seeds {
		if y, err := os.ReadFile(s); err == nil {
			if j, err := yaml.YAMLToJSON(y); err == nil {
				f.Add(j)
			}
		}
	}
	f.Add([]byte(`{"metadata":{"name":"a\nb"},"spec":{"replicas":"9\n","template":{"spec":{"containers":[{"image":1}]}}}}`))
	f.Add([]byte(`{"spec":{"type":"LoadBalancer","ports":[{"port":30000},{"port":"x"}]},"metadata":{"annotations":{"owner":""}}}`))
	f.Fuzz(func(t *testing.T, obj []byte) {
		var probe map[string]any
		if json.Unmarshal(obj, &probe) != nil || probe == nil {
			return // not an object: the server would refuse it before the engine
		}
		for _, c := range cases {
			req := &admissionv1.AdmissionRequest{
				UID:       "fuzz",
				Resource:  c.resource,
				Namespace: "default",
				Operation: admissionv1.Create,
				UserInfo:  authenticationv1.UserInfo{Username: "fuzz"},
				Object:    runtime.RawExtension{Raw: obj},
			}
			d := evaluate(t, c.validate, req, engine.EvalOptions{})
			got := d.Results[0]
			if got.Panicked {
				t.Fatalf("%s: panicked on %s: %s", c.dir, obj, got.Reason)
			}
			var want []string
			errored := false
			for i, deny := range c.denies {
				dd := evaluate(t, deny, req, engine.EvalOptions{})
				switch dd.Results[0].State {
				case engine.StateError:
					errored = true
				case engine.StateFail:
					msg := dd.Message
					// deny keeps what validate, as the API server, refuses.
					if strings.Contains(msg, "\n") || len(msg) > celconfig.MaxEvaluatedMessageExpressionSizeBytes {
						msg = c.fallbacks[i]
					}
					want = append(want, msg)
				}
			}
			switch {
			case errored:
				if got.State != engine.StateError {
					t.Fatalf("%s: a validation errors alone, validate gives %s (%s) on %s", c.dir, got.State, got.Reason, obj)
				}
			case len(want) == 0:
				if got.State != engine.StatePass {
					t.Fatalf("%s: no validation fails alone, validate gives %s (%s) on %s", c.dir, got.State, got.Reason, obj)
				}
			default:
				if got.State != engine.StateFail || d.Message != strings.Join(want, "; ") {
					t.Fatalf("%s: validate gives %s %q, its validations alone %q, on %s", c.dir, got.State, d.Message, want, obj)
				}
			}
		}
	})
}

// validateCases derives a validateCase from each validate example and
// library policy: its
// match, variables and validations, under failurePolicy Fail and
// enforcement Deny, without audit annotations.
func validateCases(tb testing.TB) []validateCase {
	tb.Helper()
	var out []validateCase
	for _, ex := range append(examplesOf(tb, "validate"), libraryOf(tb, "validate")...) {
		for _, file := range ex.files {
			var p engine.Policy
			if err := yaml.Unmarshal(file.Data, &p); err != nil {
				tb.Fatalf("%s: %v", ex.dir, err)
			}
			if p.Spec.Action != "validate" {
				continue
			}
			var args validateArgs
			if err := json.Unmarshal(p.Spec.With, &args); err != nil {
				tb.Fatalf("%s: %v", ex.dir, err)
			}
			if len(args.Validations) == 0 {
				continue
			}
			c := validateCase{dir: ex.dir, resource: fuzzResource(tb, p.Spec.Match.Resources[0])}
			spec := p.Spec
			spec.FailurePolicy, spec.Enforcement = engine.Fail, engine.Deny
			spec.With = mustJSON(tb, validateArgs{Validations: args.Validations})
			c.validate = compileSpec(tb, spec)
			for _, v := range args.Validations {
				fallback := strings.TrimSpace(v.Message)
				if fallback == "" {
					fallback = "failed expression: " + strings.TrimSpace(v.Expression)
				}
				deny := p.Spec
				deny.FailurePolicy, deny.Enforcement, deny.Action = engine.Fail, engine.Deny, "deny"
				deny.Match.Conditions = append(deny.Match.Conditions[:len(deny.Match.Conditions):len(deny.Match.Conditions)],
					engine.Condition{Name: "fails", Expression: "(" + v.Expression + ") != true"})
				deny.With = mustJSON(tb, denyArgs{Message: fallback, MessageExpression: v.MessageExpression})
				c.denies = append(c.denies, compileSpec(tb, deny))
				c.fallbacks = append(c.fallbacks, fallback)
			}
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		tb.Fatal("no validate example with validations")
	}
	return out
}

func compileSpec(tb testing.TB, spec engine.PolicySpec) *engine.Snapshot {
	tb.Helper()
	p := engine.Policy{APIVersion: engine.APIVersion, Kind: engine.Kind, Metadata: engine.PolicyMetadata{Name: "p"}, Spec: spec}
	snap, err := engine.Compile([]engine.File{{Name: "fuzz.json", Data: mustJSON(tb, p)}}, engine.Options{Registry: Registry()})
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return snap
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// fuzzResource returns the resource of a match.resources entry: "services"
// or "group/resource".
func fuzzResource(tb testing.TB, s string) metav1.GroupVersionResource {
	tb.Helper()
	group, resource, ok := strings.Cut(s, "/")
	if !ok {
		group, resource = "", s
	}
	if strings.Contains(resource, "/") || resource == "*" {
		tb.Fatalf("%q: give validate examples a plain resource first", s)
	}
	return metav1.GroupVersionResource{Group: group, Version: "v1", Resource: resource}
}
