package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Review is an AdmissionReview parsed in one pass: the whole body is one
// tape, its envelope is read from the tape into Request (strings share the
// tape's one copy of the body), and the request's object and old object
// stay tape subtrees that Evaluate reads without parsing them again.
//
// A Review is pooled: Release it once nothing reads the request any more.
// Request's strings and Raw bytes stay valid after Release (they are backed
// by an immutable copy of the body); only the tape is reused.
type Review struct {
	APIVersion string
	Kind       string
	// Request is nil when the review has none (or "request": null).
	Request *admissionv1.AdmissionRequest

	req               admissionv1.AdmissionRequest
	doc               jsonDoc
	object, oldObject int32 // value nodes; -1 when absent
	reqKR             *requestedKindAndResource
}

// ErrReviewSlowPath is wrapped by ParseReview's errors: the body is not one
// the tape reads exactly as sigs.k8s.io/json would (invalid JSON, a field of
// the wrong type, a repeated key, a number out of float64 range in an
// object). The caller decodes it with sigs.k8s.io/json instead, which gives
// the message the API server's own decoder would, or accepts it.
var ErrReviewSlowPath = errors.New("not read by the one-pass decoder")

var reviewPool = sync.Pool{New: func() any { return new(Review) }}

// maxPooledNodes bounds the tape kept in the pool: a review of a
// megabytes-large object lets its tape go, as big buffers do.
const maxPooledNodes = 1 << 16

// ParseReview parses an AdmissionReview body into a pooled Review. The
// envelope is read as sigs.k8s.io/json.UnmarshalCaseSensitivePreserveInts
// reads it into {TypeMeta; Request *AdmissionRequest}: keys match exactly,
// null leaves a field unset, unknown fields are skipped, and a RawExtension
// holds the value's bytes as sent. Where they could differ, ParseReview
// returns an error wrapping ErrReviewSlowPath.
func ParseReview(body []byte) (*Review, error) { return parseReview(body, false) }

// ParseReviewOwned is ParseReview for a body the Review takes over: the
// request's strings and bytes share body instead of a copy of it, so the
// caller must never write body again. It saves the copy of a large body
// whose buffer is not reused anyway.
func ParseReviewOwned(body []byte) (*Review, error) { return parseReview(body, true) }

func parseReview(body []byte, own bool) (*Review, error) {
	r := reviewPool.Get().(*Review)
	if err := r.parse(body, own); err != nil {
		r.Release()
		return nil, err
	}
	return r, nil
}

// Release returns the review's tape to the pool.
func (r *Review) Release() {
	if r == nil {
		return
	}
	d := r.doc
	*r = Review{}
	if cap(d.nodes) > maxPooledNodes {
		return
	}
	clear(d.strs)
	r.doc = jsonDoc{nodes: d.nodes[:0], strs: d.strs[:0], spans: d.spans[:0]}
	reviewPool.Put(r)
}

func (r *Review) parse(body []byte, own bool) error {
	if err := r.doc.parseInto(body, 2, own); err != nil {
		return fmt.Errorf("%w: %v", ErrReviewSlowPath, err)
	}
	d := &r.doc
	if d.dupKeys {
		// encoding/json merges a repeated struct key into the first value:
		// the slow path keeps those rules.
		return fmt.Errorf("%w: a key repeats", ErrReviewSlowPath)
	}
	r.object, r.oldObject = -1, -1
	if d.nodes[0].kind != jsonObject {
		return fmt.Errorf("%w: not an object", ErrReviewSlowPath)
	}
	var ok bool
	for k, v := range d.members(0) {
		switch d.str(k) {
		case "apiVersion":
			ok = d.readString(v, &r.APIVersion)
		case "kind":
			ok = d.readString(v, &r.Kind)
		case "request":
			switch d.nodes[v].kind {
			case jsonNull:
				ok = true
			case jsonObject:
				r.Request = &r.req
				ok = r.readRequest(v)
			default:
				ok = false
			}
		default:
			ok = true
		}
		if !ok {
			return fmt.Errorf("%w: %q has the wrong type", ErrReviewSlowPath, d.str(k))
		}
	}
	return nil
}

// requestedKindAndResource holds a request's requestKind and
// requestResource in one allocation. It is not pooled: the request may be
// kept.
type requestedKindAndResource struct {
	kind     metav1.GroupVersionKind
	resource metav1.GroupVersionResource
}

func (r *Review) requested() *requestedKindAndResource {
	if r.reqKR == nil {
		r.reqKR = new(requestedKindAndResource)
	}
	return r.reqKR
}

func (r *Review) readRequest(i int32) bool {
	d, q := &r.doc, &r.req
	for k, v := range d.members(i) {
		ok := true
		switch d.str(k) {
		case "uid":
			var s string
			ok = d.readString(v, &s)
			q.UID = types.UID(s)
		case "kind":
			ok = d.readGVK(v, &q.Kind)
		case "resource":
			ok = d.readGVR(v, &q.Resource)
		case "subResource":
			ok = d.readString(v, &q.SubResource)
		case "requestKind":
			if d.nodes[v].kind != jsonNull {
				q.RequestKind = &r.requested().kind
				ok = d.readGVK(v, q.RequestKind)
			}
		case "requestResource":
			if d.nodes[v].kind != jsonNull {
				q.RequestResource = &r.requested().resource
				ok = d.readGVR(v, q.RequestResource)
			}
		case "requestSubResource":
			ok = d.readString(v, &q.RequestSubResource)
		case "name":
			ok = d.readString(v, &q.Name)
		case "namespace":
			ok = d.readString(v, &q.Namespace)
		case "operation":
			var s string
			ok = d.readString(v, &s)
			q.Operation = admissionv1.Operation(s)
		case "userInfo":
			ok = d.readUserInfo(v, &q.UserInfo)
		case "object":
			q.Object.Raw, r.object = d.raw(v)
		case "oldObject":
			q.OldObject.Raw, r.oldObject = d.raw(v)
		case "options":
			q.Options.Raw, _ = d.raw(v)
		case "dryRun":
			switch d.nodes[v].kind {
			case jsonNull:
			case jsonTrue, jsonFalse:
				b := d.nodes[v].kind == jsonTrue
				q.DryRun = &b
			default:
				ok = false
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// members iterates over the keys and values of object i.
func (d *jsonDoc) members(i int32) func(yield func(k, v int32) bool) {
	return func(yield func(k, v int32) bool) {
		j := i + 1
		for range d.nodes[i].a {
			if !yield(j, j+1) {
				return
			}
			j = d.next(j + 1)
		}
	}
}

// nullOr reports whether node i, null or of kind k, is to be read (k) and
// whether it is of a type that may stand there: encoding/json leaves a
// field as it is for null, and refuses any other kind.
func (d *jsonDoc) nullOr(i int32, k jsonKind) (read, ok bool) {
	switch d.nodes[i].kind {
	case jsonNull:
		return false, true
	case k:
		return true, true
	}
	return false, false
}

// readString reads a string into s as encoding/json does: null leaves it.
func (d *jsonDoc) readString(i int32, s *string) bool {
	switch d.nodes[i].kind {
	case jsonNull:
		return true
	case jsonString, jsonEscapedString:
		*s = d.str(i)
		return true
	}
	return false
}

// readFields reads the string members of object i named by keys into
// fields; other members are skipped, null leaves the object as it is.
func (d *jsonDoc) readFields(i int32, keys []string, fields ...*string) bool {
	if read, ok := d.nullOr(i, jsonObject); !read {
		return ok
	}
	for k, v := range d.members(i) {
		name := d.str(k)
		for f, key := range keys {
			if name == key && !d.readString(v, fields[f]) {
				return false
			}
		}
	}
	return true
}

var gvkKeys, gvrKeys = []string{"group", "version", "kind"}, []string{"group", "version", "resource"}

func (d *jsonDoc) readGVK(i int32, g *metav1.GroupVersionKind) bool {
	return d.readFields(i, gvkKeys, &g.Group, &g.Version, &g.Kind)
}

func (d *jsonDoc) readGVR(i int32, g *metav1.GroupVersionResource) bool {
	return d.readFields(i, gvrKeys, &g.Group, &g.Version, &g.Resource)
}

func (d *jsonDoc) readUserInfo(i int32, u *authenticationv1.UserInfo) bool {
	if read, ok := d.nullOr(i, jsonObject); !read {
		return ok
	}
	for k, v := range d.members(i) {
		ok := true
		switch d.str(k) {
		case "username":
			ok = d.readString(v, &u.Username)
		case "uid":
			ok = d.readString(v, &u.UID)
		case "groups":
			u.Groups, ok = d.readStrings(v)
		case "extra":
			switch d.nodes[v].kind {
			case jsonNull:
				u.Extra = nil
			case jsonObject:
				u.Extra = make(map[string]authenticationv1.ExtraValue, d.nodes[v].a)
				for ek, ev := range d.members(v) {
					var vals []string
					if vals, ok = d.readStrings(ev); !ok {
						return false
					}
					u.Extra[d.str(ek)] = vals
				}
			default:
				ok = false
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// readStrings reads a list of strings: null is a nil list, and a null
// element an empty string, as encoding/json reads them.
func (d *jsonDoc) readStrings(i int32) ([]string, bool) {
	if read, ok := d.nullOr(i, jsonList); !read {
		return nil, ok
	}
	list := make([]string, d.nodes[i].a)
	j := i + 1
	for e := range list {
		if !d.readString(j, &list[e]) {
			return nil, false
		}
		j = d.next(j)
	}
	return list, true
}

// raw returns the bytes of value i as sent, for a RawExtension, and i
// itself; null is no bytes and node -1, as RawExtension.UnmarshalJSON
// leaves it. The bytes share the tape's immutable copy of the body; their
// capacity ends with them, so an append copies.
func (d *jsonDoc) raw(i int32) ([]byte, int32) {
	if d.nodes[i].kind == jsonNull {
		return nil, -1
	}
	s := d.span(i)
	if s == "" {
		return nil, -1
	}
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	return b[:len(b):len(b)], i
}

// reviewKey carries a Review in a context, for Evaluate.
type reviewKey struct{}

// WithReview returns ctx carrying r, so that Evaluate reads r's object and
// old object from its tape instead of parsing their bytes again. Evaluate
// uses them only for a request whose Object and OldObject bytes are still
// r's.
func WithReview(ctx context.Context, r *Review) context.Context {
	return context.WithValue(ctx, reviewKey{}, r)
}

// parsedObjects returns the tape nodes of req's object and old object when
// ctx carries the Review req was read from and req still holds its bytes.
func parsedObjects(ctx context.Context, req *admissionv1.AdmissionRequest) (*jsonDoc, int32, int32, bool) {
	r, _ := ctx.Value(reviewKey{}).(*Review)
	if r == nil || r.Request == nil || !sameBytes(req.Object.Raw, r.req.Object.Raw) || !sameBytes(req.OldObject.Raw, r.req.OldObject.Raw) ||
		req.Object.Object != nil || req.OldObject.Object != nil {
		return nil, 0, 0, false
	}
	return &r.doc, r.object, r.oldObject, true
}

func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
