# Build: docker build -t feature-store .
# Run:   docker run -p 8000:8000 -v fs-data:/data feature-store
# The same build steps as the README: `cargo build --release` (polars makes the first build slow).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
COPY assets ./assets
COPY examples ./examples
COPY benches ./benches
RUN cargo build --release --bin feature-store \
 && strip target/release/feature-store \
 && cp target/release/feature-store /feature-store

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home feature-store
COPY --from=build /feature-store /usr/local/bin/feature-store
USER feature-store
WORKDIR /data
ENV HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_URL=sqlite:/data/feature_store.db \
    LOG_FORMAT=json
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["/usr/local/bin/feature-store"]
