//! The data plane: raw tables are Delta tables under the data location, snapshots are Parquet
//! files, external datasets are read where they live, and blobs from before move out of the
//! database at start.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fixtures::sql_feature;
use crate::helpers::{
    files_under, sample_rows, seeded, spawn_app, spawn_app_with, spawn_replica, spawn_replica_with,
    TestApp,
};

fn data_dir(app: &TestApp) -> PathBuf {
    app.state.offline.root().uri().into()
}

/// The commit files of a table's Delta log, sorted.
fn commits(table_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(table_dir.join("_delta_log"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn table(app: &TestApp, id: i64) -> Value {
    let (status, body) = app.get(&format!("/api/v1/raw-tables/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The directory of a managed table's Delta table, as recorded.
async fn table_dir(app: &TestApp, id: i64) -> PathBuf {
    let table = app.state.store.get_raw_table(id).await.unwrap().unwrap();
    data_dir(app).join(table.storage_uri.expect("a managed table's location"))
}

fn write_parquet(path: &Path, users: &[&str], amounts: &[f64]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut frame = df!("user_id" => users, "amount" => amounts).unwrap();
    let file = std::fs::File::create(path).unwrap();
    ParquetWriter::new(file).finish(&mut frame).unwrap();
}

async fn register(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.post("/api/v1/raw-tables", &body).await
}

async fn feature_over(app: &TestApp, table: i64, name: &str, sql: &str) -> i64 {
    app.create_feature(sql_feature(name, table, "user_id", sql))
        .await
}

async fn served(app: &TestApp, feature: &str, entity: &str) -> Value {
    let (status, body) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id={entity}&feature_name={feature}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn each_ingest_is_one_delta_commit_and_a_bad_upload_leaves_no_trace() {
    let app = spawn_app().await;
    let id = app.register_transactions().await;
    let dir = table_dir(&app, id).await;
    assert_eq!(commits(&dir).len(), 1, "version 0 creates the table");
    assert_eq!(table(&app, id).await["version"], Value::Null);

    app.ingested(id, sample_rows()).await;
    app.ingested(id, sample_rows()).await;
    assert_eq!(commits(&dir).len(), 3);
    let shown = table(&app, id).await;
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["row_count"], 16);
    assert_eq!(shown["source"], Value::Null);

    let bad = json!([{"user_id": "u", "transaction_amount": "lots", "transaction_date": "d"}]);
    let (status, body) = app.ingest(id, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(commits(&dir).len(), 3, "a refused upload commits nothing");
    let parquet_files = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .count();
    assert_eq!(parquet_files, 2, "and writes no file");
    assert_eq!(table(&app, id).await["row_count"], 16);
}

#[tokio::test]
async fn a_compute_writes_its_snapshot_as_a_parquet_file_with_the_served_values() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let computed = app.compute(feature, "v1").await;
    let (status, snapshots) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{}/snapshots",
            computed["feature_version_id"]
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(snapshots.as_array().unwrap().len(), 1);
    let files: Vec<PathBuf> = files_under(&data_dir(&app).join("snapshots"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let frame = ParquetReader::new(std::fs::File::open(&files[0]).unwrap())
        .finish()
        .unwrap();
    assert_eq!(frame.height(), 3);
    let users: Vec<&str> = frame
        .column("user_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert_eq!(
        users,
        ["user_001", "user_002", "user_003"],
        "sorted by entity"
    );
    let avg = frame.column("avg_amount").unwrap().f64().unwrap().get(0);
    assert_eq!(avg, Some(112.875));
    assert_eq!(
        served(&app, "avg_transaction_amount", "user_001").await["feature_values"]["avg_amount"],
        112.875
    );
}

#[tokio::test]
async fn a_recompute_of_many_entities_serves_the_whole_new_set_and_drops_the_old_one() {
    let app = spawn_app().await;
    let (status, table) = register(
        &app,
        json!({"name": "wide", "schema_definition": {"user_id": "string", "amount": "float"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    let id = table["id"].as_i64().unwrap();
    let rows = |amount: f64| -> Value {
        Value::Array(
            (0..50_000)
                .map(|i| json!({"user_id": format!("u{i}"), "amount": amount}))
                .collect(),
        )
    };
    app.ingested(id, rows(1.0)).await;
    let feature = feature_over(
        &app,
        id,
        "total",
        "SELECT user_id, SUM(amount) AS total FROM data GROUP BY user_id",
    )
    .await;
    let first = app.compute(feature, "v1").await;
    assert_eq!(first["vectors_created"], 50_000);
    assert_eq!(
        served(&app, "total", "u49999").await["feature_values"]["total"],
        1.0
    );
    app.ingested(id, rows(2.0)).await;
    app.compute(feature, "v1").await;
    for entity in ["u0", "u25000", "u49999"] {
        assert_eq!(
            served(&app, "total", entity).await["feature_values"]["total"],
            3.0
        );
    }
    let (status, batch) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["u1", "u2"], "features": ["total"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["results"][1]["features"]["total"]["total"], 3.0);
}

#[tokio::test]
async fn an_external_delta_table_is_read_where_it_lives_and_refuses_ingest() {
    let app = spawn_app().await;
    let (managed, _) = seeded(&app).await;
    let uri = table_dir(&app, managed).await.display().to_string();
    let (status, external) = register(
        &app,
        json!({"name": "lake_tx", "source": {"format": "delta", "uri": uri}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{external}");
    assert_eq!(
        external["schema_definition"],
        json!({"user_id": "string", "transaction_amount": "float", "transaction_date": "string"}),
        "the schema is read from the table"
    );
    assert_eq!(external["source"], json!({"format": "delta", "uri": uri}));
    assert_eq!(external["row_count"], 8);
    assert_eq!(external["version"], 1);
    let ext = external["id"].as_i64().unwrap();

    let (status, body) = app.ingest(ext, sample_rows()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("read-only"),
        "{body}"
    );

    let feature = feature_over(
        &app,
        ext,
        "lake_total",
        "SELECT user_id, SUM(transaction_amount) AS total FROM data GROUP BY user_id",
    )
    .await;
    app.compute(feature, "v1").await;
    let value = served(&app, "lake_total", "user_003").await;
    assert_eq!(value["feature_values"]["total"], 150.0);
    assert_eq!(value["stale"], false);

    // A new commit to the dataset (through the managed table that owns it) makes the version
    // stale once it is seen, and a compute reads it.
    app.ingested(
        managed,
        json!([{"user_id": "user_003", "transaction_amount": 50.0, "transaction_date": "x"}]),
    )
    .await;
    let (status, preview) = app
        .get(&format!("/api/v1/raw-tables/{ext}/data?limit=100"))
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["rows"].as_array().unwrap().len(), 9);
    assert_eq!(served(&app, "lake_total", "user_003").await["stale"], true);
    app.compute(feature, "v1").await;
    let value = served(&app, "lake_total", "user_003").await;
    assert_eq!(value["feature_values"]["total"], 200.0);
    assert_eq!(value["stale"], false);
    assert_eq!(table(&app, ext).await["version"], 2);
}

#[tokio::test]
async fn a_parquet_dataset_is_versioned_by_its_listing() {
    let app = spawn_app().await;
    let lake = data_dir(&app).join("lake").join("payments");
    write_parquet(&lake.join("part-1.parquet"), &["a", "b"], &[1.0, 2.0]);
    // Hidden files are not part of the dataset.
    write_parquet(&lake.join("_tmp").join("x.parquet"), &["a"], &[100.0]);
    let (status, table) = register(
        &app,
        json!({"name": "payments", "event_time_column": null,
               "schema_definition": {"user_id": "string", "amount": "float"},
               "source": {"format": "parquet", "uri": lake.display().to_string()}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    assert_eq!(table["row_count"], 2);
    let id = table["id"].as_i64().unwrap();
    let feature = feature_over(
        &app,
        id,
        "paid",
        "SELECT user_id, SUM(amount) AS paid FROM data GROUP BY user_id",
    )
    .await;
    app.compute(feature, "v1").await;
    assert_eq!(
        served(&app, "paid", "a").await["feature_values"]["paid"],
        1.0
    );

    write_parquet(&lake.join("part-2.parquet"), &["a"], &[10.0]);
    app.compute(feature, "v1").await;
    let value = served(&app, "paid", "a").await;
    assert_eq!(value["feature_values"]["paid"], 11.0);
    assert_eq!(value["stale"], false);
    let shown = self::table(&app, id).await;
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["row_count"], 3);
}

#[tokio::test]
async fn external_sources_outside_the_allowed_places_or_unlike_their_schema_are_refused() {
    let elsewhere = tempfile::tempdir().unwrap();
    write_parquet(&elsewhere.path().join("p.parquet"), &["a"], &[1.0]);
    let allowed = elsewhere.path().display().to_string();
    let app = spawn_app().await;
    let inside = data_dir(&app).join("lake");
    write_parquet(&inside.join("p.parquet"), &["a"], &[1.0]);
    let sneaky = format!("{}/../../../../../../etc", inside.display());
    for (uri, why) in [
        (allowed.as_str(), "not under DATA_DIR"),
        ("/etc", "not under DATA_DIR"),
        (sneaky.as_str(), "not under DATA_DIR"),
        ("ftp://x/y", "only local paths and s3://"),
    ] {
        let (status, body) = register(
            &app,
            json!({"name": "nope", "source": {"format": "parquet", "uri": uri}}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(why),
            "{uri}: {body}"
        );
    }
    let inside_uri = inside.display().to_string();
    let (status, body) = register(
        &app,
        json!({"name": "typed", "schema_definition": {"amount": "string"},
               "source": {"format": "parquet", "uri": inside_uri}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("column 'amount' is float"),
        "{body}"
    );
    let (status, body) = register(
        &app,
        json!({"name": "delta_here", "source": {"format": "delta", "uri": inside_uri}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("no Delta table"),
        "{body}"
    );
    let (_, tables) = app.get("/api/v1/raw-tables").await;
    assert_eq!(
        tables.as_array().unwrap().len(),
        0,
        "nothing was registered"
    );

    // With the directory listed in EXTERNAL_SOURCE_PREFIXES it may be read.
    let allowing = spawn_app_with(|c| c.external_source_prefixes = vec![allowed.clone()]).await;
    let (status, body) = register(
        &allowing,
        json!({"name": "allowed", "source": {"format": "parquet", "uri": allowed}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_replica_whose_data_location_lacks_the_tables_is_not_ready() {
    let app = spawn_app().await;
    seeded(&app).await;
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let elsewhere = tempfile::tempdir().unwrap();
    let lost = spawn_replica_with(&app, |c| {
        c.data_dir = Some(elsewhere.path().display().to_string())
    })
    .await;
    let (status, body) = lost.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("does not hold raw table 'user_transactions'"),
        "{detail}"
    );
    assert!(detail.contains("same DATA_DIR"), "{detail}");
}

#[tokio::test]
async fn two_replicas_ingesting_into_one_table_at_once_both_land_in_two_commits() {
    let app = spawn_app().await;
    let other = spawn_replica(&app).await;
    let id = app.register_transactions().await;
    for _ in 0..3 {
        let (a, b) = tokio::join!(
            app.ingest(id, sample_rows()),
            other.ingest(id, sample_rows())
        );
        assert_eq!(a.0, StatusCode::OK, "{}", a.1);
        assert_eq!(b.0, StatusCode::OK, "{}", b.1);
    }
    assert_eq!(commits(&table_dir(&app, id).await).len(), 7);
    let shown = table(&app, id).await;
    assert_eq!(shown["row_count"], 48);
    assert_eq!(shown["version"], 6);
}

/// A database as an earlier version left it: raw rows as LZ4 Arrow IPC blobs in
/// `raw_table_batches` (the 8 sample rows, then 4 more), the snapshot as a blob that read the
/// first batch, freshness marks by batch id. And a move that committed the first batch to Delta
/// then stopped before recording it: the move at the next start must not add it twice.
#[tokio::test]
async fn blobs_stored_by_an_earlier_version_move_into_delta_once_and_resume_after_a_stop() {
    let app = spawn_app().await;
    let (table_id, feature) = seeded(&app).await;
    let computed = app.compute(feature, "v1").await;
    let version_id = computed["feature_version_id"].as_i64().unwrap();
    legacy_state(&app, table_id, version_id).await;
    // A move makes and records every table's location before it moves any batch.
    let relative = format!("raw_tables/{}/{table_id}-moved", instance(&app).await);
    let location = app.state.offline.root().join(&relative);
    app.state
        .store
        .claim_storage_uri(table_id, &relative)
        .await
        .unwrap();
    // The stopped move: the table made, the first batch committed with the move's transaction.
    let schema = feature_store::service::raw_tables::schema_of(
        &app.state
            .store
            .get_raw_table(table_id)
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let offline = feature_store::offline::OfflineStore::new(
        app.state.offline.root().clone(),
        Default::default(),
        Vec::new(),
        &instance(&app).await,
    );
    offline.create_managed(&location, &schema).await.unwrap();
    let rows: Vec<serde_json::Map<String, Value>> = serde_json::from_value(sample_rows()).unwrap();
    let mut frame = schema.frame_from_rows(&rows).unwrap();
    let parquet = feature_store::offline::write_parquet(&mut frame).unwrap();
    offline
        .append(
            &location,
            parquet.into(),
            8,
            &[feature_store::offline::Txn {
                app: feature_store::service::migrate::MOVE_APP,
                number: first_batch_id(&app).await,
            }],
            feature_store::offline::Holds::Rows,
            std::future::ready(()),
        )
        .await
        .unwrap();

    let restarted = spawn_replica(&app).await;
    let shown = table(&restarted, table_id).await;
    assert_eq!(
        shown["row_count"], 12,
        "both batches moved, the first once: {shown}"
    );
    assert_eq!(shown["version"], 2);
    let (status, preview) = restarted
        .get(&format!("/api/v1/raw-tables/{table_id}/data?limit=100"))
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["rows"].as_array().unwrap().len(), 12);
    let value = served(&restarted, "avg_transaction_amount", "user_001").await;
    assert_eq!(
        value["stale"], true,
        "the snapshot read the first batch only"
    );
    let (status, snapshots) = restarted
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version_id}/snapshots"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let at = snapshots[0]["valid_from"].as_str().unwrap().to_string();
    let (status, old) = restarted
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=user_001&feature_version_id={version_id}&as_of={at}"
        ))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the moved snapshot still answers as_of: {old}"
    );
    assert_eq!(old["feature_values"]["avg_amount"], 112.875);
    restarted.compute(feature, "v1").await;
    let value = served(&restarted, "avg_transaction_amount", "user_001").await;
    assert_eq!(value["stale"], false);
    // Over all 12 rows: user_001 has 4 rows in the first batch and 3 in the second.
    let expected = (150.5 + 75.25 + 200.0 + 25.75 + 150.5 + 75.25 + 200.0) / 7.0;
    let avg = value["feature_values"]["avg_amount"].as_f64().unwrap();
    assert!((avg - expected).abs() < 1e-9, "{avg} vs {expected}");
}

/// Run `$body` with `$p` a pool on the test's database, whichever backend it is.
macro_rules! on_database {
    ($url:expr, |$p:ident| $body:expr) => {{
        if $url.starts_with("postgres") {
            let $p = sqlx::PgPool::connect($url).await.unwrap();
            let out = $body;
            $p.close().await;
            out
        } else {
            let $p = sqlx::SqlitePool::connect($url).await.unwrap();
            let out = $body;
            $p.close().await;
            out
        }
    }};
}

async fn instance(app: &TestApp) -> String {
    on_database!(&app.database_url, |p| {
        sqlx::query_scalar::<_, String>("SELECT instance FROM cache_state WHERE id = 1")
            .fetch_one(&p)
            .await
            .unwrap()
    })
}

async fn first_batch_id(app: &TestApp) -> i64 {
    on_database!(&app.database_url, |p| {
        sqlx::query_scalar::<_, i64>("SELECT MIN(id) FROM raw_table_batches")
            .fetch_one(&p)
            .await
            .unwrap()
    })
}

async fn legacy_state(app: &TestApp, table_id: i64, version_id: i64) {
    use feature_store::engine::batches;
    let schema = feature_store::service::raw_tables::schema_of(
        &app.state
            .store
            .get_raw_table(table_id)
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let rows: Vec<serde_json::Map<String, Value>> = serde_json::from_value(sample_rows()).unwrap();
    let mut first = schema.frame_from_rows(&rows).unwrap();
    let mut second = schema.frame_from_rows(&rows[..4]).unwrap();
    let blobs = [
        batches::encode(&mut first).unwrap(),
        batches::encode(&mut second).unwrap(),
    ];
    let mut snapshot = df!(
        "user_id" => ["user_001", "user_002", "user_003"],
        "avg_amount" => [112.875, 212.75, 75.0]
    )
    .unwrap();
    let snapshot_blob = batches::encode(&mut snapshot).unwrap();
    let table_dir = table_dir(app, table_id).await;
    std::fs::remove_dir_all(&table_dir).unwrap();
    let at = chrono::Utc::now() - chrono::Duration::minutes(5);
    on_database!(&app.database_url, |p| {
        for sql in [
            "UPDATE raw_tables SET storage_uri = NULL",
            "DELETE FROM raw_table_versions",
            "UPDATE feature_snapshots SET location = NULL, data_version = NULL",
            "UPDATE feature_versions SET data_version = NULL",
        ] {
            sqlx::query(sql).execute(&p).await.unwrap();
        }
        let mut ids = Vec::new();
        for (blob, n) in blobs.iter().zip([8i64, 4]) {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO raw_table_batches (raw_table_id, row_count, data, created_at) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(table_id)
            .bind(n)
            .bind(blob.as_slice())
            .bind(at)
            .fetch_one(&p)
            .await
            .unwrap();
            ids.push(id);
        }
        sqlx::query("UPDATE feature_snapshots SET data = $1, data_batch_id = $2 WHERE feature_version_id = $3")
            .bind(snapshot_blob.as_slice())
            .bind(ids[0])
            .bind(version_id)
            .execute(&p)
            .await
            .unwrap();
        sqlx::query("UPDATE feature_versions SET data_batch_id = $1 WHERE id = $2")
            .bind(ids[0])
            .bind(version_id)
            .execute(&p)
            .await
            .unwrap();
    });
}
