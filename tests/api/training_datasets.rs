//! Training sets from a label table, written as Parquet files in the data location: for label
//! sets too big for a request body or a response.

use polars::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fixtures::sql_feature;
use crate::helpers::{
    data_dir_for, files_under, fresh_database, spawn_app, spawn_app_with, TestApp,
};
use crate::process::{post, Server};

/// Payments with an event time, an aggregation feature over them (`user_spend`) and a computed
/// SQL feature (`n`); returns the payments table's id.
async fn features_over_payments(app: &TestApp) -> i64 {
    let payments = app
        .create_table(json!({"name": "payments", "event_time_column": "ts",
            "schema_definition": {"user_id": "string", "amount": "float", "ts": "datetime"}}))
        .await;
    app.ingested(
        payments,
        json!([
            {"user_id": "u1", "amount": 10.0, "ts": "2024-01-01T00:00:00Z"},
            {"user_id": "u1", "amount": 20.0, "ts": "2024-01-01T12:00:00Z"},
            {"user_id": "u1", "amount": null, "ts": "2024-01-01T12:30:00Z"},
            {"user_id": "u2", "amount": 5.0, "ts": "2024-01-01T06:00:00Z"}
        ]),
    )
    .await;
    app.create_feature(json!({"name": "user_spend", "raw_table_id": payments,
        "entity_key": "user_id",
        "aggregations": [
            {"column": "amount", "function": "sum", "windows": ["1h", "1d"]},
            {"column": "amount", "function": "count", "windows": ["1d"]}]}))
        .await;
    computed_count_feature(app, payments).await;
    payments
}

/// A SQL feature `n` over `payments` (each user's number of rows), computed.
async fn computed_count_feature(app: &TestApp, payments: i64) {
    let n = app
        .create_feature(sql_feature(
            "n",
            payments,
            "user_id",
            "SELECT user_id, COUNT(*) AS n FROM data GROUP BY user_id",
        ))
        .await;
    app.compute(n, "v1").await;
}

const LABELS: &str = r#"[
    {"entity_id": "u1", "ts": "2024-01-01T12:00:00Z", "label": 1},
    {"entity_id": "u1", "ts": "2024-01-02T00:00:00Z", "label": 0},
    {"entity_id": "u2", "ts": "2030-01-01T00:00:00Z", "label": 1},
    {"entity_id": "nobody", "ts": "2024-01-01T12:00:00Z", "label": 0}
]"#;

/// A label table keyed by `entity_id` with its time in `ts` (its event time column).
async fn label_table(app: &TestApp) -> i64 {
    let labels = app
        .create_table(json!({"name": "labels", "event_time_column": "ts",
            "schema_definition": {"entity_id": "string", "ts": "datetime", "label": "integer"}}))
        .await;
    app.ingested(labels, serde_json::from_str(LABELS).unwrap())
        .await;
    labels
}

fn read_parquet(path: &str) -> DataFrame {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    ParquetReader::new(file).finish().expect("a Parquet file")
}

#[tokio::test]
async fn a_label_table_gives_parquet_files_holding_what_the_request_form_answers() {
    let app = spawn_app().await;
    features_over_payments(&app).await;
    let labels = label_table(&app).await;

    let (status, written) = app
        .post(
            "/api/v1/training-sets/datasets",
            &json!({"features": ["user_spend", "n"], "labels": {"raw_table_id": labels}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{written}");
    assert_eq!(written["rows"], 4);
    assert_eq!(written["labels"]["raw_table_id"], labels);
    assert!(written["labels"]["version"].is_i64(), "{written}");
    assert_eq!(written["versions"]["user_spend"], Value::Null);
    assert!(written["versions"]["n"].is_i64(), "{written}");
    let data_dir = data_dir_for(&app.database_url).expect("a data directory");
    let uri = written["uri"].as_str().unwrap();
    assert!(
        std::path::Path::new(uri).starts_with(&data_dir),
        "{uri} is in the data location"
    );
    let files: Vec<&str> = written["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{written}");
    assert!(files[0].starts_with(uri) && files[0].ends_with("part-00000.parquet"));
    let dataset = read_parquet(files[0]);

    // The same rows sent in the request, the answer asked for as Parquet.
    let mut rows: Vec<Value> = serde_json::from_str(LABELS).unwrap();
    for row in &mut rows {
        let ts = row.as_object_mut().unwrap().remove("ts").unwrap();
        row["timestamp"] = ts;
    }
    let body = json!({"features": ["user_spend", "n"], "rows": rows});
    let resp = app
        .client
        .post(app.url("/api/v1/training-sets"))
        .header("accept", "application/vnd.apache.parquet")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let answered = ParquetReader::new(std::io::Cursor::new(resp.bytes().await.unwrap()))
        .finish()
        .unwrap();
    assert_eq!(dataset.get_column_names(), answered.get_column_names());
    assert!(
        dataset.equals_missing(&answered),
        "the dataset\n{dataset}\nthe answer\n{answered}"
    );
    // And the values are the windows' at each row's own time.
    let sum_1h = dataset.column("user_spend__amount_sum_1h").unwrap();
    let sum_1h: Vec<Option<f64>> = sum_1h.f64().unwrap().iter().collect();
    assert_eq!(sum_1h, [Some(20.0), None, None, None]);
    let count_1d = dataset.column("user_spend__amount_count_1d").unwrap();
    let count_1d: Vec<Option<i64>> = count_1d
        .cast(&DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(count_1d, [Some(2), Some(1), Some(0), Some(0)]);
    let label: Vec<Option<i64>> = dataset
        .column("label")
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(label, [Some(1), Some(0), Some(1), Some(0)]);
}

#[tokio::test]
async fn a_dataset_evaluated_a_few_entities_at_a_time_holds_the_values_of_one_answer() {
    // Passes of at most 40 events: the 600 events' entities are evaluated in many groups,
    // each written before the next is read.
    let scratch = tempfile::tempdir().unwrap();
    let app = spawn_app_with(|c| {
        c.aggregation_pass_events = 40;
        c.compute_scratch_dir = Some(scratch.path().to_path_buf());
    })
    .await;
    let payments = app
        .create_table(json!({"name": "payments", "event_time_column": "ts",
            "schema_definition": {"user_id": "string", "amount": "float", "ts": "datetime"}}))
        .await;
    let mut seed = 7u64;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let at = |minutes: u64| {
        chrono::DateTime::from_timestamp(1_704_067_200 + minutes as i64 * 60, 0)
            .unwrap()
            .to_rfc3339()
    };
    // Times on whole 10 minutes over two days, so ties are common; every seventh amount null.
    let events: Vec<Value> = (0..600)
        .map(|i| {
            let amount = (i % 7 != 3).then(|| next(1000) as f64 / 10.0);
            json!({"user_id": format!("u{}", next(40)), "amount": amount,
                "ts": at(next(288) * 10)})
        })
        .collect();
    app.ingested(payments, Value::Array(events.clone())).await;
    app.create_feature(json!({"name": "spend", "raw_table_id": payments,
        "entity_key": "user_id",
        "aggregations": [
            {"column": "amount", "function": "sum", "windows": ["1h", "1d"]},
            {"column": "amount", "function": "count", "windows": ["1h", "1d"]},
            {"column": "amount", "function": "max", "windows": ["6h"]}]}))
        .await;
    app.create_feature(json!({"name": "habits", "raw_table_id": payments,
        "entity_key": "user_id", "filter": "amount > 50",
        "aggregations": [
            {"column": "amount", "function": "last", "windows": ["1d"]},
            {"column": "amount", "function": "percentile", "q": 0.5, "windows": ["2d"]}]}))
        .await;
    computed_count_feature(&app, payments).await;
    // Labels: a third at an event's own time, the rest anywhere in the two days; some for
    // users with no events.
    let labels: Vec<Value> = (0..300)
        .map(|i| {
            let (user, ts) = match i % 3 {
                0 => {
                    let e = &events[next(600) as usize];
                    (e["user_id"].clone(), e["ts"].clone())
                }
                _ => (json!(format!("u{}", next(45))), json!(at(next(2880)))),
            };
            json!({"entity_id": user, "timestamp": ts, "row_no": i})
        })
        .collect();
    let table = app
        .create_table(json!({"name": "labels", "schema_definition":
            {"entity_id": "string", "timestamp": "datetime", "row_no": "integer"}}))
        .await;
    app.ingested(table, Value::Array(labels.clone())).await;

    let (status, written) = app
        .post(
            "/api/v1/training-sets/datasets",
            &json!({"features": ["spend", "habits", "n"], "labels": {"raw_table_id": table}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{written}");
    assert_eq!(written["rows"], 300);
    let files = written["files"].as_array().unwrap();
    assert!(files.len() > 1, "a file a pass: {written}");
    assert_eq!(
        files_under(scratch.path()),
        Vec::<std::path::PathBuf>::new(),
        "the worker's partition files are gone with it"
    );
    let mut dataset = read_parquet(files[0].as_str().unwrap());
    for file in &files[1..] {
        dataset
            .vstack_mut(&read_parquet(file.as_str().unwrap()))
            .unwrap();
    }
    let row_no: Vec<i64> = dataset
        .column("row_no")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_ne!(row_no, (0..300).collect::<Vec<_>>(), "rows come by pass");

    let resp = app
        .client
        .post(app.url("/api/v1/training-sets"))
        .header("accept", "application/vnd.apache.parquet")
        .json(&json!({"features": ["spend", "habits", "n"], "rows": labels}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let answered = ParquetReader::new(std::io::Cursor::new(resp.bytes().await.unwrap()))
        .finish()
        .unwrap();
    let by_row = |frame: DataFrame| {
        frame
            .sort(["row_no"], SortMultipleOptions::default())
            .unwrap()
    };
    let (dataset, answered) = (by_row(dataset), by_row(answered));
    assert_eq!(dataset.get_column_names(), answered.get_column_names());
    assert!(
        dataset.equals_missing(&answered),
        "the dataset\n{dataset}\nthe answer\n{answered}"
    );
    let counted = dataset.column("spend__amount_count_1d").unwrap();
    assert!(
        counted.cast(&DataType::Int64).unwrap().i64().unwrap().sum() > Some(0),
        "the windows hold events: {dataset}"
    );
}

#[tokio::test]
async fn a_label_table_names_its_time_column_or_has_one_called_timestamp() {
    let app = spawn_app().await;
    features_over_payments(&app).await;
    let dated = app
        .create_table(json!({"name": "dated", "schema_definition":
            {"user_id": "string", "timestamp": "date"}}))
        .await;
    app.ingested(dated, json!([{"user_id": "u1", "timestamp": "2024-01-02"}]))
        .await;
    // By default the `timestamp` column: midnight of 2024-01-02, when 12:00's event is in 1d.
    let (status, by_default) = app
        .post(
            "/api/v1/training-sets/datasets",
            &json!({"features": ["user_spend"], "labels": {"raw_table_id": dated}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{by_default}");
    let frame = read_parquet(by_default["files"][0].as_str().unwrap());
    let sum = frame.column("user_spend__amount_sum_1d").unwrap();
    assert_eq!(sum.f64().unwrap().get(0), Some(20.0), "{frame}");
    assert!(
        frame.column("user_id").is_ok(),
        "the key column is kept: {frame}"
    );

    // A named column of RFC 3339 text; the file calls it `timestamp`.
    let seen = app
        .create_table(json!({"name": "seen", "schema_definition":
            {"user_id": "string", "seen": "string"}}))
        .await;
    app.ingested(
        seen,
        json!([{"user_id": "u1", "seen": "2024-01-01T12:00:00Z"}]),
    )
    .await;
    let (status, named) = app
        .post(
            "/api/v1/training-sets/datasets",
            &json!({"features": ["user_spend"],
                "labels": {"raw_table_id": seen, "time_column": "seen"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    let frame = read_parquet(named["files"][0].as_str().unwrap());
    let sum = frame.column("user_spend__amount_sum_1h").unwrap();
    assert_eq!(sum.f64().unwrap().get(0), Some(20.0), "{frame}");
    assert!(frame.column("timestamp").is_ok() && frame.column("seen").is_err());

    // Naming another column of a table that has one called `timestamp` is ambiguous.
    let (status, both) = app
        .post(
            "/api/v1/training-sets/datasets",
            &json!({"features": ["user_spend"],
                "labels": {"raw_table_id": dated, "time_column": "user_id"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{both}");
    assert!(
        both["detail"].as_str().unwrap().contains("'timestamp'"),
        "{both}"
    );
}

#[tokio::test]
async fn refused_dataset_requests_say_why_and_write_nothing() {
    let app = spawn_app().await;
    features_over_payments(&app).await;
    let labels = label_table(&app).await;
    let no_time = app
        .create_table(json!({"name": "no_time", "schema_definition":
            {"entity_id": "string", "label": "integer"}}))
        .await;
    app.ingested(no_time, json!([{"entity_id": "u1", "label": 1}]))
        .await;
    let no_key = app
        .create_table(json!({"name": "no_key", "schema_definition":
            {"who": "string", "timestamp": "datetime"}}))
        .await;
    app.ingested(
        no_key,
        json!([{"who": "u1", "timestamp": "2024-01-01T00:00:00Z"}]),
    )
    .await;
    let empty = app
        .create_table(json!({"name": "empty", "schema_definition":
            {"entity_id": "string", "timestamp": "datetime"}}))
        .await;
    let request = |features: Value, labels: Value| json!({"features": features, "labels": labels});
    let cases = [
        (
            request(json!(["user_spend"]), json!({"raw_table_id": 999_999})),
            StatusCode::NOT_FOUND,
            "999999",
        ),
        (
            request(json!(["user_spend"]), json!({"raw_table_id": no_time})),
            StatusCode::BAD_REQUEST,
            "time_column",
        ),
        (
            request(
                json!(["user_spend"]),
                json!({"raw_table_id": labels, "time_column": "label"}),
            ),
            StatusCode::BAD_REQUEST,
            "integer",
        ),
        (
            request(
                json!(["user_spend"]),
                json!({"raw_table_id": labels, "time_column": "nope"}),
            ),
            StatusCode::BAD_REQUEST,
            "'nope'",
        ),
        (
            request(json!(["user_spend"]), json!({"raw_table_id": empty})),
            StatusCode::BAD_REQUEST,
            "no rows",
        ),
        (
            request(json!(["missing"]), json!({"raw_table_id": labels})),
            StatusCode::NOT_FOUND,
            "missing",
        ),
        (
            request(json!([]), json!({"raw_table_id": labels})),
            StatusCode::BAD_REQUEST,
            "features",
        ),
        // Rows with neither `entity_id` nor the feature's key column.
        (
            request(json!(["n"]), json!({"raw_table_id": no_key})),
            StatusCode::BAD_REQUEST,
            "user_id",
        ),
    ];
    for (body, status, says) in cases {
        let (got, answer) = app.post("/api/v1/training-sets/datasets", &body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        let detail = answer["detail"].to_string();
        assert!(detail.contains(says), "{body} -> {answer} names {says}");
    }
    let (status, answer) = app
        .post(
            "/api/v1/training-sets/datasets",
            &json!({"features": ["n"], "labels": {"raw_table_id": labels}, "rows": []}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let data_dir = data_dir_for(&app.database_url).expect("a data directory");
    assert_eq!(
        files_under(&data_dir.join("training_sets")),
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test]
async fn a_worker_that_dies_after_writing_part_of_a_dataset_leaves_no_files_behind() {
    let (url, _dir) = fresh_database().await;
    let server = Server::start_with(&url, Some("dataset-after-a-part")).await;
    let base = &server.base;
    let created = |(status, body): (StatusCode, Value)| {
        assert!(status.is_success(), "{body}");
        body["id"].as_i64().unwrap_or_default()
    };
    let table = created(
        post(base, "/api/v1/raw-tables", &json!({"name": "labels", "schema_definition":
            {"user_id": "string", "timestamp": "datetime", "amount": "float"}, "event_time_column": "timestamp"}))
        .await,
    );
    created(
        post(
            base,
            "/api/v1/ingest",
            &json!({"raw_table_id": table, "data": [
                {"user_id": "u1", "timestamp": "2024-01-01T00:00:00Z", "amount": 1.0}]}),
        )
        .await,
    );
    created(
        post(
            base,
            "/api/v1/features",
            &json!({"name": "spend", "raw_table_id": table,
            "entity_key": "user_id",
            "aggregations": [{"column": "amount", "function": "sum", "windows": ["1d"]}]}),
        )
        .await,
    );

    let (status, failed) = post(
        base,
        "/api/v1/training-sets/datasets",
        &json!({"features": ["spend"], "labels": {"raw_table_id": table}}),
    )
    .await;
    assert!(status.is_client_error(), "{status} {failed}");
    assert!(
        failed["detail"].as_str().unwrap_or("").contains("crashed"),
        "{failed}"
    );
    let data_dir = data_dir_for(&url).expect("a data directory");
    assert_eq!(
        files_under(&data_dir.join("training_sets")),
        Vec::<std::path::PathBuf>::new(),
        "the part written before the worker died is gone"
    );
}
