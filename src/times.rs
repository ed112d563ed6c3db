//! How instants are written on the wire: ISO 8601 UTC with microseconds. A module of its own
//! so that the engine, the served bodies and the API models share it without knowing each
//! other.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn format_ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}
