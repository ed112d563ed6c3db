//! feature-store: register raw tables, ingest rows, define features as SQL or windowed
//! aggregations, compute immutable versions and serve feature vectors over HTTP.
//!
//! Layers, top to bottom (`scripts/module_graph.py --check` fails on an arrow that runs back
//! up): `app` (startup) → `api` (HTTP) → `service` (domain rules, and the state they run with)
//! → the parts: `cache`, `store`, `offline`, `worker`, `spark`, `engine` and what they share.

pub mod alloc;
pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod engine;
pub mod failpoint;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod served;
pub mod service;
pub mod spark;
pub mod store;
pub mod telemetry;
pub mod times;
pub mod worker;

pub use app::{build_app, serve, StartupError};
pub use config::Config;
pub use service::AppState;
