"""Features, versions, computes and backfills; online values as frames and dicts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

import feature_store
from feature_store import Aggregation


def payments(fs, name: str) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u3"],
            "amount": [20.0, 40.0, 15.5, 7.0],
            "ts": pd.to_datetime(
                [
                    "2024-05-01T09:00:00Z",
                    "2024-05-03T12:00:00Z",
                    "2024-05-02T08:30:00Z",
                    "2024-05-04T00:00:00Z",
                ]
            ),
        }
    )
    fs.create_table(name, frame, event_time_column="ts")
    fs.ingest(name, frame)


AVERAGE = "SELECT user_id, AVG(amount) AS avg_amount, COUNT(*) AS n FROM data GROUP BY user_id"


def test_a_sql_feature_is_registered_computed_and_served(fs, name):
    payments(fs, name)
    feature = fs.register_feature(name + "_avg", name, "user_id", sql=AVERAGE)

    assert feature.sql == AVERAGE and feature.entity_key == "user_id"
    assert feature.engine == "polars" and feature.aggregations is None
    result = fs.compute(feature.name, "v1")
    assert result.vectors_created == 3 and result.entities_processed == 3

    [version] = fs.versions(feature.name)
    assert version.version == "v1" and version.status == "active"
    assert version.entity_count == 3 and version.stale is False
    assert version.output_schema == {"user_id": "string", "avg_amount": "float", "n": "integer"}
    assert feature.name in [f.name for f in fs.features()]
    vector = fs.get_vector(feature.name, "u1")
    assert vector["feature_values"] == {"avg_amount": 30.0, "n": 2}


def test_online_features_come_back_in_request_order_with_nulls_for_the_missing(fs, name):
    payments(fs, name)
    fs.register_feature(name + "_avg", name, "user_id", sql=AVERAGE)
    fs.compute(name + "_avg", "v1")

    online = fs.get_online_features(
        [name + "_avg", name + "_avg@v1"], ["u2", "ghost", {"user_id": "u1"}]
    )

    assert online.unresolved == {}
    assert online.missing == {"ghost": [name + "_avg", name + "_avg@v1"]}
    frame = online.to_pandas()
    assert list(frame["entity_id"]) == ["u2", "ghost", "u1"]
    assert list(frame.columns) == [
        "entity_id",
        f"{name}_avg__avg_amount",
        f"{name}_avg__n",
        f"{name}_avg@v1__avg_amount",
        f"{name}_avg@v1__n",
    ]
    assert frame[f"{name}_avg__avg_amount"].tolist()[0] == 15.5
    assert pd.isna(frame[f"{name}_avg__avg_amount"].tolist()[1])
    assert frame[f"{name}_avg__n"].tolist()[2] == 2
    assert str(frame[f"{name}_avg__n"].dtype) == "Int64"
    dicts = online.to_dicts()
    assert dicts[1] == {
        "entity_id": "ghost",
        f"{name}_avg__avg_amount": None,
        f"{name}_avg__n": None,
        f"{name}_avg@v1__avg_amount": None,
        f"{name}_avg@v1__n": None,
    }
    assert online.to_polars()[f"{name}_avg@v1__avg_amount"].to_list() == [15.5, None, 30.0]
    assert online.to_arrow().num_rows == 3


def test_an_entity_no_feature_knows_still_gets_every_column_typed(fs, name):
    payments(fs, name)
    fs.register_feature(name + "_avg", name, "user_id", sql=AVERAGE)
    fs.compute(name + "_avg", "v1")

    frame = fs.get_online_features([name + "_avg"], ["ghost"]).to_pandas()

    assert list(frame.columns) == ["entity_id", f"{name}_avg__avg_amount", f"{name}_avg__n"]
    assert str(frame[f"{name}_avg__n"].dtype) == "Int64"
    assert str(frame[f"{name}_avg__avg_amount"].dtype) == "float64"
    assert frame[f"{name}_avg__n"].isna().all()


def test_a_version_id_is_sent_as_a_number_and_answers_under_its_text(fs, name):
    payments(fs, name)
    fs.register_feature(name + "_avg", name, "user_id", sql=AVERAGE)
    version = fs.compute(name + "_avg", "v1").version_id

    online = fs.get_online_features([version], ["u1"]).to_dicts()
    rows = fs.get_training_set(
        [{"entity_id": "u1", "timestamp": "2030-01-01T00:00:00Z"}], [version]
    )

    assert online[0][f"{version}__avg_amount"] == 30.0
    assert rows[0]["features"][str(version)] == {"avg_amount": 30.0, "n": 2}


def test_a_reference_that_names_nothing_raises_rather_than_leaving_out_its_columns(fs, name):
    payments(fs, name)
    fs.register_feature(name + "_avg", name, "user_id", sql=AVERAGE)
    fs.compute(name + "_avg", "v1")
    with pytest.raises(feature_store.NotFound, match="no_such_feature: Feature 'no_such_feature'"):
        fs.get_online_features([name + "_avg", "no_such_feature"], ["u1"])


def test_one_id_or_one_reference_not_in_a_list_is_a_type_error(fs, name):
    with pytest.raises(TypeError):
        fs.get_online_features([name], "u1")
    with pytest.raises(TypeError):
        fs.get_online_features(name, ["u1"])


def test_more_entities_than_one_request_takes_are_sent_in_several(fs, name):
    payments(fs, name)
    fs.register_feature(name + "_avg", name, "user_id", sql=AVERAGE)
    fs.compute(name + "_avg", "v1")
    entities = [f"nobody_{i}" for i in range(10_500)] + ["u3"]

    frame = fs.get_online_features([name + "_avg"], entities).to_pandas()

    assert len(frame) == 10_501
    assert frame["entity_id"].tolist() == entities
    assert frame[f"{name}_avg__avg_amount"].iloc[-1] == 7.0
    assert frame[f"{name}_avg__avg_amount"].iloc[:-1].isna().all()


def test_as_of_computes_and_backfills_make_history(fs, name):
    payments(fs, name)
    feature = fs.register_feature(name + "_avg", name, "user_id", sql=AVERAGE)
    early = fs.compute(feature, "v1", as_of=datetime(2024, 5, 2, 12, 0))
    assert early.valid_from == datetime(2024, 5, 2, 12, 0, tzinfo=timezone.utc)
    assert early.entities_processed == 2

    steps = fs.backfill(
        feature, "v2", "2024-05-01T00:00:00Z", datetime(2024, 5, 4), every=timedelta(days=1)
    )

    assert [s.valid_from.day for s in steps] == [1, 2, 3, 4]
    assert [s.entity_count for s in steps] == [0, 1, 2, 3]
    assert [s.kind for s in steps] == ["backfill"] * 4
    assert [s.id for s in fs.snapshots(feature, "v2")] == [s.id for s in steps]
    then = fs.get_vector(feature.name, "u1", as_of="2024-05-02T00:00:00Z")
    assert then["feature_values"]["n"] == 1


def test_an_aggregation_feature_is_declared_with_aggregation_records(fs, name):
    payments(fs, name)
    feature = fs.register_feature(
        name + "_spend",
        name,
        "user_id",
        aggregations=[
            Aggregation("amount", "sum", ["1d", "30d"]),
            {"column": "amount", "function": "count", "windows": ["30d"]},
        ],
        filter="amount > 10",
    )

    assert feature.aggregations == [
        Aggregation("amount", "sum", ["1d", "30d"]),
        Aggregation("amount", "count", ["30d"]),
    ]
    assert feature.filter == "amount > 10" and feature.sql is None
    with pytest.raises(feature_store.Invalid, match="declares aggregations"):
        fs.compute(feature, "v1")


def test_bad_sql_and_unknown_names_raise_with_the_servers_detail(fs, name):
    payments(fs, name)
    with pytest.raises(feature_store.Invalid) as raised:
        fs.register_feature(name + "_bad", name, "user_id", sql="SELECT * FROM read_csv('/etc')")
    assert raised.value.status == 400
    assert raised.value.detail.startswith("Invalid feature computation")
    with pytest.raises(feature_store.NotFound):
        fs.compute("no_such_feature", "v1")
    with pytest.raises(feature_store.NotFound) as missing:
        fs.get_vector("no_such_feature", "u1")
    assert missing.value.detail == "Feature 'no_such_feature' not found"
    fs.register_feature(name + "_avg", name, "user_id", sql=AVERAGE)
    fs.compute(name + "_avg", "v1")
    with pytest.raises(feature_store.Invalid, match="missing the key column 'user_id'"):
        fs.get_online_features([name + "_avg"], [{"customer": "u1", "merchant_id": "m1"}])


def test_a_feature_keyed_by_two_columns_is_served_and_trained_on_by_its_columns(fs, name):
    purchases = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2"],
            "merchant_id": [7, 7, 9, 7],
            "amount": [10.0, 5.0, 1.0, 2.5],
        }
    )
    fs.create_table(name, purchases)
    fs.ingest(name, purchases)
    pair = fs.register_feature(
        name + "_pair",
        name,
        ["user_id", "merchant_id"],
        sql="SELECT user_id, merchant_id, SUM(amount) AS spent FROM data GROUP BY user_id, merchant_id",
    )
    fs.register_feature(
        name + "_user", name, "user_id", sql="SELECT user_id, SUM(amount) AS total FROM data GROUP BY user_id"
    )
    fs.compute(pair.name, "v1")
    fs.compute(name + "_user", "v1")
    assert pair.entity_key == ["user_id", "merchant_id"]

    vector = fs.get_vector(pair.name, {"user_id": "u1", "merchant_id": 7})
    assert vector["feature_values"] == {"spent": 15.0}
    assert vector["entity"] == {"user_id": "u1", "merchant_id": 7}

    online = fs.get_online_features(
        [name + "_user", pair.name],
        [{"user_id": "u1", "merchant_id": 9}, {"user_id": "u2", "merchant_id": 9}],
    )
    frame = online.to_pandas()
    assert list(frame.columns) == ["user_id", "merchant_id", f"{name}_user__total", f"{pair.name}__spent"]
    assert frame[f"{name}_user__total"].tolist() == [16.0, 2.5]
    assert frame[f"{pair.name}__spent"].tolist()[0] == 1.0
    assert pd.isna(frame[f"{pair.name}__spent"].iloc[1])
    assert online.missing == {("u2", 9): [pair.name]}

    later = datetime.now(timezone.utc) + timedelta(days=1)
    labels = pd.DataFrame(
        {"user_id": ["u1", "u2"], "merchant_id": [7, 7], "ts": [later, later], "y": [1, 0]}
    )
    out = fs.get_training_set(
        labels, [pair.name, name + "_user"], key_columns=["user_id", "merchant_id"], timestamp_column="ts"
    )
    assert list(out.columns) == ["user_id", "merchant_id", "ts", "y", f"{pair.name}__spent", f"{name}_user__total"]
    assert out[f"{pair.name}__spent"].tolist() == [15.0, 2.5]
    assert out[f"{name}_user__total"].tolist() == [16.0, 2.5]


def test_deleting_a_feature(fs, name):
    payments(fs, name)
    fs.register_feature(name + "_avg", name, "user_id", sql=AVERAGE)
    fs.delete_feature(name + "_avg")
    with pytest.raises(feature_store.NotFound):
        fs.feature(name + "_avg")
