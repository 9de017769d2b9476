//! The config file as written: [`FileConfig`], read and printed from the table of
//! settings (each setting's section, key and kind). Reading refuses unknown keys and
//! sections, and every error names the file, the line and the key.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::defs::{Def, Values};
use crate::settings::SETTINGS;
use crate::value::FileValue;
use crate::UsageError;

/// A config file as written: the settings it gives, by name. Every key is optional;
/// unknown keys and sections are refused.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileConfig {
    pub values: Values,
}

/// What is under the table at `path` ("" for the top, "eviction", "server"): sub-tables
/// by name, and settings by key, in the table's order.
fn children(path: &str) -> Vec<(&'static str, Option<&'static Def>)> {
    let mut out: Vec<(&'static str, Option<&'static Def>)> = Vec::new();
    for d in SETTINGS {
        let child = if d.section == path {
            (d.key, Some(d))
        } else {
            let rest = match path {
                "" => Some(d.section),
                p => d.section.strip_prefix(p).and_then(|r| r.strip_prefix('.')),
            };
            match rest {
                Some(r) => (r.split('.').next().unwrap_or(r), None),
                None => continue,
            }
        };
        if !out.iter().any(|(n, _)| *n == child.0) {
            out.push(child);
        }
    }
    out
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The table at `path` in the file, read into `out`.
struct Table<'a> {
    path: String,
    out: &'a mut Values,
}

impl<'de> DeserializeSeed<'de> for Table<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Table<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The names serde gave these tables when they were structs, kept so that the
        // messages stay the same.
        f.write_str(match self.path.as_str() {
            "" => "struct FileConfig",
            "server" => "struct ServerSection",
            "access" => "struct AccessSection",
            "limits" => "struct LimitsSection",
            "store" => "struct StoreSection",
            "eviction" => "struct EvictionSection",
            "admin" => "struct AdminSection",
            "log" => "struct LogSection",
            p if p.starts_with("eviction.") => "struct KnobsFile",
            _ => "a table",
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let known = children(&self.path);
        while let Some((name, def)) = map.next_key_seed(Key(&self.path, &known))? {
            match def {
                Some(def) => {
                    let v = map.next_value_seed(FileValue {
                        kind: def.kind,
                        section: def.section,
                        key: def.key,
                    })?;
                    self.out.insert(def.name, v);
                }
                None => map.next_value_seed(Table {
                    path: join(&self.path, name),
                    out: &mut *self.out,
                })?,
            }
        }
        Ok(())
    }
}

/// Settings that were removed, by section and key, and what replaced them: a file that
/// still sets one is refused with this message rather than read as if it did not.
pub(crate) const REMOVED: &[(&str, &str, &str)] = &[(
    "server",
    "share_fds",
    "was removed: the server no longer shares file descriptions by a switch. A client \
     that reads passed fds only positionally (pread, sendfile with an offset, mmap) asks \
     for shared descriptions with the POSITIONAL_READS capability in its HELLO \
     (docs/PROTOCOL.md, \"Shared descriptions\"); delete this line",
)];

/// The message for a removed setting `key` of table `path`, if it is one.
pub(crate) fn removed(path: &str, key: &str) -> Option<&'static str> {
    REMOVED
        .iter()
        .find(|(s, k, _)| *s == path && *k == key)
        .map(|(_, _, why)| *why)
}

/// A key of table `.0`: one of `.1`, else an "unknown field" error at the key (or the
/// note of a [`REMOVED`] setting).
struct Key<'a>(&'a str, &'a [(&'static str, Option<&'static Def>)]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = (&'static str, Option<&'static Def>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Key<'_> {
    type Value = (&'static str, Option<&'static Def>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if let Some(c) = self.1.iter().find(|(n, _)| *n == v) {
            return Ok(*c);
        }
        if let Some(why) = removed(self.0, v) {
            return Err(E::custom(format_args!("[{}] {v} {why}", self.0)));
        }
        // serde's own message ("unknown field `x`, expected one of ..."); it wants a
        // static list, and this runs once per bad file.
        let names: Vec<&'static str> = self.1.iter().map(|(n, _)| *n).collect();
        Err(E::unknown_field(v, Box::leak(names.into_boxed_slice())))
    }
}

impl<'de> Deserialize<'de> for FileConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut values = Values::new();
        Table {
            path: String::new(),
            out: &mut values,
        }
        .deserialize(d)?;
        Ok(FileConfig { values })
    }
}

/// The table at `path` of a file being printed: its settings and sub-tables in the
/// table's order, leaving out what has no value.
struct Printed<'a> {
    path: String,
    values: &'a Values,
}

impl Printed<'_> {
    fn is_empty(&self) -> bool {
        !SETTINGS.iter().any(|d| {
            self.values.contains_key(d.name)
                && (self.path.is_empty()
                    || d.section == self.path
                    || d.section.starts_with(&format!("{}.", self.path)))
        })
    }
}

impl Serialize for Printed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (name, def) in children(&self.path) {
            match def {
                Some(d) => {
                    if let Some(v) = self.values.get(d.name) {
                        map.serialize_entry(name, v)?;
                    }
                }
                None => {
                    let sub = Printed {
                        path: join(&self.path, name),
                        values: self.values,
                    };
                    if !sub.is_empty() {
                        map.serialize_entry(name, &sub)?;
                    }
                }
            }
        }
        map.end()
    }
}

impl Serialize for FileConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Printed {
            path: String::new(),
            values: &self.values,
        }
        .serialize(s)
    }
}

/// Reads and parses a config file. Errors name the file, and the line and key for
/// anything inside it.
pub fn load_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_file(path, &text)
}

/// Parses config file text; `path` is for messages.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| {
            let before = &text[..s.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(", line {line}, column {col}")
        });
        UsageError(format!(
            "config file {}{}: {}",
            path.display(),
            at.unwrap_or_default(),
            e.message().trim_end()
        ))
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_setting_is_refused_with_what_replaced_it() {
        let e = parse_file(
            Path::new("/etc/o.toml"),
            "[server]\nworkers = 2\nshare_fds = true\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/etc/o.toml, line 3"), "{e}");
        assert!(e.contains("[server] share_fds was removed"), "{e}");
        assert!(e.contains("POSITIONAL_READS"), "{e}");
        // Only where it was: elsewhere it is an unknown key like any other.
        let e = parse_file(Path::new("f"), "[store]\nshare_fds = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `share_fds`"), "{e}");
    }

    #[test]
    fn bad_access_and_limits_values_name_the_key_and_line() {
        let err = |text: &str| {
            parse_file(Path::new("/etc/o.toml"), text)
                .unwrap_err()
                .to_string()
        };
        let cases = [
            (
                "[access]\nallow_uid = [\n  \"33=read\",\n  \"33=fly\",\n]\n",
                "line 4, column 3: [access] allow_uid: \"33=fly\": unknown permission \"fly\"",
            ),
            (
                "[access]\nallow_gid = [\"www-data=read\"]\n",
                "line 2, column 14: [access] allow_gid: \"www-data=read\": \"www-data\" is not",
            ),
            (
                "[access]\nallow_uid = { 33 = \"read\" }\n",
                "line 2, column 13: invalid type: map, expected a list of \"ID=PERMS\" strings for \
                 [access] allow_uid",
            ),
            (
                "[access]\ntcp_permissions = \"rw\"\n",
                "line 2, column 19: [access] tcp_permissions: unknown permission \"rw\"",
            ),
            (
                "[limits]\nmax_connections = 0\n",
                "line 2, column 19: [limits] max_connections = 0 is out of range: give at least 1",
            ),
            (
                "[limits]\nmax_staged_puts = -3\n",
                "line 2, column 19: [limits] max_staged_puts = -3 is out of range",
            ),
            (
                "[limits]\nmax_key_len = 4097\n",
                "[limits] max_key_len = 4097 is out of range: give 1 to 4096",
            ),
            (
                "[limits]\nmax_meta_len = \"65537\"\n",
                "[limits] max_meta_len = 65537 is out of range: give 0 to 65536",
            ),
            (
                "[limits]\nmax_pipeline_depth = 70000\n",
                "[limits] max_pipeline_depth = 70000 is out of range: give 1 to 65535",
            ),
            (
                "[limits]\nmax_staged_bytes_per_conn = \"1Q\"\n",
                "[limits] max_staged_bytes_per_conn: unknown size unit",
            ),
            (
                "[limits]\nheader_timeout = \"0s\"\n",
                "line 2, column 18: [limits] header_timeout: timeout \"0s\" is zero",
            ),
            (
                "[limits]\nframe_timeout = 0\n",
                "[limits] frame_timeout = 0: a timeout must be at least 1s",
            ),
            (
                "[limits]\nidle_timeout = \"soon\"\n",
                "[limits] idle_timeout: \"soon\" is not a duration",
            ),
            (
                "[limits]\nheader_timeout = \"never\"\n",
                "[limits] header_timeout: \"never\" is not a duration",
            ),
            (
                "[limits]\nidle_timeout = -1\n",
                "[limits] idle_timeout = -1: a timeout cannot be negative",
            ),
            (
                "[limits]\nmax_key_len = 10\nmax_key_length = 10\n",
                "line 3, column 1: unknown field `max_key_length`",
            ),
            ("[access]\nallow = []\n", "line 2, column 1: unknown field `allow`"),
            (
                "[limits]\nframe_timeout = true\n",
                "line 2, column 17: invalid type: boolean `true`, expected a duration for \
                 [limits] frame_timeout",
            ),
            (
                "[limits]\nmax_key_len = \"4K\"\n",
                "invalid type: string \"4K\", expected an integer for [limits] max_key_len",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.starts_with("config file /etc/o.toml, line "), "{e}");
            assert!(e.contains(want), "{text:?}:\n{e}\nwants {want:?}");
        }
    }
}
