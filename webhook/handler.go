package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"celadon.io/celadon/engine"
)

// Paths served on the webhook's HTTPS port.
const (
	// MutatePath and ValidatePath serve every mutating, or validating,
	// policy. WebhookPath(type, failurePolicy) adds one path per
	// failurePolicy below each ("/mutate/fail", "/validate/ignore"...),
	// running only the policies with that failurePolicy: the generated
	// webhook configurations register one webhook per failurePolicy there.
	MutatePath   = "/mutate"
	ValidatePath = "/validate"
)

// WebhookPath returns the path serving one phase and failurePolicy, e.g.
// "/mutate/fail": only the policies of that type and failurePolicy are
// evaluated there. It returns "" for an unknown type or failurePolicy.
func WebhookPath(t engine.ActionType, fp engine.FailurePolicy) string {
	var base string
	switch t {
	case engine.Mutating:
		base = MutatePath
	case engine.Validating:
		base = ValidatePath
	default:
		return ""
	}
	if fp != engine.Fail && fp != engine.Ignore {
		return ""
	}
	return base + "/" + strings.ToLower(string(fp))
}

// Limits of a request.
const (
	// DefaultAPIServerTimeout is the webhook timeout assumed when a request
	// carries no ?timeout= parameter: the API server's own default.
	DefaultAPIServerTimeout = 10 * time.Second
	// MaxRequestBytes caps an AdmissionReview body, as controller-runtime
	// does: two objects of at most 3 MiB each plus 1 MiB for the rest.
	MaxRequestBytes = 7 << 20
)

// Timeout bounds. The API server caps webhook timeouts at 30s.
const (
	minEvalTimeout = 100 * time.Millisecond
	maxEvalTimeout = 30 * time.Second
)

// ReviewHandler serves one admission endpoint over HTTP: it decodes an
// AdmissionReview (admission.k8s.io/v1, or v1beta1 answered as v1beta1),
// hands its request to a Handler under a deadline derived from
// the API server's ?timeout= (see evalTimeout), and writes the review back.
// The handler's context carries that deadline only: it is not cancelled
// when the server starts shutting down, so in-flight requests finish.
//
// Unlike controller-runtime's admission.Webhook, which answers HTTP 200 to
// anything, a request that is not a usable AdmissionReview gets a 4xx status
// with a metav1.Status body saying what is wrong: 400 for an empty body,
// malformed JSON, a wrong apiVersion/kind, a review without a request or a
// Content-Type other than application/json; 405 for a method other than
// POST; 413 for a body over MaxRequestBytes. A request the Handler could
// not evaluate (a NotEvaluated response: no evaluation slot, the deadline
// passed) gets that response's status, 429 or 503, and so does a body that
// found no room in the Bodies budget (429). The body is read into a buffer
// that grows with the bytes received, never sized from Content-Length. The API server then
// applies the webhook configuration's failurePolicy.
type ReviewHandler struct {
	// Handler answers the admission request; ReviewHandler writes its
	// Response with the request's uid (AppendReview).
	Handler Handler
	// DefaultTimeout is the API server timeout assumed without ?timeout=.
	DefaultTimeout time.Duration
	// Log receives errors; nothing is logged per request at info level.
	Log logr.Logger
	// OnPanic answers a decoded request whose handling panicked: this is
	// the one recover of a request, besides the engine's around each
	// builtin. Nil: an internal error (code 500). A panic before the
	// request is decoded, or after its answer is written, is an HTTP 500.
	OnPanic func(req admission.Request, p any) Response
	// Panics counts the panics recovered before a request was decoded.
	Panics prometheus.Counter
	// Bodies bounds the bytes of bodies held across requests (shared by
	// every endpoint of a server). A body that finds no room before its
	// deadline, or that needs more while another waits, is not evaluated:
	// HTTP 429, so the API server applies the failurePolicy. Nil: bodies
	// are bounded by MaxRequestBytes each only.
	Bodies *BodyBudget
	// Throttled counts the requests refused for want of body budget.
	Throttled prometheus.Counter
}

var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return bufferPool.Get().(*bytes.Buffer) }

// maxPooledBuffer is the largest buffer put back in the pool: bigger ones
// are let go.
const maxPooledBuffer = 1 << 20

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooledBuffer {
		return
	}
	b.Reset()
	bufferPool.Put(b)
}

// reviewIn is the envelope of an incoming review; v1 and v1beta1 share it.
type reviewIn struct {
	metav1.TypeMeta `json:",inline"`
	Request         *admissionv1.AdmissionRequest `json:"request"`
}

// badRequest is a request that cannot be served, with its HTTP status;
// notEvaluated ones are answered through NotEvaluated.
type badRequest struct {
	code         int
	msg          string
	notEvaluated bool
}

func (e *badRequest) Error() string { return e.msg }

func reject(code int, format string, args ...any) *badRequest {
	return &badRequest{code: code, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP implements http.Handler.
func (h *ReviewHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec, _ := w.(*recorder)

	timeout := h.DefaultTimeout
	if timeout <= 0 {
		timeout = DefaultAPIServerTimeout
	}
	timeout = evalTimeout(r.URL.RawQuery, timeout)
	// The body must arrive within the same time: by then the API server has
	// given up, and a client trickling its body (slowloris) would otherwise
	// hold the connection forever (the server only bounds the headers).
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
	// The deadline, not the connection, bounds the wait for body budget and
	// the evaluation: controller-runtime's server cancels every request's
	// context as soon as shutdown starts, and in-flight requests must still
	// get their answer. (A context of its own, with a timer made only when
	// something waits, was tried: cel-go's context.WithCancel per
	// evaluation then starts a goroutine each, as it cannot find a
	// cancelCtx to register with.)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), timeout)
	defer cancel()

	// The body's budget and buffer are held until the answer is written:
	// the buffer is reused for it, and the parsed review copies the body.
	grant := bodyGrant{b: h.Bodies}
	defer grant.release()
	var buf *bytes.Buffer
	defer func() {
		if buf != nil {
			putBuffer(buf)
		}
	}()

	var req admission.Request
	var apiVersion string
	decoded := false
	defer func() {
		if p := recover(); p != nil {
			h.recovered(w, rec, apiVersion, req, decoded, p)
		}
	}()
	var bad *badRequest
	var review *engine.Review
	if buf, bad = readBodyOf(ctx, r, &grant); bad == nil {
		// A buffer too big for the pool is handed to the review, which
		// reads it without a copy; the answer gets a buffer of its own.
		own := buf.Cap() > maxPooledBuffer
		apiVersion, review, bad = decodeReview(buf.Bytes(), &req, own)
		if own {
			buf = nil
		}
	}
	// The tape is read by the evaluation, and reused once the answer is
	// written.
	defer review.Release()
	if bad != nil {
		if bad.notEvaluated {
			if h.Throttled != nil {
				h.Throttled.Inc()
			}
			h.write(w, rec, apiVersion, req, NotEvaluated(bad.code, bad), nil)
			return
		}
		writeStatus(w, bad.code, bad.msg)
		return
	}
	decoded = true

	if review != nil {
		ctx = engine.WithReview(ctx, review)
	}
	resp := h.Handler.Handle(ctx, req)
	h.write(w, rec, apiVersion, req, resp, buf)
}

// recovered answers a request whose handling panicked with p.
func (h *ReviewHandler) recovered(w http.ResponseWriter, rec *recorder, apiVersion string, req admission.Request, decoded bool, p any) {
	if p == http.ErrAbortHandler {
		panic(p)
	}
	if decoded && (rec == nil || !rec.wroteHeader) {
		resp := Errored(http.StatusInternalServerError, fmt.Errorf("celadon: internal error: %v", p))
		if h.OnPanic != nil {
			resp = h.OnPanic(req, p)
		}
		buf := getBuffer()
		defer putBuffer(buf)
		h.write(w, rec, apiVersion, req, resp, buf)
		return
	}
	if h.Panics != nil {
		h.Panics.Inc()
	}
	h.Log.Error(fmt.Errorf("panic: %v", p), "recovered a panic serving an admission request", "stack", string(debug.Stack()))
	if rec == nil || !rec.wroteHeader {
		writeStatus(w, http.StatusInternalServerError, fmt.Sprintf("celadon: internal error: %v", p))
	}
	if rec != nil {
		rec.decision = DecisionError
	}
}

// write writes resp for req as a review of apiVersion (AppendReview); a
// response of NotEvaluated is written as its HTTP status instead, so that
// the API server applies the webhook's failurePolicy. buf, when not nil,
// holds the bytes written.
func (h *ReviewHandler) write(w http.ResponseWriter, rec *recorder, apiVersion string, req admission.Request, resp Response, buf *bytes.Buffer) {
	if notEvaluated(&resp) {
		if rec != nil {
			rec.decision = DecisionError
		}
		writeStatus(w, int(resp.code), resp.message)
		return
	}
	if buf == nil {
		buf = getBuffer()
		defer putBuffer(buf)
	}
	buf.Reset()
	e := getEncoder()
	defer putEncoder(e)
	out, err := e.appendReview(buf.AvailableBuffer(), apiVersion, req.UID, &resp)
	if err != nil {
		h.Log.Error(err, "cannot encode the admission response", "uid", req.UID)
		resp = Errored(http.StatusInternalServerError, fmt.Errorf("celadon: cannot encode the response: %v", err))
		out, _ = e.appendReview(buf.AvailableBuffer(), apiVersion, req.UID, &resp)
	}
	keep(buf, out)
	if rec != nil {
		rec.decision = decisionOf(&resp)
	}
	// Shared, read-only header values: Header().Set allocates a slice.
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(out); err != nil && h.Log.V(1).Enabled() {
		h.Log.V(1).Info("cannot write the admission review", "uid", req.UID, "error", err.Error())
	}
}

var (
	jsonContentType = []string{"application/json"}
	noSniff         = []string{"nosniff"}
)

// readBodyOf reads and checks the body of r, in a pooled buffer it returns
// (to put back once the answer is written), under g; or why the request is
// bad. Content-Length only refuses a body announced too large: memory and
// budget follow the bytes received.
func readBodyOf(ctx context.Context, r *http.Request, g *bodyGrant) (*bytes.Buffer, *badRequest) {
	if r.Method != http.MethodPost {
		return nil, reject(http.StatusMethodNotAllowed, "method %s not allowed: POST an AdmissionReview", r.Method)
	}
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return nil, reject(http.StatusBadRequest, "%v", err)
	}
	if r.ContentLength > MaxRequestBytes {
		return nil, reject(http.StatusRequestEntityTooLarge, "request body of %d bytes is over the limit of %d bytes", r.ContentLength, MaxRequestBytes)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, reject(http.StatusBadRequest, "request body is empty: POST an AdmissionReview")
	}
	buf, err := readBody(ctx, r.Body, MaxRequestBytes+1, g)
	if be := (*budgetError)(nil); errors.As(err, &be) {
		bad := reject(http.StatusTooManyRequests, "celadon: too many request bodies in flight (budget %d bytes): %v", g.b.Size(), be.err)
		if errors.Is(be.err, context.DeadlineExceeded) {
			bad.msg = fmt.Sprintf("celadon: too many request bodies in flight (budget %d bytes): no room freed up before the deadline (%v)", g.b.Size(), context.Cause(ctx))
		}
		bad.notEvaluated = true
		return buf, bad
	}
	if err != nil {
		return buf, reject(http.StatusBadRequest, "reading the request body: %v", err)
	}
	if buf == nil {
		return nil, reject(http.StatusBadRequest, "request body is empty: POST an AdmissionReview")
	}
	body := buf.Bytes()
	if len(body) > MaxRequestBytes {
		return buf, reject(http.StatusRequestEntityTooLarge, "request body is over the limit of %d bytes", MaxRequestBytes)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return buf, reject(http.StatusBadRequest, "request body is empty: POST an AdmissionReview")
	}
	return buf, nil
}

// decodeReview decodes an AdmissionReview body into req. It parses the body
// once into a tape (engine.ParseReview; with own, ParseReviewOwned: body is
// never written again) and returns it, for Evaluate to read the objects
// from: the caller releases it once the answer is written. A
// body the tape does not read exactly as the API server's decoder would is
// decoded by that decoder instead, as it always was, and gets no Review.
func decodeReview(body []byte, req *admission.Request, own bool) (string, *engine.Review, *badRequest) {
	parse := engine.ParseReview
	if own {
		parse = engine.ParseReviewOwned
	}
	review, err := parse(body)
	if err != nil {
		var in reviewIn
		if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &in); err != nil {
			return "", nil, reject(http.StatusBadRequest, "request body is not a JSON AdmissionReview: %v", err)
		}
		if bad := checkEnvelope(in.APIVersion, in.Kind, in.Request); bad != nil {
			return "", nil, bad
		}
		req.AdmissionRequest = *in.Request
		return in.APIVersion, nil, nil
	}
	if bad := checkEnvelope(review.APIVersion, review.Kind, review.Request); bad != nil {
		review.Release()
		return "", nil, bad
	}
	req.AdmissionRequest = *review.Request
	return review.APIVersion, review, nil
}

// checkEnvelope checks what every review must have.
func checkEnvelope(apiVersion, kind string, req *admissionv1.AdmissionRequest) *badRequest {
	switch apiVersion {
	case admissionv1.SchemeGroupVersion.String(), admissionv1beta1.SchemeGroupVersion.String():
	case "":
		return reject(http.StatusBadRequest, "AdmissionReview has no apiVersion: want %s or %s", admissionv1.SchemeGroupVersion, admissionv1beta1.SchemeGroupVersion)
	default:
		return reject(http.StatusBadRequest, "unsupported apiVersion %q: want %s or %s", apiVersion, admissionv1.SchemeGroupVersion, admissionv1beta1.SchemeGroupVersion)
	}
	if kind != "AdmissionReview" {
		return reject(http.StatusBadRequest, "kind %q is not AdmissionReview", kind)
	}
	if req == nil {
		return reject(http.StatusBadRequest, "AdmissionReview has no request")
	}
	if req.UID == "" {
		return reject(http.StatusBadRequest, "AdmissionReview request has no uid")
	}
	return nil
}

func checkContentType(ct string) error {
	if ct == "application/json" {
		return nil
	}
	if ct == "" {
		return errors.New("missing Content-Type: want application/json")
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return fmt.Errorf("Content-Type %q is not application/json", ct)
	}
	return nil
}

// writeStatus answers a request that cannot be served with a metav1.Status,
// which the API server's client decodes into its error message.
func writeStatus(w http.ResponseWriter, code int, msg string) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
		Status:   metav1.StatusFailure,
		Message:  msg,
		Reason:   statusReason(code),
		Code:     int32(code),
	}
	buf := getBuffer()
	defer putBuffer(buf)
	body := appendStatus(buf.AvailableBuffer(), &st, 0)
	body = append(body, '\n')
	keep(buf, body)
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func statusReason(code int) metav1.StatusReason {
	switch code {
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	case http.StatusMethodNotAllowed:
		return metav1.StatusReasonMethodNotAllowed
	case http.StatusRequestEntityTooLarge:
		return metav1.StatusReasonRequestEntityTooLarge
	case http.StatusTooManyRequests:
		return metav1.StatusReasonTooManyRequests
	case http.StatusServiceUnavailable:
		return metav1.StatusReasonServiceUnavailable
	}
	return metav1.StatusReasonInternalError
}

// evalTimeout returns the evaluation deadline for a request whose query
// string is rawQuery: 90% of the API server's ?timeout= (default def), at
// least 100ms and at most 27s, so that Celadon answers before the API
// server gives up on it.
func evalTimeout(rawQuery string, def time.Duration) time.Duration {
	t := def
	if v, ok := queryValue(rawQuery, "timeout"); ok {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			t = d
		}
	}
	t = min(t, maxEvalTimeout)
	t -= t / 10
	return max(t, minEvalTimeout)
}

// queryValue finds key in a raw query string without building a map.
func queryValue(rawQuery, key string) (string, bool) {
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != key {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			u, err := url.QueryUnescape(v)
			if err != nil {
				return "", false
			}
			v = u
		}
		return v, true
	}
	return "", false
}

// isDenialCode reports whether resp's code is its status reason's, as
// FromDecision answers a decision's denial.
func isDenialCode(resp *Response) bool {
	code, ok := engine.DenialCode(resp.Reason())
	return ok && code == resp.Code()
}

// decisionOf classifies a response for metrics: refused with a code other
// than 403 (200 when none is set) is an error, unless it is a decision's
// denial with its status reason's code (FromDecision).
func decisionOf(resp *Response) string {
	switch {
	case !resp.Allowed() && resp.Code() != http.StatusForbidden && !isDenialCode(resp):
		return DecisionError
	case !resp.Allowed():
		return DecisionDenied
	case len(resp.Patch()) > 0:
		return DecisionPatched
	}
	return DecisionAllowed
}

// recorder captures what a ReviewHandler answered, for instrument.
type recorder struct {
	http.ResponseWriter
	code        int
	decision    string
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wroteHeader {
		r.code, r.wroteHeader = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

var recorderPool = sync.Pool{New: func() any { return new(recorder) }}

// Instrument decorates an endpoint's handler with request metrics (count by
// endpoint, decision and HTTP status; latency). The ReviewHandler within
// recovers panics.
func Instrument(endpoint string, m *Metrics, next http.Handler) http.Handler {
	duration := m.RequestDuration.WithLabelValues(endpoint)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := recorderPool.Get().(*recorder)
		*rec = recorder{ResponseWriter: w, code: http.StatusOK, decision: DecisionError}
		defer func() {
			m.Requests.WithLabelValues(endpoint, rec.decision, codeLabel(rec.code)).Inc()
			duration.Observe(time.Since(start).Seconds())
			*rec = recorder{}
			recorderPool.Put(rec)
		}()
		next.ServeHTTP(rec, r)
	})
}
