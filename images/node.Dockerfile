# ringkv-node: multi-stage, non-root, works with a read-only root
# filesystem (the node writes only to its data volume at /data).
# Build from the repository root:
#   docker build -f images/node.Dockerfile -t ringkv/ringkv-node:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends protobuf-compiler libclang-dev clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ringkv-node -p ringkv-client \
 && cp target/release/ringkv-node target/release/ringkv /usr/local/bin/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/ringkv-node /usr/local/bin/ringkv /usr/local/bin/
USER 65532:65532
VOLUME /data
ENV RINGKV_DATA_DIR=/data RINGKV_LISTEN=0.0.0.0:7379 RINGKV_METRICS_LISTEN=0.0.0.0:9379 \
    RINGKV_GOSSIP_LISTEN=0.0.0.0:7946 RINGKV_LOG_FORMAT=json
EXPOSE 7379 7946/udp 9379
ENTRYPOINT ["/usr/local/bin/ringkv-node"]
