#!/usr/bin/env bash
# profile.sh: a CPU profile of `celadon serve` under load. The load tool
# (test/load -spawn: etcd and kube-apiserver from bin/, celadon as a
# subprocess on 127.0.0.1) runs the shipped policies at c=32 on /mutate and,
# over the measured window, fetches /debug/pprof/profile from serve's
# --pprof-bind-address (127.0.0.1 only). Prints the load figures, then
# `go tool pprof -top` of the profile.
#
#   bash hack/profile.sh                               # builds celadon into a temp dir
#   CELADON=bin/celadon bash hack/profile.sh           # uses that binary
#   PROFILE_DURATION=20s PROFILE_PATH=/validate bash hack/profile.sh
#   PROFILE_OUT=/tmp/before.pprof bash hack/profile.sh # keep it for pprof -diff_base
#
# The load tool shares the cores with the server, as in `make bench`; the
# profile is of the server process alone. Taking it costs the server a
# little CPU (100 samples a second).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
PROFILE_DURATION=${PROFILE_DURATION:-10s}
PROFILE_PATH=${PROFILE_PATH:-/mutate}
PROFILE_CONCURRENCY=${PROFILE_CONCURRENCY:-32}
PROFILE_MIX=${PROFILE_MIX:-pod=8,deploydelete=1,ingress=1}
PROFILE_OUT=${PROFILE_OUT:-${TMPDIR:-/tmp}/celadon-cpu.pprof}
PROFILE_TOP=${PROFILE_TOP:-30}

for b in etcd kube-apiserver; do
  if [[ ! -x ${KUBEBUILDER_ASSETS:-bin}/$b ]]; then
    echo "profile.sh: ${KUBEBUILDER_ASSETS:-bin}/$b missing: run make controlplane first" >&2
    exit 1
  fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

celadon=${CELADON:-}
if [[ -z $celadon ]]; then
  celadon=$tmp/celadon
  echo "== building celadon into $celadon"
  CGO_ENABLED=0 $GO build -trimpath -o "$celadon" ./cmd/celadon
fi
$GO build -o "$tmp/load" ./test/load

echo "== load: $PROFILE_PATH, c=$PROFILE_CONCURRENCY, $PROFILE_DURATION, mix $PROFILE_MIX, shipped policies; CPU profile of celadon serve over the run"
"$tmp/load" -spawn "$celadon" -policies policies -path "$PROFILE_PATH" -c "$PROFILE_CONCURRENCY" \
  -d "$PROFILE_DURATION" -mix "$PROFILE_MIX" -cpuprofile "$PROFILE_OUT" ${LOAD_ARGS:-}
echo
echo "== go tool pprof -top -nodecount=$PROFILE_TOP $PROFILE_OUT"
$GO tool pprof -top -nodecount="$PROFILE_TOP" "$PROFILE_OUT"
echo
echo "== the same, by cumulative time"
$GO tool pprof -top -cum -nodecount="$PROFILE_TOP" "$PROFILE_OUT"
echo
echo "profile kept in $PROFILE_OUT (go tool pprof -http=127.0.0.1:0 $PROFILE_OUT)"
