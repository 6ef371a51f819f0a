package engine

// ObjectDecoded reports whether the evaluation decoded the request's object
// into maps, for the tests of package engine_test.
func ObjectDecoded(d *Decision) bool { return d.object != nil && d.object.doc == nil }
