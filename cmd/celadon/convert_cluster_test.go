package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeParamsAPI serves the discovery and the LIST of ConfigMaps that
// --params-from-cluster needs, and counts the LISTs.
func fakeParamsAPI(t *testing.T, lists *int) *httptest.Server {
	t.Helper()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api":
			reply(w, map[string]any{"kind": "APIVersions", "versions": []string{"v1"}})
		case "/apis":
			reply(w, map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": []any{}})
		case "/api/v1":
			reply(w, map[string]any{"kind": "APIResourceList", "groupVersion": "v1", "resources": []any{
				map[string]any{"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap", "verbs": []string{"get", "list"}},
			}})
		case "/api/v1/configmaps":
			*lists++
			reply(w, map[string]any{"kind": "ConfigMapList", "apiVersion": "v1", "metadata": map[string]any{}, "items": []any{
				map[string]any{"metadata": map[string]any{"name": "replica-limit", "namespace": "policy-params", "managedFields": []any{map[string]any{"manager": "kubectl"}}},
					"data": map[string]any{"maxReplicas": "7", "exempt": ""}},
				map[string]any{"metadata": map[string]any{"name": "replica-limit", "namespace": "elsewhere"}, "data": map[string]any{"maxReplicas": "1"}},
			}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestConvertParamsFromCluster(t *testing.T) {
	var lists int
	srv := fakeParamsAPI(t, &lists)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+srv.URL+`"}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	rootCmd.RemoveCommand(findCmd("convert"))
	rootCmd.AddCommand(newConvertCmd())
	code, stdout, stderr := runCLI(t, "convert", "testdata/convert/vap-params/input.yaml", "--params-from-cluster", "--kubeconfig", kubeconfig)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if lists != 1 {
		t.Errorf("%d LISTs of configmaps, want 1", lists)
	}
	// The parameter of paramRef's namespace, without its managedFields.
	snap := compileConverted(t, stdout)
	params := snap.Policies[0].Policy.Spec.Variables[0].Expression
	if !strings.Contains(params, `"maxReplicas": "7"`) || strings.Contains(params, `"1"`) || strings.Contains(params, "managedFields") {
		t.Errorf("params = %s", params)
	}
}
