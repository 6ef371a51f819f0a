package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-logr/logr/funcr"
	admissionv1 "k8s.io/api/admission/v1"
)

// FuzzReview posts arbitrary bodies to /mutate and /validate. Whatever the
// body, the server answers 200 with a review carrying the request's uid, or
// a 4xx naming the problem; it never answers 5xx and never panics.
func FuzzReview(f *testing.F) {
	s, _ := newTestServer(f, map[string]string{
		"p.yaml": policy("label", "  match: {resources: [pods]}\n  action: setLabel\n  with: {key: team, value: blue}\n") + "\n---\n" +
			policy("deny", "  match:\n    resources: ['*']\n    conditions: [{expression: \"has(object.metadata) && has(object.metadata.labels) && 'bad' in object.metadata.labels\"}]\n  action: violate\n  with: {message: bad}\n"),
	}, func(o *Options) {
		// The server logs every errored policy, and a log through f's
		// testr inside the fuzz target panics (f.Helper): discard them.
		o.Logger = funcr.New(func(string, string) {}, funcr.Options{})
	})
	f.Add(review("admission.k8s.io/v1", "a"))
	f.Add(review("admission.k8s.io/v1beta1", "b"))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"c","resource":{"resource":"pods"},"operation":"CREATE","object":[]}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"d","resource":{"resource":"pods"},"operation":"DELETE","oldObject":{"metadata":{"labels":{"bad":"1"}}}}}`))
	f.Add([]byte(`{`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, h := range []http.Handler{s.MutateHandler(), s.ValidateHandler()} {
			r := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			switch {
			case w.Code == http.StatusOK:
				var ar admissionv1.AdmissionReview
				if err := json.Unmarshal(w.Body.Bytes(), &ar); err != nil || ar.Response == nil {
					t.Fatalf("200 without a review response: %s", w.Body)
				}
				var in admissionv1.AdmissionReview
				if json.Unmarshal(body, &in) == nil && in.Request != nil && ar.Response.UID != in.Request.UID {
					t.Fatalf("uid %q answered as %q", in.Request.UID, ar.Response.UID)
				}
			case w.Code >= 400 && w.Code < 500:
				if w.Body.Len() == 0 {
					t.Fatalf("HTTP %d without a reason", w.Code)
				}
			default:
				t.Fatalf("HTTP %d for %q: %s", w.Code, body, w.Body)
			}
		}
	})
}
