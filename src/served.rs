//! What publishing and serving share, so the store, the cache and the engine need not know
//! one another's types.

/// One entity's vector, ready to store: `values` is a JSON object as text.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedVector {
    pub entity_id: String,
    pub values: String,
}

/// What serving needs to know about a version: its id, how many times it was published, and
/// how many vectors the last publish stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct VersionMeta {
    pub version_id: i64,
    pub generation: i64,
    pub entity_count: Option<i64>,
}
