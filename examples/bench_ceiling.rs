//! The machine's ceiling for the benchmark: a minimal axum handler that answers a fixed JSON
//! body of a given size, served under the same load as feature-store.
//!
//! `bench_ceiling PORT BODY_BYTES`

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8099);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(150);
    let filler = "x".repeat(size.saturating_sub(12));
    let body = Bytes::from(format!("{{\"filler\":\"{filler}\"}}"));
    let app = Router::new().route(
        "/v",
        get(move || {
            let body = body.clone();
            async move { ([(CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}
