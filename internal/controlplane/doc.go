// Package controlplane starts a real, local Kubernetes control plane for
// Celadon's e2e tests and for the `make run` demo.
//
// It uses controller-runtime's envtest to run etcd and kube-apiserver, and
// then, optionally, the real kube-controller-manager and kube-scheduler as
// subprocesses pointed at that apiserver. With the controller manager
// running, workload objects behave as in a real cluster: a StatefulSet,
// Deployment or Job gets its pods, namespaces get their "default" service
// account, and the garbage collector deletes dependents. No kubelet runs, so
// pods never start: they stay Pending (or, with the scheduler and a Node
// object, get bound to that node). StartScheduler starts a further
// scheduler with a name of its own, which binds only the pods that ask for
// it (spec.schedulerName), so that a test can have its pods scheduled
// without binding anyone else's.
//
// The binaries are built from Go modules by hack/build-controlplane.sh into
// the repository's bin/ directory (`make controlplane`); nothing is
// downloaded. Binaries are looked up, in order, in $TEST_ASSET_<NAME> (e.g.
// TEST_ASSET_KUBE_CONTROLLER_MANAGER), in $KUBEBUILDER_ASSETS, in
// Options.BinDir, and in the bin/ directory of the repository that contains
// the working directory.
//
// Typical use:
//
//	cp, err := controlplane.Start(ctx, controlplane.Options{WithControllerManager: true})
//	if err != nil {
//		t.Fatal(err)
//	}
//	t.Cleanup(func() { _ = cp.Stop() })
//	c, err := client.New(cp.Config, client.Options{})
//
// Stop must always be called: it stops every process Start started. Start
// cleans up after itself when it fails part-way. On Linux every process is
// also killed by the kernel if the calling process dies without calling
// Stop (e.g. `go test -timeout`): the controller manager and scheduler
// through their parent-death signal, etcd and kube-apiserver (started by
// envtest) through a wrapper that sets it with util-linux's setpriv, when
// installed. Temporary directories are then left behind in $TMPDIR.
package controlplane
