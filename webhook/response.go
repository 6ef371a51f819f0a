package webhook

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"celadon.io/celadon/engine"
)

// Response builds the admission response for an engine decision. An
// allowed one has no status: AppendReview writes it with code 200, as
// Complete would, and building none saves an allocation per request. It
// shares the decision's patch and warnings. The server and `celadon eval
// -o review` both build it here and write it with AppendReview, so what
// eval prints is what the server sends.
func Response(d *engine.Decision) admission.Response {
	var resp admission.Response
	if d.Allowed {
		resp.Allowed = true
		if len(d.Patch) > 0 {
			resp.Patches = d.Patch
		}
	} else {
		resp = admission.Denied(d.Message)
	}
	if len(d.AuditAnnotations) > 0 {
		resp.AuditAnnotations = d.AuditAnnotations
	}
	if len(d.Warnings) > 0 {
		resp.Warnings = d.Warnings
	}
	return resp
}

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
func NotEvaluated(code int, err error) admission.Response {
	resp := admission.Errored(int32(code), err)
	resp.Result.Reason = notEvaluatedReason
	return resp
}

// notEvaluated reports whether resp was built by NotEvaluated.
func notEvaluated(resp *admission.Response) bool {
	return !resp.Allowed && resp.Result != nil && resp.Result.Reason == notEvaluatedReason
}
