#!/usr/bin/env bash
# soak.sh: a long run of `celadon serve` under mixed load (test/load -soak):
# etcd and kube-apiserver from bin/, celadon as a subprocess on 127.0.0.1,
# the shipped policies edited every 30 s (a ConfigMap-style swap) and the
# serving certificate rotated to a new CA every 2 minutes (a Secret-style
# swap). Prints RSS and goroutines over time and fails on any error.
#
#   bash hack/soak.sh                          # 10 minutes; builds celadon
#   SOAK_DURATION=30s bash hack/soak.sh        # a quick smoke run
#   CELADON=bin/celadon SOAK_RATE=500 bash hack/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
SOAK_DURATION=${SOAK_DURATION:-10m}
SOAK_RELOAD=${SOAK_RELOAD:-30s}
SOAK_ROTATE=${SOAK_ROTATE:-2m}
SOAK_RATE=${SOAK_RATE:-300}       # reviews/s per path (/mutate and /validate)
SOAK_CONCURRENCY=${SOAK_CONCURRENCY:-16}
SOAK_MIX=${SOAK_MIX:-pod=8,deploydelete=1,ingress=1}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

celadon=${CELADON:-}
if [[ -z $celadon ]]; then
  celadon=$tmp/celadon
  CGO_ENABLED=0 $GO build -trimpath -o "$celadon" ./cmd/celadon
fi
$GO build -o "$tmp/load" ./test/load

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $($GO version); $(date -u +%FT%TZ)"
echo "== soak: $SOAK_DURATION, $SOAK_RATE reviews/s per path over $SOAK_CONCURRENCY connections, mix $SOAK_MIX; edit every $SOAK_RELOAD, rotation every $SOAK_ROTATE"
"$tmp/load" -spawn "$celadon" -policies policies -soak "$SOAK_DURATION" \
  -soak-reload "$SOAK_RELOAD" -soak-rotate "$SOAK_ROTATE" -soak-sample "${SOAK_SAMPLE:-10s}" \
  -rate "$SOAK_RATE" -c "$SOAK_CONCURRENCY" -mix "$SOAK_MIX" ${LOAD_ARGS:-}
