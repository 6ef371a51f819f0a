package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"slices"
	"testing"

	jsonpatch "gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"celadon.io/celadon/engine"
	"celadon.io/celadon/internal/reviewtest"
)

// crResponse is resp as the controller-runtime admission.Response the
// handler answered with before Response: a status only when one is set.
func crResponse(resp *Response) admission.Response {
	var r admission.Response
	r.Allowed = resp.allowed
	if resp.code != 0 || resp.reason != "" || resp.message != "" {
		r.Result = &metav1.Status{Code: resp.code, Reason: resp.reason, Message: resp.message}
	}
	r.Patches, r.Warnings, r.AuditAnnotations = resp.patch, resp.warnings, resp.audit
	return r
}

// completed is resp answering uid as encoding/json saw it before
// AppendReview: controller-runtime's response, completed.
func completed(uid types.UID, resp *Response) (*admissionv1.AdmissionResponse, error) {
	r := crResponse(resp)
	if err := r.Complete(admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{UID: uid}}); err != nil {
		return nil, err
	}
	return &r.AdmissionResponse, nil
}

// encodeReview is what the handler wrote before AppendReview: encoding/json
// of the completed response.
func encodeReview(apiVersion string, resp *admissionv1.AdmissionResponse) ([]byte, error) {
	var buf bytes.Buffer
	err := json.NewEncoder(&buf).Encode(&admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"},
		Response: resp,
	})
	return buf.Bytes(), err
}

// stdReview is encodeReview of resp, completed.
func stdReview(apiVersion string, uid types.UID, resp Response) ([]byte, error) {
	ar, err := completed(uid, &resp)
	if err != nil {
		return nil, err
	}
	return encodeReview(apiVersion, ar)
}

// tricky holds what encoding/json escapes: HTML, quotes, control
// characters, U+2028/U+2029, invalid UTF-8, and multi-byte runes kept.
const tricky = "<b>a & b</b> \"q\" \\ \x00\x01\b\f\n\r\t\x1f\x7f \u2028\u2029 \xff\xc3 é 日本 🙂"

func patchedResponse() Response {
	return FromDecision(&engine.Decision{
		Allowed: true,
		Patch: []jsonpatch.JsonPatchOperation{
			engine.Op("add", "/metadata/labels/a~1b", tricky),
			engine.Op("add", "/spec/containers/-", map[string]any{
				"name": "side", "image": "busybox:1", "args": []any{"-c", "echo <hi>", int64(3), 2.5, true, nil},
				"resources": map[string]any{"limits": map[string]any{"cpu": "100m", "zz": int64(-7), "aa": 1e21, "bb": 1e-7, "cc": 0.000001, "dd": -0.0}},
				tricky:      map[string]any{},
				"empty":     []any{},
			}),
			engine.Op("replace", "/spec/replicas", int64(math.MaxInt64)),
			engine.Op("replace", "/spec/f", 123456789.125),
			engine.Op("add", "/spec/null", nil),      // "value": null
			engine.Op("replace", "/spec/nil", nil),   // "value": null
			engine.Op("remove", "/spec/gone", nil),   // no value
			engine.Op("test", "/spec/untested", nil), // no value
			engine.Op("add", "/x/ints", []any{0, int32(-1), uint64(math.MaxUint64)}),
			engine.Op("add", "/x/strings", []string{"a", tricky}),
			engine.Op("add", "/x/stringmap", map[string]string{"z": "1", "a": tricky}),
			engine.Op("add", "/x/nilmap", map[string]any(nil)),
			engine.Op("add", "/x/nilslice", []any(nil)),
			// encoding/json writes these.
			engine.Op("add", "/x/number", json.Number("12.50")),
			engine.Op("add", "/x/float32", float32(0.1)),
			engine.Op("add", "/x/struct", corev1.Container{Name: "typed", Image: "x<y>"}),
			engine.Op("add", "/x/raw", json.RawMessage(` {"a" : [1, 2]} `)),
		},
		Warnings:         []string{"first", tricky},
		AuditAnnotations: map[string]string{"z.celadon.io/b": "2", "a.celadon.io/a": tricky, "m": ""},
	})
}

// responses covers what the constructors build, with and without
// status, patch, warnings and audit annotations.
func responses() map[string]Response {
	deep := any("leaf")
	for range 600 { // deeper than maxDepth: encoding/json writes the rest
		deep = []any{map[string]any{"d": deep}}
	}
	return map[string]Response{
		"allowed":                FromDecision(&engine.Decision{Allowed: true}),
		"allowed, constructor":   Allowed(),
		"allowed with warnings":  Allowed().WithWarnings(tricky, ""),
		"denied":                 FromDecision(&engine.Decision{Message: "policy a: " + tricky}),
		"denied, no message":     FromDecision(&engine.Decision{}),
		"denied with warnings":   FromDecision(&engine.Decision{Message: "no", Warnings: []string{"w1", "w2"}, AuditAnnotations: map[string]string{"k": "v"}}),
		"denied, constructor":    Denied(tricky),
		"denied, invalid":        FromDecision(&engine.Decision{Message: tricky, StatusReason: metav1.StatusReasonInvalid, Warnings: []string{"w"}}),
		"denied, too large":      FromDecision(&engine.Decision{Message: "big", StatusReason: metav1.StatusReasonRequestEntityTooLarge}),
		"denied, unknown reason": FromDecision(&engine.Decision{Message: "no", StatusReason: "Teapot"}),
		"patched":                patchedResponse(),
		"patched, one op":        FromDecision(&engine.Decision{Allowed: true, Patch: []jsonpatch.JsonPatchOperation{engine.Op("add", "/metadata/labels", map[string]any{"team": "a"})}}),
		"patched, deep":          FromDecision(&engine.Decision{Allowed: true, Patch: []jsonpatch.JsonPatchOperation{engine.Op("add", "/deep", deep)}}),
		"patched, warned":        patchedResponse().WithWarnings("added"),
		"empty, not nil":         FromDecision(&engine.Decision{Allowed: true, Patch: []jsonpatch.JsonPatchOperation{}, Warnings: []string{}, AuditAnnotations: map[string]string{}}),
		"warnings only":          FromDecision(&engine.Decision{Allowed: true, Warnings: []string{tricky}}),
		"audit annotations only": FromDecision(&engine.Decision{Allowed: true, AuditAnnotations: map[string]string{"b": "2", "a": "1", "": "empty key"}}),
		"errored":                Errored(http.StatusInternalServerError, errors.New("celadon: internal error: "+tricky)),
		"errored, no code":       Errored(0, errors.New("boom")),
		"errored, warned":        Errored(http.StatusBadRequest, errors.New("bad")).WithWarnings("w"),
		"not evaluated":          NotEvaluated(http.StatusTooManyRequests, errors.New("busy")),
		"zero":                   {},
	}
}

// TestAppendReviewIsEncodingJSON compares AppendReview with encoding/json
// for each response, review version and a few uids.
func TestAppendReviewIsEncodingJSON(t *testing.T) {
	for name, resp := range responses() {
		for _, v := range []string{reviewtest.V1, reviewtest.V1beta1, ""} {
			for _, uid := range []types.UID{"705ab4f5-6393-11e8-b7cc-42010a800002", "", tricky} {
				want, werr := stdReview(v, uid, resp)
				got, err := AppendReview([]byte("prefix"), v, uid, &resp)
				if werr != nil || err != nil {
					t.Errorf("%s (%s, uid %q): error %v, encoding/json's %v", name, v, uid, err, werr)
					continue
				}
				if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[len("prefix"):], want) {
					t.Errorf("%s (%s, uid %q):\n got %s\nwant %s", name, v, uid, got, want)
				}
			}
		}
	}
	// AppendReview leaves the response as it was.
	resp := patchedResponse()
	if _, err := AppendReview(nil, reviewtest.V1, "u", &resp); err != nil || !reflect.DeepEqual(resp, patchedResponse()) {
		t.Errorf("AppendReview modified the response: %+v (error %v)", resp, err)
	}
}

// TestConstructorsAreControllerRuntimes: each constructor is written as
// the controller-runtime response it replaces was, completed and encoded,
// without going through crResponse.
func TestConstructorsAreControllerRuntimes(t *testing.T) {
	err := errors.New("celadon: " + tricky)
	ops := []jsonpatch.JsonPatchOperation{engine.Op("add", "/metadata/labels", map[string]any{"a": tricky})}
	audit := map[string]string{"k": tricky}
	withAudit := func(r admission.Response) admission.Response { r.AuditAnnotations = audit; return r }
	notEval := admission.Errored(http.StatusTooManyRequests, err)
	notEval.Result.Reason = "CeladonNotEvaluated"
	for name, c := range map[string]struct {
		got  Response
		want admission.Response
	}{
		"Allowed":                  {Allowed(), admission.Allowed("")},
		"Allowed, warned":          {Allowed().WithWarnings("a", tricky), admission.Allowed("").WithWarnings("a", tricky)},
		"Denied":                   {Denied(tricky), admission.Denied(tricky)},
		"Denied, no message":       {Denied(""), admission.Denied("")},
		"Errored":                  {Errored(http.StatusInternalServerError, err), admission.Errored(http.StatusInternalServerError, err)},
		"Errored, no code":         {Errored(0, err), admission.Errored(0, err)},
		"NotEvaluated":             {NotEvaluated(http.StatusTooManyRequests, err), notEval},
		"FromDecision, allowed":    {FromDecision(&engine.Decision{Allowed: true}), admission.Allowed("")},
		"FromDecision, patched":    {FromDecision(&engine.Decision{Allowed: true, Patch: ops, Warnings: []string{"w"}, AuditAnnotations: audit}), withAudit(admission.Patched("", ops...).WithWarnings("w"))},
		"FromDecision, denied":     {FromDecision(&engine.Decision{Message: tricky, Warnings: []string{"w"}, AuditAnnotations: audit}), withAudit(admission.Denied(tricky).WithWarnings("w"))},
		"FromDecision, no message": {FromDecision(&engine.Decision{}), admission.Denied("")},
	} {
		if err := c.want.Complete(admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{UID: "u"}}); err != nil {
			t.Fatal(err)
		}
		want, werr := encodeReview(reviewtest.V1, &c.want.AdmissionResponse)
		got, err := AppendReview(nil, reviewtest.V1, "u", &c.got)
		if werr != nil || err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s (error %v, %v):\n got %s\nwant %s", name, err, werr, got, want)
		}
	}
}

// TestWithWarningsCopies: warnings added to a decision's response do not
// land in the spare capacity of the decision's slice.
func TestWithWarningsCopies(t *testing.T) {
	ws := make([]string, 1, 4)
	ws[0] = "decided"
	d := &engine.Decision{Allowed: true, Warnings: ws}
	r := FromDecision(d).WithWarnings("added")
	if got := ws[:2]; got[1] != "" {
		t.Errorf("the decision's array was written: %q", got)
	}
	if got := r.Warnings(); !slices.Equal(got, []string{"decided", "added"}) {
		t.Errorf("warnings %q", got)
	}
	if got := FromDecision(d).Warnings(); !slices.Equal(got, []string{"decided"}) {
		t.Errorf("the decision's response has warnings %q", got)
	}
}

// TestAppendReviewErrorIsComplete: a patch value encoding/json cannot
// write fails as Complete does, with its error.
func TestAppendReviewErrorIsComplete(t *testing.T) {
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	for name, v := range map[string]any{"NaN": math.NaN(), "+Inf": []any{math.Inf(1)}, "channel": map[string]any{"c": make(chan int)}, "cycle": cyclic} {
		resp := FromDecision(&engine.Decision{Allowed: true, Patch: []jsonpatch.JsonPatchOperation{engine.Op("add", "/a", "fine"), engine.Op("add", "/b", v)}})
		_, werr := stdReview(reviewtest.V1, "u", resp)
		_, err := AppendReview(nil, reviewtest.V1, "u", &resp)
		if werr == nil || err == nil || err.Error() != werr.Error() {
			t.Errorf("%s: error %v, want Complete's %v", name, err, werr)
		}
	}
}

// TestHandlerWritesEncodingJSON runs each response through a ReviewHandler:
// its body is encoding/json's review of the completed response; a response
// that cannot be encoded is an internal error, and NotEvaluated a status.
func TestHandlerWritesEncodingJSON(t *testing.T) {
	cases := responses()
	delete(cases, "not evaluated") // written as a status: below
	cases["unencodable"] = FromDecision(&engine.Decision{Allowed: true, Patch: []jsonpatch.JsonPatchOperation{engine.Op("add", "/a", math.NaN())}})
	for name, resp := range cases {
		for _, v := range []string{reviewtest.V1, reviewtest.V1beta1} {
			h := &ReviewHandler{Handler: HandlerFunc(func(context.Context, admission.Request) Response { return resp })}
			w := reviewtest.Post(h, "/mutate", reviewtest.Review(v, "uid-"+name), "application/json")
			want, err := stdReview(v, types.UID("uid-"+name), resp)
			if err != nil {
				errored := Errored(http.StatusInternalServerError, fmt.Errorf("celadon: cannot encode the response: %v", err))
				want, _ = stdReview(v, types.UID("uid-"+name), errored)
			}
			if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" || !bytes.Equal(w.Body.Bytes(), want) {
				t.Errorf("%s (%s): HTTP %d, Content-Type %q\n got %s\nwant %s", name, v, w.Code, w.Header().Get("Content-Type"), w.Body, want)
			}
		}
	}

	msg := "celadon: no slot " + tricky
	h := &ReviewHandler{Handler: HandlerFunc(func(context.Context, admission.Request) Response {
		return NotEvaluated(http.StatusTooManyRequests, errors.New(msg))
	})}
	w := reviewtest.Post(h, "/mutate", reviewtest.Review(reviewtest.V1, "busy"), "application/json")
	want, _ := json.Marshal(&metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}, Status: metav1.StatusFailure, Message: msg, Reason: metav1.StatusReasonTooManyRequests, Code: http.StatusTooManyRequests})
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Content-Type") != "application/json" || w.Header().Get("X-Content-Type-Options") != "nosniff" || !bytes.Equal(w.Body.Bytes(), append(want, '\n')) {
		t.Errorf("NotEvaluated: HTTP %d, header %v\n got %s\nwant %s", w.Code, w.Header(), w.Body, want)
	}
}

// TestDecisionOf: a response refused with any code but 403 is an error,
// the zero one included (written with code 200), unless it is a decision's
// denial with its status reason's code.
func TestDecisionOf(t *testing.T) {
	patch := []jsonpatch.JsonPatchOperation{engine.Op("add", "/a", "b")}
	for want, rs := range map[string][]Response{
		DecisionAllowed: {Allowed(), FromDecision(&engine.Decision{Allowed: true}), Allowed().WithWarnings("w")},
		DecisionPatched: {FromDecision(&engine.Decision{Allowed: true, Patch: patch})},
		DecisionDenied: {Denied("no"), FromDecision(&engine.Decision{Message: "no"}), Errored(http.StatusForbidden, errors.New("no")),
			FromDecision(&engine.Decision{Message: "no", StatusReason: metav1.StatusReasonInvalid}),
			FromDecision(&engine.Decision{Message: "no", StatusReason: metav1.StatusReasonUnauthorized}),
			FromDecision(&engine.Decision{Message: "no", StatusReason: metav1.StatusReasonRequestEntityTooLarge})},
		DecisionError: {{}, Errored(0, errors.New("x")), Errored(http.StatusInternalServerError, errors.New("x")), NotEvaluated(http.StatusTooManyRequests, errors.New("x")),
			Errored(http.StatusUnprocessableEntity, errors.New("x")), Errored(http.StatusUnauthorized, errors.New("x"))},
	} {
		for i, r := range rs {
			if got := decisionOf(&r); got != want {
				t.Errorf("%s #%d (%+v): decision %q", want, i, r, got)
			}
		}
	}
}

// TestAppendReviewAllocatesNothing: a patched response with warnings and
// audit annotations is written into a buffer of its size without
// allocating, once the encoder's scratch space has grown.
func TestAppendReviewAllocatesNothing(t *testing.T) {
	resp := FromDecision(&engine.Decision{
		Allowed: true,
		Patch: []jsonpatch.JsonPatchOperation{
			engine.Op("add", "/metadata/labels/team", "a"),
			engine.Op("add", "/spec/containers/-", map[string]any{"name": "side", "args": []any{"-c", int64(1), 0.5}, "env": map[string]any{"b": true, "a": nil}}),
			engine.Op("remove", "/spec/x", nil),
		},
		Warnings:         []string{"w <1>"},
		AuditAnnotations: map[string]string{"b": "1", "a": "2"},
	})
	var e reviewEncoder
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := e.appendReview(buf, reviewtest.V1, "uid", &resp); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("appendReview allocated %v times, want 0", n)
	}
}

// TestKeepHoldsTheGrownArray: an answer larger than the request's buffer
// goes back to the pool in it.
func TestKeepHoldsTheGrownArray(t *testing.T) {
	buf := bytes.NewBuffer(make([]byte, 0, 8))
	small := append(buf.AvailableBuffer(), "short"...)
	keep(buf, small)
	if buf.Cap() != 8 || &buf.AvailableBuffer()[:1][0] != &small[0] {
		t.Errorf("an answer that fits: the buffer changed (cap %d)", buf.Cap())
	}
	big := append(buf.AvailableBuffer(), "longer than eight"...)
	keep(buf, big)
	if buf.Cap() != cap(big) || buf.Len() != 0 || &buf.AvailableBuffer()[:1][0] != &big[0] {
		t.Errorf("a grown answer: cap %d, len %d; want the grown array, empty", buf.Cap(), buf.Len())
	}
}

// FuzzReviewResponseJSON builds responses from fuzzed strings and numbers
// and compares AppendReview's bytes with encoding/json's.
func FuzzReviewResponseJSON(f *testing.F) {
	f.Add("705ab4f5", "denied <b>", "a warning", "team", "a & b", "/metadata/labels/x", "value\u2028", int64(42), 1.5, true)
	f.Add("", "", "", "", "", "", "", int64(0), 0.0, false)
	f.Add("\xff", "\x00\x1f\"\\", "\xc3\x28", "\u2029", "é", "/a~1b", "🙂<>&", int64(-1), 1e21, true)
	f.Add("u", "m", "w", "replace", "v", "/p", "s", int64(math.MinInt64), 1e-7, true)
	f.Add("u", "m", "w", "k", "v", "/p", "s", int64(1), math.Inf(-1), true)
	f.Fuzz(func(t *testing.T, uid, msg, warning, key, val, path, sval string, n int64, fl float64, allowed bool) {
		d := &engine.Decision{
			Allowed:          allowed,
			Message:          msg,
			Warnings:         []string{warning, msg},
			AuditAnnotations: map[string]string{key: val, val: key, path: sval},
		}
		if allowed {
			d.Message = ""
			d.Patch = []jsonpatch.JsonPatchOperation{
				engine.Op("add", path, sval),
				engine.Op("replace", path+"/"+key, map[string]any{key: sval, val: []any{n, fl, sval, nil, map[string]any{sval: n}}, "f": fl}),
				engine.Op("remove", sval, nil),
				engine.Op(key, path, nil),
				engine.Op("add", "/n", n),
				engine.Op("add", "/f", fl),
			}
		}
		for _, resp := range []Response{
			FromDecision(d),
			FromDecision(&engine.Decision{Message: msg, StatusReason: metav1.StatusReason(key)}),
			FromDecision(&engine.Decision{Message: msg, StatusReason: metav1.StatusReasonInvalid, Warnings: []string{warning}}),
			Errored(int32(n), errors.New(msg)).WithWarnings(warning),
			Denied(msg).WithWarnings(warning),
		} {
			for _, v := range []string{reviewtest.V1, reviewtest.V1beta1} {
				want, werr := stdReview(v, types.UID(uid), resp)
				got, err := AppendReview(nil, v, types.UID(uid), &resp)
				if (err != nil) != (werr != nil) || err != nil && err.Error() != werr.Error() {
					t.Fatalf("error %v, encoding/json's %v", err, werr)
				}
				if err == nil && !bytes.Equal(got, want) {
					t.Fatalf("\n got %s\nwant %s", got, want)
				}
			}
		}
		st := metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}, Status: metav1.StatusFailure, Message: msg, Reason: metav1.StatusReason(key), Code: int32(n)}
		want, _ := json.Marshal(&st)
		if got := appendStatus(nil, &st, 0); !bytes.Equal(got, want) {
			t.Fatalf("status:\n got %s\nwant %s", got, want)
		}
	})
}

// BenchmarkAppendReview writes a patched review (a label and a sidecar,
// a warning, an audit annotation) with AppendReview and, for comparison,
// as the handler did before: Complete, then encoding/json.
func BenchmarkAppendReview(b *testing.B) {
	d := &engine.Decision{
		Allowed: true,
		Patch: []jsonpatch.JsonPatchOperation{
			engine.Op("add", "/metadata/labels/team", "payments"),
			engine.Op("add", "/spec/containers/-", map[string]any{
				"name": "proxy", "image": "envoyproxy/envoy:v1.30", "args": []any{"--config", "/etc/envoy.yaml"},
				"resources": map[string]any{"requests": map[string]any{"cpu": "100m", "memory": "64Mi"}},
				"ports":     []any{map[string]any{"containerPort": int64(15001), "protocol": "TCP"}},
			}),
		},
		Warnings:         []string{"policy sidecar: injected proxy"},
		AuditAnnotations: map[string]string{"celadon.io/mutated": "sidecar"},
	}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			resp := FromDecision(d)
			var err error
			if buf, err = AppendReview(buf[:0], reviewtest.V1, "705ab4f5-6393-11e8-b7cc-42010a800002", &resp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		var buf bytes.Buffer
		for b.Loop() {
			resp := FromDecision(d)
			cr := crResponse(&resp)
			if err := cr.Complete(admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{UID: "705ab4f5-6393-11e8-b7cc-42010a800002"}}); err != nil {
				b.Fatal(err)
			}
			buf.Reset()
			if err := json.NewEncoder(&buf).Encode(&admissionv1.AdmissionReview{
				TypeMeta: metav1.TypeMeta{APIVersion: reviewtest.V1, Kind: "AdmissionReview"},
				Response: &cr.AdmissionResponse,
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
