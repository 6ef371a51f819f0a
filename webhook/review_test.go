package webhook

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"celadon.io/celadon/engine"
)

// envelopeSeeds are reviews that reach every field of the envelope, with
// the shapes the one-pass decoder must read as sigs.k8s.io/json does: nulls,
// empty lists and maps, escaped keys, non-object objects, case variants,
// repeated keys, wrong types.
func envelopeSeeds(t testing.TB) [][]byte {
	pod, err := os.ReadFile(filepath.Join("..", "engine", "testdata", "pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	full := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},` +
		`"resource":{"group":"","version":"v1","resource":"pods"},"subResource":"","requestKind":{"group":"","version":"v1","kind":"Pod"},` +
		`"requestResource":{"group":"","version":"v1","resource":"pods"},"requestSubResource":"","name":"web-2","namespace":"shop","operation":"CREATE",` +
		`"userInfo":{"username":"system:serviceaccount:kube-system:statefulset-controller","uid":"9","groups":["system:serviceaccounts","system:authenticated"],"extra":{"a":["1","2"],"b":null}},` +
		`"object":` + string(pod) + `,"oldObject":null,"dryRun":false,"options":{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}}}`
	return [][]byte{
		[]byte(full),
		[]byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x","operation":"DELETE","oldObject":{"metadata":{"name":"a"}},"object":null,"dryRun":true}}`),
		[]byte(` { "apiVersion" : "admission.k8s.io/v1" , "kind" : "AdmissionReview" , "request" : { "uid" : "x" , "object" : [ 1 , 2 ] , "options" : "s" } } `),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"\u0075id":"x","name":"caf\u00e9 \ud83d\ude00 \ud800","userInfo":{"groups":[],"extra":{}},"object":5}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"UID":"x","Name":"n","uid":"y"}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"},"request":{"name":"n"}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":{"a":1,"a":2}}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","userInfo":{"groups":["a",null,3]}}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","dryRun":"true","requestKind":null,"userInfo":null}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":{"n":1e400}}}`),
		[]byte(`{"apiVersion":null,"kind":"AdmissionReview","request":null,"response":{"uid":"r"}}`),
		[]byte("{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"\xff\xfe\",\"object\":{\"k\":\"\xff\"}}}"),
		[]byte(`[]`),
		[]byte(`null`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"}} x`),
	}
}

// checkEnvelope compares the one-pass reading of body with the API server's
// decoder's (sigs.k8s.io/json, case-sensitive) and encoding/json's. When the
// one-pass decoder reads a body, it must read what sigs.k8s.io/json reads,
// and what encoding/json reads wherever the two agree; a body it does not
// read goes to sigs.k8s.io/json, as before.
func checkEnvelopeReading(t *testing.T, body []byte) (fast bool) {
	t.Helper()
	var want reviewIn
	kerr := kjson.UnmarshalCaseSensitivePreserveInts(body, &want)
	var std reviewIn
	serr := json.Unmarshal(body, &std)

	review, err := engine.ParseReview(body)
	if err != nil {
		return false
	}
	defer review.Release()
	got := reviewIn{Request: review.Request}
	got.APIVersion, got.Kind = review.APIVersion, review.Kind
	if kerr != nil {
		t.Fatalf("one-pass read %s, sigs.k8s.io/json refused it: %v", body, kerr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("one-pass and sigs.k8s.io/json read differently:\n%#v\n%#v\nbody %s", got, want, body)
	}
	if serr == nil && reflect.DeepEqual(std, want) && !reflect.DeepEqual(got, std) {
		t.Fatalf("one-pass and encoding/json read differently:\n%#v\n%#v", got, std)
	}
	return true
}

func TestEnvelopeReadsAsTheAPIServerDecoder(t *testing.T) {
	fast := 0
	for _, body := range envelopeSeeds(t) {
		if checkEnvelopeReading(t, body) {
			fast++
		}
	}
	// Most seeds are read in one pass; those that are not (repeated keys,
	// wrong types, invalid JSON) are the slow path's.
	if fast < 7 {
		t.Fatalf("only %d seeds were read in one pass", fast)
	}
	for _, slow := range []string{
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"},"request":{"name":"n"}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":{"n":1e400}}}`,
	} {
		if _, err := engine.ParseReview([]byte(slow)); err == nil {
			t.Errorf("%s: read in one pass, want the slow path", slow)
		}
	}
}

// TestSlowPathKeepsMessagesAndReadings: bodies the one-pass decoder leaves
// get today's answers: the same 400 message, or the same reading.
func TestSlowPathKeepsMessagesAndReadings(t *testing.T) {
	for _, c := range []struct{ body, msg, uid, name string }{
		{body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}`,
			msg: "request body is not a JSON AdmissionReview: json: cannot unmarshal number into Go struct field AdmissionRequest.request.uid of type types.UID"},
		{body: `{"apiVersion":"admission.k8s.io/v1"`, msg: "request body is not a JSON AdmissionReview: unexpected end of JSON input"},
		// encoding/json merges a repeated struct key into the first.
		{body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"},"request":{"name":"n"}}`, uid: "x", name: "n"},
		{body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","name":"a","name":null}}`, uid: "x", name: "a"},
	} {
		var req admission.Request
		_, review, bad := decodeReview([]byte(c.body), &req, false)
		if review != nil {
			t.Errorf("%s: read in one pass", c.body)
			review.Release()
		}
		switch {
		case c.msg != "" && (bad == nil || bad.code != 400 || bad.msg != c.msg):
			t.Errorf("%s: got %v, want 400 %q", c.body, bad, c.msg)
		case c.msg == "" && (bad != nil || string(req.UID) != c.uid || req.Name != c.name):
			t.Errorf("%s: got %v uid %q name %q, want uid %q name %q", c.body, bad, req.UID, req.Name, c.uid, c.name)
		}
	}
}

// FuzzEnvelope is the differential test of the one-pass envelope against
// sigs.k8s.io/json and encoding/json (checkEnvelopeReading).
func FuzzEnvelope(f *testing.F) {
	for _, s := range envelopeSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkEnvelopeReading(t, body)
		// And the handler's decode agrees with the slow path's whatever
		// the path taken.
		var req admission.Request
		apiVersion, review, bad := decodeReview(body, &req, len(body)%2 == 1)
		if review != nil {
			review.Release()
		}
		var in reviewIn
		if kjson.UnmarshalCaseSensitivePreserveInts(body, &in) != nil {
			if bad == nil || bad.code != 400 {
				t.Fatalf("sigs.k8s.io/json refuses %q, decodeReview answered %v", body, bad)
			}
			return
		}
		wantBad := checkEnvelope(in.APIVersion, in.Kind, in.Request)
		if (bad == nil) != (wantBad == nil) || bad != nil && bad.msg != wantBad.msg {
			t.Fatalf("decodeReview answered %v, want %v", bad, wantBad)
		}
		if bad == nil && (apiVersion != in.APIVersion || !reflect.DeepEqual(req.AdmissionRequest, *in.Request)) {
			t.Fatalf("decodeReview read %#v, want %#v", req.AdmissionRequest, *in.Request)
		}
	})
}

// TestReviewObjectsAreReadFromTheTape: the engine evaluates the objects of
// a review parsed in one pass from its tape, and gets the same decision as
// from the objects' bytes.
func TestReviewObjectsAreReadFromTheTape(t *testing.T) {
	body := envelopeSeeds(t)[0]
	review, err := engine.ParseReview(body)
	if err != nil {
		t.Fatal(err)
	}
	defer review.Release()
	var want admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &want); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(review.Request.Object.Raw, want.Request.Object.Raw) {
		t.Fatalf("object bytes differ")
	}
	// Appending to the bytes copies them: the tape's text is never written.
	raw := review.Request.Object.Raw
	if cap(raw) != len(raw) {
		t.Fatalf("object bytes have capacity %d beyond their %d bytes", cap(raw), len(raw))
	}
}
