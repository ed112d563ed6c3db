"""Raw tables from frames, and ingest of pandas, polars and Arrow frames in chunks."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Iterator

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import requests
from conftest import Server

import feature_store


def stored_rows(server_url: str, table_id: int) -> list:
    answer = requests.get(f"{server_url}/api/v1/raw-tables/{table_id}/data?limit=1000")
    answer.raise_for_status()
    return answer.json()["rows"]


def payments_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1"],
            "amount": [10.5, 20.0, 4.25],
            "items": [1, 2, 3],
            "ok": [True, False, True],
            "day": [date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)],
            "ts": pd.to_datetime(
                ["2024-05-01T09:00:00", "2024-05-02T10:30:00", "2024-05-03T12:00:00.123456"],
                format="ISO8601",
            ),
        }
    )


def test_a_table_created_from_a_pandas_frame_takes_its_column_types(fs, name):
    table = fs.create_table(name, payments_frame(), event_time_column="ts")

    assert table.schema == {
        "user_id": "string",
        "amount": "float",
        "items": "integer",
        "ok": "boolean",
        "day": "date",
        "ts": "datetime",
    }
    assert table.event_time_column == "ts"
    assert table.row_count == 0
    assert fs.table(name) == table
    assert fs.table(table.id).name == name
    assert name in [t.name for t in fs.tables()]


def test_a_table_created_from_a_polars_frame_or_an_explicit_schema(fs, name):
    frame = pl.DataFrame({"k": ["a"], "n": [1], "x": [0.5]})
    assert fs.create_table(name, frame).schema == {"k": "string", "n": "integer", "x": "float"}
    explicit = fs.create_table(name + "_s", schema={"k": "string", "ts": "datetime"})
    assert explicit.schema == {"k": "string", "ts": "datetime"}


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_ingest_stores_every_row_with_naive_times_read_as_utc(fs, server, name, kind):
    frame = payments_frame()
    table = fs.create_table(name, frame, event_time_column="ts")
    given = {
        "pandas": frame,
        "polars": pl.from_pandas(frame),
        "arrow": pa.Table.from_pandas(frame, preserve_index=False),
    }[kind]

    result = fs.ingest(name, given)

    assert result.rows == 3 and result.requests == 1
    assert fs.table(name).row_count == 3
    rows = sorted(stored_rows(server.url, table.id), key=lambda r: r["ts"])
    assert [r["user_id"] for r in rows] == ["u1", "u2", "u1"]
    assert [r["amount"] for r in rows] == [10.5, 20.0, 4.25]
    assert [r["items"] for r in rows] == [1, 2, 3]
    assert [r["ok"] for r in rows] == [True, False, True]
    assert [r["day"] for r in rows] == ["2024-05-01", "2024-05-02", "2024-05-03"]
    assert rows[2]["ts"].startswith("2024-05-03T12:00:00.123456")


def test_ingest_converts_aware_times_to_utc_and_narrow_types_to_the_stored_ones(fs, server, name):
    table = fs.create_table(name, schema={"k": "string", "n": "integer", "ts": "datetime"})
    frame = pd.DataFrame(
        {
            "k": ["a"],
            "n": pd.Series([7], dtype="int16"),
            "ts": [datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)],
        }
    )
    frame["ts"] = frame["ts"].dt.tz_convert("Europe/Paris")

    fs.ingest(table, frame)

    [row] = stored_rows(server.url, table.id)
    assert row["n"] == 7
    assert row["ts"].startswith("2024-01-01T12:00:00")


@pytest.fixture(scope="module")
def limited() -> Iterator[Server]:
    """A server taking bodies of at most 256 KiB."""
    running = Server({"MAX_BODY_BYTES": str(256 * 1024)})
    yield running
    running.stop()


def test_a_large_frame_goes_in_several_requests_under_the_body_limit(limited, name):
    client = feature_store.Client(limited.url, max_body_bytes=256 * 1024)
    rows = 200_000
    frame = pd.DataFrame(
        {
            "user_id": [f"user_{i % 5000:05d}" for i in range(rows)],
            "amount": [float(i) for i in range(rows)],
        }
    )
    client.create_table(name, frame)

    result = client.ingest(name, frame, progress=False)

    assert result.rows == rows
    assert result.requests > 1
    assert client.table(name).row_count == rows


def test_a_client_assuming_a_larger_body_limit_sends_halves_until_they_fit(limited, name):
    client = feature_store.Client(limited.url)  # believes the default 64 MiB
    rows = 200_000
    # keys and values that do not compress: about 2 MB of Parquet
    frame = pl.DataFrame(
        {
            "k": [f"{(i * 2654435761) % 2**32:08x}" for i in range(rows)],
            "x": [((i * 2654435761) % 2**32) / 7.0 for i in range(rows)],
        }
    )
    client.create_table(name, frame)

    result = client.ingest(name, frame, progress=False)

    assert result.rows == rows
    # one body was planned for a 64 MiB limit: more than one request means a 413 was met
    assert result.requests >= 2
    assert client.table(name).row_count == rows


def test_a_refused_later_request_says_how_many_rows_the_earlier_ones_stored(limited, name):
    client = feature_store.Client(limited.url, max_body_bytes=256 * 1024)
    rows = 100_000
    # Python ints, then one 1.5 in the last rows: each slice is typed on its own, so the last
    # one goes as floats, which the server refuses for an integer column.
    values = list(range(rows - 1)) + [1.5]
    frame = pd.DataFrame(
        {"k": [f"key_{i}" for i in range(rows)], "n": pd.Series(values, dtype=object)}
    )
    client.create_table(name, schema={"k": "string", "n": "integer"})

    with pytest.raises(feature_store.Invalid) as raised:
        client.ingest(name, frame, progress=False)

    assert raised.value.status == 400
    assert "n should be integer" in raised.value.detail
    stored = client.table(name).row_count
    assert 0 < stored < rows
    assert raised.value.rows_ingested == stored


def test_a_number_for_a_datetime_column_is_refused_not_stored_as_1970(fs, name):
    fs.create_table(name, schema={"k": "string", "ts": "datetime"})
    with pytest.raises(feature_store.Invalid, match="ts"):
        fs.ingest(name, pd.DataFrame({"k": ["a"], "ts": [1714557600]}))
    assert fs.table(name).row_count == 0


def test_bad_rows_raise_invalid_with_the_servers_detail_and_store_nothing(fs, name):
    fs.create_table(name, schema={"k": "string", "amount": "float"})
    bad = pd.DataFrame({"k": ["a", "b"], "amount": ["1.5", "lots"]})

    with pytest.raises(feature_store.Invalid) as raised:
        fs.ingest(name, bad)

    assert raised.value.status == 400
    assert "amount" in raised.value.detail and "float" in raised.value.detail
    assert raised.value.rows_ingested == 0
    assert fs.table(name).row_count == 0


def test_a_frame_with_a_column_of_unknown_type_is_refused_before_anything_is_sent(fs, name):
    frame = pd.DataFrame({"k": ["a"], "tags": [["x", "y"]]})
    with pytest.raises(feature_store.Invalid, match="tags"):
        fs.create_table(name, frame)
    with pytest.raises(feature_store.NotFound):
        fs.table(name)


def test_an_empty_frame_is_refused(fs, name):
    fs.create_table(name, schema={"k": "string"})
    with pytest.raises(feature_store.Invalid, match="No data"):
        fs.ingest(name, pd.DataFrame({"k": pd.Series([], dtype=object)}))


def test_deleting_a_table(fs, name):
    fs.create_table(name, schema={"k": "string"})
    fs.delete_table(name)
    with pytest.raises(feature_store.NotFound):
        fs.table(name)
