"""Point-in-time training sets: the labels come back untouched, in the kind of frame given, with
each feature's values at each row's own time."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import feature_store
from feature_store import Aggregation

BASE = datetime(2024, 5, 1, tzinfo=timezone.utc)


def history(fs, name: str) -> str:
    """Payments of u1..u3 over four days, a daily snapshot of each user's count and total, and
    an aggregation feature over the same events. Returns the SQL feature's name."""
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u1", "u3"],
            "amount": [10.0, 5.0, 7.0, 1.0, 2.0],
            "ts": [BASE + timedelta(hours=h) for h in (1, 25, 26, 49, 73)],
        }
    )
    fs.create_table(name, events, event_time_column="ts")
    fs.ingest(name, events)
    fs.register_feature(
        name + "_totals",
        name,
        "user_id",
        sql="SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM data GROUP BY user_id",
    )
    fs.backfill(name + "_totals", "v1", BASE, BASE + timedelta(days=4), every=86400)
    fs.register_feature(
        name + "_spend",
        name,
        "user_id",
        aggregations=[Aggregation("amount", "sum", ["1d"]), Aggregation("amount", "count", ["2d"])],
    )
    return name + "_totals"


def labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": ["u1", "u2", "u1", "ghost", "u1"],
            "timestamp": [
                BASE + timedelta(hours=12),  # after day 0's snapshot (empty) -> null
                BASE + timedelta(days=2),  # day 2's snapshot, exactly at its valid_from
                BASE + timedelta(days=2, hours=1),  # u1's third payment is at 49h: its own time
                BASE + timedelta(days=3),
                BASE + timedelta(days=1, hours=1),  # at the second payment's time exactly
            ],
            "label": [0, 1, 1, 0, 1],
        },
        index=[10, 11, 12, 13, 14],
    )


def test_a_pandas_frame_gets_the_values_in_force_at_each_rows_time(fs, name):
    totals = history(fs, name)
    given = labels()

    training = fs.get_training_set(given, [totals, name + "_spend"])

    assert list(training.index) == [10, 11, 12, 13, 14]
    assert list(training.columns) == [
        "entity_id",
        "timestamp",
        "label",
        f"{totals}__n",
        f"{totals}__total",
        f"{name}_spend__amount_sum_1d",
        f"{name}_spend__amount_count_2d",
    ]
    pd.testing.assert_frame_equal(training[["entity_id", "timestamp", "label"]], given)
    assert training[f"{totals}__n"].isna().tolist() == [True, False, False, True, False]
    assert training[f"{totals}__n"].dropna().tolist() == [1, 2, 1]
    assert str(training[f"{totals}__n"].dtype) == "Int64"
    assert training[f"{totals}__total"].dropna().tolist() == [7.0, 15.0, 10.0]
    # (t - 1d, t]: at 49h the payment at 49h counts and the one at exactly 25h does not
    sums = training[f"{name}_spend__amount_sum_1d"]
    assert sums.isna().tolist() == [False, False, False, True, False]
    assert sums.dropna().tolist() == [10.0, 7.0, 1.0, 5.0]
    assert training[f"{name}_spend__amount_count_2d"].tolist() == [1, 1, 2, 0, 2]
    assert given.columns.tolist() == ["entity_id", "timestamp", "label"]  # not modified
    # The answer holds its own copy of the labels: changing it leaves the caller's frame be.
    training.loc[10, "label"] = 7
    training.loc[10, "entity_id"] = "changed"
    pd.testing.assert_frame_equal(given, labels())


def test_polars_in_polars_out_and_arrow_in_arrow_out(fs, name):
    totals = history(fs, name)
    given = pl.from_pandas(labels())

    out = fs.get_training_set(given, [totals])

    assert isinstance(out, pl.DataFrame)
    assert out.select(["entity_id", "timestamp", "label"]).equals(given)
    assert out[f"{totals}__n"].to_list() == [None, 1, 2, None, 1]

    table = pa.Table.from_pandas(labels(), preserve_index=False)
    arrow = fs.get_training_set(table, [totals])
    assert isinstance(arrow, pa.Table)
    assert arrow.column(f"{totals}__total").to_pylist() == [None, 7.0, 15.0, None, 10.0]


def test_integer_ids_match_integer_keys_and_other_column_names_can_be_given(fs, name):
    frame = pd.DataFrame(
        {"user": [1, 1, 2], "x": [1.0, 2.0, 3.0], "ts": [BASE, BASE, BASE + timedelta(hours=1)]}
    )
    fs.create_table(
        name, schema={"user": "integer", "x": "float", "ts": "datetime"}, event_time_column="ts"
    )
    fs.ingest(name, frame)
    fs.register_feature(name + "_c", name, "user", aggregations=[Aggregation("x", "sum", ["1d"])])
    given = pd.DataFrame({"who": [1, 2, 3], "when": [BASE + timedelta(hours=2)] * 3})

    out = fs.get_training_set(given, [name + "_c"], entity_column="who", timestamp_column="when")

    assert list(out.columns) == ["who", "when", f"{name}_c__x_sum_1d"]
    assert out[f"{name}_c__x_sum_1d"].tolist()[:2] == [3.0, 3.0]
    assert pd.isna(out[f"{name}_c__x_sum_1d"].iloc[2])


def test_max_age_nulls_values_from_snapshots_older_than_it(fs, name):
    totals = history(fs, name)
    given = labels()

    out = fs.get_training_set(given, [totals], max_age=timedelta(minutes=30))

    # only the row exactly at a snapshot's valid_from is within 30 minutes of it
    assert out[f"{totals}__n"].tolist()[1] == 1
    assert out[f"{totals}__n"].isna().tolist() == [True, False, True, True, True]


def test_a_list_of_dicts_is_answered_with_the_servers_json_rows(fs, name):
    totals = history(fs, name)
    rows = fs.get_training_set(
        [
            {"entity_id": "u1", "timestamp": "2024-05-03T00:00:00Z", "label": 1},
            {"entity_id": "u1", "timestamp": BASE + timedelta(days=2), "label": 0},
        ],
        [totals],
    )
    assert rows[0]["features"][totals] == {"n": 2, "total": 15.0}
    assert rows[0]["label"] == 1
    assert rows[1]["features"][totals] == {"n": 2, "total": 15.0}
    with pytest.raises(feature_store.NotFound, match="nope"):
        fs.get_training_set([{"entity_id": "u1", "timestamp": "2024-05-03T00:00:00Z"}], ["nope"])
    renamed = fs.get_training_set(
        [{"user": "u1", "at": BASE + timedelta(days=2)}],
        [totals],
        entity_column="user",
        timestamp_column="at",
    )
    assert renamed[0]["features"][totals] == {"n": 2, "total": 15.0}


EVENTS = [("u1", 1, 10.0), ("u1", 25, 5.0), ("u2", 26, 7.0), ("u1", 49, 1.0), ("u3", 73, 2.0)]


def brute_force(entity: str, at: datetime) -> tuple:
    """(n of the daily snapshot in force at `at`, sum of the events in (at - 1d, at])."""
    times = [e for e in EVENTS if e[0] == entity]
    n = None
    if at >= BASE:
        days = min((at - BASE) // timedelta(days=1), 4)
        cut = BASE + timedelta(days=days)
        count = sum(1 for e in times if BASE + timedelta(hours=e[1]) <= cut)
        n = count or None
    window = [e[2] for e in times if at - timedelta(days=1) < BASE + timedelta(hours=e[1]) <= at]
    return n, (sum(window) if window else None)


def test_random_labels_match_a_brute_force_point_in_time_lookup(fs, name):
    totals = history(fs, name)
    rng = random.Random(7)
    stamps = [BASE + timedelta(minutes=30 * rng.randrange(-24, 240)) for _ in range(400)]
    stamps += [BASE + timedelta(hours=h) for _, h, _ in EVENTS]  # labels at event times
    stamps += [BASE + timedelta(days=d) for d in range(5)]  # and at each snapshot's valid_from
    entities = [rng.choice(["u1", "u2", "u3", "nobody"]) for _ in stamps]
    given = pd.DataFrame({"entity_id": entities, "timestamp": stamps})

    out = fs.get_training_set(given, [totals, name + "_spend"])

    for entity, at, n, total in zip(
        entities, stamps, out[f"{totals}__n"], out[f"{name}_spend__amount_sum_1d"]
    ):
        want_n, want_sum = brute_force(entity, at)
        assert (None if pd.isna(n) else n) == want_n, (entity, at)
        assert (None if pd.isna(total) else total) == want_sum, (entity, at)


def test_labels_without_a_timestamp_or_with_an_unknown_feature_raise(fs, name):
    totals = history(fs, name)
    with pytest.raises(feature_store.Invalid, match="timestamp"):
        fs.get_training_set(pd.DataFrame({"entity_id": ["u1"]}), [totals])
    with pytest.raises(feature_store.NotFound):
        fs.get_training_set(labels(), ["no_such_feature"])


def test_a_label_table_is_written_as_parquet_files_holding_what_get_training_set_answers(fs, name):
    totals = history(fs, name)
    given = labels()
    fs.create_table(name + "_labels", given)
    fs.ingest(name + "_labels", given)
    features = [totals, name + "_spend"]

    dataset = fs.write_training_dataset(name + "_labels", features, max_age=timedelta(days=1))

    assert dataset.rows == 5
    assert dataset.versions[name + "_spend"] is None
    assert isinstance(dataset.versions[totals], int)
    written = pl.read_parquet(dataset.files)
    answered = fs.get_training_set(pl.from_pandas(given), features, max_age=timedelta(days=1))
    assert written.columns == answered.columns
    assert written["label"].to_list() == given["label"].tolist()
    values = [c for c in answered.columns if "__" in c]
    assert len(values) == 4
    assert written.select(values).equals(answered.select(values))


def test_a_dataset_from_a_missing_table_or_an_unknown_feature_is_refused(fs, name):
    totals = history(fs, name)
    with pytest.raises(feature_store.NotFound):
        fs.write_training_dataset(name + "_nowhere", [totals])
    given = labels()
    fs.create_table(name + "_labels", given)
    fs.ingest(name + "_labels", given)
    with pytest.raises(feature_store.NotFound):
        fs.write_training_dataset(name + "_labels", [name + "_unknown"])
    with pytest.raises(feature_store.Invalid, match="'nope'"):
        fs.write_training_dataset(name + "_labels", [totals], time_column="nope")
