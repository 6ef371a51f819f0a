package builtins

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"celadon.io/celadon/engine"
)

// builtinBench is one representative request for one builtin: a policy
// running it alone, and the state its result must have, so that the
// benchmark measures the builtin at work rather than a skip.
type builtinBench struct {
	name   string // the builtin's, unless action says it
	action string // the builtin, when name is a variant ("mutate/apply")
	policy string // spec of a policy named bench
	req    *admissionv1.AdmissionRequest
	opts   engine.EvalOptions
	state  engine.State
	patch  bool // the builtin mutates this request
}

// benchPolicy is a policy named bench with the given spec.
func benchPolicy(spec string) string {
	return "apiVersion: celadon.io/v1alpha1\nkind: Policy\nmetadata: {name: bench}\nspec:\n" + spec
}

// compactFile reads a JSON file compacted, as the API server sends objects.
func compactFile(b *testing.B, name string) []byte {
	indented, err := os.ReadFile(name)
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	if err := json.Compact(&out, indented); err != nil {
		b.Fatal(err)
	}
	return out.Bytes()
}

// benchRequest is an admission request from a controller or kubelet.
func benchRequest(op admissionv1.Operation, gvr metav1.GroupVersionResource, sub, kind, ns string, obj, old []byte) *admissionv1.AdmissionRequest {
	return &admissionv1.AdmissionRequest{
		UID:         "bench",
		Kind:        metav1.GroupVersionKind{Group: gvr.Group, Version: gvr.Version, Kind: kind},
		Resource:    gvr,
		SubResource: sub,
		Namespace:   ns,
		Operation:   op,
		UserInfo:    authenticationv1.UserInfo{Username: "bench"},
		Object:      runtime.RawExtension{Raw: obj},
		OldObject:   runtime.RawExtension{Raw: old},
	}
}

// builtinBenches returns a request per builtin. Pods are the engine's
// benchmark pod, a 3 KB StatefulSet pod with an init container and two
// containers; the node is a kubelet's status update resending the real
// allocatable values (a 6 KB node with 16 images), the commonest request
// inflateAllocatable sees.
func builtinBenches(b *testing.B) []builtinBench {
	pod := compactFile(b, "../engine/testdata/pod.json")
	podCreate := benchRequest(admissionv1.Create, testResources["Pod"], "", "Pod", "shop", pod, nil)

	node := compactFile(b, "testdata/node.json")
	var stored map[string]any
	if err := json.Unmarshal(node, &stored); err != nil {
		b.Fatal(err)
	}
	// What the API server holds: the values written last time.
	stored["status"].(map[string]any)["allocatable"].(map[string]any)["cpu"] = "11865m"
	stored["status"].(map[string]any)["allocatable"].(map[string]any)["memory"] = "38381681049"
	old, err := json.Marshal(stored)
	if err != nil {
		b.Fatal(err)
	}
	nodeStatus := benchRequest(admissionv1.Update, metav1.GroupVersionResource{Version: "v1", Resource: "nodes"}, "status", "Node", "", node, old)

	namespace := yamlJSON(b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: payments\n  labels: {team: payments, kubernetes.io/metadata.name: payments}\n")
	ingress := yamlJSON(b, `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop, labels: {app: shop}}
spec:
  ingressClassName: nginx
  tls: [{hosts: [shop.example.com], secretName: shop-tls}]
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
      - {path: /rpc, pathType: Prefix, backend: {service: {name: api, port: {name: grpc}}}}
`)
	ingressGVR := metav1.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"}

	return []builtinBench{
		{
			name:   "injectEnvIndex",
			policy: "  match: {resources: [pods], operations: [CREATE]}\n  action: injectEnvIndex\n  with: {initContainers: true}\n",
			req:    podCreate,
			state:  engine.StatePass,
			patch:  true,
		},
		{
			name: "injectSidecar",
			policy: `  match: {resources: [pods], operations: [CREATE]}
  action: injectSidecar
  with:
    containers:
    - name: proxy
      image: envoy
      env: [{name: POD, value: "${{ object.metadata.name }}"}]
      resources: {requests: {cpu: 10m, memory: 32Mi}}
    volumes:
    - {name: proxy-config, emptyDir: {}}
    volumeMounts:
    - mount: {name: proxy-config, mountPath: /etc/proxy, readOnly: true}
`,
			req:   podCreate,
			state: engine.StatePass,
			patch: true,
		},
		{
			name:   "consulLifecycle",
			policy: "  match: {resources: [pods], operations: [CREATE]}\n  action: consulLifecycle\n  with: {service: web, port: http, containers: [app]}\n",
			req:    podCreate,
			state:  engine.StatePass,
			patch:  true,
		},
		{
			name:   "scaleRequests",
			policy: "  match: {resources: [pods], operations: [CREATE]}\n  action: scaleRequests\n  with: {cpu: 0.5, memory: 0.8, initContainers: true}\n",
			req:    podCreate,
			state:  engine.StatePass,
			patch:  true,
		},
		{
			name:   "inflateAllocatable",
			policy: "  match: {resources: [nodes/status], operations: [UPDATE]}\n  action: inflateAllocatable\n  with: {cpu: 1.5, memory: 1.2}\n",
			req:    nodeStatus,
			state:  engine.StatePass,
			patch:  true,
		},
		{
			name:   "createSecret",
			policy: "  match: {resources: [namespaces], operations: [CREATE]}\n  action: createSecret\n  with: {name: regcred, from: {name: regcred}, addToServiceAccount: default}\n",
			req:    benchRequest(admissionv1.Create, testResources["Namespace"], "", "Namespace", "", namespace, nil),
			state:  engine.StatePass,
			patch:  true,
		},
		{
			name:   "checkIngressBackends",
			policy: "  match: {resources: [networking.k8s.io/ingresses], operations: [CREATE]}\n  action: checkIngressBackends\n  with: {checkIngressClass: true, checkTLSSecrets: true}\n",
			req:    benchRequest(admissionv1.Create, ingressGVR, "", "Ingress", "shop", ingress, nil),
			opts:   engine.EvalOptions{Cluster: newObjectMap(b, svcAPI, svcWeb, secretTLS, classNginx)},
			state:  engine.StatePass,
		},
		{
			name: "validate",
			policy: `  match: {resources: [pods], operations: [CREATE]}
  action: validate
  with:
    validations:
    - expression: object.spec.containers.all(c, has(c.resources) && has(c.resources.requests))
      message: every container needs requests
    - expression: object.spec.containers.all(c, c.image.startsWith('registry.example.com/'))
      messageExpression: "'pod ' + object.metadata.name + ' runs images from elsewhere'"
      reason: Forbidden
    - expression: "'app' in object.metadata.?labels.orValue({})"
    auditAnnotations:
    - {key: containers, valueExpression: "string(size(object.spec.containers))"}
`,
			req:   podCreate,
			state: engine.StateFail,
		},
		{
			// A MAP's mutation: a label, through the API server's patcher.
			name: "mutate",
			policy: `  match: {resources: [pods], operations: [CREATE]}
  action: mutate
  with:
    mutations:
    - patchType: JSONPatch
      jsonPatch:
        expression: '[JSONPatch{op: "add", path: "/metadata/labels/" + jsonpatch.escapeKey("example.com/team"), value: "shop"}]'
`,
			req:   podCreate,
			state: engine.StatePass,
			patch: true,
		},
		{
			// An ApplyConfiguration merging a sidecar by name.
			name:   "mutate/apply",
			action: "mutate",
			policy: `  match: {resources: [pods], operations: [CREATE]}
  action: mutate
  with:
    mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: 'Object{spec: Object.spec{containers: [Object.spec.containers{name: "proxy", image: "envoy"}]}}'
`,
			req:   podCreate,
			state: engine.StatePass,
			patch: true,
		},
		{
			name:   "deny",
			policy: "  match: {resources: [pods], operations: [CREATE]}\n  action: deny\n  with: {messageExpression: \"'pod ' + object.metadata.name + ' is not allowed here'\"}\n",
			req:    podCreate,
			state:  engine.StateFail,
		},
	}
}

// BenchmarkBuiltins measures one request per builtin through
// Snapshot.Evaluate, with the builtin's policy alone: parsing the object,
// the builtin's reads of it and composing the outcome. Compare runs of two
// binaries taken alternately; see BENCHMARKS.md.
func BenchmarkBuiltins(b *testing.B) {
	for _, c := range builtinBenches(b) {
		b.Run(c.name, func(b *testing.B) {
			snap := compilePolicies(b, benchPolicy(c.policy))
			ctx := context.Background()
			d, err := snap.Evaluate(ctx, c.req, c.opts)
			if err != nil || len(d.Results) != 1 || d.Results[0].State != c.state {
				b.Fatalf("the request should give %s: %v, %+v", c.state, err, d)
			}
			action := c.action
			if action == "" {
				action = c.name
			}
			if d.Results[0].Action != action || (len(d.Patch) > 0) != c.patch {
				b.Fatalf("policy runs %s and patches %d times", d.Results[0].Action, len(d.Patch))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := snap.Evaluate(ctx, c.req, c.opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
