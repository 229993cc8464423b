# syntax=docker/dockerfile:1
#
# atkafka container image.
#
#   docker build -t atkafka .
#   docker build --build-arg VERSION=$(git describe --tags --always) -t atkafka .
#
# The final image is distroless: a static binary, CA certificates (for wss:// relays and https:// PDSes) and
# time zone data, no shell. It runs as an unprivileged user, in /data, where cursor files land by default.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Dependencies first, so that a source change does not download modules again; the cache mounts keep modules and
# build results across builds without putting them in a layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG VERSION=dev
# CGO off: a fully static binary runs on distroless/static, which has no libc.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/atkafka ./cmd/atkafka
# The working directory must exist and belong to the runtime user: a named volume mounted on /data starts as a copy
# of it (ownership included), so cursor files can be written without running as root.
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/atkafka /usr/local/bin/atkafka
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
# /metrics, /healthz, /readyz and /debug/pprof/ (--metrics-listen-address, default 0.0.0.0:6009).
EXPOSE 6009
# Liveness only: /healthz answers while the process serves HTTP. `atkafka healthcheck` GETs /healthz on the port of
# --metrics-listen-address (same flag and variables as the server), so it stays right when the port is changed;
# there is no curl or wget in this image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["atkafka", "healthcheck"]
# SIGTERM (docker stop) makes atkafka stop reading, flush what is in flight to Kafka and save its cursor, within
# --shutdown-timeout (default 30s); give `docker stop` / stop_grace_period more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["atkafka"]
CMD ["--help"]
