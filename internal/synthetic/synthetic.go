// Package synthetic generates policy sets of any size for benchmarks and
// load runs: a few policies that match the benchmark pod
// (engine/testdata/pod.json) and many that match other resources.
package synthetic

import (
	"fmt"
	"strings"
)

// Policies returns n policies (at least five), as one YAML stream, of
// which five match pods: two mutating, three validating with CEL
// conditions; the rest match other resources, as in a cluster with many
// teams' policies.
func Policies(n int) []byte {
	var b strings.Builder
	doc := func(format string, args ...any) {
		b.WriteString("---\n")
		fmt.Fprintf(&b, format, args...)
	}
	doc(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: sts-index}
spec:
  match:
    resources: [pods]
    operations: [CREATE]
    conditions:
    - expression: has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, r.kind == 'StatefulSet')
  action: injectEnvIndex
`)
	doc(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: sts-index-init}
spec:
  match: {resources: [pods], operations: [CREATE]}
  action: injectEnvIndex
  with: {name: ORDINAL, initContainers: true}
`)
	for i := 0; i < 3; i++ {
		doc(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: pod-rule-%d}
spec:
  match:
    resources: [pods]
    operations: [CREATE, UPDATE]
    conditions:
    - expression: object.spec.containers.exists(c, c.image.startsWith('docker.io/'))
    - expression: "!has(object.metadata.labels) || !('exempt' in object.metadata.labels)"
  action: deny
  with: {message: "images must not come from docker.io"}
`, i)
	}
	for i := 5; i < n; i++ {
		doc(`apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: other-%d}
spec:
  match:
    resources: [example.com/widgets%d]
    operations: [CREATE, UPDATE, DELETE]
    conditions:
    - expression: object.spec.size > %d
  action: deny
  with: {message: too big}
`, i, i, i)
	}
	return []byte(b.String())
}
