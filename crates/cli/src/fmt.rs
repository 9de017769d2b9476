//! Small text helpers: UTC timestamps, JSON strings, byte strings for humans.

use std::fmt::Write;

/// `2023-11-14T22:13:20.123456789Z` for nanoseconds since the Unix epoch.
pub fn rfc3339_utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `2030-03-17T17:46:40Z` for seconds since the Unix epoch (no fraction).
pub fn rfc3339_utc_secs(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Year, month, day of the day `days` after 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Count from 0000-03-01 so that the leap day is the last day of a year; eras are
    // 400-year cycles of 146097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of (March-based) year
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A JSON string literal, quotes included.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Bytes as text: UTF-8 as is (control characters escaped), other bytes as `\xNN`.
pub fn bytes_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => b.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_utc(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        // 2000-02-29, a leap day in a century leap year.
        assert_eq!(
            rfc3339_utc(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_utc(4_102_444_799 * 1_000_000_000 + 999_999_999),
            "2099-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn second_timestamps() {
        assert_eq!(rfc3339_utc_secs(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc_secs(1_900_000_000), "2030-03-17T17:46:40Z");
        // Far future values (u64 seconds) still format.
        assert!(rfc3339_utc_secs(u64::MAX).ends_with('Z'));
    }

    #[test]
    fn json_strings() {
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn byte_text() {
        assert_eq!(bytes_text(b"en"), "en");
        assert_eq!(bytes_text(b"a\xffb"), "a\\xffb");
        assert_eq!(bytes_text(b"a\nb"), "a\\nb");
    }
}
