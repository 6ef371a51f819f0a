#!/usr/bin/env bash
# build-controlplane.sh builds the real control-plane binaries used by
# internal/controlplane (e2e tests, `make run`) into bin/ at the repo root:
#
#   bin/etcd                     from go.etcd.io/etcd/server/v3   (hack/etcd)
#   bin/kube-apiserver           from k8s.io/kubernetes v1.36.0   (hack/controlplane)
#   bin/kube-controller-manager  from k8s.io/kubernetes v1.36.0   (hack/controlplane)
#   bin/kube-scheduler           from k8s.io/kubernetes v1.36.0   (hack/controlplane)
#   bin/kubectl (optional)       from k8s.io/kubernetes v1.36.0   (hack/controlplane)
#   bin/consul                   from github.com/hashicorp/consul (hack/consul)
#
# consul is the agent the consulLifecycle builtin's tests register pods with;
# it is not part of the control plane and is built only when named
# (`make bin/consul`, a dependency of `make test`).
#
# Everything comes from Go modules (the module proxy); nothing else is
# downloaded. A binary is built only when it is missing (or when the go.mod
# or go.sum it was built from has changed since, as recorded in
# bin/.NAME.stamp), so re-running is cheap. Each one is built to a temporary file and renamed into place, so an
# interrupted build never leaves a truncated binary behind.
#
# kubectl is not needed by the tests or the demo; it is built only when
# named (`make bin/kubectl`), to poke at the demo's cluster by hand.
#
# Usage: hack/build-controlplane.sh [NAME...]   (default: the four above, not kubectl)
#   FORCE=1 rebuilds even if the binary exists.
#   BIN_DIR=/path overrides the output directory (default: <repo>/bin).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${BIN_DIR:-$ROOT/bin}"
K8S_VERSION="v1.36.0"

# Keep the build independent of any go.work above the repo and of CGO.
export GOWORK=off
export CGO_ENABLED=0

if ! command -v go >/dev/null 2>&1; then
	echo "build-controlplane: 'go' not found in PATH" >&2
	exit 1
fi

module_dir() { # NAME -> module directory holding its build
	case "$1" in
	etcd) echo "$ROOT/hack/etcd" ;;
	consul) echo "$ROOT/hack/consul" ;;
	kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo "$ROOT/hack/controlplane" ;;
	*) return 1 ;;
	esac
}

package_of() { # NAME -> Go package to build
	case "$1" in
	etcd | consul) echo "." ;;
	*) echo "k8s.io/kubernetes/cmd/$1" ;;
	esac
}

source_of() { # NAME -> human description of where it comes from
	case "$1" in
	etcd)
		local v
		v="$(awk '{for (i = 1; i < NF; i++) if ($i == "go.etcd.io/etcd/server/v3") {print $(i + 1); exit}}' "$ROOT/hack/etcd/go.mod")"
		echo "go.etcd.io/etcd/server/v3 ${v:-?}"
		;;
	consul)
		local v
		v="$(awk '$1 == "github.com/hashicorp/consul" {print $2; exit}' "$ROOT/hack/consul/go.mod")"
		echo "github.com/hashicorp/consul ${v:-?}"
		;;
	*) echo "k8s.io/kubernetes $K8S_VERSION" ;;
	esac
}

stamp_of() { # MODULE_DIR -> checksum of its go.mod and go.sum
	cat "$1/go.mod" "$1/go.sum" | cksum | awk '{print $1 "-" $2}'
}

tmp=""
cleanup() {
	if [[ -n "$tmp" && -e "$tmp" ]]; then
		rm -f "$tmp"
	fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

build_one() {
	local name="$1" dir pkg out stamp want start end
	if ! dir="$(module_dir "$name")"; then
		echo "build-controlplane: unknown binary '$name' (want etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, consul)" >&2
		return 1
	fi
	out="$BIN_DIR/$name"
	stamp="$BIN_DIR/.$name.stamp"
	want="$(stamp_of "$dir")"
	if [[ -x "$out" && "${FORCE:-}" != "1" ]]; then
		if [[ ! -f "$stamp" || "$(cat "$stamp")" == "$want" ]]; then
			echo "build-controlplane: $name already built ($out)"
			return 0
		fi
		echo "build-controlplane: $(basename "$dir")/go.mod or go.sum changed since $name was built: rebuilding"
	fi
	pkg="$(package_of "$name")"
	mkdir -p "$BIN_DIR"
	tmp="$(mktemp "$BIN_DIR/.$name.tmp.XXXXXX")"
	echo "build-controlplane: building $name from $(source_of "$name") (first time only, takes a few minutes)..."
	start=$(date +%s)
	go build -C "$dir" -trimpath -ldflags='-s -w' -o "$tmp" "$pkg"
	chmod 0755 "$tmp"
	mv -f "$tmp" "$out"
	tmp=""
	printf '%s\n' "$want" >"$stamp"
	end=$(date +%s)
	echo "build-controlplane: built $out in $((end - start))s"
}

if [[ $# -eq 0 ]]; then
	set -- etcd kube-apiserver kube-controller-manager kube-scheduler
fi
for name in "$@"; do
	build_one "$(basename "$name")"
done
