//! The `[access]` and `[limits]` settings of `serve` (SECURITY.md) as the config file
//! writes them: each `[limits]` number checked against its key's range as it is read,
//! timeouts, and the allowlists, so an error names the key and points at the line; and
//! the allowlist as the server takes it.
//!
//! `allow_uid` and `allow_gid` are lists, and a layer's list replaces the lower layer's
//! whole: `--allow-uid` flags replace `OBJMAPPER_ALLOW_UID`, which replaces the file's
//! `allow_uid`. The daemon's own uid has every permission unless the list in force names
//! it. Every other key is a single value, as in the rest of the configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use objmapper_server::{AccessConfig, Grant, Perms};
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde::Deserializer;

use crate::parse::{check_limit, limit_range, parse_short_timeout, parse_size, parse_timeout};

/// The server's allowlist from the one in force: `AccessConfig::default()`'s uid grants
/// (the daemon's own uid, all permissions), then `allow_uid`, which wins where it names
/// the same uid.
pub fn access_config(allow_uid: &[Grant], allow_gid: &[Grant], tcp: Perms) -> AccessConfig {
    let mut uids = AccessConfig::default().uids;
    uids.extend(allow_uid.iter().copied());
    AccessConfig {
        uids,
        gids: allow_gid.to_vec(),
        tcp,
    }
}

/// `grants` with one entry per id (the last one given), in id order.
pub fn one_per_id(grants: Vec<Grant>) -> Vec<Grant> {
    let by_id: BTreeMap<u32, Perms> = grants.into_iter().map(|g| (g.id, g.perms)).collect();
    by_id
        .into_iter()
        .map(|(id, perms)| Grant { id, perms })
        .collect()
}

pub fn count<'de, D: Deserializer<'de>>(d: D, key: &'static str) -> Result<u64, D::Error> {
    d.deserialize_any(Number { key, size: false })
}

pub fn size<'de, D: Deserializer<'de>>(d: D, key: &'static str) -> Result<u64, D::Error> {
    d.deserialize_any(Number { key, size: true })
}

/// A `[limits]` number in the file, in its key's range: an integer, or for a size also
/// a string such as "64K" or "1G".
struct Number {
    key: &'static str,
    size: bool,
}

impl Visitor<'_> for Number {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.size {
            true => write!(
                f,
                "a size for [limits] {}: an integer, or a string such as \"64K\" or \"1G\"",
                self.key
            ),
            false => write!(f, "an integer for [limits] {}", self.key),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u64, E> {
        check_limit(self.key, n).map_err(|e| E::custom(format!("[limits] {} = {e}", self.key)))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u64, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => {
                let (min, _) = limit_range(self.key);
                Err(E::custom(format!(
                    "[limits] {} = {n} is out of range: give at least {min}",
                    self.key
                )))
            }
        }
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<u64, E> {
        if !self.size {
            return Err(E::invalid_type(serde::de::Unexpected::Str(s), &self));
        }
        let n = parse_size(s).map_err(|e| E::custom(format!("[limits] {}: {e}", self.key)))?;
        self.visit_u64(n)
    }
}

/// A timeout of the key `key` in the table `section` (named in errors).
pub fn timeout<'de, D: Deserializer<'de>>(
    d: D,
    section: &'static str,
    key: &'static str,
) -> Result<Duration, D::Error> {
    some_timeout(d, section, key, false)
}

/// A timeout that may be shorter than a second (`"250ms"`), of the key `key` in the
/// table `section`.
pub fn short_timeout<'de, D: Deserializer<'de>>(
    d: D,
    section: &'static str,
    key: &'static str,
) -> Result<Duration, D::Error> {
    some_timeout(d, section, key, true)
}

/// A timeout that cannot be never; `short`: milliseconds allowed.
fn some_timeout<'de, D: Deserializer<'de>>(
    d: D,
    section: &'static str,
    key: &'static str,
    short: bool,
) -> Result<Duration, D::Error> {
    d.deserialize_any(TimeoutText {
        section,
        key,
        never: false,
        short,
    })?
    .ok_or_else(|| D::Error::custom(format!("[{section}] {key} cannot be never")))
}

/// A timeout or `"never"`, of the key `key` in the table `section`.
pub fn idle<'de, D: Deserializer<'de>>(
    d: D,
    section: &'static str,
    key: &'static str,
) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(TimeoutText {
        section,
        key,
        never: true,
        short: false,
    })
}

/// A timeout in the file: a duration string (`"10s"`, `"5m"`, `"1h30m"`) or whole
/// seconds, more than zero; `"never"` too where `never` is set (None), milliseconds
/// (`"250ms"`) too where `short` is. Errors name `[section] key`.
struct TimeoutText {
    section: &'static str,
    key: &'static str,
    never: bool,
    short: bool,
}

impl Visitor<'_> for TimeoutText {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = if self.short { "\"250ms\", " } else { "" };
        write!(
            f,
            "a duration for [{}] {}, such as {ms}\"10s\", \"5m\" or \"1h30m\", or whole \
             seconds",
            self.section, self.key
        )?;
        if self.never {
            f.write_str(", or \"never\"")?;
        }
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
        if n == 0 {
            return Err(E::custom(format!(
                "[{}] {} = 0: a timeout must be at least 1s",
                self.section, self.key
            )));
        }
        Ok(Some(Duration::from_secs(n)))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!(
                "[{}] {} = {n}: a timeout cannot be negative",
                self.section, self.key
            ))),
        }
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        if self.never && s.trim().eq_ignore_ascii_case("never") {
            return Ok(None);
        }
        let parse = if self.short {
            parse_short_timeout
        } else {
            parse_timeout
        };
        parse(s)
            .map(Some)
            .map_err(|e| E::custom(format!("[{}] {}: {e}", self.section, self.key)))
    }
}

/// An allowlist (`allow_uid`, `allow_gid`) in the file.
pub fn grants<'de, D: Deserializer<'de>>(d: D, key: &'static str) -> Result<Vec<Grant>, D::Error> {
    d.deserialize_seq(GrantList(key))
}

/// An allowlist in the file: a list of `"ID=PERMS"` strings. Each entry is read by
/// [`GrantText`], so an error points at the entry.
struct GrantList(&'static str);

impl<'de> Visitor<'de> for GrantList {
    type Value = Vec<Grant>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a list of \"ID=PERMS\" strings for [access] {}, such as [\"33=read\", \
             \"1000=read,write\"]",
            self.0
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Grant>, A::Error> {
        let mut out = Vec::new();
        while let Some(g) = seq.next_element_seed(GrantText(self.0))? {
            out.push(g);
        }
        Ok(out)
    }
}

/// One `"ID=PERMS"` entry of the list named `.0`.
struct GrantText(&'static str);

impl<'de> DeserializeSeed<'de> for GrantText {
    type Value = Grant;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Grant, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for GrantText {
    type Value = Grant;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an \"ID=PERMS\" string such as \"33=read\" or \"1000=read,write,admin\"")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Grant, E> {
        s.parse().map_err(|e: String| {
            let quoted = format!("{s:?}");
            if e.starts_with(&quoted) {
                E::custom(format!("[access] {}: {e}", self.0))
            } else {
                E::custom(format!("[access] {}: {quoted}: {e}", self.0))
            }
        })
    }
}

pub fn tcp_permissions<'de, D: Deserializer<'de>>(d: D) -> Result<Perms, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Perms;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(
                "permissions for [access] tcp_permissions, such as \"read,write\", \"all\" \
                 or \"none\"",
            )
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Perms, E> {
            s.parse()
                .map_err(|e| E::custom(format!("[access] tcp_permissions: {e}")))
        }
    }
    d.deserialize_str(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_id_the_last_one() {
        let g = |s: &str| s.parse::<Grant>().unwrap();
        assert_eq!(
            one_per_id(vec![g("1000=read"), g("33=write"), g("1000=admin")]),
            vec![g("33=write"), g("1000=admin")]
        );
    }

    #[test]
    fn the_own_uid_keeps_all_unless_the_list_names_it() {
        let me = rustix::process::geteuid().as_raw();
        let other = [Grant {
            id: me.wrapping_add(1),
            perms: Perms::READ,
        }];
        let s = access_config(&other, &[], Perms::NONE);
        assert_eq!(s.perms_of(me, 0), Perms::ALL);
        assert_eq!(s.perms_of(me.wrapping_add(1), 0), Perms::READ);
        let mine = [Grant {
            id: me,
            perms: Perms::READ,
        }];
        assert_eq!(
            access_config(&mine, &[], Perms::NONE).perms_of(me, 0),
            Perms::READ
        );
    }
}
