//! How instants are written on the wire: ISO 8601 UTC with microseconds. A module of its own
//! so that the engine, the served bodies and the API models share it without knowing each
//! other.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

pub fn format_ts(t: &DateTime<Utc>) -> String {
    let mut out = String::with_capacity(27);
    push_ts(&mut out, t);
    out
}

/// `format_ts` appended to `out`.
pub fn push_ts(out: &mut String, t: &DateTime<Utc>) {
    out.push_str(ts_text(t).as_str());
}

/// An instant's wire text, on the stack when it has the usual 27 characters.
pub enum TsText {
    Usual([u8; 27]),
    Other(String),
}

impl TsText {
    pub fn as_str(&self) -> &str {
        match self {
            // Only ASCII digits and separators are ever written into `Usual`.
            TsText::Usual(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            TsText::Other(text) => text,
        }
    }
}

/// Written digit by digit: serving writes a version's instants into every answer, and chrono's
/// general writer cost ~1.5k instructions an instant there. Years outside 0000–9999 and leap
/// seconds take chrono's writer, whose output this matches.
pub fn ts_text(t: &DateTime<Utc>) -> TsText {
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return TsText::Other(t.to_rfc3339_opts(SecondsFormat::Micros, true));
    }
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    put(20, 6, nanos / 1_000);
    TsText::Usual(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn instants_are_written_as_chrono_writes_them_in_every_year_and_at_leap_seconds() {
        let chrono_text = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
        // A fixed generator (xorshift): the same instants every run.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let span = 2 * 253_402_300_800_i64; // 0000-01-01 .. 9999-12-31 and as far before
        for _ in 0..20_000 {
            let secs = (next() % span as u64) as i64 - span / 2;
            let nanos = (next() % 1_000_000_000) as u32;
            let t = Utc.timestamp_opt(secs, nanos).unwrap();
            assert_eq!(format_ts(&t), chrono_text(&t), "{secs}s {nanos}ns");
        }
        for t in [
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap(),
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(), // a leap second
            Utc.timestamp_opt(0, 999_999_999).unwrap(),
        ] {
            assert_eq!(format_ts(&t), chrono_text(&t));
        }
    }
}
