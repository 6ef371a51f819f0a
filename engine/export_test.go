package engine

// ObjectDecoded reports whether the evaluation decoded the request's object
// into maps, for the tests of package engine_test.
func ObjectDecoded(d *Decision) bool { return d.object != nil && d.object.doc == nil }

// SetMetering turns the CEL meter on or off for the policies compiled
// until it is called again, and returns a func restoring what it was.
func SetMetering(on bool) (restore func()) {
	was := meterPrograms
	meterPrograms = on
	return func() { meterPrograms = was }
}
