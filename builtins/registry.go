package builtins

import "celadon.io/celadon/engine"

var registry = engine.NewRegistry()

// Registry returns the registry holding every builtin in this package.
func Registry() *engine.Registry { return registry }

func register(b engine.Builtin) { registry.Register(b) }
