# syntax=docker/dockerfile:1
#
# Celadon's image: one static binary on distroless, as a non-root user.
#
#   docker build -t celadon \
#     --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse --short HEAD) \
#     --build-arg DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ...
# cross-compiles on the build machine's platform.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
# The Makefile's BUILDFLAGS are the same (cmd/celadon TestBuildFlags).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" -o /celadon ./cmd/celadon

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
LABEL org.opencontainers.image.title="celadon" \
      org.opencontainers.image.description="Kubernetes admission webhook driven by CEL policies" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${DATE}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /celadon /celadon
USER 65532:65532
# 9443 the admission webhooks (HTTPS), 8080 /metrics and /status, 8081 /healthz and /readyz.
EXPOSE 9443 8080 8081
ENTRYPOINT ["/celadon"]
CMD ["serve"]
