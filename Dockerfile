# syntax=docker/dockerfile:1
#
# falocal on CPU: ONNX Runtime's CPU build, a Debian slim runtime, non-root.
#
#   docker build -t falocal:cpu .
#   docker run -p 8080:8080 -e FALOCAL_KEYS=key_id:key_secret \
#     -v falocal:/var/lib/falocal falocal:cpu
#
# Off loopback the server refuses to start without keys: set FALOCAL_KEYS
# (comma-separated key_id:key_secret), or mount a config file of your own
# at /etc/falocal/falocal.toml (docs/configuration.md; deploy/docker.toml is
# the image's).
#
# Models, air-gapped: mount an offline bundle (docs/airgap.md) at
# /bundle/site.falb, and its signer's public key at /bundle/site.pub; the
# entrypoint (deploy/docker-entrypoint.sh) installs it into the volume at
# the first start, before serving. With network: run setup once,
#   docker run --rm -v falocal:/var/lib/falocal falocal:cpu setup
#
# Pins (change them together):
# - Go 1.26.8 (go.mod says go 1.26.8), Debian bookworm for build and run,
#   so the binary's glibc is the runtime's.
# - ONNX Runtime 1.30.0's CPU library, the one 'falocal setup' installs:
#   from the onnxruntime-node npm package, both hashes as in
#   cmd/falocal/setup.go (package, then libonnxruntime.so.1).

ARG GO_VERSION=1.26.8
ARG DEBIAN=bookworm

# ---- ort: the pinned CPU library, verified by hash.
FROM debian:${DEBIAN}-slim AS ort
ARG ORT_VERSION=1.30.0
ARG ORT_PACKAGE_SHA256=6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75
ARG ORT_LIBRARY_SHA256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    rm -rf /var/lib/apt/lists/*; \
    curl -fsSL -o /tmp/ort.tgz "https://registry.npmjs.org/onnxruntime-node/-/onnxruntime-node-${ORT_VERSION}.tgz"; \
    echo "${ORT_PACKAGE_SHA256}  /tmp/ort.tgz" | sha256sum -c -; \
    mkdir -p /opt/onnxruntime/lib; \
    tar -xzf /tmp/ort.tgz -C /tmp package/bin/napi-v6/linux/x64/libonnxruntime.so.1; \
    mv /tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1 /opt/onnxruntime/lib/; \
    echo "${ORT_LIBRARY_SHA256}  /opt/onnxruntime/lib/libonnxruntime.so.1" | sha256sum -c -; \
    rm -rf /tmp/ort.tgz /tmp/package

# ---- builder: falocal (cgo: ONNX Runtime is loaded with dlopen).
FROM golang:${GO_VERSION}-${DEBIAN} AS builder
# GOTOOLCHAIN=local: never download another toolchain behind the pin.
ENV GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=1
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/falocal ./cmd/falocal

# ---- runtime
FROM debian:${DEBIAN}-slim AS runtime
# curl for the health check; ca-certificates for setup and -allow-fetch.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    rm -rf /var/lib/apt/lists/*; \
    useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/falocal falocal
COPY --from=ort /opt/onnxruntime /opt/onnxruntime
COPY --from=builder /out/falocal /usr/local/bin/falocal
COPY deploy/docker-entrypoint.sh /usr/local/bin/falocal-entrypoint
# The image's paths are environment variables (flags and the environment
# beat a config file); the rest of its settings are a config file a mount
# at /etc/falocal/falocal.toml replaces.
COPY deploy/docker.toml /etc/falocal/falocal.toml
ENV FALOCAL_ORT_LIBRARY=/opt/onnxruntime/lib/libonnxruntime.so.1 \
    FALOCAL_DATA_DIR=/var/lib/falocal/data \
    FALOCAL_CACHE_DIR=/var/lib/falocal/cache \
    FALOCAL_CONFIG=/etc/falocal/falocal.toml
USER falocal
WORKDIR /var/lib/falocal
VOLUME ["/var/lib/falocal"]
EXPOSE 8080
# /healthz stays open without a key, and answers while the process is alive.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
# docker stop sends SIGTERM and the server drains for up to -drain-timeout
# (30s); docker kills after 10s unless run with --stop-timeout 40
# (compose: stop_grace_period: 40s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/falocal-entrypoint"]
CMD ["serve"]
