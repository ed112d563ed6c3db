//! One integration-test binary: every test starts the app on port 0 with its own database.

mod fixtures;
mod helpers;

mod aggregations;
mod auth;
mod batch;
mod bulk_ingest;
mod cdp;
mod compute;
mod consistency;
mod crash;
mod docs;
mod error_log;
mod errors;
mod features;
mod freshness;
mod history;
mod ingest;
mod interop;
mod lease;
mod limits;
mod metrics;
mod offline;
mod overload;
mod process;
mod raw_tables;
mod redis_outage;
mod redis_server;
mod replicas;
mod s3;
mod spark;
mod stats;
mod streams;
mod ui;
mod vectors;
mod versions;
