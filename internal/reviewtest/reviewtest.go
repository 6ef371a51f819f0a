// Package reviewtest builds AdmissionReviews, posts them to handlers and
// reads the answers and metrics, for the tests of the packages that serve
// them.
package reviewtest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// Review builds an AdmissionReview of apiVersion for a pod CREATE.
func Review(apiVersion string, uid string, mod ...func(*admissionv1.AdmissionRequest)) []byte {
	req := &admissionv1.AdmissionRequest{
		UID:       types.UID(uid),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Name:      "web-0",
		Namespace: "default",
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: "alice"},
		Object: runtime.RawExtension{Raw: []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"default"},` +
			`"spec":{"containers":[{"name":"app","image":"nginx"}]}}`)},
	}
	for _, m := range mod {
		m(req)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"},
		Request:  req,
	})
	if err != nil {
		panic(err)
	}
	return b
}

const V1 = "admission.k8s.io/v1"
const V1beta1 = "admission.k8s.io/v1beta1"

// Post sends body to h at target with the given content type.
func Post(h http.Handler, target string, body []byte, contentType string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// ReviewOut is a decoded response review.
type ReviewOut struct {
	APIVersion string                         `json:"apiVersion"`
	Kind       string                         `json:"kind"`
	Response   *admissionv1.AdmissionResponse `json:"response"`
}

// MustReview checks w is an HTTP 200 review and decodes it.
func MustReview(t testing.TB, w *httptest.ResponseRecorder) *ReviewOut {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("HTTP %d, want 200: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var out ReviewOut
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, w.Body)
	}
	if out.Response == nil {
		t.Fatalf("review has no response: %s", w.Body)
	}
	return &out
}

// Counter reads a counter or gauge with the given labels from reg; 0 when
// it does not exist.
func Counter(t testing.TB, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			return metricValue(m)
		}
	}
	return 0
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// StatusMessage decodes the metav1.Status body of a rejected request.
func StatusMessage(t testing.TB, w *httptest.ResponseRecorder) string {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatalf("body is not a Status: %v\n%s", err, w.Body)
	}
	if int(st.Code) != w.Code || st.Kind != "Status" || st.Status != metav1.StatusFailure {
		t.Errorf("Status %+v does not match HTTP %d", st, w.Code)
	}
	return st.Message
}
