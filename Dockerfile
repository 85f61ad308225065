# syntax=docker/dockerfile:1
# The operator image: the glibc release binary on distroless `cc` (glibc, libgcc, CA certificates, no
# shell, uid 65532). The glibc build, because it is the binary every speed and memory figure in
# BENCHMARKS.md is measured on; its allocator (jemalloc, linked in: one arena, no thread caches, free
# pages purged at idle, src/memory.rs) is part of those figures.
#
#   docker build -t asc-webhook-operator:dev --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm asc-webhook-operator:dev --help

# Debian 12 (glibc 2.36) on both sides: the binary needs no newer glibc than the runtime image has.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The source revision `asc_webhook_build_info{revision}` reports (compiled in; `unknown` when not given).
ARG REVISION=unknown
ENV ASC_BUILD_REVISION=${REVISION}
# The cache mounts keep the registry and the dependency build between image builds; the binary is copied
# out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin asc-webhook-operator \
 && cp target/release/asc-webhook-operator /asc-webhook-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /asc-webhook-operator /asc-webhook-operator
USER 65532:65532
# 8080: the receiver (POST /hooks/<namespace>/<route>); 9090: /healthz, /readyz, /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/asc-webhook-operator"]
CMD ["run"]
