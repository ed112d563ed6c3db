//! NDJSON rows parsed as they arrive: complete lines become rows, every `CHUNK_ROWS` rows become
//! a typed frame, so a large upload is held as columns, never as a whole text body or a whole
//! list of JSON objects.

use polars::prelude::*;
use serde_json::{Map, Value};

use super::schema::TableSchema;

const CHUNK_ROWS: usize = 65_536;

pub struct NdjsonReader<'a> {
    schema: &'a TableSchema,
    pending: Vec<u8>,
    rows: Vec<Map<String, Value>>,
    frames: Vec<DataFrame>,
    line: usize,
    total: usize,
}

impl<'a> NdjsonReader<'a> {
    pub fn new(schema: &'a TableSchema) -> Self {
        NdjsonReader {
            schema,
            pending: Vec::new(),
            rows: Vec::new(),
            frames: Vec::new(),
            line: 0,
            total: 0,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.pending.extend_from_slice(chunk);
        let Some(last_newline) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let rest = self.pending.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        for line in complete.split(|b| *b == b'\n') {
            self.line(line)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), String> {
        if line.is_empty() {
            return Ok(());
        }
        self.line += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(row)) => self.rows.push(row),
            Ok(_) => return Err(format!("line {} is not a JSON object", self.line)),
            Err(e) => return Err(format!("line {} is not valid JSON: {e}", self.line)),
        }
        if self.rows.len() >= CHUNK_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let frame = self.schema.frame_from_rows(&self.rows)?;
        self.total += self.rows.len();
        self.rows.clear();
        self.frames.push(frame);
        Ok(())
    }

    /// All rows as one frame; the last line needs no trailing newline.
    pub fn finish(mut self) -> Result<DataFrame, String> {
        let rest = std::mem::take(&mut self.pending);
        self.line(&rest)?;
        self.flush()?;
        if self.total == 0 {
            return Err("No data provided".into());
        }
        let mut frames = self.frames.into_iter();
        let mut all = frames.next().unwrap_or_default();
        for f in frames {
            all.vstack_mut_owned(f).map_err(|e| e.to_string())?;
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> TableSchema {
        let def = [
            ("k".to_string(), "string".to_string()),
            ("v".to_string(), "int".to_string()),
        ]
        .into();
        TableSchema::from_definition(&def).unwrap()
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let s = schema();
        let mut r = NdjsonReader::new(&s);
        r.feed(b"{\"k\":\"a\",\"v\":1}\n{\"k\":\"b\",").unwrap();
        r.feed(b"\"v\":2}\n\n{\"k\":\"c\",\"v\":3}").unwrap();
        let df = r.finish().unwrap();
        assert_eq!(df.height(), 3);
    }

    #[test]
    fn a_bad_line_is_named() {
        let s = schema();
        let mut r = NdjsonReader::new(&s);
        let err = r.feed(b"{\"k\":\"a\",\"v\":1}\n[1]\n").unwrap_err();
        assert_eq!(err, "line 2 is not a JSON object");
    }

    #[test]
    fn type_errors_use_the_json_messages() {
        let s = schema();
        let mut r = NdjsonReader::new(&s);
        r.feed(b"{\"k\":\"a\",\"v\":\"x\"}\n").unwrap();
        assert_eq!(r.finish().unwrap_err(), "Column v should be int, got str");
    }
}
