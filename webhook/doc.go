// Package webhook serves Celadon's policies as Kubernetes admission webhooks:
// AdmissionReview decoding (admission.k8s.io/v1, v1beta1 accepted), the
// /mutate and /validate endpoints, TLS with certificate rotation, hot reload
// of the policy directory, and the namespace cache behind namespaceSelector.
//
// NewServer(Options) loads and compiles the policy directory, failing on any
// error; Server.Start(ctx) runs controller-runtime's webhook server (TLS
// from CertDir, reloaded on rotation) inside a controller-runtime manager
// that also serves, over plain HTTP, /metrics and /status on the metrics
// bind address and /healthz and /readyz on the health probe address. The
// `celadon serve` command is a flag layer over these two calls, so tests
// can run the very same server in-process.
//
// Each endpoint is a chain of small pieces:
//
//	instrument         request metrics
//	ReviewHandler      body cap, content type, decoding, deadline, encoding;
//	                   4xx for anything that is not a usable AdmissionReview;
//	                   the one recover: a panic answering a decoded request
//	                   is decided by the matching policies' failurePolicy
//	WithLogging        V(1) request log
//	WithBypass         Celadon's own service account is allowed untouched
//	WithLimit          bounded concurrent evaluations
//	evaluator          engine.Snapshot.Evaluate for the endpoint's phase
//
// The served policy set is an atomic pointer: a reload compiles the whole
// new set before swapping it in, and a request evaluates entirely on the
// set it loaded when it started. See reload.go for how the directory is
// watched, and why a ConfigMap mounted with subPath never updates.
//
// Optionally, the servers keep their webhook configurations in sync with
// the served set (manage.go, under leader election), and their own CA and
// serving certificate in a Secret shared by every replica (selfsigned.go,
// written into CertDir before the webhook starts, renewed before expiry).
// When the policies use createSecret, the elected leader also runs the
// reconciler that writes the Secrets those policies want (secrets.go).
package webhook
