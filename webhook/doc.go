// Package webhook serves Celadon's policies as Kubernetes admission webhooks:
// AdmissionReview decoding (admission.k8s.io/v1, v1beta1 accepted), the
// /mutate and /validate endpoints, TLS with certificate rotation, hot reload
// of the policy directory, and the namespace cache behind namespaceSelector.
package webhook
