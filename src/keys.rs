//! The columns that name a feature's entity, and the one text id a tuple of their values is
//! stored, cached and served under.
//!
//! A feature keyed by one column stores each entity under its value, as it always has (so
//! stored vectors of existing features keep working). A feature keyed by several columns
//! stores each entity under a JSON object of its key values as text, names in byte order:
//! `{"merchant_id":"m7","user_id":"u1"}`. Byte order makes the id independent of the order
//! the columns were declared or a request names them in, so a request's parameters turn into
//! the stored id without knowing the feature; and the names inside the id mean that a request
//! naming the wrong columns cannot find another feature's entity.

use serde::{Deserialize, Serialize};

/// At most this many key columns.
pub const MAX_COLUMNS: usize = 4;

/// A feature's key columns, in declared order: one (the original's contract) or up to four.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityKey(Vec<String>);

impl EntityKey {
    pub fn one(column: impl Into<String>) -> Self {
        EntityKey(vec![column.into()])
    }

    /// Declared columns, checked: 1 to `MAX_COLUMNS`, each named once.
    pub fn new(columns: Vec<String>) -> Result<Self, String> {
        if columns.is_empty() || columns.len() > MAX_COLUMNS {
            return Err(format!(
                "entity_key must name 1 to {MAX_COLUMNS} columns, not {}",
                columns.len()
            ));
        }
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].contains(c) {
                return Err(format!("entity_key names '{c}' twice"));
            }
        }
        Ok(EntityKey(columns))
    }

    /// As the `entity_key` column stores it: the one name, or a JSON array of the names.
    pub fn from_stored(stored: &str) -> Self {
        if stored.starts_with('[') {
            if let Ok(columns) = serde_json::from_str::<Vec<String>>(stored) {
                if columns.len() > 1 {
                    return EntityKey(columns);
                }
            }
        }
        EntityKey::one(stored)
    }

    pub fn stored(&self) -> String {
        match self.single() {
            Some(one) => one.to_string(),
            None => serde_json::to_string(&self.0).unwrap_or_default(),
        }
    }

    pub fn columns(&self) -> &[String] {
        &self.0
    }

    /// The column of a one-column key.
    pub fn single(&self) -> Option<&str> {
        match self.0.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The name of the text column a result's entity ids take in a snapshot: the key column
    /// itself for one, the stored form (`["user_id","merchant_id"]`) for a tuple.
    pub fn id_column(&self) -> String {
        self.stored()
    }

    /// `user_id` or `(user_id, merchant_id)`, for messages.
    pub fn describe(&self) -> String {
        match self.single() {
            Some(one) => one.to_string(),
            None => format!("({})", self.0.join(", ")),
        }
    }

    /// The entity id of one entity given its columns' values by name (`value` answers
    /// `None` for a column it lacks, which is then named in the error).
    pub fn id_of<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> Result<String, String> {
        if let Some(one) = self.single() {
            return value(one)
                .map(str::to_string)
                .ok_or_else(|| format!("missing the key column '{one}'"));
        }
        let mut pairs = Vec::with_capacity(self.0.len());
        for column in &self.0 {
            let v = value(column).ok_or_else(|| format!("missing the key column '{column}'"))?;
            pairs.push((column.as_str(), v));
        }
        Ok(tuple_id(&mut pairs))
    }

    /// What is wrong with a request naming `given` as key columns: the missing and the extra,
    /// or `None` when they are exactly this key's.
    pub fn mismatch<'a>(&self, given: impl Iterator<Item = &'a str> + Clone) -> Option<String> {
        let missing: Vec<&str> = self
            .0
            .iter()
            .map(String::as_str)
            .filter(|c| !given.clone().any(|g| g == *c))
            .collect();
        let extra: Vec<&str> = given.filter(|g| !self.0.iter().any(|c| c == g)).collect();
        if missing.is_empty() && extra.is_empty() {
            return None;
        }
        let list = |names: &[&str]| {
            names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut why = format!("the feature is keyed by {}", self.describe());
        if !missing.is_empty() {
            why.push_str(&format!("; missing {}", list(&missing)));
        }
        if !extra.is_empty() {
            why.push_str(&format!("; not a key column: {}", list(&extra)));
        }
        Some(why)
    }
}

/// The id of a key tuple: a JSON object of the values as text, names in byte order.
pub fn tuple_id(pairs: &mut [(&str, &str)]) -> String {
    pairs.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 6).sum());
    out.push('{');
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, name);
        out.push(':');
        push_json_str(&mut out, value);
    }
    out.push('}');
    out
}

/// `s` as a JSON string literal. Key values rarely need escaping, and a million-row training
/// set builds a million ids: the plain case is copied as it is.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        // Serializing a str cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

impl Serialize for EntityKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.single() {
            Some(one) => s.serialize_str(one),
            None => self.0.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for EntityKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            One(String),
            Many(Vec<String>),
        }
        match Given::deserialize(d).map_err(|_| {
            serde::de::Error::custom("entity_key must be a column name or a list of 1 to 4")
        })? {
            Given::One(one) => Ok(EntityKey::one(one)),
            Given::Many(columns) => EntityKey::new(columns).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tuple_id_does_not_depend_on_the_order_columns_are_named_in() {
        let a = tuple_id(&mut [("user_id", "u1"), ("merchant_id", "m\"7")]);
        let b = tuple_id(&mut [("merchant_id", "m\"7"), ("user_id", "u1")]);
        assert_eq!(a, b);
        assert_eq!(a, r#"{"merchant_id":"m\"7","user_id":"u1"}"#);
        // Whatever the text, the id is the JSON object serde_json writes.
        for text in ["plain", "tab\tnew\nline", "back\\slash", "ünï", "\u{1}"] {
            let id = tuple_id(&mut [("a", text), ("b\"", "x")]);
            let mut expected = serde_json::Map::new();
            expected.insert("a".into(), text.into());
            expected.insert("b\"".into(), "x".into());
            assert_eq!(id, serde_json::Value::Object(expected).to_string());
        }
    }

    #[test]
    fn one_column_keeps_its_plain_value_and_stored_form() {
        let key = EntityKey::from_stored("user_id");
        assert_eq!(key.single(), Some("user_id"));
        assert_eq!(key.stored(), "user_id");
        assert_eq!(key.id_of(|_| Some("u1")).unwrap(), "u1");
    }

    #[test]
    fn several_columns_round_trip_through_their_stored_form() {
        let key = EntityKey::new(vec!["user_id".into(), "merchant_id".into()]).unwrap();
        assert_eq!(key.stored(), r#"["user_id","merchant_id"]"#);
        assert_eq!(EntityKey::from_stored(&key.stored()), key);
        let id = key
            .id_of(|c| match c {
                "user_id" => Some("u1"),
                "merchant_id" => Some("m7"),
                _ => None,
            })
            .unwrap();
        assert_eq!(id, r#"{"merchant_id":"m7","user_id":"u1"}"#);
        let missing = key.id_of(|c| (c == "user_id").then_some("u1")).unwrap_err();
        assert!(missing.contains("'merchant_id'"), "{missing}");
    }

    #[test]
    fn a_mismatch_names_what_is_missing_and_what_is_extra() {
        let key = EntityKey::new(vec!["user_id".into(), "merchant_id".into()]).unwrap();
        assert_eq!(key.mismatch(["merchant_id", "user_id"].into_iter()), None);
        let why = key.mismatch(["user_id", "shop"].into_iter()).unwrap();
        assert!(why.contains("missing 'merchant_id'"), "{why}");
        assert!(why.contains("not a key column: 'shop'"), "{why}");
    }

    #[test]
    fn bad_declarations_are_refused() {
        assert!(EntityKey::new(vec![]).is_err());
        assert!(EntityKey::new(vec!["a".into(), "a".into()]).is_err());
        assert!(EntityKey::new((0..5).map(|i| format!("c{i}")).collect()).is_err());
        let parsed: EntityKey = serde_json::from_str(r#"["a","b"]"#).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), r#"["a","b"]"#);
        let one: EntityKey = serde_json::from_str(r#"["a"]"#).unwrap();
        assert_eq!(serde_json::to_string(&one).unwrap(), r#""a""#);
        assert!(serde_json::from_str::<EntityKey>("3").is_err());
    }
}
