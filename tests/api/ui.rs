//! The web console: served offline from the binary, and rendering what the API holds in a
//! real browser (Debian's chromium, headless).

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::auth::app_with_keys;
use crate::cdp::Browser;
use crate::helpers::{spawn_app, TestApp};

const PAGES: [&str; 4] = ["/ui", "/ui/", "/ui/features/1", "/ui/raw-tables/1"];

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_policy_that_allows_nothing_from_outside() {
    let app = spawn_app().await;
    for path in PAGES {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let policy = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let page = resp.text().await.unwrap();
        assert!(
            page.contains(r#"<script src="/ui/assets/app.js">"#),
            "{page}"
        );
    }
    for (path, kind) in [
        ("/ui/assets/app.js", "text/javascript"),
        ("/ui/assets/app.css", "text/css"),
    ] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        let text = resp.text().await.unwrap();
        // The only absolute URL is SVG's namespace, which names and fetches nothing.
        let outside = text
            .replace("http://www.w3.org/2000/svg", "")
            .contains("://");
        assert!(!outside, "{path} names another server");
    }
}

#[tokio::test]
async fn with_api_keys_the_console_page_loads_but_its_data_needs_a_key() {
    let app = app_with_keys().await;
    let (status, _) = app.get("/api/v1/features").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = app.client.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

// ---- in a real browser ----

/// A feature with two snapshots whose `amount` drifted, on a table with an event column.
async fn seeded_console(app: &TestApp) -> (i64, i64) {
    let table = app
        .create_table(json!({"name": "payments", "description": "card payments",
                "schema_definition": {"user_id": "string", "amount": "float", "method": "string"}}))
        .await;
    let feature = app.create_feature(json!({"name": "spend_profile", "description": "what each user spends", "raw_table_id": table,
                "entity_key": "user_id",
                "computation_logic": "SELECT user_id, AVG(amount) AS avg_amount, MAX(method) AS method FROM data GROUP BY user_id"})).await;
    for shift in [0.0, 60.0] {
        let rows: Vec<Value> = (0..300)
            .map(|i| {
                let method = if i % 2 == 0 { "card" } else { "cash" };
                json!({"user_id": format!("u{}", i % 100), "amount": (i % 37) as f64 + shift,
                    "method": method})
            })
            .collect();
        app.ingested(table, json!(rows)).await;
        app.compute(feature, "v1").await;
    }
    (table, feature)
}

/// Load `url` in headless chromium and return the DOM once the page has settled, and every
/// request the page itself made (from chromium's network log).
fn browse(url: &str) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let netlog = dir.path().join("net.json");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-extensions",
            "--no-first-run",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(url)
        .output()
        .expect("run chromium (apt-get install chromium)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log: Value = serde_json::from_str(&std::fs::read_to_string(&netlog).expect("net log"))
        .expect("net log is JSON");
    // What the page asked for: requests with an initiator (chromium's own background
    // requests have none).
    let mut requested: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let p = &e["params"];
            let initiated = p["initiator"]
                .as_str()
                .is_some_and(|i| i != "not an origin");
            initiated
                .then(|| p["url"].as_str().map(str::to_string))
                .flatten()
        })
        .collect();
    requested.sort();
    requested.dedup();
    (String::from_utf8_lossy(&out.stdout).into_owned(), requested)
}

pub(crate) async fn browse_async(url: String) -> (String, Vec<String>) {
    tokio::task::spawn_blocking(move || browse(&url))
        .await
        .unwrap()
}

pub(crate) fn assert_only_this_server(base: &str, requested: &[String]) {
    assert!(!requested.is_empty(), "the page made no requests");
    for url in requested {
        assert!(url.starts_with(base), "the page requested {url}");
    }
}

#[tokio::test]
#[ignore = "needs chromium; .ci/run installs it"]
async fn the_console_shows_features_distributions_and_drift_in_a_browser() {
    let app = spawn_app().await;
    let (table, feature) = seeded_console(&app).await;

    let (dom, requested) = browse_async(app.url("/ui")).await;
    assert!(dom.contains(r#"data-loaded="true""#), "{dom}");
    assert!(dom.contains(r#"data-feature="spend_profile""#), "{dom}");
    assert!(dom.contains(">payments<"), "{dom}");
    assert!(
        dom.contains(">300<") || dom.contains(">600<"),
        "row count shown: {dom}"
    );
    assert!(dom.contains(">fresh<"), "{dom}");
    assert!(
        dom.contains("data-psi="),
        "the newest drift is shown: {dom}"
    );
    assert_only_this_server(&app.base, &requested);

    let (dom, requested) = browse_async(app.url(&format!("/ui/features/{feature}"))).await;
    assert!(dom.contains("SELECT user_id, AVG(amount)"), "{dom}");
    assert!(dom.contains(r#"<td class="engine">polars</td>"#), "{dom}");
    assert!(dom.contains(r#"data-column="avg_amount""#), "{dom}");
    let bars = dom.matches(r#"<rect class="bar""#).count();
    assert!(bars >= 10, "a histogram is drawn: {bars} bars");
    assert!(
        dom.contains(r#"<rect class="bar target""#),
        "drift bars are drawn"
    );
    assert!(dom.contains(r#"id="drift""#), "{dom}");
    let (_, drift) = app
        .get(&format!("/api/v1/features/{feature}/versions/1/drift"))
        .await;
    let psi = drift["columns"]["avg_amount"]["psi"].as_f64().unwrap();
    assert!(
        dom.contains(&format!("PSI {psi:.3}")),
        "the drift the API computes ({psi:.3}) is shown: {dom}"
    );
    assert_eq!(dom.matches(r#"<circle class="dot compute""#).count(), 2);
    assert_only_this_server(&app.base, &requested);

    let (dom, requested) = browse_async(app.url(&format!("/ui/raw-tables/{table}"))).await;
    assert!(dom.contains(r#"id="schema""#), "{dom}");
    assert!(dom.contains(">method<") && dom.contains(">cash<"), "{dom}");
    assert_only_this_server(&app.base, &requested);
}

#[tokio::test]
#[ignore = "needs chromium; .ci/run installs it"]
async fn with_api_keys_the_console_takes_a_typed_key_and_sends_it_on_its_calls() {
    let app = app_with_keys().await;
    // Data made with the write key; the console is given the read key.
    let writer = reqwest::Client::new();
    let (status, table) = {
        let resp = writer
            .post(app.url("/api/v1/raw-tables"))
            .header("x-api-key", crate::auth::WRITER)
            .json(&json!({"name": "guarded", "schema_definition": {"user_id": "string"}}))
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::CREATED, "{table}");
    let url = app.url("/ui");
    let shown = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::launch();
        browser.open(&url);
        assert!(
            browser.wait_for("!!document.getElementById('key-form')"),
            "no key prompt"
        );
        assert_eq!(
            browser.eval("!!document.getElementById('tables-table')"),
            json!(false),
            "data shown without a key"
        );
        browser.eval(&format!(
            "document.getElementById('api-key').value = '{}'; \
             document.getElementById('key-form').requestSubmit(); true",
            crate::auth::READER
        ));
        assert!(
            browser.wait_for("!!document.querySelector('#tables-table tr[data-name=\"guarded\"]')"),
            "the typed key did not bring the data: {}",
            browser.eval("document.body.innerText")
        );
        // Forgetting the key hides everything again.
        browser.eval("document.getElementById('forget-key').click(); true");
        assert!(browser.wait_for("!!document.getElementById('key-form')"));
        browser.eval("document.body.innerText")
    })
    .await
    .unwrap();
    assert!(!shown.as_str().unwrap().contains("guarded"), "{shown}");
}

#[tokio::test]
#[ignore = "needs chromium; .ci/run installs it"]
async fn with_api_keys_the_console_asks_for_a_key_and_shows_nothing_without_one() {
    let app = app_with_keys().await;
    let (dom, requested) = browse_async(app.url("/ui")).await;
    assert!(dom.contains(r#"id="key-form""#), "{dom}");
    assert!(!dom.contains("features-table"), "{dom}");
    assert_only_this_server(&app.base, &requested);
}

#[tokio::test]
#[ignore = "needs chromium; .ci/run installs it"]
async fn the_console_shows_an_aggregation_features_declaration_instead_of_sql() {
    let app = spawn_app().await;
    let (status, table) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "payments", "event_time_column": "ts",
                "schema_definition": {"user_id": "string", "amount": "float", "ts": "datetime"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    let id = app.create_feature(json!({"name": "spend", "raw_table_id": table["id"], "entity_key": "user_id",
                "filter": "amount > 0",
                "aggregations": [
                    {"column": "amount", "function": "sum", "windows": ["1h", "7d"]},
                    {"column": "amount", "function": "percentile", "q": 0.95, "windows": ["30d"]}]})).await;
    let (dom, requested) = browse_async(app.url(&format!("/ui/features/{id}"))).await;
    assert!(dom.contains("sum of amount over 1h, 7d"), "{dom}");
    assert!(
        dom.contains("percentile(q=0.95) of amount over 30d"),
        "{dom}"
    );
    assert!(dom.contains("where amount &gt; 0"), "{dom}");
    assert!(dom.contains("no snapshots to show"), "{dom}");
    assert_only_this_server(&app.base, &requested);
}

#[tokio::test]
#[ignore = "needs chromium; .ci/run installs it"]
async fn the_console_looks_up_a_two_key_entity_with_one_field_per_key_column() {
    let app = spawn_app().await;
    let table = app
        .create_table(json!({"name": "purchases",
            "schema_definition": {"user_id": "string", "merchant_id": "integer", "amount": "float"}}))
        .await;
    app.ingested(
        table,
        json!([{"user_id": "u1", "merchant_id": 7, "amount": 10.0},
               {"user_id": "u1", "merchant_id": 7, "amount": 5.0}]),
    )
    .await;
    let id = app
        .create_feature(json!({"name": "pair_spend", "raw_table_id": table,
            "entity_key": ["user_id", "merchant_id"],
            "computation_logic": "SELECT user_id, merchant_id, SUM(amount) AS spent FROM data GROUP BY user_id, merchant_id"}))
        .await;
    app.compute(id, "v1").await;
    let url = app.url(&format!("/ui/features/{id}"));
    let found = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::launch();
        browser.open(&url);
        assert!(
            browser.wait_for("!!document.getElementById('key-merchant_id')"),
            "no field per key column: {}",
            browser.eval("document.body.innerText")
        );
        browser.eval(
            "document.getElementById('key-user_id').value = 'u1'; \
             document.getElementById('key-merchant_id').value = '7'; \
             document.getElementById('key-merchant_id').form.requestSubmit(); true",
        );
        assert!(
            browser
                .wait_for("document.getElementById('entity-vector').textContent.includes('spent')"),
            "no vector shown: {}",
            browser.eval("document.body.innerText")
        );
        browser.eval("document.getElementById('entity-vector').textContent")
    })
    .await
    .unwrap();
    let shown: Value = serde_json::from_str(found.as_str().unwrap()).unwrap();
    assert_eq!(shown["feature_values"]["spent"], 15.0, "{shown}");
    assert_eq!(shown["entity"]["merchant_id"], 7, "{shown}");
}
