package builtins

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"celadon.io/celadon/engine"
)

// secretPolicy is a createSecret policy named name on namespaces with
// label team; with is the body of spec.with, indented by four. spec.with
// is line 12.
func secretPolicy(name, with string) string {
	return `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata:
  name: ` + name + `
spec:
  match:
    resources: [namespaces]
    operations: [CREATE, UPDATE]
    namespaceSelector:
      matchExpressions: [{key: team, operator: Exists}]
  action: createSecret
  with:
` + with
}

const regcredWith = `    name: regcred
    from: {name: regcred}
    addToServiceAccount: default
`

func TestCreateSecretAdmission(t *testing.T) {
	cases := []struct {
		name   string
		op     admissionv1.Operation
		meta   string // extra metadata lines, indented by two
		old    bool   // an UPDATE: the same namespace as the old object
		want   string // the annotation after the patch; "" when nothing changes
		state  engine.State
		reason string
	}{
		{
			name:   "a new namespace gets the annotation",
			op:     admissionv1.Create,
			want:   "pull-secret/regcred",
			state:  engine.StatePass,
			reason: "Secret regcred will be created in namespace team-a from regcred in Celadon's namespace and added to the imagePullSecrets of ServiceAccount default",
		},
		{
			name:  "other annotations are kept",
			op:    admissionv1.Create,
			meta:  "  annotations: {owner: alice}\n",
			want:  "pull-secret/regcred",
			state: engine.StatePass,
		},
		{
			name:  "another policy's entry: appended",
			op:    admissionv1.Update,
			old:   true,
			meta:  "  annotations: {celadon.io/secrets: other/tls}\n",
			want:  "other/tls,pull-secret/regcred",
			state: engine.StatePass,
		},
		{
			name:   "already recorded: no patch",
			op:     admissionv1.Update,
			old:    true,
			meta:   "  annotations: {celadon.io/secrets: \"other/tls, pull-secret/regcred\"}\n",
			state:  engine.StatePass,
			reason: "(already recorded in celadon.io/secrets)",
		},
		{
			name:   "a terminating namespace is skipped",
			op:     admissionv1.Update,
			old:    true,
			meta:   "  deletionTimestamp: \"2026-01-01T00:00:00Z\"\n",
			state:  engine.StateSkip,
			reason: "the namespace is terminating",
		},
		{
			name:   "an unselected namespace is skipped by the engine",
			op:     admissionv1.Create,
			meta:   "  labels: {team: null}\n",
			state:  engine.StateSkip,
			reason: "namespaceSelector",
		},
	}
	snap := compilePolicies(t, secretPolicy("pull-secret", regcredWith))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  labels: {team: a}\n" + tc.meta
			if strings.Contains(tc.meta, "labels:") {
				src = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n" + tc.meta
			}
			obj := yamlJSON(t, src)
			var old []byte
			if tc.old {
				old = obj
			}
			req := admissionRequest(t, tc.op, obj, old)
			req.Namespace = "team-a"
			d := evaluate(t, snap, req, engine.EvalOptions{})
			if len(d.Results) != 1 || d.Results[0].State != tc.state || !strings.Contains(d.Results[0].Reason, tc.reason) {
				t.Fatalf("results %+v; want %s with reason containing %q", d.Results, tc.state, tc.reason)
			}
			if tc.want == "" {
				if len(d.Patch) != 0 {
					p, _ := d.PatchJSON()
					t.Fatalf("patched %s; want nothing", p)
				}
				return
			}
			var want map[string]any
			if err := json.Unmarshal(obj, &want); err != nil {
				t.Fatal(err)
			}
			md := want["metadata"].(map[string]any)
			ann, _ := md["annotations"].(map[string]any)
			if ann == nil {
				ann = map[string]any{}
				md["annotations"] = ann
			}
			ann[NamespaceSecretsAnnotation] = tc.want
			wantJSON, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			checkMutation(t, snap, req, d, wantJSON, engine.EvalOptions{})
		})
	}
}

func TestCreateSecretSkipsOtherObjects(t *testing.T) {
	src := strings.Replace(secretPolicy("s", regcredWith), "[namespaces]", "[namespaces, configmaps]", 1)
	snap := compilePolicies(t, strings.Replace(src, "[CREATE, UPDATE]", `["*"]`, 1))
	cm := yamlJSON(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team-a}\n")
	req := admissionRequest(t, admissionv1.Create, cm, nil)
	d := evaluate(t, snap, req, engine.EvalOptions{Namespaces: namespaceLabels{"team": "a"}})
	if got := statesOf(d); got != "s=skip" || !strings.Contains(d.Results[0].Reason, "not a Namespace") {
		t.Fatalf("%s: %+v", got, d.Results)
	}
	ns := yamlJSON(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {team: a}}\n")
	d = evaluate(t, snap, admissionRequest(t, admissionv1.Delete, nil, ns), engine.EvalOptions{})
	if got := statesOf(d); got != "s=skip" || !strings.Contains(d.Results[0].Reason, "not on DELETE") {
		t.Fatalf("%s: %+v", got, d.Results)
	}
}

func TestCreateSecretLoadErrors(t *testing.T) {
	cases := []struct{ with, want string }{
		{"    from: {name: regcred}\n", `p.yaml:12:3: policy "s": with.name: is required`},
		{"    name: Reg_Cred\n    from: {name: regcred}\n", `p.yaml:13:5: policy "s": with.name: "Reg_Cred" is not a valid Secret name`},
		{"    name: x\n", `p.yaml:12:3: policy "s": with: one of from (a source Secret to copy) or data/stringData is required`},
		{"    name: x\n    from: {name: y}\n    stringData: {a: b}\n", `p.yaml:14:5: policy "s": with.from: give either from`},
		{"    name: x\n    from: {namespace: y}\n", `p.yaml:14:5: policy "s": with.from.name: is required`},
		{"    name: x\n    from: {name: y, namespace: Bad_NS}\n", `p.yaml:14:21: policy "s": with.from.namespace: "Bad_NS" is not a valid namespace name`},
		{"    name: x\n    from: {name: y}\n    type: kubernetes.io/tls\n", `p.yaml:15:5: policy "s": with.type: is copied from the source Secret`},
		{"    name: x\n    data: {k: \"not base64!\"}\n", `p.yaml:14:12: policy "s": with.data.k: is not base64`},
		{"    name: x\n    data: {\"a/b\": eA==}\n", `p.yaml:14:12: policy "s": with.data.a/b: "a/b" is not a valid key`},
		{"    name: x\n    data: {k: eA==}\n    stringData: {k: x}\n", `p.yaml:15:18: policy "s": with.stringData.k: key "k" is in data too`},
		{"    name: x\n    stringData: {k: \"${{ object.metadata.name\"}\n", `p.yaml:14:18: policy "s": with.stringData.k: "${{ object.metadata.name" has no closing }}`},
		{"    name: x\n    stringData: {k: \"${{ object.metadata.nme + 1 }}\"}\n", `p.yaml:14:26: policy "s": with.stringData.k: CEL`},
		{"    name: x\n    from: {name: y}\n    addToServiceAccount: builder\n", `p.yaml:15:5: policy "s": with.addToServiceAccount: "builder": only "default"`},
		{"    name: x\n    from: {name: y}\n    labels: {app.kubernetes.io/managed-by: me}\n", `p.yaml:15:14: policy "s": with.labels.app.kubernetes.io/managed-by: is set by Celadon`},
		{"    name: x\n    from: {name: y}\n    annotations: {celadon.io/policy: me}\n", `p.yaml:15:19: policy "s": with.annotations.celadon.io/policy: is set by Celadon`},
		{"    name: x\n    from: {name: y}\n    nmae: z\n", `p.yaml:15:5: policy "s": with.nmae: unknown field`},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			checkLoadError(t, compileErrors(t, secretPolicy("s", tc.with)), tc.want)
		})
	}
}

func TestPlanSecretsSelection(t *testing.T) {
	src := secretPolicy("pull-secret", regcredWith) + "---\n" + secretPolicy("team-config", `    name: team-config
    type: example.com/config
    data: {raw: AAE=}
    stringData:
      team: "${{ object.metadata.labels['team'] }}"
      motd: "welcome to ${{ namespaceObject.metadata.name }}; $${{ literal }}"
    labels: {purpose: config}
    annotations: {note: generated}
`) + "---\n" + strings.Replace(secretPolicy("prod-only", "    name: prod\n    from: {namespace: shared, name: prod}\n"),
		"matchExpressions: [{key: team, operator: Exists}]", "matchLabels: {env: prod}", 1)
	snap := compilePolicies(t, src)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", UID: "u1", Labels: map[string]string{"team": "a"}}}
	plans, results, err := PlanSecrets(context.Background(), snap, ns, engine.EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, r := range results {
		states = append(states, r.Policy+"="+string(r.State))
	}
	if got := strings.Join(states, ","); got != "pull-secret=pass,team-config=pass,prod-only=skip" {
		t.Fatalf("results %s: %+v", got, results)
	}
	want := []SecretPlan{
		{
			Policy: "pull-secret", Namespace: "team-a", Name: "regcred",
			From: &SecretRef{Name: "regcred"}, AddToServiceAccount: "default",
		},
		{
			Policy: "team-config", Namespace: "team-a", Name: "team-config",
			Type: "example.com/config",
			Data: map[string][]byte{
				"raw":  {0, 1},
				"team": []byte("a"),
				"motd": []byte("welcome to team-a; ${{ literal }}"),
			},
			Labels:      map[string]string{"purpose": "config"},
			Annotations: map[string]string{"note": "generated"},
		},
	}
	if !reflect.DeepEqual(plans, want) {
		t.Fatalf("plans:\n%+v\nwant:\n%+v", plans, want)
	}
	if got := plans[0].Source("celadon"); got != "celadon/regcred" {
		t.Errorf("source %q", got)
	}
	if got := plans[1].Source("celadon"); got != "inline" {
		t.Errorf("source %q", got)
	}

	// Relabelled: only prod-only selects it.
	ns.Labels = map[string]string{"env": "prod"}
	plans, _, err = PlanSecrets(context.Background(), snap, ns, engine.EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plans) != 1 || plans[0].Policy != "prod-only" || *plans[0].From != (SecretRef{Namespace: "shared", Name: "prod"}) {
		t.Fatalf("plans %+v", plans)
	}
	if got := SecretSources(snap); !reflect.DeepEqual(got, []SecretRef{{Name: "regcred"}, {Namespace: "shared", Name: "prod"}}) {
		t.Errorf("SecretSources = %v", got)
	}
	if !snap.UsesBuiltin("createSecret") || compilePolicies(t, sidecarPolicy(sidecarLogShipper)).UsesBuiltin("createSecret") {
		t.Error("UsesBuiltin(createSecret) is wrong")
	}
}

func TestPlanSecretsTemplateError(t *testing.T) {
	snap := compilePolicies(t, secretPolicy("tmpl", `    name: x
    stringData: {owner: "${{ object.metadata.annotations['owner'] }}"}
`))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"team": "a"}}}
	plans, results, err := PlanSecrets(context.Background(), snap, ns, engine.EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plans) != 0 || len(results) != 1 || results[0].State != engine.StateError || !strings.Contains(results[0].Reason, "owner") {
		t.Fatalf("plans %+v results %+v; want one error naming the missing key", plans, results)
	}
	ns.Annotations = map[string]string{"owner": "alice"}
	plans, _, err = PlanSecrets(context.Background(), snap, ns, engine.EvalOptions{})
	if err != nil || len(plans) != 1 || string(plans[0].Data["owner"]) != "alice" {
		t.Fatalf("plans %+v, %v", plans, err)
	}
}

func TestCreateSecretTemplateAtAdmission(t *testing.T) {
	snap := compilePolicies(t, secretPolicy("tmpl", `    name: x
    stringData: {ns: "${{ object.metadata.name }}"}
`))
	// A generateName namespace has no name during admission: the intent is
	// recorded all the same, and the reason says why nothing rendered.
	obj := yamlJSON(t, "apiVersion: v1\nkind: Namespace\nmetadata: {generateName: team-, labels: {team: a}}\n")
	d := evaluate(t, snap, admissionRequest(t, admissionv1.Create, obj, nil), engine.EvalOptions{})
	if got := statesOf(d); got != "tmpl=pass" || !strings.Contains(d.Results[0].Reason, "does not render for this object yet") {
		t.Fatalf("%s: %+v", got, d.Results)
	}
	want := yamlJSON(t, "apiVersion: v1\nkind: Namespace\nmetadata: {generateName: team-, labels: {team: a}, annotations: {celadon.io/secrets: tmpl/x}}\n")
	checkMutation(t, snap, admissionRequest(t, admissionv1.Create, obj, nil), d, want, engine.EvalOptions{})
}
