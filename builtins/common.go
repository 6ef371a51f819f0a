package builtins

import (
	"fmt"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"celadon.io/celadon/engine"
)

// containerSet validates a `containers` argument: nil means every container;
// an empty list, an invalid name or a name listed twice is a load error.
// emptyHint completes "is empty; " for the builtin's own wording.
func containerSet(c *engine.CompileContext, names []string, emptyHint string) (map[string]bool, error) {
	if names == nil {
		return nil, nil
	}
	if len(names) == 0 {
		return nil, c.FieldError("containers", "is empty; %s", emptyHint)
	}
	set := make(map[string]bool, len(names))
	for i, n := range names {
		field := fmt.Sprintf("containers[%d]", i)
		if msgs := validation.IsDNS1123Label(n); len(msgs) > 0 {
			return nil, c.FieldError(field, "%q is not a valid container name: %s", n, strings.Join(msgs, "; "))
		}
		if set[n] {
			return nil, c.FieldError(field, "container %q is listed twice", n)
		}
		set[n] = true
	}
	return set, nil
}

// quantityText returns the text of a quantity as it appears in an object:
// a string, or a bare JSON number.
func quantityText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case int64:
		return strconv.FormatInt(v, 10), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	}
	return "", false
}

// quantityValue returns the text of a quantity in the object: a string,
// or a bare JSON number.
func quantityValue(v engine.Value) (string, bool) {
	if s, ok := v.Str(); ok {
		return s, true
	}
	if v.IsObject() || v.IsList() {
		return "", false
	}
	return quantityText(v.Interface())
}

// goType names the Go type a value decodes to, as %T did when builtins
// read decoded maps: messages say "spec.containers is a string, not a
// list". It decodes nothing.
func goType(v engine.Value) string {
	switch {
	case v.IsObject():
		return "map[string]interface {}"
	case v.IsList():
		return "[]interface {}"
	}
	return fmt.Sprintf("%T", v.Interface())
}

// sameValue reports whether two values hold the same JSON, as
// reflect.DeepEqual of their decoded forms does: absent and null alike,
// numbers equal when of one kind and value.
func sameValue(a, b engine.Value) bool {
	switch {
	case a.IsObject():
		if !b.IsObject() || a.Len() != b.Len() {
			return false
		}
		same := true
		a.Range(func(k string, e engine.Value) {
			if same {
				f := b.Get(k)
				same = f.Exists() && sameValue(e, f)
			}
		})
		return same
	case a.IsList():
		if !b.IsList() || a.Len() != b.Len() {
			return false
		}
		be := b.Elements()
		for i, e := range a.Elements() {
			if !sameValue(e, be[i]) {
				return false
			}
		}
		return true
	case b.IsObject() || b.IsList():
		return false
	}
	return a.Interface() == b.Interface()
}

// skip reports that an action does not apply to this object, and why.
func skip(reason string) engine.Outcome { return engine.Outcome{Skipped: true, Reason: reason} }

// podOnCreate returns the pod of a CREATE request, or why a pod builtin does
// not apply: another operation (a pod's spec is immutable), no object, or
// another kind. change says what the builtin does, e.g. "env can only be set".
// A controller's pod template (autogen) may change on UPDATE too.
func podOnCreate(ac *engine.ActionContext, change string) (engine.Value, string) {
	if ac.Request != nil && ac.Request.Operation != admissionv1.Create && ac.Template() == "" {
		return engine.Value{}, fmt.Sprintf("%s when a pod is created, not on %s", change, ac.Request.Operation)
	}
	return objectOfKind(ac, "Pod")
}

// objectOfKind returns the request's object, or why a builtin for kind does
// not apply to it: there is none, or it is of another kind. An object that
// does not say its kind is taken to be of kind.
func objectOfKind(ac *engine.ActionContext, kind string) (engine.Value, string) {
	obj := ac.Object()
	if !obj.Exists() {
		return engine.Value{}, "there is no object"
	}
	if k, _ := obj.Get("kind").Str(); k != "" && k != kind {
		article := "a"
		if strings.ContainsRune("AEIOU", rune(kind[0])) {
			article = "an"
		}
		return engine.Value{}, fmt.Sprintf("the object is a %s, not %s %s", k, article, kind)
	}
	return obj, ""
}
