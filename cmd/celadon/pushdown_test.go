package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/engine"
)

// TestPushdownIsSound checks, on every example's requests and variants of
// them (without labels, without owner references, as each operation), that
// whenever the API server would call none of the generated webhooks, as
// simulated with its own matchers, Celadon would have done nothing either:
// every policy skipped, no patch, no warning, no denial. The webhooks'
// selectors and matchConditions decide only whether a call happens; a wrong
// one would silently switch a policy off.
func TestPushdownIsSound(t *testing.T) {
	t.Chdir("../..")
	entries, err := os.ReadDir("examples")
	if err != nil {
		t.Fatal(err)
	}
	checked, skipped := 0, 0
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || strings.HasPrefix(e.Name(), "_") {
			continue
		}
		c := loadExample(t, filepath.Join("examples", e.Name()))
		// The example's requests, with its own policies and with the
		// shipped ones.
		for _, args := range [][]string{c.args, append(slices.Clone(c.args), "-p", "policies")} {
			n, s := checkPushdown(t, c.dir, args)
			checked, skipped = checked+n, skipped+s
		}
	}
	if checked == 0 || skipped == 0 {
		t.Fatalf("checked %d requests, %d not sent: the test checks nothing", checked, skipped)
	}
	t.Logf("%d example requests, %d variants not sent to Celadon", checked, skipped)
}

func checkPushdown(t *testing.T, dir string, args []string) (checked, skipped int) {
	o := &evalOptions{}
	cmd := newEvalCmdFor(o)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	ev, err := o.evaluator(cmd)
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	cases, err := o.cases(cmd)
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	{
		for _, orig := range cases {
			for _, v := range requestVariants(t, orig.req) {
				ec := &evalCase{source: o.policies + ": " + orig.source + " " + v.name, req: v.req}
				if err := ev.evaluate(t.Context(), ec); err != nil {
					t.Fatalf("%s: %v", ec.source, err)
				}
				called := false
				for _, call := range ec.calls {
					called = called || call.Called
				}
				if called {
					continue
				}
				skipped++
				d := ec.decision
				effect := !d.Allowed || len(d.Patch) > 0 || len(d.Warnings) > 0 || len(d.AuditAnnotations) > 0
				for _, r := range d.Results {
					effect = effect || r.State != engine.StateSkip
				}
				if effect {
					t.Errorf("%s: the API server would not call Celadon (%+v), but Celadon decides allowed=%v patch=%d warnings=%q results=%+v",
						ec.source, ec.calls, d.Allowed, len(d.Patch), d.Warnings, d.Results)
				}
			}
			checked++
		}
	}
	return checked, skipped
}

type requestVariant struct {
	name string
	req  *admissionv1.AdmissionRequest
}

// requestVariants returns req and variants of it: without labels, without
// owner references, and each as CREATE, UPDATE and DELETE.
func requestVariants(t *testing.T, req *admissionv1.AdmissionRequest) []requestVariant {
	t.Helper()
	decode := func(raw []byte) map[string]any {
		if len(raw) == 0 || string(raw) == "null" {
			return nil
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	encode := func(m map[string]any) runtime.RawExtension {
		if m == nil {
			return runtime.RawExtension{}
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	strip := func(m map[string]any, field string) map[string]any {
		if m == nil {
			return nil
		}
		b, _ := json.Marshal(m)
		out := decode(b)
		if md, ok := out["metadata"].(map[string]any); ok {
			delete(md, field)
		}
		return out
	}
	obj, old := decode(req.Object.Raw), decode(req.OldObject.Raw)
	base := obj
	if base == nil {
		base = old
	}
	out := []requestVariant{{"as is", req}}
	for _, change := range []string{"", "labels", "ownerReferences"} {
		o := base
		if change != "" {
			o = strip(base, change)
		}
		for _, op := range []admissionv1.Operation{admissionv1.Create, admissionv1.Update, admissionv1.Delete} {
			r := req.DeepCopy()
			r.Operation = op
			switch op {
			case admissionv1.Create:
				r.Object, r.OldObject = encode(o), runtime.RawExtension{}
			case admissionv1.Update:
				r.Object, r.OldObject = encode(o), encode(o)
			case admissionv1.Delete:
				r.Object, r.OldObject = runtime.RawExtension{}, encode(o)
			}
			name := string(op)
			if change != "" {
				name += fmt.Sprintf(" without %s", change)
			}
			out = append(out, requestVariant{name, r})
		}
	}
	return out
}
