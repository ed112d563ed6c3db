//! Statistics per snapshot and drift between snapshots, checked against figures computed here
//! from the rows the test sent.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, wait_for, TestApp};

const USERS: usize = 200;

/// Row `i` of round `round`: an amount (null for every 10th user), a category, a flag, a day.
fn row(i: usize, round: usize) -> Value {
    let amount = if i % 10 == 3 {
        Value::Null
    } else {
        json!(((i * 37) % 101) as f64 * 1.5 + (round * 40) as f64)
    };
    let category = ["a", "b", "c", "d"][(i + round * (i % 3)) % 4];
    json!({"user_id": format!("u{i:03}"), "amount": amount, "category": category,
           "flag": i.is_multiple_of(3), "day": format!("2024-01-{:02}", 1 + i % 28)})
}

fn rows(round: usize) -> Vec<Value> {
    (0..USERS).map(|i| row(i, round)).collect()
}

async fn setup(app: &TestApp) -> (i64, i64) {
    let (status, table) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "people", "schema_definition": {"user_id": "string", "amount": "float",
                "category": "string", "flag": "boolean", "day": "date"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    let feature = app
        .create_feature(
            json!({"name": "profile", "raw_table_id": table["id"], "entity_key": "user_id",
                "computation_logic": "SELECT user_id, amount, category, flag, day FROM data"}),
        )
        .await;
    (table["id"].as_i64().unwrap(), feature)
}

async fn compute(app: &TestApp, feature: i64, round: usize) -> Value {
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1", "raw_data": rows(round)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn amounts(round: usize) -> Vec<Option<f64>> {
    rows(round).iter().map(|r| r["amount"].as_f64()).collect()
}

/// numpy's default quantile: linear between closest ranks.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64()
        .is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
}

#[tokio::test]
async fn snapshot_statistics_match_the_rows_exactly() {
    let app = spawn_app().await;
    let (_, feature) = setup(&app).await;
    let computed = compute(&app, feature, 0).await;
    let (version, snapshot) = (
        computed["feature_version_id"].as_i64().unwrap(),
        computed["snapshot_id"].as_i64().unwrap(),
    );
    let (status, stats) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/snapshots/{snapshot}/stats"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["snapshot_id"], snapshot);
    assert_eq!(stats["entity_count"], USERS);
    let columns = stats["columns"].as_object().unwrap();
    let mut names: Vec<&String> = columns.keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["amount", "category", "day", "flag"],
        "the key is left out"
    );

    let amount = &stats["columns"]["amount"];
    let mut values: Vec<f64> = amounts(0).into_iter().flatten().collect();
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert_eq!(amount["type"], "float");
    assert_eq!(amount["count"], USERS);
    assert_eq!(amount["nulls"], USERS - values.len());
    assert!(close(&amount["mean"], mean), "{amount}");
    assert!(close(&amount["std"], std), "{amount}");
    assert_eq!(amount["min"], json!(values[0]));
    assert_eq!(amount["max"], json!(values[values.len() - 1]));
    for (name, q) in [
        ("p01", 0.01),
        ("p05", 0.05),
        ("p25", 0.25),
        ("p50", 0.5),
        ("p75", 0.75),
        ("p95", 0.95),
        ("p99", 0.99),
    ] {
        assert!(
            close(&amount["quantiles"][name], quantile(&values, q)),
            "{name}: {amount}"
        );
    }
    let counts: Vec<u64> = amount["histogram"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), 10);
    assert_eq!(counts.iter().sum::<u64>(), values.len() as u64);
    let edges: Vec<f64> = amount["histogram"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_f64().unwrap())
        .collect();
    let expected: Vec<u64> = (0..10)
        .map(|b| {
            values
                .iter()
                .filter(|v| **v >= edges[b] && (**v < edges[b + 1] || (b == 9 && **v <= edges[10])))
                .count() as u64
        })
        .collect();
    assert_eq!(counts, expected);

    let category = &stats["columns"]["category"];
    assert_eq!(category["type"], "string");
    assert_eq!(
        (category["count"].as_u64(), category["nulls"].as_u64()),
        (Some(200), Some(0))
    );
    assert_eq!(category["distinct"], 4);
    let mut by_hand = std::collections::BTreeMap::<String, u64>::new();
    for r in rows(0) {
        *by_hand
            .entry(r["category"].as_str().unwrap().into())
            .or_default() += 1;
    }
    for top in category["top"].as_array().unwrap() {
        assert_eq!(
            top["count"],
            by_hand[top["value"].as_str().unwrap()],
            "{category}"
        );
    }
    let flag = &stats["columns"]["flag"];
    assert_eq!(flag["type"], "boolean");
    assert_eq!(flag["top"][0], json!({"value": false, "count": 133}));
    assert_eq!(flag["top"][1], json!({"value": true, "count": 67}));
    // Dates as days since 1970-01-01: 2024-01-01 is day 19723.
    let day = &stats["columns"]["day"];
    assert_eq!(day["type"], "date");
    assert_eq!(day["min"], 19723.0);
    assert_eq!(day["max"], 19723.0 + 27.0);

    // The version's stats are its newest snapshot's.
    let (_, newest) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/stats"
        ))
        .await;
    assert_eq!(newest, stats);
    let (status, body) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/snapshots/{}/stats",
            snapshot + 100
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// PSI over the base's deciles with 0.5 added to every bin, as docs/statistics-and-console.md defines it.
fn psi_by_hand(base: &[Option<f64>], target: &[Option<f64>]) -> f64 {
    let mut sorted: Vec<f64> = base.iter().flatten().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..10)
        .map(|i| quantile(&sorted, i as f64 / 10.0))
        .collect();
    edges.dedup();
    let bins = edges.len() + 1;
    let count = |values: &[Option<f64>]| {
        let mut c = vec![0.0; bins];
        for v in values.iter().flatten() {
            c[edges.iter().filter(|e| **e < *v).count()] += 1.0;
        }
        c
    };
    let (b, t) = (count(base), count(target));
    let (nb, nt) = (b.iter().sum::<f64>(), t.iter().sum::<f64>());
    (0..bins)
        .map(|i| {
            let bs = (b[i] + 0.5) / (nb + 0.5 * bins as f64);
            let ts = (t[i] + 0.5) / (nt + 0.5 * bins as f64);
            (ts - bs) * (ts / bs).ln()
        })
        .sum()
}

/// The drift the publish of `target` keeps, once it is kept (within a generous bound).
async fn wait_for_kept_drift(app: &TestApp, target: i64, base: i64) -> String {
    wait_for(30, || async {
        app.state.store.kept_drift(target, base).await.unwrap()
    })
    .await
    .expect("the publish never kept the newest pair's drift")
}

#[tokio::test]
async fn drift_between_snapshots_is_the_documented_psi() {
    let app = spawn_app().await;
    let (_, feature) = setup(&app).await;
    let first = compute(&app, feature, 0).await;
    let version = first["feature_version_id"].as_i64().unwrap();
    let (status, body) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/drift"
        ))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "one snapshot has nothing to compare: {body}"
    );

    let second = compute(&app, feature, 1).await;
    let (status, drift) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/drift"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{drift}");
    assert_eq!(drift["base"], first["snapshot_id"]);
    assert_eq!(drift["target"], second["snapshot_id"]);
    // Kept by the publish (in the background), so requests and the console's overview read it
    // instead of computing.
    let kept = wait_for_kept_drift(
        &app,
        drift["target"].as_i64().unwrap(),
        drift["base"].as_i64().unwrap(),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&kept).unwrap(),
        drift["columns"]
    );
    let (_, again) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/drift"
        ))
        .await;
    assert_eq!(again, drift);
    let amount = &drift["columns"]["amount"];
    let expected = psi_by_hand(&amounts(0), &amounts(1));
    assert!(close(&amount["psi"], expected), "{amount} vs {expected}");
    assert!(
        expected > 0.25,
        "the shift by 40 is a real drift: {expected}"
    );
    assert_eq!(amount["null_rate_change"], 0.0);
    let flag = &drift["columns"]["flag"];
    assert!(close(&flag["psi"], 0.0), "the flag did not change: {flag}");

    // Any two snapshots, either way round; the same one against itself has no drift.
    let (status, same) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/drift?base={}&target={}",
            second["snapshot_id"], second["snapshot_id"]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert!(close(&same["columns"]["amount"]["psi"], 0.0));
    let (_, back) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/drift?base={}&target={}",
            second["snapshot_id"], first["snapshot_id"]
        ))
        .await;
    assert!(close(
        &back["columns"]["amount"]["psi"],
        psi_by_hand(&amounts(1), &amounts(0))
    ));
    let (status, body) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/drift?base=999"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // The gauge holds the newest pair's PSI.
    let metrics = app.metrics_text().await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                r#"feature_store_drift_psi{feature="profile",version="v1",column="amount"}"#,
            )
        })
        .unwrap_or_else(|| panic!("no drift gauge in\n{metrics}"));
    let gauge: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((gauge - expected).abs() < 1e-9, "{line}");
}
