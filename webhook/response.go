package webhook

import (
	"context"
	"net/http"

	jsonpatch "gomodules.xyz/jsonpatch/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"celadon.io/celadon/engine"
)

// Handler answers an admission request.
type Handler interface {
	Handle(ctx context.Context, req admission.Request) Response
}

// HandlerFunc is a function as a Handler.
type HandlerFunc func(ctx context.Context, req admission.Request) Response

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, req admission.Request) Response { return f(ctx, req) }

// Response is the answer to an admission request. Its fields are
// unexported so that the constructors (Allowed, Denied, Errored,
// NotEvaluated, FromDecision) are the only way to build one: the encoder
// (AppendReview) then writes only what they can set. The zero Response is
// not allowed and has no status: it is written as such, an error for the
// metrics.
type Response struct {
	allowed bool
	// The status; code 0 is written 200, as admission.Response.Complete
	// does.
	code    int32
	reason  metav1.StatusReason
	message string
	// Shared with the decision, never modified.
	patch    []jsonpatch.JsonPatchOperation
	warnings []string
	audit    map[string]string
}

// Allowed allows the request unchanged. Its status is written
// {"metadata":{},"code":200}, as admission.Allowed("")'s.
func Allowed() Response { return Response{allowed: true} }

// Denied refuses the request with message (code 403, reason Forbidden),
// as admission.Denied.
func Denied(message string) Response {
	return Response{code: http.StatusForbidden, reason: metav1.StatusReasonForbidden, message: message}
}

// deniedFor refuses the request with message, reason and reason's code
// (engine.DenialReasons): as Denied for an empty or unknown reason.
func deniedFor(message string, reason metav1.StatusReason) Response {
	code, ok := engine.DenialCode(reason)
	if !ok {
		return Denied(message)
	}
	return Response{code: code, reason: reason, message: message}
}

// Errored refuses the request with err as the status message and code
// (0 is written 200), as admission.Errored: the API server refuses the
// object whatever the failurePolicy. See NotEvaluated for a failed call.
func Errored(code int32, err error) Response {
	return Response{code: code, message: err.Error()}
}

// FromDecision builds the admission response for an engine decision. A
// denial has the decision's status reason and its code (statusCodes):
// 403 Forbidden unless a validate policy's validation says otherwise. It
// shares the decision's patch, warnings and audit annotations. The server
// and `celadon eval -o review` both build it here and write it with
// AppendReview, so what eval prints is what the server sends.
func FromDecision(d *engine.Decision) Response {
	var resp Response
	if d.Allowed {
		resp.allowed = true
		resp.patch = d.Patch
	} else {
		resp = deniedFor(d.Message, d.StatusReason)
	}
	resp.audit = d.AuditAnnotations
	resp.warnings = d.Warnings
	return resp
}

// WithWarnings returns r with warnings added after its own.
func (r Response) WithWarnings(warnings ...string) Response {
	// A full slice expression: r's warnings may be a decision's, which
	// appending in place would overwrite.
	r.warnings = append(r.warnings[:len(r.warnings):len(r.warnings)], warnings...)
	return r
}

// Allowed reports whether the request is allowed.
func (r Response) Allowed() bool { return r.allowed }

// Code is the status code as written: 200 when none was set.
func (r Response) Code() int32 {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}

// Reason is the status reason: Forbidden for a denial unless the decision
// says otherwise (FromDecision), CeladonNotEvaluated for NotEvaluated,
// else empty.
func (r Response) Reason() metav1.StatusReason { return r.reason }

// Message is the status message: why the request is refused.
func (r Response) Message() string { return r.message }

// Patch is the JSON patch of an allowed request; callers must not modify
// it.
func (r Response) Patch() []jsonpatch.JsonPatchOperation { return r.patch }

// Warnings are returned to the requester; callers must not modify them.
func (r Response) Warnings() []string { return r.warnings }

// AuditAnnotations are added to the audit event; callers must not modify
// them.
func (r Response) AuditAnnotations() map[string]string { return r.audit }

// notEvaluatedReason marks a response built by NotEvaluated; no other
// response carries it, so ReviewHandler tells "not evaluated" from a
// decision by this alone.
const notEvaluatedReason metav1.StatusReason = "CeladonNotEvaluated"

// NotEvaluated answers a request Celadon could not evaluate (no evaluation
// slot, the deadline passed before evaluating): ReviewHandler writes it as
// HTTP status code with a metav1.Status body saying why, never as an
// AdmissionReview. An AdmissionReview with allowed: false is a decision:
// the API server refuses the object whatever the webhook's failurePolicy.
// A non-2xx status is a failed call, and the API server applies the
// failurePolicy: an Ignore webhook admits the object unchanged, a Fail
// webhook refuses it with "failed calling webhook". code is 4xx or 5xx.
//
// What the API server's webhook client (k8s.io/apiserver, pkg/admission/
// plugin/webhook, at the version in go.mod) does with
// each answer:
//
//   - HTTP 200 with allowed: false: mutating/dispatcher.go and
//     validating/dispatcher.go turn it into an ErrWebhookRejection
//     (errors.ToStatusErr, "admission webhook ... denied the request"),
//     which both dispatchers return as is: the failurePolicy is never read.
//   - any non-2xx status: the call's rest client (util/webhook's
//     ClientManager, client-go rest.Request.Do) returns a StatusError
//     decoded from the metav1.Status body, which the dispatchers wrap in
//     an ErrCallingWebhook; under Ignore they log it, annotate the audit
//     event (failed-open) and go on, under Fail they refuse the object
//     with "Internal error occurred: failed calling webhook ...".
//
// No Retry-After header is sent: with one, client-go's rest client would
// wait and retry the call (rest/with_retry.go, checkWait: 429 and 5xx with
// Retry-After), spending the API server's deadline on a server that is
// already busy, and then fail the call anyway.
func NotEvaluated(code int, err error) Response {
	resp := Errored(int32(code), err)
	resp.reason = notEvaluatedReason
	return resp
}

// notEvaluated reports whether resp was built by NotEvaluated.
func notEvaluated(resp *Response) bool { return resp.reason == notEvaluatedReason }
