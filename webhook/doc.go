// Package webhook is the HTTP side of Celadon's admission webhook: it reads
// an AdmissionReview (admission.k8s.io/v1, v1beta1 answered as v1beta1),
// hands its request to a Handler and writes the answer back. It
// knows nothing of policy sets, caches or controllers (package server wires
// them) and no builtin by name.
//
// Each endpoint is a chain of small pieces:
//
//	Instrument         request metrics
//	ReviewHandler      body cap, body budget (BodyBudget: bytes held across
//	                   requests, taken as they arrive), content type,
//	                   decoding, deadline, encoding;
//	                   4xx for anything that is not a usable AdmissionReview;
//	                   the one recover: a panic answering a decoded request
//	                   gets the server's answer (OnPanic), decided by the
//	                   matching policies' failurePolicy
//	WithLogging        V(1) request log
//	WithBypass         Celadon's own service account is allowed untouched
//	WithLimit          bounded concurrent evaluations
//	the evaluator      package server: the served policy set's Evaluate
//
// A Handler answers with a Response, whose fields are unexported: it is
// built by Allowed, Denied, Errored, NotEvaluated (a failed call, written
// as an HTTP status) or FromDecision (the engine's Decision), and read
// through accessors. AppendReview writes it, byte for byte as
// controller-runtime's admission.Response was written by encoding/json
// after Complete.
//
// # A Pod CREATE, from HTTP to patch, in six files
//
//  1. webhook/handler.go: ReviewHandler.ServeHTTP reads the review, sets
//     the deadline from ?timeout= and calls the chain.
//  2. webhook/decorators.go: WithLogging, WithBypass and WithLimit.
//  3. server/server.go: the evaluator takes the served set and calls
//     engine.Snapshot.Evaluate for the endpoint's phase.
//  4. engine/evaluate.go: Evaluate picks the candidate policies from the
//     set's index, checks their selectors and CEL conditions, runs their
//     builtins in order and composes their patches.
//  5. builtins/inject_env_index.go (or another builtin): Run reads the pod
//     through ActionContext.Object and returns JSON-patch operations.
//  6. webhook/response.go: FromDecision puts the patch, warnings and
//     denials into the Response, which ReviewHandler writes back
//     (webhook/reviewjson.go).
package webhook
