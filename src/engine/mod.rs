//! The compute engine: typed raw rows, the SQL guard, polars execution and result encoding.
//!
//! Everything here is synchronous and CPU-bound; callers run it on the blocking pool.

pub mod aggregations;
pub mod batches;
pub mod drift;
pub mod execute;
pub mod formats;
pub mod held;
pub mod history;
pub mod json_rows;
pub mod messages;
pub mod ndjson;
pub mod result;
pub mod scan;
pub mod schema;
pub mod spill;
pub mod sql_guard;
pub mod stats;
pub mod training;
pub mod windows;
