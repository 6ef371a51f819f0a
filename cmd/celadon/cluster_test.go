package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEvalCluster: --cluster takes files, directories, repeated flags and
// comma lists; its Namespaces feed namespaceSelector, --namespace-labels
// the namespaces it does not hold; bad input is a usage error naming it.
func TestEvalCluster(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	policy := write("policy.yaml", `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: backends
spec:
  match:
    resources: [networking.k8s.io/ingresses]
    namespaceSelector: {matchLabels: {team: shop}}
  action: checkIngressBackends
`)
	ingressIn := func(ns string) string {
		return write("ingress-"+ns+".yaml", `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: `+ns+`}
spec:
  defaultBackend:
    service: {name: api, port: {number: 80}}
`)
	}
	service := func(ns string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: " + ns + "}\nspec:\n  ports: [{port: 80}]\n"
	}
	namespaces := write("objects/1-namespaces.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: shop}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n")
	services := write("objects/2-services.yml", service("shop"))
	write("objects/README.md", "not read: not YAML or JSON")
	objects := filepath.Dir(namespaces)

	for _, c := range []struct {
		name   string
		args   []string
		code   int
		output string // a line of the output, or of stderr
	}{
		{"a directory", []string{"-f", ingressIn("shop"), "--cluster", objects}, 0, "backends  checkIngressBackends  pass  backends found: services api"},
		{"a comma list", []string{"-f", ingressIn("shop"), "--cluster", namespaces + "," + services}, 0, "pass  backends found: services api"},
		{"repeated", []string{"-f", ingressIn("shop"), "--cluster", namespaces, "--cluster", services}, 0, "pass  backends found: services api"},
		{"the Service is missing", []string{"-f", ingressIn("shop"), "--cluster", namespaces}, 1, `DENIED: service "api" not found`},
		{"a namespace of --cluster keeps its labels", []string{"-f", ingressIn("other"), "--cluster", objects, "--namespace-labels", "team=shop"}, 0,
			`skip  namespaceSelector does not match namespace "other"`},
		{"other namespaces get --namespace-labels", []string{"-f", ingressIn("elsewhere"), "--cluster", objects, "--namespace-labels", "team=shop"}, 1,
			`DENIED: service "api" not found`},
		{"an object twice", []string{"-f", ingressIn("shop"), "--cluster", services + "," + services}, 2,
			"--cluster: " + services + ": document 1: the cluster already has Service shop/api"},
		{"a missing file", []string{"-f", ingressIn("shop"), "--cluster", filepath.Join(dir, "nope.yaml")}, 2, "--cluster: open " + filepath.Join(dir, "nope.yaml")},
		{"a directory without objects", []string{"-f", ingressIn("shop"), "--cluster", t.TempDir()}, 2, "no *.yaml, *.yml or *.json files"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"eval", "-p", policy}, c.args...)...)
			if code != c.code || !strings.Contains(stdout+stderr, c.output) {
				t.Errorf("exit %d, want %d with %q in\nstdout:\n%s\nstderr:\n%s", code, c.code, c.output, stdout, stderr)
			}
		})
	}
}
