#!/usr/bin/env bash
# The performance benchmark: builds release, starts feature-store on a fresh SQLite (or, with
# --database postgres://..., a fresh Postgres database through that URL), loads
# synthetic data (1M rows over 100k entities), drives HTTP load with wrk (16 connections,
# 2 threads) and prints one table, with a minimal axum handler as the machine's ceiling.
# Needs wrk: apt-get install wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin feature-store --example bench --example bench_ceiling
exec "$CARGO_TARGET_DIR/release/examples/bench" \
  --server "$CARGO_TARGET_DIR/release/feature-store" \
  --ceiling "$CARGO_TARGET_DIR/release/examples/bench_ceiling" \
  --scripts bench "$@"
