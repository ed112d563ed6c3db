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

/// The declared columns' indices in byte order of their names: the order a tuple id (and its
/// compact form) holds the values in.
pub fn name_order(columns: &[String]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..columns.len()).collect();
    order.sort_unstable_by(|a, b| columns[*a].as_bytes().cmp(columns[*b].as_bytes()));
    order
}

/// The compact form of a tuple id, for joins inside one process (a training set's rows
/// against a snapshot): each value as its length in bytes, `:` and its text, in the id's
/// order. One-to-one like the id, a third of its length for short keys (no names, no quotes),
/// so it hashes and compares as fast as one column's text. `None` for text that is not a
/// tuple id.
pub fn compact_of_id(id: &str) -> Option<String> {
    if !id.contains('\\') {
        if let Some(compact) = compact_of_plain_id(id) {
            return Some(compact);
        }
    }
    let values: std::collections::BTreeMap<String, String> = serde_json::from_str(id).ok()?;
    let mut out = String::with_capacity(id.len() / 2);
    for value in values.values() {
        push_compact(&mut out, value);
    }
    Some(out)
}

/// `compact_of_id` of an id with no escapes, read as `TupleWriter` writes it
/// (`{"name":"value",...}`, names in byte order) without a JSON parser: a snapshot of a
/// million tuples is indexed in a worker for every training set. `None` when it is not
/// written so (the caller then parses it).
fn compact_of_plain_id(id: &str) -> Option<String> {
    let mut rest = id.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = String::with_capacity(id.len() / 2);
    let mut last_name: Option<&str> = None;
    loop {
        let (name, after) = rest.strip_prefix('"')?.split_once('"')?;
        let (value, after) = after.strip_prefix(":\"")?.split_once('"')?;
        // Names in strictly increasing byte order, as tuple ids hold them.
        if last_name.is_some_and(|last| last.as_bytes() >= name.as_bytes()) {
            return None;
        }
        last_name = Some(name);
        push_compact(&mut out, value);
        if after.is_empty() {
            return Some(out);
        }
        rest = after.strip_prefix(',')?;
    }
}

/// One value of a compact tuple (`compact_of_id`).
pub fn push_compact(out: &mut String, value: &str) {
    out.push_str(itoa::Buffer::new().format(value.len()));
    out.push(':');
    out.push_str(value);
}

/// Writes the ids of many tuples of one key (a result's or a training set's rows), with the
/// columns' order and quoted names worked out once: a tuple id costs its bytes, not a sort,
/// a map and an allocation.
pub struct TupleWriter {
    /// Declared column index, in byte order of the names.
    order: Vec<usize>,
    /// `{"name":` for the first, `,"name":` for the others, in that order.
    prefixes: Vec<String>,
    buffer: String,
}

impl TupleWriter {
    pub fn new(columns: &[String]) -> Self {
        let order = name_order(columns);
        let prefixes = order
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut prefix = String::from(if i == 0 { "{" } else { "," });
                push_json_str(&mut prefix, &columns[*c]);
                prefix.push(':');
                prefix
            })
            .collect();
        TupleWriter {
            order,
            prefixes,
            buffer: String::new(),
        }
    }

    /// The id of the tuple whose declared column `i` holds `value(i)`; valid until the next
    /// call.
    pub fn write<'v>(&mut self, value: impl Fn(usize) -> &'v str) -> &str {
        self.write_with(|i, out| push_json_str(out, value(i)))
    }

    /// As `write`, with `cell(i, out)` writing declared column `i`'s value to `out` as a JSON
    /// string literal (an integer written as its digits in quotes, without making its text
    /// first).
    pub fn write_with(&mut self, mut cell: impl FnMut(usize, &mut String)) -> &str {
        self.buffer.clear();
        for (column, prefix) in self.order.iter().zip(&self.prefixes) {
            self.buffer.push_str(prefix);
            cell(*column, &mut self.buffer);
        }
        self.buffer.push('}');
        &self.buffer
    }
}

/// `s` as a JSON string literal. Key values rarely need escaping, and a million-row training
/// set builds a million ids: the plain case is copied as it is.
pub fn push_json_str(out: &mut String, s: &str) {
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
    fn the_tuple_writer_writes_what_tuple_id_does() {
        let columns = [
            "user_id".to_string(),
            "merchant_id".to_string(),
            "a\"b".to_string(),
        ];
        let mut writer = TupleWriter::new(&columns);
        for values in [["u1", "7", "x"], ["u\"2", "", "\n"]] {
            let mut pairs: Vec<(&str, &str)> =
                columns.iter().map(String::as_str).zip(values).collect();
            let expected = tuple_id(&mut pairs);
            assert_eq!(writer.write(|i| values[i]), expected);
        }
    }

    #[test]
    fn the_compact_form_of_an_id_holds_its_values_in_the_ids_order() {
        let id = tuple_id(&mut [("user_id", "u:1"), ("merchant_id", "7")]);
        assert_eq!(compact_of_id(&id).as_deref(), Some("1:73:u:1"));
        // Values that would run together with a separator stay apart.
        let a = tuple_id(&mut [("a", "1:2"), ("b", "")]);
        let b = tuple_id(&mut [("a", "1"), ("b", "2:")]);
        assert_ne!(compact_of_id(&a), compact_of_id(&b));
        assert_eq!(compact_of_id("u1"), None);
        // Ids with escapes are parsed, and say the same as the plain reading would.
        let escaped = tuple_id(&mut [("a", "x\"y"), ("b", "z")]);
        assert_eq!(compact_of_id(&escaped).as_deref(), Some("3:x\"y1:z"));
        for id in [&id, &a, &b] {
            let parsed: std::collections::BTreeMap<String, String> =
                serde_json::from_str(id).unwrap();
            let mut expected = String::new();
            for v in parsed.values() {
                push_compact(&mut expected, v);
            }
            assert_eq!(compact_of_id(id), Some(expected));
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
