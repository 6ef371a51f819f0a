#!/usr/bin/env bash
# bench.sh: the engine micro-benchmarks, then short load runs through a
# real `celadon serve` (test/load -spawn: etcd and kube-apiserver from bin/,
# celadon as a subprocess on 127.0.0.1), then `celadon scan` of a synthetic
# cluster (test/scanbench). Prints one table per part.
#
#   bash hack/bench.sh                      # builds celadon into a temp dir
#   CELADON=bin/celadon bash hack/bench.sh  # uses that binary
#   LOAD_DURATION=10s LOAD_CONCURRENCY=1,8,32,64 bash hack/bench.sh
#   LOAD_RATE=2000 bash hack/bench.sh        # adds an open-loop run
#   BENCH_PKGS="./engine/ ./builtins/" bash hack/bench.sh  # more micro-benchmarks
#   LOAD_PODS=0 bash hack/bench.sh           # skips the pod CREATE latency part
#   SCAN_SIZES=1000,5000 bash hack/bench.sh  # smaller clusters for celadon scan
#   SCAN_SIZES=0 bash hack/bench.sh          # skips celadon scan
#
# The load tool and the server share the machine's cores: the table's
# "server CPU" and "client CPU" columns show how they split them.
#
# Every load run of Celadon is followed by the same run against a no-op
# HTTPS webhook (test/load -floor), and a second table gives Celadon's
# req/s, server CPU per review and p99 over that floor's.
#   FLOOR_ROUNDS=3 bash hack/bench.sh        # medians of 3 interleaved pairs
#   LOAD_FLOOR=0 bash hack/bench.sh          # no floor runs
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
LOAD_DURATION=${LOAD_DURATION:-5s}
LOAD_CONCURRENCY=${LOAD_CONCURRENCY:-1,8,32}
LOAD_PATHS=${LOAD_PATHS:-/mutate,/validate}
LOAD_MIX=${LOAD_MIX:-pod=8,deploydelete=1,ingress=1}
floor=()
if [[ ${LOAD_FLOOR:-1} != 0 ]]; then
  floor=(-floor -floor-rounds "${FLOOR_ROUNDS:-1}")
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for b in etcd kube-apiserver; do
  if [[ ! -x ${KUBEBUILDER_ASSETS:-bin}/$b ]]; then
    echo "bench.sh: ${KUBEBUILDER_ASSETS:-bin}/$b missing: run make controlplane first" >&2
    exit 1
  fi
done

echo "== machine"
echo "cores: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $($GO version)"
echo

echo "== engine: go test -run '^\$' -bench . -benchmem -cpu 1 ${BENCH_PKGS:-./engine/}"
$GO test -run '^$' -bench . -benchmem -cpu 1 ${BENCH_PKGS:-./engine/}
echo

celadon=${CELADON:-}
if [[ -z $celadon ]]; then
  celadon=$tmp/celadon
  echo "== building celadon into $celadon"
  CGO_ENABLED=0 $GO build -trimpath -o "$celadon" ./cmd/celadon
fi
$GO build -o "$tmp/load" ./test/load

echo "== load: $LOAD_PATHS, concurrency $LOAD_CONCURRENCY, $LOAD_DURATION each, mix $LOAD_MIX; baseline: empty policy set at the highest concurrency${floor:+; each run then against the no-op floor}"
"$tmp/load" -spawn "$celadon" -policies policies -baseline "${floor[@]}" \
  -path "$LOAD_PATHS" -c "$LOAD_CONCURRENCY" -d "$LOAD_DURATION" -mix "$LOAD_MIX" ${LOAD_ARGS:-}

# Pod CREATE latency through kube-apiserver: the webhook installed, none,
# and a no-op webhook (the API server's own cost of calling one), in
# interleaved batches.
if [[ ${LOAD_PODS:-200} != 0 ]]; then
  echo
  echo "== pod CREATE through kube-apiserver: ${LOAD_PODS:-200} pods per mode, one at a time"
  "$tmp/load" -spawn "$celadon" -policies policies -pods "${LOAD_PODS:-200}"
fi

# Optional: an open-loop run at a fixed offered rate (p99 without
# closed-loop queueing), e.g. LOAD_RATE=2000.
if [[ -n ${LOAD_RATE:-} ]]; then
  echo
  echo "== load, open loop: $LOAD_RATE reviews/s offered, up to ${LOAD_CONCURRENCY##*,} in flight"
  "$tmp/load" -spawn "$celadon" -policies policies -baseline "${floor[@]}" \
    -path "$LOAD_PATHS" -c "${LOAD_CONCURRENCY##*,}" -rate "$LOAD_RATE" -d "$LOAD_DURATION" -mix "$LOAD_MIX" ${LOAD_ARGS:-}
fi

# celadon scan of a synthetic cluster: ConfigMaps created in a real
# kube-apiserver (concurrently, the client unthrottled), then the scan as a
# subprocess at each size, its wall time and peak RSS (test/scanbench).
SCAN_SIZES=${SCAN_SIZES:-1000,10000,50000}
if [[ $SCAN_SIZES != 0 ]]; then
  echo
  echo "== celadon scan of a synthetic cluster: $SCAN_SIZES ConfigMaps across 50 namespaces"
  $GO run ./test/scanbench -celadon "$celadon" -sizes "$SCAN_SIZES"
fi
