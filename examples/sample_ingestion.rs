//! The original service's sample flow, against a running server:
//! register `user_transactions`, ingest sample rows, create `avg_transaction_amount`, create a
//! version, compute it, and fetch vectors by feature name and by version id.
//!
//! ```text
//! cargo run --release --example sample_ingestion [BASE_URL]
//! ```
//! BASE_URL defaults to `$FEATURE_STORE_URL`, then http://127.0.0.1:8000. Re-running against
//! the same database reuses the table and feature it finds.

use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Error> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn get(&self, path: &str) -> Result<(u16, Value), Error> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), Error> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

fn step(n: u32, what: &str) {
    println!("\n{n}. {what}");
}

fn show(status: u16, body: &Value) {
    println!("   HTTP {status}");
    let text = serde_json::to_string_pretty(body).unwrap_or_default();
    for line in text.lines() {
        println!("   {line}");
    }
}

fn expect(status: u16, ok: &[u16], body: &Value) -> Result<(), Error> {
    if ok.contains(&status) {
        Ok(())
    } else {
        Err(format!("unexpected HTTP {status}: {body}").into())
    }
}

/// Find a resource by name in a list endpoint (for re-runs against the same database).
async fn find_id(client: &Client, list: &str, name: &str) -> Result<i64, Error> {
    let (_, items) = client.get(list).await?;
    items
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .and_then(|i| i["id"].as_i64())
        .ok_or_else(|| format!("{name} not found in {list}").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("FEATURE_STORE_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8000".into());
    let client = Client {
        base: base.trim_end_matches('/').to_string(),
        http: reqwest::Client::new(),
    };
    println!("Feature store sample against {}", client.base);

    let (status, body) = client.get("/health").await?;
    step(0, "Health check");
    show(status, &body);
    expect(status, &[200], &body)?;

    step(1, "Register raw table 'user_transactions'");
    let (status, body) = client
        .post(
            "/api/v1/raw-tables",
            &json!({
                "name": "user_transactions",
                "description": "User transaction data",
                "schema_definition": {
                    "user_id": "string",
                    "transaction_amount": "float",
                    "transaction_date": "string"
                }
            }),
        )
        .await?;
    show(status, &body);
    expect(status, &[201, 400], &body)?;
    let table_id = match body["id"].as_i64() {
        Some(id) => id,
        None => find_id(&client, "/api/v1/raw-tables", "user_transactions").await?,
    };

    step(2, "Ingest sample transactions");
    let rows = json!([
        {"user_id": "user_001", "transaction_amount": 150.50, "transaction_date": "2024-01-15"},
        {"user_id": "user_001", "transaction_amount": 75.25, "transaction_date": "2024-01-16"},
        {"user_id": "user_002", "transaction_amount": 300.00, "transaction_date": "2024-01-15"},
        {"user_id": "user_001", "transaction_amount": 200.00, "transaction_date": "2024-01-17"},
        {"user_id": "user_003", "transaction_amount": 50.00, "transaction_date": "2024-01-15"},
        {"user_id": "user_002", "transaction_amount": 125.50, "transaction_date": "2024-01-18"},
        {"user_id": "user_001", "transaction_amount": 25.75, "transaction_date": "2024-01-19"},
        {"user_id": "user_003", "transaction_amount": 100.00, "transaction_date": "2024-01-20"}
    ]);
    let (status, body) = client
        .post(
            "/api/v1/ingest",
            &json!({"raw_table_id": table_id, "data": rows}),
        )
        .await?;
    show(status, &body);
    expect(status, &[200], &body)?;

    step(3, "Create feature 'avg_transaction_amount'");
    let (status, body) = client
        .post(
            "/api/v1/features",
            &json!({
                "name": "avg_transaction_amount",
                "description": "Average transaction amount per user",
                "raw_table_id": table_id,
                "computation_logic": "SELECT user_id, AVG(transaction_amount) as avg_amount FROM data GROUP BY user_id",
                "entity_key": "user_id"
            }),
        )
        .await?;
    show(status, &body);
    expect(status, &[201, 400], &body)?;
    let feature_id = match body["id"].as_i64() {
        Some(id) => id,
        None => find_id(&client, "/api/v1/features", "avg_transaction_amount").await?,
    };

    step(4, "Create version v1");
    let (status, body) = client
        .post(
            &format!("/api/v1/features/{feature_id}/versions"),
            &json!({"version": "v1", "status": "active", "feature_id": feature_id}),
        )
        .await?;
    show(status, &body);
    expect(status, &[201, 400], &body)?;

    step(5, "Compute v1 with the sample rows");
    let (status, body) = client
        .post(
            &format!("/api/v1/features/{feature_id}/compute"),
            &json!({"version": "v1", "raw_data": rows}),
        )
        .await?;
    show(status, &body);
    expect(status, &[200], &body)?;
    let version_id = body["feature_version_id"]
        .as_i64()
        .ok_or("compute returned no feature_version_id")?;

    step(6, "Fetch vectors by feature name");
    for user in ["user_001", "user_002", "user_003"] {
        let (status, body) = client
            .get(&format!(
                "/api/v1/feature-vectors?entity_id={user}&feature_name=avg_transaction_amount"
            ))
            .await?;
        show(status, &body);
        expect(status, &[200], &body)?;
    }

    step(7, "Fetch a vector by version id");
    let (status, body) = client
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=user_001&feature_version_id={version_id}"
        ))
        .await?;
    show(status, &body);
    expect(status, &[200], &body)?;
    println!(
        "\nuser_001 average transaction amount: {}",
        body["feature_values"]["avg_amount"]
    );
    println!("Sample completed.");
    Ok(())
}
