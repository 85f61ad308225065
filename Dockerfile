# syntax=docker/dockerfile:1
# The operator image: one static binary (musl, jemalloc linked in) on distroless `static` (CA
# certificates, /etc/passwd with uid 65532, no shell, no libc). Static, because an idle operator's memory
# is mostly code pages: glibc, libm and the loader mapped ~2 MiB of them, the parts of musl the binary
# uses a fraction of that (BENCHMARKS.md §6). musl's own malloc is not used: the allocator is jemalloc
# (one arena, no thread caches, free pages purged at idle, src/memory.rs), as in every figure of
# BENCHMARKS.md.
#
#   docker build -t asc-webhook-operator:dev --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm asc-webhook-operator:dev --help

FROM rust:1-bookworm AS build
# musl-gcc compiles the C parts (jemalloc, ring) for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The source revision `asc_webhook_build_info{revision}` reports (compiled in; `unknown` when not given).
ARG REVISION=unknown
ENV ASC_BUILD_REVISION=${REVISION}
# The cache mounts keep the registry and the dependency build between image builds; the binary is copied
# out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin asc-webhook-operator \
 && cp target/x86_64-unknown-linux-musl/release/asc-webhook-operator /asc-webhook-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /asc-webhook-operator /asc-webhook-operator
USER 65532:65532
# 8080: the receiver (POST /hooks/<namespace>/<route>); 9090: /healthz, /readyz, /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/asc-webhook-operator"]
CMD ["run"]
