// Package controllers holds what runs beside admission, none of it per
// request: the generation of the webhook configurations from a policy set
// (Configurations) and their sync on the elected leader (ConfigSyncer), the
// self-signed CA and serving certificate shared by the replicas
// (CertManager), and the runner of the controllers that builtins declare
// (BuiltinControllers, engine.ControllerBuiltin). Package server starts
// them.
package controllers
