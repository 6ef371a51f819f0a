// Package builtins holds Celadon's builtin actions, one file each. Every
// builtin registers itself by name in Registry from an init function; the
// engine looks builtins up there when policies load.
//
// A builtin reads the request's object through ActionContext.Object, an
// engine.Value over the parsed request: Get, Str, Elements and Range read
// the few fields it needs without decoding the object, which is most of
// what a request would cost. It decodes a part only to use it whole, as
// injectSidecar does with a container of the pod named as one of its
// templates, to compare them. Messages name the JSON type met with goType,
// as they did when builtins read decoded maps.
package builtins
