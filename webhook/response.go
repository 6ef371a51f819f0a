package webhook

import (
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"celadon.io/celadon/engine"
)

// Response builds the admission response for an engine decision through
// controller-runtime's constructors; Complete then sets the UID, the status
// code and the encoded patch. The server and `celadon eval -o review` both
// use it, so what eval prints is what the server sends.
func Response(d *engine.Decision) admission.Response {
	var resp admission.Response
	switch {
	case !d.Allowed:
		resp = admission.Denied(d.Message)
	case len(d.Patch) > 0:
		resp = admission.Patched("", d.Patch...)
	default:
		resp = admission.Allowed("")
	}
	if len(d.AuditAnnotations) > 0 {
		resp.AuditAnnotations = d.AuditAnnotations
	}
	if len(d.Warnings) > 0 {
		resp = resp.WithWarnings(d.Warnings...)
	}
	return resp
}
