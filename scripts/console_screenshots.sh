#!/usr/bin/env bash
# Screenshots of the web console for the README: starts feature-store on a fresh SQLite,
# loads a small example (two ingests, so there are two snapshots and some drift), and has
# headless chromium (apt-get install chromium) capture /ui and a feature's page into docs/.
# Usage: scripts/console_screenshots.sh [path/to/feature-store]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-${CARGO_TARGET_DIR:-target}/release/feature-store}"
DIR="$(mktemp -d)"
PORT=18798
BASE="http://127.0.0.1:$PORT"
DATABASE_URL="sqlite:$DIR/shots.db" PORT=$PORT REDIS_URL= RUST_LOG=warn "$BIN" > "$DIR/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 1 100); do curl -fsS "$BASE/health" >/dev/null 2>&1 && break; sleep 0.1; done
python3 - "$BASE" <<'PY'
import json, random, sys, urllib.request
base = sys.argv[1]
def call(method, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
random.seed(3)
call("POST", "/api/v1/raw-tables", {"name": "payments", "description": "card and cash payments",
     "schema_definition": {"user_id": "string", "amount": "float", "method": "string"}})
call("POST", "/api/v1/raw-tables", {"name": "sessions", "description": "app sessions",
     "schema_definition": {"user_id": "string", "seconds": "integer"}})
call("POST", "/api/v1/features", {"name": "spend_profile", "description": "what each user spends",
     "raw_table_id": 1, "entity_key": "user_id",
     "computation_logic": "SELECT user_id, AVG(amount) AS avg_amount, COUNT(*) AS payments, MAX(method) AS method FROM data GROUP BY user_id"})
call("POST", "/api/v1/features", {"name": "session_length", "description": "average session",
     "raw_table_id": 2, "entity_key": "user_id",
     "computation_logic": "SELECT user_id, AVG(seconds) AS avg_seconds FROM data GROUP BY user_id"})
for shift, cash in [(0, 0.3), (25, 0.5)]:
    rows = [{"user_id": f"u{i % 800}", "amount": max(1.0, random.gauss(80 + shift, 20)),
             "method": "cash" if random.random() < cash else "card"} for i in range(8000)]
    call("POST", "/api/v1/ingest", {"raw_table_id": 1, "data": rows})
    call("POST", "/api/v1/features/1/compute", {"version": "v1"})
call("POST", "/api/v1/ingest", {"raw_table_id": 2, "data": [
    {"user_id": f"u{i % 300}", "seconds": random.randint(5, 900)} for i in range(3000)]})
call("POST", "/api/v1/features/2/compute", {"version": "v1"})
call("POST", "/api/v1/ingest", {"raw_table_id": 2, "data": [{"user_id": "u1", "seconds": 60}]})
call("PATCH", "/api/v1/features/2/versions/2", {"refresh_every_seconds": 3600})
PY
shot() {
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$DIR/profile" --window-size="$2" --virtual-time-budget=10000 \
    --screenshot="$3" "$BASE$1" 2>/dev/null
}
shot /ui 1280,640 docs/console-overview.png
shot /ui/features/1 1280,2300 docs/console-feature.png
echo "wrote docs/console-overview.png and docs/console-feature.png"
