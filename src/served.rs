//! What publishing and serving share, so the store, the cache and the engine need not know
//! one another's types.

/// One entity's vector, ready to store: `values` is a JSON object as text.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedVector {
    pub entity_id: String,
    pub values: String,
}

/// What serving needs to know about a version: its id, how many times it was published, how
/// many vectors the last publish stored, how fresh that publish is, and what names its
/// entities.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VersionMeta {
    pub version_id: i64,
    /// The key columns as stored (`crate::keys::EntityKey::from_stored`): a request's key
    /// parameters are checked against them.
    #[sqlx(try_from = "String")]
    pub entity_key: std::sync::Arc<str>,
    pub generation: i64,
    pub entity_count: Option<i64>,
    /// When the served generation was computed.
    pub computed_at: Option<chrono::DateTime<chrono::Utc>>,
    #[sqlx(flatten)]
    pub freshness: Freshness,
}

/// How fresh a snapshot is: when the table version it read was committed (`None`: it read
/// none, its rows came with the request), and whether its raw table has a newer version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct Freshness {
    pub data_as_of: Option<chrono::DateTime<chrono::Utc>>,
    pub stale: bool,
}

impl Freshness {
    /// `"data_as_of":"...","stale":false` (no braces), as every answer carries it.
    pub fn json_fields(&self) -> String {
        let mut out = String::with_capacity(64);
        self.push_json_fields(&mut out);
        out
    }

    /// `json_fields`, appended to `out`.
    pub fn push_json_fields(&self, out: &mut String) {
        self.push_data_as_of(out);
        out.push_str(if self.stale {
            ",\"stale\":true"
        } else {
            ",\"stale\":false"
        });
    }

    /// `"data_as_of":"..."` or `"data_as_of":null`: the part of the freshness that is fixed
    /// for a generation, so cached bodies hold it.
    pub fn push_data_as_of(&self, out: &mut String) {
        out.push_str("\"data_as_of\":");
        match &self.data_as_of {
            Some(t) => {
                out.push('"');
                crate::times::push_ts(out, t);
                out.push('"');
            }
            None => out.push_str("null"),
        }
    }
}
