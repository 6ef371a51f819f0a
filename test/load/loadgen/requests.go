package loadgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Request kinds of the mix.
const (
	KindPod          = "pod"          // a StatefulSet Pod CREATE (engine/testdata/pod.json)
	KindDeployDelete = "deploydelete" // a Deployment DELETE, oldObject set
	KindIngress      = "ingress"      // an Ingress CREATE
)

// Kinds lists the kinds a mix may name.
var Kinds = []string{KindPod, KindDeployDelete, KindIngress}

// DefaultMix is the request mix used when -mix is not given.
const DefaultMix = "pod=8,deploydelete=1,ingress=1"

// Weight is one kind of a mix and its weight.
type Weight struct {
	Kind   string
	Weight int
}

// ParseMix parses "pod=8,deploydelete=1,ingress=1". A kind without "=N"
// weighs 1; a weight of 0 leaves the kind out; at least one kind must weigh
// more than 0. Kinds keep the order given.
func ParseMix(s string) ([]Weight, error) {
	var mix []Weight
	seen := map[string]bool{}
	total := 0
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		kind, w, hasW := strings.Cut(part, "=")
		kind = strings.TrimSpace(kind)
		n := 1
		if hasW {
			var err error
			n, err = strconv.Atoi(strings.TrimSpace(w))
			if err != nil || n < 0 || n > 1000 {
				return nil, fmt.Errorf("mix %q: weight of %s: want an integer 0-1000", s, kind)
			}
		}
		known := false
		for _, k := range Kinds {
			known = known || k == kind
		}
		if !known {
			return nil, fmt.Errorf("mix %q: unknown kind %q (want %s)", s, kind, strings.Join(Kinds, ", "))
		}
		if seen[kind] {
			return nil, fmt.Errorf("mix %q: %s given twice", s, kind)
		}
		seen[kind] = true
		if n > 0 {
			mix = append(mix, Weight{kind, n})
			total += n
		}
	}
	if total == 0 {
		return nil, fmt.Errorf("mix %q: no kind with a weight above 0", s)
	}
	return mix, nil
}

// Schedule expands a mix into the cycle of kinds a worker walks through,
// interleaved (pod,pod,deploydelete,pod,... rather than pods first) so that
// short runs see the mix too.
func Schedule(mix []Weight) []string {
	total := 0
	for _, w := range mix {
		total += w.Weight
	}
	out := make([]string, 0, total)
	// Smooth weighted round robin (as nginx's): deterministic, interleaved.
	cur := make([]int, len(mix))
	for range total {
		best := -1
		for i, w := range mix {
			cur[i] += w.Weight
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		out = append(out, mix[best].Kind)
	}
	return out
}

// uidPlaceholder is the UID of every template: 36 characters, replaced in
// place by Body.Next.
const uidPlaceholder = "00000000-0000-4000-8000-000000000000"

// Template is one pre-encoded AdmissionReview with the offset of its UID.
type Template struct {
	Kind string
	Name string // variant, e.g. "deploydelete/protected"
	// Denied is whether the shipped policies deny it on /validate.
	Denied  bool
	Body    []byte
	uidOffs int
}

// Templates builds the request variants of a kind from the pod fixture.
// Deployment DELETEs come in four variants of which one is labelled
// celadon.io/protected=true (and so denied by the shipped protect-delete).
func Templates(kind string, pod []byte) ([]*Template, error) {
	var reqs []struct {
		name   string
		denied bool
		req    admissionv1.AdmissionRequest
	}
	add := func(name string, denied bool, r admissionv1.AdmissionRequest) {
		reqs = append(reqs, struct {
			name   string
			denied bool
			req    admissionv1.AdmissionRequest
		}{name, denied, r})
	}
	switch kind {
	case KindPod:
		var meta struct {
			Metadata struct{ Name, Namespace string } `json:"metadata"`
		}
		if err := json.Unmarshal(pod, &meta); err != nil {
			return nil, fmt.Errorf("pod fixture: %w", err)
		}
		add("pod/statefulset", false, admissionv1.AdmissionRequest{
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Name:      meta.Metadata.Name,
			Namespace: meta.Metadata.Namespace,
			Operation: admissionv1.Create,
			UserInfo: authenticationv1.UserInfo{
				Username: "system:serviceaccount:kube-system:statefulset-controller",
				UID:      "5d2b8a56-3c3c-4b7e-9a8b-0e0c1f0f7f3a",
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
			},
			Object:  runtime.RawExtension{Raw: compact(pod)},
			Options: runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
		})
	case KindDeployDelete:
		for i, protected := range []bool{false, false, false, true} {
			name := fmt.Sprintf("api-%d", i)
			labels := `{"app.kubernetes.io/name":"` + name + `","app.kubernetes.io/part-of":"shop"}`
			v := "deploydelete/plain"
			if protected {
				labels = `{"app.kubernetes.io/name":"` + name + `","app.kubernetes.io/part-of":"shop","celadon.io/protected":"true"}`
				v = "deploydelete/protected"
			}
			old := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"` + name + `","namespace":"shop","uid":"7a0c6c1e-1f2b-4c4d-8e8f-0a1b2c3d4e5f","resourceVersion":"123456","generation":3,"labels":` + labels +
				`,"annotations":{"deployment.kubernetes.io/revision":"3"}},"spec":{"replicas":3,"selector":{"matchLabels":{"app.kubernetes.io/name":"` + name +
				`"}},"template":{"metadata":{"labels":{"app.kubernetes.io/name":"` + name + `"}},"spec":{"containers":[{"name":"app","image":"registry.example.com/shop/api:2.1.0","ports":[{"containerPort":8080,"name":"http"}],"resources":{"requests":{"cpu":"100m","memory":"128Mi"}}}]}}},` +
				`"status":{"replicas":3,"readyReplicas":3,"availableReplicas":3,"observedGeneration":3}}`
			add(v, protected, admissionv1.AdmissionRequest{
				Kind:      metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"},
				Resource:  metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"},
				Name:      name,
				Namespace: "shop",
				Operation: admissionv1.Delete,
				UserInfo:  authenticationv1.UserInfo{Username: "alice@example.com", Groups: []string{"developers", "system:authenticated"}},
				OldObject: runtime.RawExtension{Raw: []byte(old)},
				Options:   runtime.RawExtension{Raw: []byte(`{"kind":"DeleteOptions","apiVersion":"meta.k8s.io/v1","propagationPolicy":"Background"}`)},
			})
		}
	case KindIngress:
		obj := `{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"web","namespace":"shop","labels":{"app.kubernetes.io/name":"web"},` +
			`"annotations":{"cert-manager.io/cluster-issuer":"letsencrypt"}},"spec":{"ingressClassName":"nginx","tls":[{"hosts":["shop.example.com"],"secretName":"web-tls"}],` +
			`"rules":[{"host":"shop.example.com","http":{"paths":[{"path":"/","pathType":"Prefix","backend":{"service":{"name":"web","port":{"name":"http"}}}},` +
			`{"path":"/api","pathType":"Prefix","backend":{"service":{"name":"api","port":{"number":8080}}}}]}}]}}`
		add("ingress/create", false, admissionv1.AdmissionRequest{
			Kind:      metav1.GroupVersionKind{Group: "networking.k8s.io", Version: "v1", Kind: "Ingress"},
			Resource:  metav1.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"},
			Name:      "web",
			Namespace: "shop",
			Operation: admissionv1.Create,
			UserInfo:  authenticationv1.UserInfo{Username: "alice@example.com", Groups: []string{"developers", "system:authenticated"}},
			Object:    runtime.RawExtension{Raw: []byte(obj)},
			Options:   runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
		})
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	var out []*Template
	for _, r := range reqs {
		t, err := NewTemplate(kind, r.name, r.denied, r.req)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// NewTemplate encodes req as an admission.k8s.io/v1 AdmissionReview
// template of kind (the key in RunConfig.Templates and Schedule); its UID
// is replaced by each request's.
func NewTemplate(kind, name string, denied bool, req admissionv1.AdmissionRequest) (*Template, error) {
	req.UID = uidPlaceholder
	if req.RequestKind == nil {
		req.RequestKind = &req.Kind
	}
	if req.RequestResource == nil {
		req.RequestResource = &req.Resource
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req,
	}
	body, err := json.Marshal(&review)
	if err != nil {
		return nil, err
	}
	at := bytes.Index(body, []byte(`"uid":"`+uidPlaceholder+`"`))
	if at < 0 {
		return nil, fmt.Errorf("%s: no uid in the encoded review", name)
	}
	return &Template{Kind: kind, Name: name, Denied: denied, Body: body, uidOffs: at + len(`"uid":"`)}, nil
}

func compact(b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

// Body is a worker's own copy of a template, whose UID it rewrites for
// each request: 8 hex digits of worker, 12 of sequence number.
type Body struct {
	T   *Template
	buf []byte
}

// NewBody copies t for one worker.
func NewBody(t *Template) *Body {
	return &Body{T: t, buf: bytes.Clone(t.Body)}
}

// Next stamps the UID (worker, seq) into the body and returns the body and
// the UID. The slice is reused by the next call.
func (b *Body) Next(worker, seq uint64) ([]byte, string) {
	u := b.buf[b.T.uidOffs : b.T.uidOffs+len(uidPlaceholder)]
	putHex(u[0:8], worker)
	// The middle groups stay "0000-4000-8000": a version-4-shaped UUID.
	putHex(u[24:36], seq)
	return b.buf, string(u)
}

func putHex(dst []byte, v uint64) {
	const digits = "0123456789abcdef"
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = digits[v&0xf]
		v >>= 4
	}
}

// LoadPod reads the pod fixture, looking in engine/testdata from the
// working directory and its parents (so `go test` in test/load finds it).
func LoadPod(path string) ([]byte, error) {
	if path != "" {
		return os.ReadFile(path)
	}
	dir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	for {
		p := filepath.Join(dir, "engine", "testdata", "pod.json")
		if b, err := os.ReadFile(p); err == nil {
			return b, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil, fmt.Errorf("engine/testdata/pod.json not found from the working directory; give -pod")
		}
		dir = parent
	}
}

// BuildTemplates returns the templates of every kind of a mix, by kind.
func BuildTemplates(mix []Weight, pod []byte) (map[string][]*Template, error) {
	out := map[string][]*Template{}
	for _, w := range mix {
		ts, err := Templates(w.Kind, pod)
		if err != nil {
			return nil, err
		}
		out[w.Kind] = ts
	}
	return out, nil
}
