# hack/controlplane.mk -- real control-plane binaries for e2e tests and
# `make run` (internal/controlplane), built from Go modules only by
# hack/build-controlplane.sh. Included by the top-level Makefile.
#
#   make controlplane    build whichever of $(CONTROLPLANE_BINS) is missing
#                        (or stale: its hack/*/go.mod or go.sum changed)
#   make bin/kubectl     build kubectl too (optional: handy with `make run`)
#   make bin/consul      build the Consul agent the consulLifecycle tests
#                        run (`make test` depends on it)
#
# The first build takes a while on 2 cores (kube-apiserver alone is several
# minutes); later runs are no-ops. Targets that need a control plane should
# depend on $(CONTROLPLANE_BINS) or on controlplane.

CONTROLPLANE_BINS := bin/etcd bin/kube-apiserver bin/kube-controller-manager bin/kube-scheduler

.PHONY: controlplane
controlplane:
	@bash hack/build-controlplane.sh

# No prerequisites on purpose: a binary is built when missing, and the
# script (via `make controlplane`) decides staleness from file contents,
# not timestamps, so a checkout never triggers a long rebuild by itself.
$(CONTROLPLANE_BINS):
	@bash hack/build-controlplane.sh $(notdir $@)

# kubectl is optional and not in CONTROLPLANE_BINS: nothing depends on it.
bin/kubectl:
	@bash hack/build-controlplane.sh kubectl

# consul is not part of the control plane: the consulLifecycle builtin's
# tests register pods with a real agent. Built when missing, like the above.
CONSUL_BIN := bin/consul

$(CONSUL_BIN):
	@bash hack/build-controlplane.sh consul
