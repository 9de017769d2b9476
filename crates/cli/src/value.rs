//! A setting's value, whatever its type ([`Value`]), and its [`Kind`]: how it reads from
//! a flag or variable (a clap value parser), how it reads from the config file (a serde
//! seed, so an error names the key and points at the line), and how it prints back
//! (`--print-config`, the help's `[default: ...]`, the SIGHUP log lines).

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PathBufValueParser, StringValueParser, TypedValueParser, ValueParser};
use clap::{Arg, ArgAction, ArgMatches};
use objmapper_server::{Grant, Perms};
use serde::de::{DeserializeSeed, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hardening;
use crate::parse::{
    check_limit, duration_text, parse_count, parse_grants, parse_idle_timeout, parse_octal_mode,
    parse_short_timeout, parse_size, parse_timeout, size_text,
};

/// How `serve` writes its log.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line (for log collectors).
    Json,
}

/// One setting's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(u64),
    Float(f64),
    Text(String),
    Path(PathBuf),
    /// Permission bits, printed in octal.
    Mode(u32),
    /// A byte count, printed with the largest exact K/M/G/T suffix.
    Size(u64),
    Duration(Duration),
    /// A timeout or never (None).
    Idle(Option<Duration>),
    Grants(Vec<Grant>),
    Perms(Perms),
    Format(LogFormat),
}

impl Value {
    /// The value as the flags and the file write it ("8K", "600", "never", "read,write").
    pub fn text(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Text(t) => t.clone(),
            Value::Path(p) => p.display().to_string(),
            Value::Mode(m) => format!("{m:o}"),
            Value::Size(n) => size_text(*n),
            Value::Duration(d) => duration_text(*d),
            Value::Idle(None) => "never".into(),
            Value::Idle(Some(d)) => duration_text(*d),
            Value::Grants(g) => {
                let v: Vec<String> = g.iter().map(|g| g.to_string()).collect();
                v.join(" ")
            }
            Value::Perms(p) => p.to_string(),
            Value::Format(LogFormat::Human) => "human".into(),
            Value::Format(LogFormat::Json) => "json".into(),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(n) => s.serialize_u64(*n),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Path(p) => p.serialize(s),
            Value::Grants(g) => s.collect_seq(g.iter().map(|g| g.to_string())),
            Value::Format(f) => f.serialize(s),
            v => s.serialize_str(&v.text()),
        }
    }
}

/// What a setting's values are: how a flag reads one, how the file reads one, and the
/// checks either applies.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A path.
    Path,
    /// A string.
    Text,
    /// `ADDR:PORT`; the flag without a value means this address.
    Addr(&'static str),
    /// Octal permission bits; in the file a string ("660"), never an integer.
    Octal,
    /// A flag that turns the setting (a bool, true by default) off: `--no-admin`.
    Disable,
    /// An integer of `bits` bits. The flag takes `min..=max`; the file's value is checked
    /// against it when the file is merged if `file_checked`.
    Int {
        bits: u8,
        min: u64,
        max: u64,
        file_checked: bool,
    },
    /// A count (`1_000_000` allowed on the flag); an integer in the file.
    Count,
    /// A count in `min..=max`, on the flag and in the file.
    CountIn { min: u64, max: u64 },
    /// A byte count: an integer, or digits with K, M, G or T.
    Size,
    /// A byte count in `min..=max`, on the flag and in the file.
    SizeIn { min: u64, max: u64 },
    /// A fraction in `min..=max` (file only).
    Ratio { min: f64, max: f64 },
    /// A bool (file only).
    Bool,
    /// A `[limits]` number (a size if `size`), in its key's range on both sides.
    Limit { size: bool },
    /// The deepest V2 pipeline: a u16 of at least 1 on the flag, a `[limits]` number in
    /// the file.
    Depth,
    /// A timeout of at least 1s, in whole seconds.
    Timeout,
    /// A timeout of at least 1ms: `250ms` too, for bounds a request of a cache
    /// wants below a second.
    ShortTimeout,
    /// A timeout, or never.
    Idle,
    /// An allowlist of `ID=PERMS`; each flag adds to the flags' list.
    Grants,
    /// Permissions: `read,write`, `all`, `none`.
    Perms,
    /// The log format.
    Format,
    /// A string that `.0` checks when the layers are merged, so a bad one is a
    /// configuration error (exit 78) whichever layer gave it; `.0` says why it is bad.
    Checked(fn(&str) -> Result<(), String>),
}

impl Kind {
    /// The clap argument for a setting of this kind; `id` is the setting's name and the
    /// file key `key` names it in range errors.
    pub fn arg(self, id: &'static str, key: &'static str) -> Arg {
        let arg = Arg::new(id).action(ArgAction::Set);
        let parser: ValueParser = match self {
            Kind::Path => PathBufValueParser::new().map(Value::Path).into(),
            Kind::Text | Kind::Checked(_) => StringValueParser::new().map(Value::Text).into(),
            Kind::Addr(missing) => {
                return arg
                    .value_parser(StringValueParser::new().map(Value::Text))
                    .num_args(0..=1)
                    .default_missing_value(missing)
            }
            Kind::Octal => parse_octal_mode.map(Value::Mode).into(),
            Kind::Disable => {
                return arg
                    .action(ArgAction::SetTrue)
                    .value_parser(clap::value_parser!(bool))
            }
            Kind::Int { bits, min, max, .. } => int_parser(bits, min, max),
            Kind::Count => parse_count.map(Value::Int).into(),
            Kind::CountIn { min, max } => (move |s: &str| {
                let n = parse_count(s)?;
                if (min..=max).contains(&n) {
                    Ok(n)
                } else {
                    Err(format!(
                        "{s} is out of range: give {}",
                        count_range(min, max)
                    ))
                }
            })
            .map(Value::Int)
            .into(),
            Kind::Size => parse_size.map(Value::Size).into(),
            Kind::SizeIn { min, max } => (move |s: &str| {
                let n = parse_size(s)?;
                if (min..=max).contains(&n) {
                    Ok(n)
                } else {
                    Err(format!(
                        "{s} is not in {} to {}",
                        size_text(min),
                        size_text(max)
                    ))
                }
            })
            .map(Value::Size)
            .into(),
            Kind::Limit { size } => {
                let read = if size { parse_size } else { parse_count };
                let wrap = if size { Value::Size } else { Value::Int };
                (move |s: &str| read(s).and_then(|n| check_limit(key, n)))
                    .map(wrap)
                    .into()
            }
            Kind::Depth => clap::value_parser!(u16)
                .range(1..)
                .map(|n| Value::Int(n.into()))
                .into(),
            Kind::Timeout => parse_timeout.map(Value::Duration).into(),
            Kind::ShortTimeout => parse_short_timeout.map(Value::Duration).into(),
            Kind::Idle => parse_idle_timeout.map(|i| Value::Idle(i.0)).into(),
            Kind::Grants => {
                return arg
                    .action(ArgAction::Append)
                    .value_parser(parse_grants.map(|g| Value::Grants(g.0)))
            }
            Kind::Perms => (|s: &str| s.parse::<Perms>()).map(Value::Perms).into(),
            Kind::Format => clap::value_parser!(LogFormat).map(Value::Format).into(),
            Kind::Ratio { .. } | Kind::Bool => clap::value_parser!(bool),
        };
        arg.value_parser(parser)
    }

    /// What the user gave for the argument `id` (flag or variable), if anything.
    pub fn given(self, m: &ArgMatches, id: &str) -> Option<Value> {
        match self {
            Kind::Disable => m.get_flag(id).then_some(Value::Bool(false)),
            Kind::Grants => {
                let all: Vec<Grant> = m
                    .get_many::<Value>(id)?
                    .flat_map(|v| match v {
                        Value::Grants(g) => g.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                Some(Value::Grants(all))
            }
            _ => m.get_one::<Value>(id).cloned(),
        }
    }

    /// The range a value read from the file must be in, checked when the file is merged
    /// (the flag's parser checks its own): `(value, range)` text for the error when it is
    /// out of range.
    pub fn out_of_range(self, v: &Value) -> Option<(String, String)> {
        match (self, v) {
            (
                Kind::Int {
                    min,
                    max,
                    file_checked: true,
                    ..
                },
                Value::Int(n),
            ) if !(min..=max).contains(n) => Some((n.to_string(), format!("{min} to {max}"))),
            (Kind::CountIn { min, max }, Value::Int(n)) if !(min..=max).contains(n) => {
                Some((n.to_string(), count_range(min, max)))
            }
            (Kind::SizeIn { min, max }, Value::Size(n)) if !(min..=max).contains(n) => Some((
                size_text(*n),
                format!("{} to {}", size_text(min), size_text(max)),
            )),
            (Kind::Ratio { min, max }, Value::Float(f)) if !(min..=max).contains(f) => {
                Some((f.to_string(), format!("{min:?} to {max:?}")))
            }
            _ => None,
        }
    }
}

impl Kind {
    /// Whether `v` is a valid value, whichever layer gave it; else why not.
    pub fn check(self, v: &Value) -> Result<(), String> {
        match (self, v) {
            (Kind::Checked(check), Value::Text(t)) => check(t),
            _ => Ok(()),
        }
    }
}

/// The range of a [`Kind::CountIn`], as its errors give it: `1 to 64`, or `at least 1`
/// when it has no upper bound.
fn count_range(min: u64, max: u64) -> String {
    if max == u64::MAX {
        format!("at least {min}")
    } else {
        format!("{min} to {max}")
    }
}

fn int_parser(bits: u8, min: u64, max: u64) -> ValueParser {
    let (lo, hi) = (min as i64, max.min(i64::MAX as u64) as i64);
    match bits {
        8 => clap::value_parser!(u8)
            .range(lo..=hi)
            .map(|n| Value::Int(n.into()))
            .into(),
        16 => clap::value_parser!(u16)
            .range(lo..=hi)
            .map(|n| Value::Int(n.into()))
            .into(),
        32 => clap::value_parser!(u32)
            .range(lo..=hi)
            .map(|n| Value::Int(n.into()))
            .into(),
        _ => clap::value_parser!(u64)
            .range(min..=max)
            .map(Value::Int)
            .into(),
    }
}

/// Reads one setting's value from the config file: a seed for serde, so that an error
/// carries the position of the value (or of the element in a list) that caused it.
pub struct FileValue {
    pub kind: Kind,
    /// The file section the key is in, for messages.
    pub section: &'static str,
    /// The file key, for messages.
    pub key: &'static str,
}

impl<'de> DeserializeSeed<'de> for FileValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        let (section, key) = (self.section, self.key);
        Ok(match self.kind {
            Kind::Path => Value::Path(PathBuf::deserialize(d)?),
            Kind::Text | Kind::Addr(_) | Kind::Checked(_) => Value::Text(String::deserialize(d)?),
            Kind::Octal => Value::Mode(d.deserialize_str(OctalText)?),
            Kind::Disable | Kind::Bool => Value::Bool(bool::deserialize(d)?),
            Kind::Int { bits: 8, .. } => Value::Int(u8::deserialize(d)?.into()),
            Kind::Int { bits: 16, .. } => Value::Int(u16::deserialize(d)?.into()),
            Kind::Int { bits: 32, .. } => Value::Int(u32::deserialize(d)?.into()),
            Kind::Int { .. } | Kind::Count | Kind::CountIn { .. } => {
                Value::Int(u64::deserialize(d)?)
            }
            Kind::Size | Kind::SizeIn { .. } => Value::Size(d.deserialize_any(SizeText)?),
            Kind::Ratio { .. } => Value::Float(f64::deserialize(d)?),
            Kind::Limit { size: true } => Value::Size(hardening::size(d, key)?),
            Kind::Limit { size: false } | Kind::Depth => Value::Int(hardening::count(d, key)?),
            Kind::Timeout => Value::Duration(hardening::timeout(d, section, key)?),
            Kind::ShortTimeout => Value::Duration(hardening::short_timeout(d, section, key)?),
            Kind::Idle => Value::Idle(hardening::idle(d, section, key)?),
            Kind::Grants => Value::Grants(hardening::grants(d, key)?),
            Kind::Perms => Value::Perms(hardening::tcp_permissions(d)?),
            Kind::Format => Value::Format(LogFormat::deserialize(d)?),
        })
    }
}

/// A byte count in the file: an integer, or a string with a K/M/G/T suffix ("256M").
struct SizeText;

impl Visitor<'_> for SizeText {
    type Value = u64;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a size: an integer, or a string such as \"64K\" or \"1G\"")
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("size {v} is negative")))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
        parse_size(v).map_err(E::custom)
    }
}

/// Permission bits in the file: a string of octal digits ("660"). A TOML integer is
/// refused, since 660 and 0o660 are different numbers.
struct OctalText;

impl Visitor<'_> for OctalText {
    type Value = u32;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("octal permission bits as a string, such as \"660\"")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u32, E> {
        parse_octal_mode(v).map_err(E::custom)
    }
}
