// Package cluster owns every informer cache the server reads while it
// answers admission requests: the Namespaces behind namespaceSelector and
// namespaceObject, and the resources builtins read through
// engine.ObjectGetter. One Cache, made when the server is made, answers
// ServiceUnavailable until the server starts it; the server reports ready
// only once it has synced, and stops it on shutdown.
//
// A builtin's controller (engine.ControllerBuiltin) reconciles on the
// elected leader only, and keeps the caches of what it writes itself,
// started and stopped with it: they are no part of answering a request.
package cluster
