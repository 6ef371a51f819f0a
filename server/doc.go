// Package server runs Celadon's admission webhook: it loads the policy
// directory into an engine.Store, serves the webhook endpoints of package
// webhook on controller-runtime's webhook server (TLS from CertDir,
// reloaded on rotation) inside a controller-runtime manager, and serves
// /metrics, /status, /healthz and /readyz.
//
// NewServer(Options) loads and compiles the policy directory, failing on
// any error; Server.Start(ctx) serves until ctx is done. The `celadon
// serve` command is a flag layer over these two calls, so tests can run the
// very same server in-process. The server names no builtin: what builtins
// need beside admission they declare (engine/extension.go), and the server
// drives it generically.
//
// Everything the server derives from a policy set hears of it through
// engine.Store.Subscribe: the served set behind the endpoints and its
// metrics (reload.go), the cluster cache's informers (package cluster), the
// webhook configuration syncer and the builtins' controllers (package
// controllers). A request evaluates entirely on the set it loaded when it
// started. See reload.go for how the directory is watched, and why a
// ConfigMap mounted with subPath never updates.
//
// Who owns what runs beside the endpoints:
//
//   - the informer caches that requests read: one cluster.Cache, started
//     with the server and synced before /readyz answers;
//   - the webhook configurations (ManageWebhooks) and the builtins'
//     controllers: the elected leader, through package controllers;
//   - the self-signed certificates (SelfSignedCerts): every replica,
//     through controllers.CertManager, written before the webhook starts.
package server
