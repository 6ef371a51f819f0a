package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

// TestEvaluateReadsTheReviewTape: a request decoded by ParseReview is
// evaluated from the review's tape, with no second parse of its objects,
// and decided as the same request given as bytes; a request whose bytes
// were replaced is parsed from them.
func TestEvaluateReadsTheReviewTape(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("team", "  match:\n    resources: [pods]\n    conditions: [{expression: 'object.metadata.name.startsWith(\"web\") && oldObject.metadata.name == \"old\"'}]\n  action: setLabel\n  with: {key: team, value: blue}\n"),
		policyYAML("check", "  match:\n    resources: [pods]\n    conditions: [{expression: '\"team\" in object.metadata.labels && object.metadata.labels.team == \"blue\"'}]\n  action: violate\n  with: {message: saw the patch}\n  enforcement: Warn\n"),
	)
	bytesReq := podRequest(t, admissionv1.Update, pod("web-0", map[string]string{"app": "web"}), pod("old", nil))
	body, err := json.Marshal(admissionv1.AdmissionReview{Request: bytesReq})
	must(t, err)
	body = append([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",`), body[1:]...)
	r, err := ParseReview(body)
	must(t, err)
	defer r.Release()

	req := *r.Request // the webhook hands the engine a copy
	ctx := WithReview(context.Background(), r)
	ev, err := newEvaluation(ctx, &req, EvalOptions{}, nil)
	must(t, err)
	if ev.object.doc != &r.doc || ev.object.root != r.object || ev.oldObject.doc != &r.doc || ev.oldObject.root != r.oldObject {
		t.Fatalf("the objects were parsed again, not read from the review's tape")
	}
	got, err := snap.Evaluate(ctx, &req, EvalOptions{})
	must(t, err)
	want := evaluate(t, snap, bytesReq, EvalOptions{})
	if states(got) != "team=pass,check=warn" || states(got) != states(want) ||
		!reflect.DeepEqual(got.Patch, want.Patch) || !reflect.DeepEqual(got.Warnings, want.Warnings) {
		t.Fatalf("from the tape %s %v %q; from bytes %s %v %q", states(got), got.Patch, got.Warnings, states(want), want.Patch, want.Warnings)
	}

	gotObj, err := got.Object()
	must(t, err)
	wantObj, err := want.Object()
	must(t, err)
	if !reflect.DeepEqual(gotObj, wantObj) {
		t.Fatalf("patched object from the tape %v, from bytes %v", gotObj, wantObj)
	}

	// A decorator that replaced the object: its bytes count.
	other := req
	other.Object = raw(t, pod("other", map[string]string{"app": "web"}))
	ev, err = newEvaluation(ctx, &other, EvalOptions{}, nil)
	must(t, err)
	if ev.object.doc == &r.doc {
		t.Fatalf("a replaced object was read from the review's tape")
	}
	if d, err := snap.Evaluate(ctx, &other, EvalOptions{}); err != nil || states(d) != "team=skip,check=skip" {
		t.Fatalf("replaced object: %v %+v", err, d)
	}
}

// TestReleasedReviewKeepsTheRequest: Release reuses the tape, never the
// request's strings or bytes, which callers may keep (audit results keep
// names).
func TestReleasedReviewKeepsTheRequest(t *testing.T) {
	r, err := ParseReview([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","name":"n1","object":{"a":"b"}}}`))
	must(t, err)
	req := *r.Request
	r.Release()
	r2, err := ParseReview([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u2","name":"n2","object":{"c":"d"}}}`))
	must(t, err)
	defer r2.Release()
	if req.UID != "u1" || req.Name != "n1" || string(req.Object.Raw) != `{"a":"b"}` {
		t.Fatalf("a released review's request changed: %+v %s", req, req.Object.Raw)
	}
}

// TestParseReviewOwnedSharesTheBody: an owned body backs the request
// without a copy, and reads as the copied one does.
func TestParseReviewOwnedSharesTheBody(t *testing.T) {
	body := []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","name":"n1","object":{"a":"b"}}}`)
	owned, err := ParseReviewOwned(body)
	must(t, err)
	defer owned.Release()
	copied, err := ParseReview(body)
	must(t, err)
	defer copied.Release()
	if !reflect.DeepEqual(*owned.Request, *copied.Request) {
		t.Fatalf("owned %+v, copied %+v", *owned.Request, *copied.Request)
	}
	raw := owned.Request.Object.Raw
	if &raw[0] != &body[bytes.Index(body, []byte(`{"a"`))] {
		t.Errorf("the owned review's object is a copy")
	}
	if &copied.Request.Object.Raw[0] == &raw[0] {
		t.Errorf("the copied review shares the body")
	}
}
