"""The Python SDK's two targets, printed (issue 29):

- a training set of --labels rows into a pandas DataFrame, against the bare HTTP request (the
  same labels as a Parquet body prepared beforehand, the answer's bytes read and not parsed),
  alternating, --rounds each;
- ingest of an --ingest-rows pandas DataFrame end to end (frame to stored rows), rows/s.

    cargo build --release
    python3 bench/python_sdk.py                       # starts the release binary on a free port
    python3 bench/python_sdk.py --url http://127.0.0.1:8000

Needs `pip install ./python pandas` (and numpy, which pandas brings).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "python" / "tests"))

import feature_store  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def start_server() -> tuple:
    from conftest import Server  # the test fixture's server: the release binary on a free port

    server = Server({"RUST_LOG": "warn,feature_store=info", "COMPUTE_TIMEOUT_SECONDS": "300"})
    return server, server.url


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def training_setup(fs: feature_store.Client, entities: int, days: int, values: int, rng) -> str:
    rows = entities * days
    frame = pd.DataFrame(
        {
            "user_id": np.array([f"user_{i:07d}" for i in range(entities)], dtype=object)[
                rng.integers(0, entities, rows)
            ],
            "ts": pd.to_datetime(START)
            + pd.to_timedelta(rng.integers(0, days * 86400, rows), unit="s"),
            **{f"v{j}": rng.random(rows) for j in range(values)},
        }
    )
    fs.create_table("bench_training", frame, event_time_column="ts")
    fs.ingest("bench_training", frame, progress=False)
    columns = ", ".join(f"AVG(v{j}) AS v{j}" for j in range(values))
    fs.register_feature(
        "bench_values",
        "bench_training",
        "user_id",
        sql=f"SELECT user_id, {columns} FROM data GROUP BY user_id",
    )
    fs.backfill("bench_values", "v1", START, START + timedelta(days=days - 1), every=86400)
    return "bench_values"


def snapshot_files(server) -> list:
    """(valid_from, Parquet path) of every snapshot the bench server holds, oldest first, from
    its SQLite database (the bench registers one feature)."""
    import sqlite3

    root = Path(server.dir.name)
    with sqlite3.connect(root / "fs.db") as db:
        rows = db.execute(
            "SELECT valid_from, location FROM feature_snapshots ORDER BY valid_from"
        ).fetchall()
    return [(pd.Timestamp(v).tz_convert(None), root / "data" / loc) for v, loc in rows]


def polars_alone(files: list, arrow_body: bytes) -> float:
    """What issue 30 compares training sets with: polars doing the lookup in one process, from
    the same labels body and snapshot files to an Arrow answer in input order (join_asof by
    entity: the newest snapshot holding the entity, which equals the service's rule, the
    snapshot in force then, whenever every snapshot holds every entity asked about)."""
    import polars as pl

    began = time.perf_counter()
    labels = pl.read_ipc(io.BytesIO(arrow_body), memory_map=False)
    stamp = labels.schema["timestamp"]
    snaps = pl.concat(
        [
            pl.read_parquet(path).with_columns(pl.lit(valid).cast(stamp).alias("valid_from"))
            for valid, path in files
        ]
    ).sort("valid_from")
    key = snaps.columns[0]
    out = (
        labels.with_row_index("row")
        .sort("timestamp")
        .join_asof(
            snaps,
            left_on="timestamp",
            right_on="valid_from",
            by_left="entity_id",
            by_right=key,
            strategy="backward",
            check_sortedness=False,  # sorted just above
        )
        .sort("row")
        .drop(["row", "valid_from"])
    )
    sink = io.BytesIO()
    out.write_ipc(sink)
    return time.perf_counter() - began


def bench_training(fs, url: str, args, rng, server=None) -> None:
    feature = training_setup(fs, args.entities, args.snapshots, args.values, rng)
    labels = pd.DataFrame(
        {
            "entity_id": np.array([f"user_{i:07d}" for i in range(args.entities)], dtype=object)[
                rng.integers(0, args.entities, args.labels)
            ],
            "timestamp": pd.to_datetime(START)
            + pd.to_timedelta(rng.integers(0, args.snapshots * 86400, args.labels), unit="s"),
            "label": rng.integers(0, 2, args.labels),
        }
    )
    # The bare requests send what the SDK sends, the ids and the timestamps (a label column
    # would cost them 8 MB each way), prepared beforehand.
    keys = labels[["entity_id", "timestamp"]]
    sink = io.BytesIO()
    keys.to_parquet(sink, index=False)
    parquet_body = sink.getvalue()
    arrow_body = feature_store.frames.arrow_bytes(pa.Table.from_pandas(keys, preserve_index=False))
    # polars reads its labels from bytes (a BytesIO over a memoryview would copy them inside
    # the timed part).
    arrow_bytes = bytes(arrow_body)
    session = requests.Session()

    def bare(body: bytes, media: str) -> float:
        began = time.perf_counter()
        answer = session.post(
            f"{url}/api/v1/training-sets",
            params={"features": feature},
            data=body,
            headers={"Content-Type": media, "Accept": media},
        )
        answer.raise_for_status()
        _ = answer.content
        return time.perf_counter() - began

    def sdk() -> float:
        began = time.perf_counter()
        out = fs.get_training_set(labels, [feature])
        took = time.perf_counter() - began
        assert len(out) == args.labels and f"{feature}__v0" in out.columns
        return took

    parquet = feature_store.frames.PARQUET
    arrow = feature_store.frames.ARROW
    bare(parquet_body, parquet)  # warm: snapshot files into the page cache, workers started
    bare(arrow_body, arrow)
    sdk()
    files = snapshot_files(server) if server else []
    times: dict = {"bare Parquet": [], "bare Arrow": [], "SDK": []}
    if files:
        times["polars alone"] = []
    for _ in range(args.rounds):
        times["bare Parquet"].append(bare(parquet_body, parquet))
        times["bare Arrow"].append(bare(arrow_body, arrow))
        times["SDK"].append(sdk())
        if files:
            times["polars alone"].append(polars_alone(files, arrow_bytes))
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"training set, {args.labels:,} labels x {args.values} values over {args.snapshots} "
        f"snapshots of {args.entities:,} entities ({args.rounds} rounds, alternating)"
    )
    what = {
        "bare Parquet": "bare request, Parquet in and out (body ready, answer bytes read)",
        "bare Arrow": "bare request, Arrow IPC in and out (body ready, answer bytes read)",
        "SDK": "SDK, pandas in, pandas out (Arrow IPC on the wire)",
        "polars alone": "polars in this process: the same body and snapshot files, join_asof",
    }
    for key, label in what.items():
        if key not in times:
            continue
        runs = ", ".join(f"{x:.3f}" for x in times[key])
        print(f"  {label:<68} {runs} s; median {medians[key]:.3f} s")
    print(
        f"  SDK / bare Arrow request: {medians['SDK'] / medians['bare Arrow']:.2f}; "
        f"SDK / bare Parquet request: {medians['SDK'] / medians['bare Parquet']:.2f} "
        "(target <= 1.2)"
    )
    if files:
        print(
            f"  bare Arrow request / polars alone: "
            f"{medians['bare Arrow'] / medians['polars alone']:.2f} (issue 30: <= 1.5)"
        )


def bench_ingest(fs, args, rng, pid) -> None:
    rows = args.ingest_rows
    pool = np.array([f"user_{i:07d}" for i in range(1_000_000)], dtype=object)
    frame = pd.DataFrame(
        {
            "user_id": pool[rng.integers(0, len(pool), rows)],
            "amount": rng.random(rows) * 100,
            "ts": pd.to_datetime(START)
            + pd.to_timedelta(rng.integers(0, 90 * 86400, rows), unit="s"),
        }
    )
    results = []
    for round_ in range(args.rounds):
        name = f"bench_ingest_{round_}"
        fs.create_table(name, frame.head(1000), event_time_column="ts")
        result = fs.ingest(name, frame, progress=False)
        assert fs.table(name).row_count == rows
        results.append(result)
    rates = [r.rows / r.seconds for r in results]
    print(f"ingest of a {rows:,}-row pandas frame (user_id text, amount float, ts datetime)")
    for r in results:
        print(
            f"  {r.rows:,} rows in {r.requests} requests, {r.seconds:.2f} s: "
            f"{r.rows / r.seconds / 1e6:.2f} M rows/s"
        )
    print(f"  median {statistics.median(rates) / 1e6:.2f} M rows/s (target >= 3)")
    if pid:
        print(f"  server RSS after: {rss_mib(pid):.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url")
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--snapshots", type=int, default=31)
    parser.add_argument("--values", type=int, default=10)
    parser.add_argument("--ingest-rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", choices=["training", "ingest"])
    args = parser.parse_args()
    rng = np.random.default_rng(29)
    server, url = (None, args.url) if args.url else start_server()
    try:
        fs = feature_store.Client(url)
        pid = server.process.pid if server else None
        if args.skip != "training":
            bench_training(fs, url, args, rng, server)
        if args.skip != "ingest":
            bench_ingest(fs, args, rng, pid)
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
