// Package engine loads Celadon policies, compiles their CEL into an immutable
// Snapshot and evaluates admission requests against it.
//
// The engine is pure: it knows nothing of HTTP, TLS or client-go clients.
// Cluster state reaches it through the small NamespaceGetter and ObjectGetter
// interfaces, so the same code serves the webhook, `celadon eval` and tests.
//
// A request flows through three steps:
//
//   - Snapshot.Candidates picks, from an index keyed by (group, resource,
//     subresource, operation), only the policies that can possibly match.
//   - Each candidate's selectors and CEL conditions are checked, sharing one
//     cost budget for the whole request. Programs are planned without
//     cel-go's cost tracking and charged by a meter (meter.go) that counts
//     as it does, without its allocations; the meter also reads a field
//     path (object.spec.?x.?y) in one step, from the tape or any map.
//   - A matched policy that an unexpired PolicyException names, and whose
//     match selects the request too, is a skip naming the exception; its
//     action does not run (exception_eval.go).
//   - Matched policies dispatch, in order, to their builtin Action. Mutating
//     actions return targeted JSON-patch operations that are applied to the
//     working copy of the object before the next policy sees it; validating
//     actions return a violation that the policy's enforcement turns into a
//     denial, a warning, or an audit annotation and a warning marked
//     "(audit)".
//
// The order is that of one Evaluate call, in which `celadon eval` evaluates
// every policy. The server makes one call per webhook, limited to a phase
// and a failurePolicy (EvalOptions.Phase and EvalOptions.FailurePolicy),
// and the API server calls the mutating webhooks in turn, Fail before
// Ignore, but the validating ones in parallel: in a cluster the order holds
// among the mutating policies of one failurePolicy, and validating
// policies, which cannot change the object, have none.
//
// The object is parsed once into a tape that CEL and builtins read in
// place: ActionContext.Object is a Value, whose fields cost no decoding.
// A builtin that needs much of it Decodes a copy, into a typed struct or
// plain maps. The engine decodes the object into Go maps only for a read
// after a patch. A patch that surely applies waits until something reads
// the object, so a request's last mutation is usually returned without
// ever being applied in the server.
//
// Every matched or skipped policy yields a PolicyResult with an explicit State.
package engine
