#!/usr/bin/env bash
# What statistics add to a compute: starts feature-store on a fresh SQLite, stores 1M rows
# over 100k entities, computes a feature with 10 value columns (8 numbers, a string, a boolean)
# three times, and prints the worker's time and the part of it spent on statistics, from the
# server's log. Usage: bench/stats_overhead.sh [path/to/feature-store]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-${CARGO_TARGET_DIR:-target}/release/feature-store}"
DIR="$(mktemp -d)"
PORT=18799
BASE="http://127.0.0.1:$PORT"
DATABASE_URL="sqlite:$DIR/bench.db" PORT=$PORT REDIS_URL= RUST_LOG=info LOG_FORMAT=json \
  REFRESH_SCHEDULER=off "$BIN" > "$DIR/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 1 100); do curl -fsS "$BASE/health" >/dev/null 2>&1 && break; sleep 0.1; done
python3 - "$DIR/rows.csv" <<'PY'
import random, sys
random.seed(7)
with open(sys.argv[1], "w") as f:
    f.write("user_id,amount,qty,kind,flag\n")
    for i in range(1_000_000):
        f.write(f"u{i % 100_000},{random.gauss(100, 30):.3f},{random.randint(1, 9)},{random.choice('abcdefgh')},{random.random() < 0.3}\n")
PY
curl -fsS -X POST "$BASE/api/v1/raw-tables" -H 'Content-Type: application/json' -d \
  '{"name":"events","schema_definition":{"user_id":"string","amount":"float","qty":"integer","kind":"string","flag":"boolean"}}' >/dev/null
curl -fsS -X POST "$BASE/api/v1/raw-tables/1/data" -H 'Content-Type: text/csv' --data-binary "@$DIR/rows.csv" >/dev/null
SQL="SELECT user_id, AVG(amount) AS a1, SUM(amount) AS a2, MIN(amount) AS a3, MAX(amount) AS a4, STDDEV(amount) AS a5, AVG(qty) AS q1, SUM(qty) AS q2, COUNT(*) AS n, MAX(kind) AS k, MAX(flag) AS f FROM data GROUP BY user_id"
curl -fsS -X POST "$BASE/api/v1/features" -H 'Content-Type: application/json' -d \
  "{\"name\":\"wide\",\"raw_table_id\":1,\"entity_key\":\"user_id\",\"computation_logic\":\"$SQL\"}" >/dev/null
for _ in 1 2 3; do
  curl -fsS -X POST "$BASE/api/v1/features/1/compute" -H 'Content-Type: application/json' -d '{"version":"v1"}' >/dev/null
done
sleep 0.5
grep '"published feature version"' "$DIR/server.log" | python3 -c '
import json, sys
for line in sys.stdin:
    f = json.loads(line)["fields"]
    w, s = f["worker_ms"], f.get("stats_ms", 0)
    print(f"worker {w} ms, of which statistics {s} ms ({100 * s / max(w - s, 1):.1f}% on top of the rest)")
'
