package engine

import (
	"reflect"
	"testing"
)

// functionTable returns the shared function table a program's dispatcher
// delegates to, or 0 when the program holds a table of its own. It reads
// cel-go internals: if they change, this test must be revisited, not
// dropped, as a table per program costs ≈ 14.5 KB per expression.
func functionTable(t *testing.T, e *Expression) uintptr {
	t.Helper()
	prog := reflect.ValueOf(e.program)
	for prog.Kind() == reflect.Interface || prog.Kind() == reflect.Pointer {
		prog = prog.Elem()
	}
	disp := prog.FieldByName("dispatcher")
	if !disp.IsValid() {
		t.Fatalf("cel-go program %s has no dispatcher field", prog.Type())
	}
	disp = disp.Elem().Elem() // interface, then pointer
	parent := disp.FieldByName("parent")
	if !parent.IsValid() {
		t.Fatalf("cel-go dispatcher %s has no parent field", disp.Type())
	}
	if parent.IsNil() {
		return 0
	}
	return parent.Elem().Pointer()
}

func TestProgramsShareTheFunctionTable(t *testing.T) {
	snap := mustCompile(t,
		policyYAML("a", "  match:\n    resources: [pods]\n    conditions:\n    - expression: object.metadata.name == 'a'\n    - expression: has(object.spec)\n  action: violate\n"),
		policyYAML("b", "  match:\n    resources: [pods]\n    conditions:\n    - expression: object.metadata.name.startsWith('b')\n  action: violate\n"),
		policyYAML("c", "  variables:\n  - name: n\n    expression: object.metadata.name\n  match:\n    resources: [pods]\n    conditions:\n    - expression: variables.n == 'c'\n  action: violate\n"),
		policyYAML("d", "  variables:\n  - name: n\n    expression: object.metadata.name\n  match:\n    resources: [pods]\n    conditions:\n    - expression: variables.n == 'd'\n  action: violate\n"),
	)
	var exprs []*Expression
	for _, name := range []string{"a", "b", "c", "d"} {
		p := snap.Policy(name)
		if p == nil || p.Err != nil {
			t.Fatalf("policy %s: %+v", name, p)
		}
		exprs = append(exprs, p.conditions...)
		exprs = append(exprs, p.env.variables...)
	}
	want := functionTable(t, exprs[0])
	if want == 0 {
		t.Fatalf("%s has a function table of its own", exprs[0].source)
	}
	for _, e := range exprs[1:] {
		if got := functionTable(t, e); got != want {
			t.Errorf("%s: function table %#x, want the shared %#x", e.source, got, want)
		}
	}
}
