//! What a `serve` setting is ([`Def`]) and how its table is declared ([`settings_table!`]).
//! The table itself is `crate::settings::SETTINGS`: one entry per setting gives its name,
//! config file section and key, flag, environment variable, help, default (taken from
//! the server crate: `ServerConfig::default()`, `RuntimeConfig::defaults()`), how its
//! values read and print ([`Kind`]), and how a running server takes a change
//! ([`Reload`]). The same entry also declares the field of `Settings` that holds the
//! decided value.
//!
//! Everything else is derived from the table: the `serve` flags (`ServeArgs`), the config
//! file's keys and their errors, `--print-config`, the SIGHUP diff and where each change
//! goes. Adding a setting is one entry here plus its use (usually one line in
//! `Settings::server_config`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use objmapper_server::{Grant, Perms, RuntimeConfig, RuntimeConfigPatch, ServerConfig};

use crate::value::{Kind, LogFormat, Value};

/// Values by setting name: what one layer (flags, file) gave, or every setting decided.
pub type Values = BTreeMap<&'static str, Value>;

/// The defaults the table draws on: the server crate's.
pub struct Defaults {
    pub server: ServerConfig,
    pub runtime: RuntimeConfig,
}

impl Defaults {
    pub fn get() -> Defaults {
        Defaults {
            server: ServerConfig::default(),
            runtime: RuntimeConfig::defaults(),
        }
    }
}

/// A setting's default: from the server's defaults and the settings before it in the
/// table (already decided); `Ok(None)` when it has none (off, unset); `Err` when it
/// cannot be chosen (the message says what to set).
pub type DefaultFn = fn(&Defaults, &Values) -> Result<Option<Value>, String>;

/// How a running server takes a change to a setting (SIGHUP, `objmapper reload`).
#[derive(Clone, Copy, Debug)]
pub enum Reload {
    /// Only at start; the optional text says why, in the warning.
    Restart(Option<&'static str>),
    /// The log filter (`LogHandle::set_level`).
    Log,
    /// The allowlist (`Server::set_access`), for new connections and open ones at their
    /// next request.
    Access,
    /// A runtime limit (`Server::set_limits`).
    Limits,
    /// A store setting (`Server::set_runtime_config`): `patch` puts the setting's new
    /// value into the patch. `at_start`: not part of the store's startup config, so a value other
    /// than the default is applied this way right after start. `zero_toggles`: a change
    /// from or to 0 switches a tier on or off, which needs a restart.
    Store {
        patch: fn(&mut RuntimeConfigPatch, &Value),
        at_start: bool,
        zero_toggles: bool,
    },
    /// The TCP listener's TLS files and token (`Server::reload_tcp_security`), re-read on
    /// every reload even when their paths did not change.
    TcpSecurity,
}

impl Reload {
    /// Whether a change from `old` to `new` (None: unset) applies without a restart.
    pub fn applies(self, old: Option<&Value>, new: Option<&Value>) -> bool {
        let zero = |v: Option<&Value>| matches!(v, Some(Value::Size(0) | Value::Int(0)));
        match self {
            Reload::Restart(_) => false,
            Reload::Store {
                zero_toggles: true, ..
            } => !zero(old) && !zero(new),
            _ => true,
        }
    }
}

/// One setting.
#[derive(Debug)]
pub struct Def {
    /// Its name: the field of `Settings`, and the clap argument's id.
    pub name: &'static str,
    /// Its config file section: `server`, `store`, `eviction.memory`, ...
    pub section: &'static str,
    /// Its key in that section.
    pub key: &'static str,
    /// Its long flag, without `--` (None: file only).
    pub flag: Option<&'static str>,
    /// Its environment variable (None: file only).
    pub env: Option<&'static str>,
    /// The flag's value name in the help.
    pub value_name: &'static str,
    /// What its values are.
    pub kind: Kind,
    /// Its default.
    pub default: DefaultFn,
    /// An environment variable read after the flag's own and before the file (RUST_LOG).
    pub fallback_env: Option<&'static str>,
    /// Flags (by setting name) it cannot be given with.
    pub conflicts: &'static [&'static str],
    /// How a running server takes a change.
    pub reload: Reload,
    /// The flag's help; `{default}` stands for the default's text.
    pub help: &'static str,
}

impl Def {
    /// `section.key`, as the SIGHUP log and `config::diff` name it.
    pub fn file_key(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }

    /// The flag's help, with the default filled in.
    pub fn help_text(&self, d: &Defaults) -> String {
        if !self.help.contains("{default}") {
            return self.help.to_string();
        }
        let text = match (self.default)(d, &Values::new()) {
            Ok(Some(v)) => v.text(),
            _ => "none".into(),
        };
        self.help.replace("{default}", &text)
    }
}

/// A typed field of `Settings` to and from a [`Value`].
pub trait Field: Sized {
    fn from_value(v: Option<&Value>) -> Option<Self>;
    fn to_value(&self, kind: Kind) -> Option<Value>;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn from_value(v: Option<&Value>) -> Option<Self> {
                match v? {
                    Value::Int(n) | Value::Size(n) => <$t>::try_from(*n).ok(),
                    Value::Mode(m) => <$t>::try_from(*m).ok(),
                    _ => None,
                }
            }
            fn to_value(&self, kind: Kind) -> Option<Value> {
                let n = *self as u64;
                Some(match kind {
                    Kind::Size | Kind::SizeIn { .. } | Kind::Limit { size: true } => {
                        Value::Size(n)
                    }
                    Kind::Octal => Value::Mode(n as u32),
                    _ => Value::Int(n),
                })
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64, usize);

macro_rules! plain_field {
    ($($t:ty => $variant:ident),*) => {$(
        impl Field for $t {
            fn from_value(v: Option<&Value>) -> Option<Self> {
                match v? {
                    Value::$variant(x) => Some(x.clone()),
                    _ => None,
                }
            }
            fn to_value(&self, _: Kind) -> Option<Value> {
                Some(Value::$variant(self.clone()))
            }
        }
    )*};
}
plain_field!(bool => Bool, f64 => Float, String => Text, PathBuf => Path, Duration => Duration,
    Option<Duration> => Idle, Vec<Grant> => Grants, Perms => Perms, LogFormat => Format);

macro_rules! optional_field {
    ($($t:ty => $variant:ident),*) => {$(
        impl Field for Option<$t> {
            fn from_value(v: Option<&Value>) -> Option<Self> {
                match v {
                    None => Some(None),
                    Some(Value::$variant(x)) => Some(Some(x.clone())),
                    Some(_) => None,
                }
            }
            fn to_value(&self, _: Kind) -> Option<Value> {
                self.clone().map(Value::$variant)
            }
        }
    )*};
}
optional_field!(String => Text, PathBuf => Path);

/// Declares `Settings` (one field per setting) and `SETTINGS` (one [`Def`] per
/// setting, in the order of the file and `--print-config`) from one list.
macro_rules! settings_table {
    ($($name:ident: $ty:ty = { $($f:ident: $v:expr),* $(,)? })*) => {
        /// The effective `serve` configuration: every setting decided (a field per entry
        /// of `SETTINGS`, of the same name).
        #[derive(Clone, Debug, PartialEq)]
        pub struct Settings {
            $(pub $name: $ty,)*
        }

        /// Every `serve` setting.
        pub static SETTINGS: &[$crate::defs::Def] = &[$($crate::defs::Def {
            name: stringify!($name),
            $($f: $v,)*
            ..$crate::defs::BASE
        },)*];

        /// The setting named `name`.
        pub fn def(name: &str) -> Option<&'static $crate::defs::Def> {
            SETTINGS.iter().find(|d| d.name == name)
        }

        impl Settings {
            /// The settings from values for every one of them.
            ///
            /// # Panics
            /// If a value is missing or of the wrong type: the table gives every setting
            /// without a default an `Option` type.
            pub fn from_values(v: &$crate::defs::Values) -> Settings {
                Settings {
                    $($name: <$ty as $crate::defs::Field>::from_value(v.get(stringify!($name)))
                        .unwrap_or_else(|| panic!("setting {}: no value of its type", stringify!($name))),)*
                }
            }

            /// The value of each setting that has one.
            pub fn to_values(&self) -> $crate::defs::Values {
                use $crate::defs::Field as _;
                let mut out = $crate::defs::Values::new();
                $(if let Some(x) = self.$name.to_value(def(stringify!($name)).map_or($crate::value::Kind::Text, |d| d.kind)) {
                    out.insert(stringify!($name), x);
                })*
                out
            }
        }
    };
}
pub(crate) use settings_table;

/// What an entry does not say: no flag, no default, restart-only.
pub const BASE: Def = Def {
    name: "",
    section: "",
    key: "",
    flag: None,
    env: None,
    value_name: "VALUE",
    kind: Kind::Text,
    default: |_, _| Ok(None),
    fallback_env: None,
    conflicts: &[],
    reload: Reload::Restart(None),
    help: "",
};
