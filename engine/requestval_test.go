package engine

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/cel-go/interpreter"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/cel/common"
)

// TestRequestValueIsTheAPIServers: request, answered in part from the
// request itself, reads as the API server's reflective value of it.
func TestRequestValueIsTheAPIServers(t *testing.T) {
	shared, penv := meterEnvs(t)
	dry := true
	req := &admissionv1.AdmissionRequest{
		UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Name: "web", Namespace: "shop", Operation: admissionv1.Update, DryRun: &dry,
		UserInfo: authenticationv1.UserInfo{Username: "alice", Groups: []string{"dev"}},
	}
	full := *req
	full.Object, full.OldObject = emptyRaw, emptyRaw
	for _, expr := range []string{
		`request.operation`, `request.operation == 'UPDATE'`, `has(request.operation)`, `'operation' in dyn(request)`,
		`request.name + '/' + request.namespace`, `request.userInfo.username`, `request.userInfo.groups`,
		`request.kind.kind`, `has(request.subResource)`, `request.dryRun`, `dyn(request).?options.hasValue()`,
		`dyn(request).all(k, k != '')`, `size(dyn(request))`, `request == request`, `dyn(request).operation`,
	} {
		ast, iss := shared.Compile(expr)
		if iss.Err() != nil {
			t.Fatalf("%s: %v", expr, iss.Err())
		}
		prog, err := meteredProgram(penv, ast)
		if err != nil {
			t.Fatal(err)
		}
		eval := func(request any) (string, uint64) {
			act, _ := interpreter.NewActivation(map[string]any{"request": request})
			m := newMeter(context.Background(), act)
			defer m.release()
			v, _, err := prog.Eval(m)
			if err != nil {
				return "error: " + err.Error(), m.cost
			}
			n, err := toNative(v)
			if err != nil {
				return "error: " + err.Error(), m.cost
			}
			return v.Type().TypeName() + " " + fmt.Sprint(n), m.cost
		}
		got, gotCost := eval(&requestValue{req: req})
		want, wantCost := eval(common.SchemalessTypedToVal(&full))
		if got != want || gotCost != wantCost {
			t.Errorf("%s: %s (cost %d), want %s (cost %d)", expr, got, gotCost, want, wantCost)
		}
	}
}
