# syntax=docker/dockerfile:1
#
# The Wukong image: `wukong daemon` (deploy/) and every other command.
#
#   docker build -t ghcr.io/novasphere/wukong:0.1.0 .
#
# `build` compiles the binary with the locked dependencies (Cargo.lock) and the release
# profile; `runtime` (the image) is distroless (no shell, no package manager) and runs it as the
# non-root user 65532, the user deploy/deployment.yaml asks for; `ci` is for CI jobs.
#
# The binary links OpenSSL (git2's https and ssh) and zlib statically, both built from source
# in the build stage, so at run time it needs only what the runtime base provides (the list
# below); tests/it/image.rs checks the binary's `ldd` against that list, and .ci/run builds the
# binary with the build stage's own command (the `RUN ... cargo build` line below).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
# perl and make build the vendored OpenSSL (openssl-src); the slim image has gcc and libc6-dev.
RUN apt-get update \
 && apt-get install -y --no-install-recommends perl make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY schemas ./schemas
COPY templates ./templates
# The registry and target directory are build caches (BuildKit), so a rebuild after a source
# change compiles only Wukong; the binary is copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin wukong \
 && install -D -m 0755 target/release/wukong /out/wukong

# For CI jobs that post plans (ci/gitlab/wukong-plan.gitlab-ci.yml): wukong, Python 3 and the
# comment script, with a shell. `docker build --target ci -t ghcr.io/novasphere/wukong:0.1.0-ci .`
FROM docker.io/library/python:3.12-slim-bookworm AS ci
COPY --from=build /out/wukong /usr/local/bin/wukong
COPY ci/wukong-plan-comment.py /usr/share/wukong/ci/wukong-plan-comment.py
USER 65532:65532

# The image (the last stage, what `docker build .` makes). glibc 2.36 (libc, libm, the dynamic
# loader) and libgcc_s: everything the binary needs; the same Debian release as the build
# stage, so the binary's glibc symbols all exist here.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/wukong /usr/local/bin/wukong
# `wukong demo` runs the example fleets from here.
COPY examples /usr/share/wukong/examples
COPY LICENSE /usr/share/doc/wukong/LICENSE
WORKDIR /usr/share/wukong
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wukong"]
CMD ["--help"]
