// Package loadgen is the core of the load tool (test/load): pre-encoded
// AdmissionReview templates, a bounded closed- or open-loop HTTPS client
// with latency histograms, the server's RSS and CPU read from /proc, and a
// spawned etcd, kube-apiserver and `celadon serve` on 127.0.0.1. The fault
// tests (test/faults) and the soak run drive the server with it too.
//
// Traffic only ever goes to 127.0.0.1, and every run stops by itself.
package loadgen
