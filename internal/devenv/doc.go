// Package devenv holds the small pieces shared by Celadon's end-to-end
// tests (test/e2e) and the `make run` demo (hack/demo) to run the admission
// webhook against a real API server on this machine:
//
//   - certificates: NewCA and CA.NewServingCert make an ECDSA CA and a
//     serving certificate for 127.0.0.1 and localhost; WriteCerts writes
//     tls.crt, tls.key and ca.crt into a directory laid out like a mounted
//     Secret, so that a second WriteCerts is a realistic rotation;
//   - mounted volumes: WriteAtomic writes a set of files the way the kubelet
//     updates a Secret or ConfigMap volume (a new timestamped directory, the
//     "..data" symlink renamed over in one step, one symlink per key), so
//     the policy directory and the certificate directory change exactly as
//     they do in a Pod; ReadPolicyFiles reads a policy directory to copy it;
//   - webhook configurations: ApplyWebhookConfigurations creates or
//     replaces generated Mutating/ValidatingWebhookConfigurations, and
//     SyncWebhookConfigurations waits until the API server's admission
//     chain has seen them (the API server picks configurations up
//     asynchronously);
//   - waiting: WaitFor polls a condition with a bound, WaitForHTTP waits for
//     an endpoint to answer 200, WaitForPortClosed for a listener to go,
//     FreePort picks a loopback port, ServingCertificate returns the
//     certificate a TLS server presents;
//   - building: BuildCeladon builds `celadon` with go test's own settings,
//     so that it reuses the packages the test binaries were compiled from.
//
// Nothing here starts a server: internal/controlplane starts the control
// plane, and callers start Celadon (in-process or as `celadon serve`).
package devenv
