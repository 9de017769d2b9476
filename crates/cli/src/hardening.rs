//! The `[access]` and `[limits]` settings of `serve` (SECURITY.md): the peer-credential
//! allowlist and the connection and request limits, as the file writes them
//! ([`AccessSection`], [`LimitsSection`]) and as decided ([`Access`], [`Limits`]), with the
//! server's own defaults (`ServerConfig::new`, `AccessConfig::default`).
//!
//! `allow_uid` and `allow_gid` are lists, and a layer's list replaces the lower layer's
//! whole: `--allow-uid` flags replace `OBJMAPPER_ALLOW_UID`, which replaces the file's
//! `allow_uid`. The daemon's own uid has every permission unless the list in force names
//! it. Every other key is a single value, as in the rest of the configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use objmapper_server::{AccessConfig, Grant, Perms, RuntimeLimits, ServerConfig};
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::args::{duration_text, parse_size, parse_timeout, ServeArgs};
use crate::config::Size;

/// The range a `[limits]` number must be in, by key: the server's own bounds.
fn limit_range(key: &str) -> (u64, u64) {
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

/// `[access]`: who may connect over the Unix socket (by peer uid and primary gid) and
/// what they and TCP peers may do.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// `["33=read", "1000=read,write,admin"]`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "allow_uid",
        serialize_with = "grants_out"
    )]
    pub allow_uid: Option<Vec<Grant>>,
    /// As `allow_uid`, by the peer's primary gid.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "allow_gid",
        serialize_with = "grants_out"
    )]
    pub allow_gid: Option<Vec<Grant>>,
    /// `"read,write"`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "tcp_permissions",
        serialize_with = "perms_out"
    )]
    pub tcp_permissions: Option<Perms>,
}

/// `[limits]`: connections, staged PUTs, request sizes and timeouts. Numbers are
/// checked against their ranges as they are read, so an error names the line.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_connections"
    )]
    pub max_connections: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_pipeline_depth"
    )]
    pub max_pipeline_depth: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_staged_puts"
    )]
    pub max_staged_puts: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_staged_puts_total"
    )]
    pub max_staged_puts_total: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_staged_bytes_per_conn"
    )]
    pub max_staged_bytes_per_conn: Option<Size>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_staged_bytes_total"
    )]
    pub max_staged_bytes_total: Option<Size>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_key_len"
    )]
    pub max_key_len: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "max_meta_len"
    )]
    pub max_meta_len: Option<Size>,
    /// `"10s"`, or whole seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "header_timeout",
        serialize_with = "timeout_out"
    )]
    pub header_timeout: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "frame_timeout",
        serialize_with = "timeout_out"
    )]
    pub frame_timeout: Option<Duration>,
    /// `Some(None)` is `"never"`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "idle_timeout",
        serialize_with = "idle_out"
    )]
    pub idle_timeout: Option<Option<Duration>>,
}

/// The `deserialize_with` function of each `[limits]` key: its value checked against
/// the key's range, in an error that names the key.
macro_rules! limit_keys {
    ($($key:ident: $read:ident -> $ty:ty;)*) => {$(
        fn $key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
            $read(d, stringify!($key)).map(Some)
        }
    )*};
}

limit_keys! {
    max_connections: count -> u64;
    max_pipeline_depth: count -> u64;
    max_staged_puts: count -> u64;
    max_staged_puts_total: count -> u64;
    max_staged_bytes_per_conn: size -> Size;
    max_staged_bytes_total: size -> Size;
    max_key_len: count -> u64;
    max_meta_len: size -> Size;
    header_timeout: timeout -> Duration;
    frame_timeout: timeout -> Duration;
    idle_timeout: idle -> Option<Duration>;
}

fn count<'de, D: Deserializer<'de>>(d: D, key: &'static str) -> Result<u64, D::Error> {
    d.deserialize_any(Number { key, size: false })
}

fn size<'de, D: Deserializer<'de>>(d: D, key: &'static str) -> Result<Size, D::Error> {
    d.deserialize_any(Number { key, size: true }).map(Size)
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

fn timeout<'de, D: Deserializer<'de>>(d: D, key: &'static str) -> Result<Duration, D::Error> {
    d.deserialize_any(TimeoutText { key, never: false })?
        .ok_or_else(|| D::Error::custom(format!("[limits] {key} cannot be never")))
}

fn idle<'de, D: Deserializer<'de>>(d: D, key: &'static str) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(TimeoutText { key, never: true })
}

/// A timeout in the file: a duration string (`"10s"`, `"5m"`, `"1h30m"`) or whole
/// seconds, more than zero; `"never"` too where `never` is set (None).
struct TimeoutText {
    key: &'static str,
    never: bool,
}

impl Visitor<'_> for TimeoutText {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a duration for [limits] {}, such as \"10s\", \"5m\" or \"1h30m\", or whole \
             seconds",
            self.key
        )?;
        if self.never {
            f.write_str(", or \"never\"")?;
        }
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
        if n == 0 {
            return Err(E::custom(format!(
                "[limits] {} = 0: a timeout must be at least 1s",
                self.key
            )));
        }
        Ok(Some(Duration::from_secs(n)))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!(
                "[limits] {} = {n}: a timeout cannot be negative",
                self.key
            ))),
        }
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        if self.never && s.trim().eq_ignore_ascii_case("never") {
            return Ok(None);
        }
        parse_timeout(s)
            .map(Some)
            .map_err(|e| E::custom(format!("[limits] {}: {e}", self.key)))
    }
}

fn allow_uid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Grant>>, D::Error> {
    d.deserialize_seq(GrantList("allow_uid")).map(Some)
}

fn allow_gid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Grant>>, D::Error> {
    d.deserialize_seq(GrantList("allow_gid")).map(Some)
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

fn tcp_permissions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Perms>, D::Error> {
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
    d.deserialize_str(V).map(Some)
}

fn grants_out<S: Serializer>(v: &Option<Vec<Grant>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().flatten().map(|g| g.to_string()))
}

fn perms_out<S: Serializer>(v: &Option<Perms>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&v.unwrap_or_default())
}

fn timeout_out<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&duration_text(v.unwrap_or_default()))
}

fn idle_out<S: Serializer>(v: &Option<Option<Duration>>, s: S) -> Result<S::Ok, S::Error> {
    match v.flatten() {
        Some(d) => s.serialize_str(&duration_text(d)),
        None => s.serialize_str("never"),
    }
}

/// The allowlist, decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// The uid grants of the list in force, one per uid in uid order (a uid listed twice
    /// gets its last entry). The daemon's own uid, unless listed, has every permission
    /// besides these (see [`Access::to_server`]).
    pub allow_uid: Vec<Grant>,
    /// The gid grants, likewise.
    pub allow_gid: Vec<Grant>,
    /// What TCP peers may do.
    pub tcp_permissions: Perms,
}

impl Access {
    /// Flags/environment over the file over the defaults (`AccessConfig::default()`).
    pub fn resolve(a: &ServeArgs, f: &AccessSection) -> Access {
        let flags = |v: &[crate::args::Grants]| -> Option<Vec<Grant>> {
            (!v.is_empty()).then(|| v.iter().flat_map(|g| g.0.iter().copied()).collect())
        };
        let defaults = AccessConfig::default();
        Access {
            allow_uid: one_per_id(
                flags(&a.allow_uid)
                    .or_else(|| f.allow_uid.clone())
                    .unwrap_or_default(),
            ),
            allow_gid: one_per_id(
                flags(&a.allow_gid)
                    .or_else(|| f.allow_gid.clone())
                    .unwrap_or(defaults.gids),
            ),
            tcp_permissions: a
                .tcp_permissions
                .or(f.tcp_permissions)
                .unwrap_or(defaults.tcp),
        }
    }

    /// The server's allowlist: `AccessConfig::default()`'s uid grants (the daemon's own
    /// uid, all permissions), then these, which win where they name the same uid.
    pub fn to_server(&self) -> AccessConfig {
        let mut uids = AccessConfig::default().uids;
        uids.extend(self.allow_uid.iter().copied());
        AccessConfig {
            uids,
            gids: self.allow_gid.clone(),
            tcp: self.tcp_permissions,
        }
    }

    pub fn to_file(&self) -> AccessSection {
        AccessSection {
            allow_uid: Some(self.allow_uid.clone()),
            allow_gid: Some(self.allow_gid.clone()),
            tcp_permissions: Some(self.tcp_permissions),
        }
    }
}

/// `grants` with one entry per id (the last one given), in id order.
fn one_per_id(grants: Vec<Grant>) -> Vec<Grant> {
    let by_id: BTreeMap<u32, Perms> = grants.into_iter().map(|g| (g.id, g.perms)).collect();
    by_id
        .into_iter()
        .map(|(id, perms)| Grant { id, perms })
        .collect()
}

/// The limits, decided (each the `ServerConfig` field of the same name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_pipeline_depth: u16,
    pub max_staged_puts: usize,
    pub max_staged_puts_total: usize,
    pub max_staged_bytes_per_conn: u64,
    pub max_staged_bytes_total: u64,
    pub max_key_len: usize,
    pub max_meta_len: usize,
    pub header_timeout: Duration,
    pub frame_timeout: Duration,
    pub idle_timeout: Option<Duration>,
}

impl Limits {
    /// The server's defaults (`ServerConfig::new`).
    pub fn defaults() -> Limits {
        let c = ServerConfig::new("/", "/");
        Limits {
            max_connections: c.max_connections,
            max_pipeline_depth: c.max_pipeline_depth,
            max_staged_puts: c.max_staged_puts,
            max_staged_puts_total: c.max_staged_puts_total,
            max_staged_bytes_per_conn: c.max_staged_bytes_per_conn,
            max_staged_bytes_total: c.max_staged_bytes_total,
            max_key_len: c.max_key_len,
            max_meta_len: c.max_meta_len,
            header_timeout: c.header_timeout,
            frame_timeout: c.frame_timeout,
            idle_timeout: c.idle_timeout,
        }
    }

    /// Flags/environment over the file over the defaults. Both were checked against
    /// the ranges as they were read.
    pub fn resolve(a: &ServeArgs, f: &LimitsSection) -> Limits {
        let d = Limits::defaults();
        let size = |v: Option<Size>| v.map(|s| s.0);
        // In range, so it fits (a range's top is at most usize::MAX).
        let count = |v: Option<u64>, default: usize| {
            v.map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        Limits {
            max_connections: count(a.max_connections.or(f.max_connections), d.max_connections),
            max_pipeline_depth: a
                .max_pipeline_depth
                .or(f
                    .max_pipeline_depth
                    .map(|n| u16::try_from(n).unwrap_or(u16::MAX)))
                .unwrap_or(d.max_pipeline_depth),
            max_staged_puts: count(a.max_staged_puts.or(f.max_staged_puts), d.max_staged_puts),
            max_staged_puts_total: count(
                a.max_staged_puts_total.or(f.max_staged_puts_total),
                d.max_staged_puts_total,
            ),
            max_staged_bytes_per_conn: a
                .max_staged_bytes_per_conn
                .or(size(f.max_staged_bytes_per_conn))
                .unwrap_or(d.max_staged_bytes_per_conn),
            max_staged_bytes_total: a
                .max_staged_bytes_total
                .or(size(f.max_staged_bytes_total))
                .unwrap_or(d.max_staged_bytes_total),
            max_key_len: count(a.max_key_len.or(f.max_key_len), d.max_key_len),
            max_meta_len: count(a.max_meta_len.or(size(f.max_meta_len)), d.max_meta_len),
            header_timeout: a
                .header_timeout
                .or(f.header_timeout)
                .unwrap_or(d.header_timeout),
            frame_timeout: a
                .frame_timeout
                .or(f.frame_timeout)
                .unwrap_or(d.frame_timeout),
            idle_timeout: match (a.idle_timeout, f.idle_timeout) {
                (Some(i), _) => i.0,
                (None, Some(i)) => i,
                (None, None) => d.idle_timeout,
            },
        }
    }

    /// Sets the server's fields.
    pub fn apply(&self, cfg: &mut ServerConfig) {
        cfg.max_connections = self.max_connections;
        cfg.max_staged_puts_total = self.max_staged_puts_total;
        let r = self.runtime();
        cfg.max_pipeline_depth = r.max_pipeline_depth;
        cfg.max_staged_puts = r.max_staged_puts;
        cfg.max_staged_bytes_per_conn = r.max_staged_bytes_per_conn;
        cfg.max_staged_bytes_total = r.max_staged_bytes_total;
        cfg.max_key_len = r.max_key_len;
        cfg.max_meta_len = r.max_meta_len;
        cfg.header_timeout = r.header_timeout;
        cfg.frame_timeout = r.frame_timeout;
        cfg.idle_timeout = r.idle_timeout;
    }

    /// The ones a running server can change (`Server::set_limits`).
    pub fn runtime(&self) -> RuntimeLimits {
        RuntimeLimits {
            max_pipeline_depth: self.max_pipeline_depth,
            max_staged_puts: self.max_staged_puts,
            max_staged_bytes_per_conn: self.max_staged_bytes_per_conn,
            max_staged_bytes_total: self.max_staged_bytes_total,
            max_key_len: self.max_key_len,
            max_meta_len: self.max_meta_len,
            header_timeout: self.header_timeout,
            frame_timeout: self.frame_timeout,
            idle_timeout: self.idle_timeout,
        }
    }

    /// These limits with `new`'s runtime ones (what a running server has after
    /// `set_limits(&new.runtime())`).
    pub fn with_runtime_of(&self, new: &Limits) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_staged_puts_total: self.max_staged_puts_total,
            ..new.clone()
        }
    }

    pub fn to_file(&self) -> LimitsSection {
        LimitsSection {
            max_connections: Some(self.max_connections as u64),
            max_pipeline_depth: Some(self.max_pipeline_depth.into()),
            max_staged_puts: Some(self.max_staged_puts as u64),
            max_staged_puts_total: Some(self.max_staged_puts_total as u64),
            max_staged_bytes_per_conn: Some(Size(self.max_staged_bytes_per_conn)),
            max_staged_bytes_total: Some(Size(self.max_staged_bytes_total)),
            max_key_len: Some(self.max_key_len as u64),
            max_meta_len: Some(Size(self.max_meta_len as u64)),
            header_timeout: Some(self.header_timeout),
            frame_timeout: Some(self.frame_timeout),
            idle_timeout: Some(self.idle_timeout),
        }
    }
}

/// The `[access]` and `[limits]` keys a running server takes on SIGHUP (the allowlist
/// through `Server::set_access`, the limits through `Server::set_limits`).
pub const RUNTIME_KEYS: &[&str] = &[
    "access.allow_uid",
    "access.allow_gid",
    "access.tcp_permissions",
    "limits.max_pipeline_depth",
    "limits.max_staged_puts",
    "limits.max_staged_bytes_per_conn",
    "limits.max_staged_bytes_total",
    "limits.max_key_len",
    "limits.max_meta_len",
    "limits.header_timeout",
    "limits.frame_timeout",
    "limits.idle_timeout",
];

/// Why a `[limits]` key needs a restart, for the SIGHUP warning.
pub fn restart_reason(key: &str) -> Option<&'static str> {
    match key {
        "limits.max_connections" | "limits.max_staged_puts_total" => {
            Some("it sizes the open-file limit (RLIMIT_NOFILE) at start")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let a = Access {
            allow_uid: vec![Grant {
                id: me.wrapping_add(1),
                perms: Perms::READ,
            }],
            allow_gid: Vec::new(),
            tcp_permissions: Perms::NONE,
        };
        let s = a.to_server();
        assert_eq!(s.perms_of(me, 0), Perms::ALL);
        assert_eq!(s.perms_of(me.wrapping_add(1), 0), Perms::READ);
        let a = Access {
            allow_uid: vec![Grant {
                id: me,
                perms: Perms::READ,
            }],
            ..a
        };
        assert_eq!(a.to_server().perms_of(me, 0), Perms::READ);
    }

    #[test]
    fn runtime_limits_leave_the_restart_only_ones() {
        let old = Limits::defaults();
        let new = Limits {
            max_connections: 5,
            max_staged_puts_total: 6,
            max_key_len: 7,
            idle_timeout: Some(Duration::from_secs(8)),
            ..Limits::defaults()
        };
        let after = old.with_runtime_of(&new);
        assert_eq!(after.max_connections, old.max_connections);
        assert_eq!(after.max_staged_puts_total, old.max_staged_puts_total);
        assert_eq!(after.max_key_len, 7);
        assert_eq!(after.runtime(), new.runtime());
    }
}
