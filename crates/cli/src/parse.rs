//! The text forms of setting values: sizes, counts, durations, octal modes, grants, and
//! the `[limits]` ranges. Pure functions, shared by the flags, the config file and
//! `--print-config` (which prints values back in the form these read).

/// One `--allow-uid`/`--allow-gid` value (or its environment variable): one grant or more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants(pub Vec<objmapper_server::Grant>);

/// Parses grants separated by spaces or commas: `33=read 1000=read,write,admin`, or
/// `33=read,1000=admin`. A word without `=` is another permission of the grant before it.
pub fn parse_grants(s: &str) -> Result<Grants, String> {
    let bad = || format!("{s:?}: expected ID=PERMS (e.g. 33=read), separated by spaces");
    let mut texts: Vec<String> = Vec::new();
    for word in s.split(|c: char| c == ',' || c.is_whitespace()) {
        if word.contains('=') {
            texts.push(word.to_string());
        } else if !word.is_empty() {
            let t = texts.last_mut().ok_or_else(bad)?;
            t.push(',');
            t.push_str(word);
        }
    }
    if texts.is_empty() {
        return Err(bad());
    }
    texts
        .iter()
        .map(|t| t.parse())
        .collect::<Result<_, _>>()
        .map(Grants)
}

/// `--idle-timeout`: a duration, or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeout(pub Option<std::time::Duration>);

/// Parses `never` or a timeout ([`parse_timeout`]).
pub fn parse_idle_timeout(s: &str) -> Result<IdleTimeout, String> {
    if s.trim().eq_ignore_ascii_case("never") {
        return Ok(IdleTimeout(None));
    }
    parse_timeout(s).map(|d| IdleTimeout(Some(d)))
}

/// Parses a timeout: a duration as [`parse_duration`] reads it, more than zero.
pub fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match duration_secs(s)? {
        0 => Err(format!("timeout {s:?} is zero: give at least 1s")),
        n => Ok(std::time::Duration::from_secs(n)),
    }
}

/// Parses a timeout that may be shorter than a second: milliseconds (`250ms`), or a
/// duration as [`parse_timeout`] reads it; more than zero.
pub fn parse_short_timeout(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a duration such as 250ms, 90s, 30m or 1h30m");
    let d = match t.strip_suffix("ms") {
        Some(ms) if !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()) => {
            std::time::Duration::from_millis(ms.parse().map_err(|_| bad())?)
        }
        _ => std::time::Duration::from_secs(duration_secs(t).map_err(|_| bad())?),
    };
    if d.is_zero() {
        return Err(format!("timeout {s:?} is zero: give at least 1ms"));
    }
    Ok(d)
}

/// Parses permission bits written in octal, such as `600` or `0660`.
pub fn parse_octal_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let m = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{s:?} is not an octal mode such as 600 or 0660"))?;
    if m & !0o777 != 0 {
        return Err(format!("mode {s} has bits outside 777"));
    }
    Ok(m)
}

/// Parses a byte count: digits with an optional K, M, G or T suffix (powers of 1024,
/// `KiB` and `KB` spellings accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4096, 64K or 1G"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown size unit in {s:?}: use K, M, G or T")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a count: digits, optionally with `_` separators (`1_000_000`).
pub fn parse_count(s: &str) -> Result<u64, String> {
    let digits: String = s.trim().chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a count such as 1000000"));
    }
    digits
        .parse()
        .map_err(|_| format!("count {s:?} is too large"))
}

/// Parses a duration: plain seconds (`90`), or numbers each followed by a unit `s`, `m`,
/// `h` or `d`, such as `90s`, `30m`, `1h30m`, `2d`. It must not be zero.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match duration_secs(s)? {
        0 => Err(format!(
            "duration {s:?} is zero: the object would expire at once"
        )),
        n => Ok(std::time::Duration::from_secs(n)),
    }
}

/// A duration in whole seconds, as [`parse_duration`] reads it (zero included).
pub(crate) fn duration_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a duration such as 90, 90s, 30m, 1h30m or 2d");
    if t.is_empty() {
        return Err(bad());
    }
    let secs = if t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>().map_err(|_| bad())?
    } else {
        let mut total: u64 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if split == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..split].parse().map_err(|_| bad())?;
            let unit = match rest.as_bytes()[split] {
                b's' => 1,
                b'm' => 60,
                b'h' => 3600,
                b'd' => 86_400,
                _ => return Err(bad()),
            };
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration {s:?} is too long"))?;
            rest = &rest[split + 1..];
        }
        total
    };
    Ok(secs)
}

/// A duration as [`parse_duration`] reads it back: `10s`, `5m`, `1h30m`, `2d` (whole
/// seconds; `0s` for zero); one with a fraction of a second as [`parse_short_timeout`]
/// reads it back: `250ms`, `1500ms`.
pub fn duration_text(d: std::time::Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// `n` with the largest K/M/G/T suffix that divides it exactly ("256M", "1000").
pub fn size_text(n: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n != 0 && n.trailing_zeros() >= shift {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// The range a `[limits]` number must be in, by key: the server's own bounds.
pub fn limit_range(key: &str) -> (u64, u64) {
    let count = usize::MAX as u64;
    match key {
        "max_pipeline_depth" => (1, u16::MAX.into()),
        "max_key_len" => (1, objmapper_proto::MAX_KEY_LEN as u64),
        "max_meta_len" => (0, objmapper_proto::MAX_META_LEN as u64),
        "max_staged_bytes_per_conn" | "max_staged_bytes_total" => (1, u64::MAX),
        _ => (1, count),
    }
}

/// `n` if it is in the range of the `[limits]` key `key`; else what the range is.
pub fn check_limit(key: &str, n: u64) -> Result<u64, String> {
    let (min, max) = limit_range(key);
    if (min..=max).contains(&n) {
        return Ok(n);
    }
    Err(if max == u64::MAX || max == usize::MAX as u64 {
        format!("{n} is out of range: give at least {min}")
    } else {
        format!("{n} is out of range: give {min} to {max}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal_mode("600"), Ok(0o600));
        assert_eq!(parse_octal_mode("0660"), Ok(0o660));
        assert!(parse_octal_mode("800").is_err());
        assert!(parse_octal_mode("1777").is_err());
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("90"), Ok(90));
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("30m"), Ok(1800));
        assert_eq!(d("1h30m"), Ok(5400));
        assert_eq!(d("2d"), Ok(172_800));
        assert_eq!(d(" 1h "), Ok(3600));
        for bad in [
            "",
            "0",
            "0s",
            "h",
            "1x",
            "1.5h",
            "-1",
            "1h30",
            "99999999999999999999d",
        ] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timeouts() {
        let t = |s| parse_timeout(s).map(|d| d.as_secs());
        assert_eq!(t("10s"), Ok(10));
        assert_eq!(t("90"), Ok(90));
        assert!(t("0s").unwrap_err().contains("zero"));
        assert!(t("0").unwrap_err().contains("zero"));
        assert!(t("soon").is_err());
        assert_eq!(parse_idle_timeout("never"), Ok(IdleTimeout(None)));
        assert_eq!(parse_idle_timeout(" Never "), Ok(IdleTimeout(None)));
        assert_eq!(
            parse_idle_timeout("5m"),
            Ok(IdleTimeout(Some(std::time::Duration::from_secs(300))))
        );
        assert!(parse_idle_timeout("0").is_err());
        for secs in [1, 10, 59, 60, 90, 3600, 5400, 86_400, 90_061] {
            let d = std::time::Duration::from_secs(secs);
            let text = duration_text(d);
            assert_eq!(parse_duration(&text), Ok(d), "{text}");
        }
        assert_eq!(duration_text(std::time::Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration_text(std::time::Duration::from_secs(30)), "30s");
        assert_eq!(duration_text(std::time::Duration::ZERO), "0s");
        // Shorter than a second, or with a fraction: milliseconds, read back as such.
        for (text, ms) in [
            ("250ms", 250),
            ("1500ms", 1500),
            ("2s", 2000),
            ("1m", 60_000),
        ] {
            let d = std::time::Duration::from_millis(ms);
            assert_eq!(parse_short_timeout(text), Ok(d), "{text}");
            assert_eq!(parse_short_timeout(&duration_text(d)), Ok(d), "{text}");
        }
        for bad in ["0ms", "0", "0s"] {
            let e = parse_short_timeout(bad).unwrap_err();
            assert!(e.contains("is zero: give at least 1ms"), "{bad}: {e}");
        }
        for bad in ["ms", "1.5s", "5 ms", "-1ms", "1h30ms"] {
            let e = parse_short_timeout(bad).unwrap_err();
            assert!(e.contains("is not a duration such as 250ms"), "{bad}: {e}");
        }
    }

    #[test]
    fn grant_lists() {
        let g = |s| parse_grants(s).map(|g| g.0.iter().map(|g| g.to_string()).collect::<Vec<_>>());
        assert_eq!(g("33=read"), Ok(vec!["33=read".to_string()]));
        assert_eq!(
            g("33=read 1000=read,write,admin"),
            Ok(vec!["33=read".into(), "1000=read,write,admin".into()])
        );
        assert_eq!(
            g(" 33=read,write,1000=admin\t7=none "),
            Ok(vec![
                "33=read,write".into(),
                "1000=admin".into(),
                "7=none".into()
            ])
        );
        assert_eq!(g("33=read, write"), Ok(vec!["33=read,write".into()]));
        assert!(g("").unwrap_err().contains("ID=PERMS"));
        assert!(g("read").unwrap_err().contains("ID=PERMS"));
        assert!(g("33=fly").unwrap_err().contains("unknown permission"));
        assert!(g("www-data=read").unwrap_err().contains("numeric"));
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("1000000"), Ok(1_000_000));
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        assert!(parse_count("").is_err());
        assert!(parse_count("1k").is_err());
        assert!(parse_count("-3").is_err());
    }

    #[test]
    fn sizes_print_with_the_largest_exact_suffix() {
        assert_eq!(size_text(0), "0");
        assert_eq!(size_text(1000), "1000");
        assert_eq!(size_text(8192), "8K");
        assert_eq!(size_text(256 << 20), "256M");
        assert_eq!(size_text(64 << 30), "64G");
        assert_eq!(size_text((1 << 20) + 1024), "1025K");
    }

    #[test]
    fn limit_ranges_are_the_servers() {
        assert!(check_limit("max_key_len", 0).is_err());
        assert_eq!(
            check_limit("max_key_len", objmapper_proto::MAX_KEY_LEN as u64),
            Ok(4096)
        );
        assert_eq!(
            check_limit("max_key_len", 4097).unwrap_err(),
            "4097 is out of range: give 1 to 4096"
        );
        assert_eq!(check_limit("max_meta_len", 0), Ok(0));
        assert!(check_limit("max_meta_len", 65537).is_err());
        assert_eq!(
            check_limit("max_connections", 0).unwrap_err(),
            "0 is out of range: give at least 1"
        );
        assert!(check_limit("max_pipeline_depth", 65536).is_err());
        assert!(check_limit("max_staged_bytes_total", 0).is_err());
        assert!(check_limit("max_staged_puts", 0).is_err());
    }
}
