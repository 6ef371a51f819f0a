package builtins

import (
	"reflect"
	"testing"

	kjson "sigs.k8s.io/json"

	"celadon.io/celadon/engine"
)

// TestSameValue checks sameValue against reflect.DeepEqual of the decoded
// values, which checkIngressBackends used before it read Values.
func TestSameValue(t *testing.T) {
	docs := []string{
		`null`, `{}`, `[]`, `1`, `1.0`, `"1"`, `true`, `false`,
		`{"a": 1, "b": [1, {"c": null}]}`, `{"b": [1, {"c": null}], "a": 1}`,
		`{"a": 1, "b": [1, {}]}`, `{"a": 1, "b": [1, {"d": null}]}`, `{"a": 1, "b": [{"c": null}, 1]}`,
		`{"a": 1.0, "b": [1, {"c": null}]}`, `{"a": 1}`, `{"a": null}`, `{"b": null}`, `{"a": [1]}`, `{"a": {"0": 1}}`,
	}
	decode := func(doc string) any {
		var v any
		if err := kjson.UnmarshalCaseSensitivePreserveInts([]byte(doc), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, x := range docs {
		for _, y := range docs {
			a, b := decode(x), decode(y)
			if got, want := sameValue(engine.PlainValue(a), engine.PlainValue(b)), reflect.DeepEqual(a, b); got != want {
				t.Errorf("sameValue(%s, %s) = %v, want %v", x, y, got, want)
			}
		}
	}
	// Absent is null, as a missing spec and spec: null decode alike.
	if !sameValue(engine.PlainValue(nil), engine.PlainValue(map[string]any{}).Get("spec")) {
		t.Error("null and absent differ")
	}
}
