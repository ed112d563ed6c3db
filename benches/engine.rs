//! criterion benches for the compute engine and vector encoding:
//! `cargo bench --bench engine`.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion};
use feature_store::engine::{batches, execute, result, schema::TableSchema};
use polars::prelude::*;
use serde_json::{json, Map, Value};

fn rows(n: usize, entities: usize) -> DataFrame {
    let users: Vec<String> = (0..n).map(|i| format!("u{}", i % entities)).collect();
    let amount: Vec<f64> = (0..n).map(|i| (i % 1000) as f64 / 10.0).collect();
    df!("user_id" => users, "amount" => amount).expect("frame")
}

fn compute(c: &mut Criterion) {
    let frame = rows(1_000_000, 100_000);
    let sql = "SELECT user_id, AVG(amount) AS avg_amount, COUNT(*) AS n FROM data GROUP BY user_id";
    c.bench_function("sql group by: 1M rows -> 100k entities", |b| {
        b.iter(|| execute::run_sql(sql, frame.clone()).expect("sql"))
    });
    let out = execute::run_sql(sql, frame.clone()).expect("sql");
    c.bench_function("encode 100k vectors", |b| {
        b.iter(|| result::encode(&out, "user_id", usize::MAX).expect("encode"))
    });
    let mut batch = frame.clone();
    let blob = batches::encode(&mut batch).expect("ipc");
    let schema = frame.schema().as_ref().clone();
    c.bench_function("decode a stored 1M-row batch", |b| {
        b.iter(|| batches::decode_all(std::slice::from_ref(&blob), &schema).expect("decode"))
    });
}

fn json_rows(c: &mut Criterion) {
    let def: BTreeMap<String, String> = [("user_id", "string"), ("amount", "float")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let schema = TableSchema::from_definition(&def).expect("schema");
    let rows: Vec<Map<String, Value>> = (0..100_000)
        .map(|i| {
            serde_json::from_value(json!({"user_id": format!("u{}", i % 1000), "amount": i as f64}))
                .expect("row")
        })
        .collect();
    c.bench_function("validate 100k JSON rows into a frame", |b| {
        b.iter(|| schema.frame_from_rows(&rows).expect("frame"))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = compute, json_rows
}
criterion_main!(benches);
