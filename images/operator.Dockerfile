# ringkv-operator: multi-stage, non-root, works with a read-only root
# filesystem (it writes nothing locally).
# Build from the repository root:
#   docker build -f images/operator.Dockerfile -t ringkv/ringkv-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends protobuf-compiler libclang-dev clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ringkv-operator \
 && cp target/release/ringkv-operator /usr/local/bin/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/ringkv-operator /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ringkv-operator"]
