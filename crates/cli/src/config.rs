//! The `serve` configuration, in two layers (as ripgrep's lowargs/hiargs):
//!
//! - what the user wrote: the flags and `OBJMAPPER_*` variables (clap, `ServeArgs`) and
//!   the config file ([`FileConfig`]), each parsed and checked but not combined;
//! - [`Settings`]: the effective configuration, merged in the order flag > environment >
//!   file > default, validated, and turned into the server's `ServerConfig`.
//!
//! The file uses the flags' names with `_` for `-`, grouped in sections: `[server]` (the
//! listeners and how requests are served), `[store]` (the data and the tiers),
//! `[eviction.memory]`/`[eviction.disk]` (the S3-FIFO knobs, file only), `[admin]` (the
//! management API), `[log]` (`level`, `format`), and `[access]` and `[limits]` (the
//! allowlist and the limits, in `hardening.rs`). Unknown keys are an error that names the
//! key, the file and the line.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::args::{parse_octal_mode, parse_size, LogFormat, ServeArgs};
use crate::hardening::{Access, AccessSection, Limits, LimitsSection};
use crate::UsageError;

/// Where the config file is looked for when neither `--config` nor `OBJMAPPER_CONFIG`
/// names one: `/etc/objmapper/objmapper.toml` for root, else
/// `$XDG_CONFIG_HOME/objmapper/objmapper.toml`, else `~/.config/objmapper/objmapper.toml`.
/// It is read only if it exists.
pub fn default_config_path() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if rustix::process::geteuid().is_root() {
        return Some(PathBuf::from("/etc/objmapper/objmapper.toml"));
    }
    if let Some(x) = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Some(x.join("objmapper/objmapper.toml"));
    }
    env("HOME").map(|h| Path::new(&h).join(".config/objmapper/objmapper.toml"))
}

/// The config file to read: the one named (which must exist), else the default path if
/// a file is there, else none.
pub fn config_path(a: &ServeArgs) -> Option<PathBuf> {
    match &a.config {
        Some(p) => Some(p.clone()),
        None => default_config_path().filter(|p| p.exists()),
    }
}

/// A config file as written. Every key is optional; unknown keys are refused.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listeners and request handling.
    #[serde(default)]
    pub server: ServerSection,
    /// The peer-credential allowlist.
    #[serde(default)]
    pub access: AccessSection,
    /// Connection and request limits, timeouts.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The data and the tiers.
    #[serde(default)]
    pub store: StoreSection,
    /// The eviction policies' knobs, per tier (file only; also `objmapper config set`).
    #[serde(default)]
    pub eviction: EvictionSection,
    /// The management API.
    #[serde(default)]
    pub admin: AdminSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
}

/// `[eviction.memory]` and `[eviction.disk]`: each tier's S3-FIFO knobs.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvictionSection {
    #[serde(default)]
    pub memory: KnobsFile,
    #[serde(default)]
    pub disk: KnobsFile,
}

/// One tier's S3-FIFO knobs as written (docs/ADMIN.md, `PATCH /v1/config`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KnobsFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub small_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promote_threshold: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ghost_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ghost_main_evictions: Option<bool>,
}

/// One tier's S3-FIFO knobs, decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Knobs {
    pub small_ratio: f64,
    pub promote_threshold: u8,
    pub ghost_ratio: f64,
    pub ghost_main_evictions: bool,
}

impl Knobs {
    /// The store's defaults for both tiers (memory, disk).
    pub fn defaults() -> (Knobs, Knobs) {
        let t = objmapper_store::Tuning::from_config(&objmapper_store::StoreConfig::new("/"));
        let k = |c: objmapper_store::policy::S3FifoConfig| Knobs {
            small_ratio: c.small_ratio,
            promote_threshold: c.promote_threshold,
            ghost_ratio: c.ghost_ratio,
            ghost_main_evictions: c.ghost_main_evictions,
        };
        (k(t.mem_eviction), k(t.disk_eviction))
    }

    /// `f` over `default`, checked against the ranges the server accepts.
    fn resolve(f: &KnobsFile, default: Knobs, section: &str) -> Result<Knobs> {
        let k = Knobs {
            small_ratio: f.small_ratio.unwrap_or(default.small_ratio),
            promote_threshold: f.promote_threshold.unwrap_or(default.promote_threshold),
            ghost_ratio: f.ghost_ratio.unwrap_or(default.ghost_ratio),
            ghost_main_evictions: f
                .ghost_main_evictions
                .unwrap_or(default.ghost_main_evictions),
        };
        let bad = |key: &str, v: String, range: &str| -> Result<Knobs> {
            Err(UsageError(format!(
                "config file: [{section}] {key} = {v} is out of range: give {range}"
            ))
            .into())
        };
        if !(0.01..=0.9).contains(&k.small_ratio) {
            return bad("small_ratio", k.small_ratio.to_string(), "0.01 to 0.9");
        }
        if !(1..=3).contains(&k.promote_threshold) {
            return bad(
                "promote_threshold",
                k.promote_threshold.to_string(),
                "1 to 3",
            );
        }
        if !(0.0..=4.0).contains(&k.ghost_ratio) {
            return bad("ghost_ratio", k.ghost_ratio.to_string(), "0.0 to 4.0");
        }
        Ok(k)
    }

    fn to_file(self) -> KnobsFile {
        KnobsFile {
            small_ratio: Some(self.small_ratio),
            promote_threshold: Some(self.promote_threshold),
            ghost_ratio: Some(self.ghost_ratio),
            ghost_main_evictions: Some(self.ghost_main_evictions),
        }
    }
}

/// `[admin]`: the management API. `enabled = false` is `--no-admin`; `socket` and `tcp`
/// are `--admin-socket` and `--admin-tcp`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
}

/// `[server]`: the flags of the same names.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<Octal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_max_response: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_fd_threshold: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_fds: Option<bool>,
}

/// `[store]`: the flags of the same names.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_capacity: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_max_objects: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_capacity: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_max_objects: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_to_disk_threshold: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promote_after_hits: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_behind_delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub_rate: Option<Size>,
}

/// `[log]`: `level` (as `--log-level`) and `format` (as `--log-format`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
}

/// A byte count in the file: an integer, or a string with a K/M/G/T suffix ("256M").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: an integer, or a string such as \"64K\" or \"1G\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&size_text(self.0))
    }
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

/// Permission bits in the file: a string of octal digits ("660"). A TOML integer is
/// refused, since 660 and 0o660 are different numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Octal(pub u32);

impl<'de> Deserialize<'de> for Octal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Octal;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("octal permission bits as a string, such as \"660\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Octal, E> {
                parse_octal_mode(v).map(Octal).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Octal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:o}", self.0))
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

/// The effective `serve` configuration: every value decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub socket_group: Option<String>,
    pub workers: u32,
    pub tcp: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub tcp_token_file: Option<PathBuf>,
    pub udp: Option<String>,
    pub udp_max_response: u64,
    pub auto_fd_threshold: u64,
    pub share_fds: bool,
    pub data_dir: PathBuf,
    /// None: derived from the data directory (see `StoreConfig::resolved_mem_dir`).
    pub mem_dir: Option<PathBuf>,
    pub mem_capacity: u64,
    pub mem_max_objects: u64,
    pub disk_capacity: u64,
    pub disk_max_objects: u64,
    pub direct_to_disk_threshold: u64,
    pub max_object_size: u64,
    pub promote_after_hits: u8,
    pub write_behind_delay_ms: u64,
    pub scrub_rate: u64,
    pub mem_eviction: Knobs,
    pub disk_eviction: Knobs,
    pub admin_enabled: bool,
    /// The object socket's path + `.admin` unless set.
    pub admin_socket: PathBuf,
    pub admin_tcp: Option<String>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub access: Access,
    pub limits: Limits,
}

/// The environment variables that are not flags' own (clap reads those).
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// `RUST_LOG`: the log filter when neither `--log-level` nor `OBJMAPPER_LOG` is set.
    pub rust_log: Option<String>,
}

impl Env {
    /// This process's environment.
    pub fn current() -> Env {
        Env {
            rust_log: std::env::var("RUST_LOG")
                .ok()
                .filter(|v| !v.trim().is_empty()),
        }
    }
}

impl Settings {
    /// Merges flags/environment (`a`), the file and the defaults. `file` comes with its
    /// path, for messages.
    pub fn resolve(
        a: &ServeArgs,
        file: Option<(&Path, &FileConfig)>,
        env: &Env,
    ) -> Result<Settings> {
        let empty = FileConfig::default();
        let (path, f) = match file {
            Some((p, f)) => (p.display().to_string(), f),
            None => (String::new(), &empty),
        };
        let in_file = |key: &str| format!("config file {path}: {key}");
        let (sv, st, lg) = (&f.server, &f.store, &f.log);
        let size = |v: Option<Size>| v.map(|s| s.0);
        use objmapper_store::StoreConfig as S;

        let data_dir = match a.data_dir.clone().or_else(|| st.data_dir.clone()) {
            Some(d) => d,
            None => default_data_dir()?,
        };
        let workers = match (a.workers, sv.workers) {
            (Some(w), _) => w,
            (None, Some(w)) if !(1..=1024).contains(&w) => {
                return Err(UsageError(format!(
                    "{}: workers = {w} is out of range: give 1 to 1024",
                    in_file("[server]")
                ))
                .into())
            }
            (None, Some(w)) => w,
            (None, None) => 2,
        };
        let promote_after_hits = match (a.promote_after_hits, st.promote_after_hits) {
            (Some(n), _) => n,
            (None, Some(n)) if n > 3 => {
                return Err(UsageError(format!(
                    "{}: promote_after_hits = {n} is out of range: give 0 to 3",
                    in_file("[store]")
                ))
                .into())
            }
            (None, Some(n)) => n,
            (None, None) => S::new("/").promote_after_hits,
        };
        let log_level = a
            .log_level
            .clone()
            .or_else(|| env.rust_log.clone())
            .or_else(|| lg.level.clone())
            .unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(UsageError(format!("log level {log_level:?}: {e}")).into());
        }
        let defaults = objmapper_server::ServerConfig::new("/", "/");
        let (mem_k, disk_k) = Knobs::defaults();
        let mem_eviction = Knobs::resolve(&f.eviction.memory, mem_k, "eviction.memory")?;
        let disk_eviction = Knobs::resolve(&f.eviction.disk, disk_k, "eviction.disk")?;
        let s = Settings {
            socket: a
                .socket
                .clone()
                .or_else(|| sv.socket.clone())
                .unwrap_or_else(objmapper_client::default_socket_path),
            socket_mode: a
                .socket_mode
                .or(sv.socket_mode.map(|m| m.0))
                .unwrap_or(0o600),
            socket_group: a.socket_group.clone().or_else(|| sv.socket_group.clone()),
            workers,
            tcp: a.tcp.clone().or_else(|| sv.tcp.clone()),
            tls_cert: a.tls_cert.clone().or_else(|| sv.tls_cert.clone()),
            tls_key: a.tls_key.clone().or_else(|| sv.tls_key.clone()),
            tls_client_ca: a.tls_client_ca.clone().or_else(|| sv.tls_client_ca.clone()),
            tcp_token_file: a
                .tcp_token_file
                .clone()
                .or_else(|| sv.tcp_token_file.clone()),
            udp: a.udp.clone().or_else(|| sv.udp.clone()),
            udp_max_response: a
                .udp_max_response
                .or(size(sv.udp_max_response))
                .unwrap_or(defaults.udp_max_response as u64),
            auto_fd_threshold: a
                .auto_fd_threshold
                .or(size(sv.auto_fd_threshold))
                .unwrap_or(defaults.auto_fd_threshold),
            share_fds: a.share_fds.or(sv.share_fds).unwrap_or(false),
            mem_dir: a.mem_dir.clone().or_else(|| st.mem_dir.clone()),
            mem_capacity: a
                .mem_capacity
                .or(size(st.mem_capacity))
                .unwrap_or(S::DEFAULT_MEM_CAPACITY_BYTES),
            mem_max_objects: a
                .mem_max_objects
                .or(st.mem_max_objects)
                .unwrap_or(S::DEFAULT_MEM_MAX_OBJECTS),
            disk_capacity: a
                .disk_capacity
                .or(size(st.disk_capacity))
                .unwrap_or(S::DEFAULT_DISK_CAPACITY_BYTES),
            disk_max_objects: a
                .disk_max_objects
                .or(st.disk_max_objects)
                .unwrap_or(S::DEFAULT_DISK_MAX_OBJECTS),
            direct_to_disk_threshold: a
                .direct_to_disk_threshold
                .or(size(st.direct_to_disk_threshold))
                .unwrap_or(S::DEFAULT_DIRECT_TO_DISK_THRESHOLD),
            max_object_size: a
                .max_object_size
                .or(size(st.max_object_size))
                .unwrap_or(objmapper_store::StoreConfig::new("/").max_object_size),
            promote_after_hits,
            write_behind_delay_ms: a
                .write_behind_delay_ms
                .or(st.write_behind_delay_ms)
                .unwrap_or(
                    objmapper_store::StoreConfig::new("/")
                        .write_behind_delay
                        .as_millis() as u64,
                ),
            scrub_rate: a
                .scrub_rate
                .or(size(st.scrub_rate))
                .unwrap_or(objmapper_store::StoreConfig::DEFAULT_SCRUB_RATE_BYTES),
            mem_eviction,
            disk_eviction,
            admin_enabled: !a.no_admin && f.admin.enabled.unwrap_or(true),
            admin_socket: PathBuf::new(), // below: it derives from the socket
            admin_tcp: a.admin_tcp.clone().or_else(|| f.admin.tcp.clone()),
            data_dir,
            log_level,
            log_format: a.log_format.or(lg.format).unwrap_or_default(),
            access: Access::resolve(a, &f.access),
            limits: Limits::resolve(a, &f.limits),
        };
        let mut s = s;
        s.admin_socket = a
            .admin_socket
            .clone()
            .or_else(|| f.admin.socket.clone())
            .unwrap_or_else(|| objmapper_server::admin_sibling(&s.socket));
        Ok(s)
    }

    /// The memory tier's directory, derived from the data directory unless set.
    pub fn resolved_mem_dir(&self) -> PathBuf {
        match &self.mem_dir {
            Some(d) => d.clone(),
            None => objmapper_store::StoreConfig::new(&self.data_dir).resolved_mem_dir(),
        }
    }

    /// These settings as a complete config file (the memory tier directory resolved).
    pub fn to_file(&self) -> FileConfig {
        FileConfig {
            server: ServerSection {
                socket: Some(self.socket.clone()),
                socket_mode: Some(Octal(self.socket_mode)),
                socket_group: self.socket_group.clone(),
                workers: Some(self.workers),
                tcp: self.tcp.clone(),
                tls_cert: self.tls_cert.clone(),
                tls_key: self.tls_key.clone(),
                tls_client_ca: self.tls_client_ca.clone(),
                tcp_token_file: self.tcp_token_file.clone(),
                udp: self.udp.clone(),
                udp_max_response: Some(Size(self.udp_max_response)),
                auto_fd_threshold: Some(Size(self.auto_fd_threshold)),
                share_fds: Some(self.share_fds),
            },
            access: self.access.to_file(),
            limits: self.limits.to_file(),
            store: StoreSection {
                data_dir: Some(self.data_dir.clone()),
                mem_dir: Some(self.resolved_mem_dir()),
                mem_capacity: Some(Size(self.mem_capacity)),
                mem_max_objects: Some(self.mem_max_objects),
                disk_capacity: Some(Size(self.disk_capacity)),
                disk_max_objects: Some(self.disk_max_objects),
                direct_to_disk_threshold: Some(Size(self.direct_to_disk_threshold)),
                max_object_size: Some(Size(self.max_object_size)),
                promote_after_hits: Some(self.promote_after_hits),
                write_behind_delay_ms: Some(self.write_behind_delay_ms),
                scrub_rate: Some(Size(self.scrub_rate)),
            },
            eviction: EvictionSection {
                memory: self.mem_eviction.to_file(),
                disk: self.disk_eviction.to_file(),
            },
            admin: AdminSection {
                enabled: Some(self.admin_enabled),
                socket: Some(self.admin_socket.clone()),
                tcp: self.admin_tcp.clone(),
            },
            log: LogSection {
                level: Some(self.log_level.clone()),
                format: Some(self.log_format),
            },
        }
    }

    /// These settings as config file text (`serve --print-config`).
    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string(&self.to_file()).context("printing the configuration")?;
        let mut out = String::from(
            "# objmapper serve: effective configuration (flags > environment > file > defaults)\n",
        );
        if self.tcp.is_none() {
            out.push_str("# TCP is off: set [server] tcp = \"ADDR:PORT\" to listen\n");
        }
        if self.udp.is_none() {
            out.push_str("# UDP is off: set [server] udp = \"ADDR:PORT\" to listen\n");
        }
        if self.admin_tcp.is_none() {
            out.push_str(
                "# The management API is not on TCP: set [admin] tcp = \"127.0.0.1:PORT\" to \
                 listen\n",
            );
        }
        let _ = writeln!(
            out,
            "# The daemon's own uid (here {}) has read,write,admin unless [access] allow_uid \
             names it",
            rustix::process::geteuid().as_raw()
        );
        out.push_str(&body);
        Ok(out)
    }

    /// The TCP listener's TLS settings and token (the token file read now).
    pub fn tcp_security(
        &self,
    ) -> Result<(
        Option<objmapper_server::TlsConfig>,
        Option<objmapper_server::Token>,
    )> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(objmapper_server::TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            (None, None) if self.tls_client_ca.is_some() => {
                return Err(UsageError(
                    "tls_client_ca is set but TLS is not: client certificates need \
                     tls_cert and tls_key (--tls-cert, --tls-key)"
                        .into(),
                )
                .into())
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(UsageError(
                    "tls_cert is set without tls_key (--tls-key): TLS needs both".into(),
                )
                .into())
            }
            (None, Some(_)) => {
                return Err(UsageError(
                    "tls_key is set without tls_cert (--tls-cert): TLS needs both".into(),
                )
                .into())
            }
        };
        let token = self
            .tcp_token_file
            .as_deref()
            .map(objmapper_server::Token::from_file)
            .transpose()
            .map_err(|e| UsageError(format!("tcp_token_file: {e}")))?;
        Ok((tls, token))
    }

    /// The server's configuration.
    pub fn server_config(&self) -> Result<objmapper_server::ServerConfig> {
        let mut cfg = objmapper_server::ServerConfig::new(&self.socket, &self.data_dir);
        cfg.socket_mode = self.socket_mode;
        cfg.socket_group = self
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?;
        cfg.workers = self.workers as usize;
        let st = &mut cfg.store;
        st.max_object_size = self.max_object_size;
        st.mem_dir = self.mem_dir.clone();
        st.mem_capacity_bytes = self.mem_capacity;
        st.mem_max_objects = self.mem_max_objects;
        st.disk_capacity_bytes = self.disk_capacity;
        st.disk_max_objects = self.disk_max_objects;
        st.direct_to_disk_threshold = self.direct_to_disk_threshold;
        st.promote_after_hits = self.promote_after_hits;
        st.write_behind_delay = std::time::Duration::from_millis(self.write_behind_delay_ms);
        st.scrub_rate_bytes = self.scrub_rate;
        cfg.tcp_listen = self
            .tcp
            .as_deref()
            .map(|t| resolve_addr("tcp", t))
            .transpose()?;
        cfg.udp_listen = self
            .udp
            .as_deref()
            .map(|u| resolve_addr("udp", u))
            .transpose()?;
        cfg.udp_max_response = usize::try_from(self.udp_max_response).map_err(|_| {
            UsageError(format!(
                "udp_max_response {} is too large for this machine",
                self.udp_max_response
            ))
        })?;
        cfg.admin_enabled = self.admin_enabled;
        cfg.admin_socket = Some(self.admin_socket.clone());
        cfg.admin_tcp = self
            .admin_tcp
            .as_deref()
            .map(|t| resolve_addr("admin tcp", t))
            .transpose()?;
        (cfg.tls, cfg.tcp_token) = self.tcp_security()?;
        cfg.share_fds = self.share_fds;
        cfg.auto_fd_threshold = self.auto_fd_threshold;
        cfg.access = self.access.to_server();
        self.limits.apply(&mut cfg);
        Ok(cfg)
    }
}

/// One setting that differs between two [`Settings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// `section.key`, as in the file.
    pub key: String,
    /// The old value as TOML ("(unset)" if none).
    pub old: String,
    /// The new value as TOML ("(unset)" if none).
    pub new: String,
}

/// The settings that differ between `old` and `new`, sorted by file key.
pub fn diff(old: &Settings, new: &Settings) -> Vec<Change> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            v => out.push((prefix.to_string(), v.to_string())),
        }
    }
    let flat = |s: &Settings| -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(v) = toml::Value::try_from(s.to_file()) {
            walk("", &v, &mut out);
        }
        out
    };
    let (a, b) = (flat(old), flat(new));
    let mut keys: Vec<&String> = a.iter().map(|(k, _)| k).collect();
    for (k, _) in &b {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.sort();
    let get = |v: &[(String, String)], k: &str| {
        v.iter()
            .find(|(x, _)| x == k)
            .map_or_else(|| "(unset)".to_string(), |(_, v)| v.clone())
    };
    keys.into_iter()
        .filter_map(|k| {
            let (o, n) = (get(&a, k), get(&b, k));
            (o != n).then(|| Change {
                key: k.clone(),
                old: o,
                new: n,
            })
        })
        .collect()
}

/// A list of changes as "key old -> new, ..." for a log line.
pub fn describe(changes: &[&Change]) -> String {
    let mut s = String::new();
    for (i, c) in changes.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{} {} -> {}", c.key, c.old, c.new);
    }
    s
}

/// `/var/lib/objmapper` for root; else `$XDG_DATA_HOME/objmapper`; else
/// `$HOME/.local/share/objmapper`.
fn default_data_dir() -> Result<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    data_dir_from(
        rustix::process::geteuid().is_root(),
        env("XDG_DATA_HOME"),
        env("HOME"),
    )
    .ok_or_else(|| {
        UsageError(
            "cannot pick a data directory: neither XDG_DATA_HOME nor HOME is set; \
             pass --data-dir, set OBJMAPPER_DATA_DIR or [store] data_dir"
                .into(),
        )
        .into()
    })
}

fn data_dir_from(
    root: bool,
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if root {
        return Some(PathBuf::from("/var/lib/objmapper"));
    }
    // The XDG spec says relative values are to be ignored.
    if let Some(x) = xdg_data_home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Some(x.join("objmapper"));
    }
    home.map(|h| Path::new(&h).join(".local/share/objmapper"))
}

/// A numeric gid, or a group name looked up in /etc/group.
fn resolve_group(g: &str) -> Result<u32> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    group_from(&text, g).ok_or_else(|| {
        UsageError(format!(
            "socket group {g:?}: no such group in /etc/group (give a numeric gid instead)"
        ))
        .into()
    })
}

fn group_from(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

fn resolve_addr(what: &str, addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| UsageError(format!("{what} address {addr:?} is not an ADDR:PORT")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> ServeArgs {
        use crate::args::{Cli, Command};
        use clap::Parser;
        let mut all = vec!["objmapper", "serve"];
        all.extend_from_slice(v);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Serve(s) => *s,
            _ => unreachable!(),
        }
    }

    fn file(text: &str) -> FileConfig {
        parse_file(Path::new("t.toml"), text).unwrap()
    }

    fn resolve(a: &ServeArgs, f: &FileConfig) -> Settings {
        Settings::resolve(a, Some((Path::new("t.toml"), f)), &Env::default()).unwrap()
    }

    #[test]
    fn data_dir_defaults() {
        assert_eq!(
            data_dir_from(true, Some("/x".into()), Some("/home/u".into())),
            Some(PathBuf::from("/var/lib/objmapper"))
        );
        assert_eq!(
            data_dir_from(false, Some("/x".into()), Some("/home/u".into())),
            Some(PathBuf::from("/x/objmapper"))
        );
        assert_eq!(
            data_dir_from(false, Some("rel".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.local/share/objmapper"))
        );
        assert_eq!(data_dir_from(false, None, None), None);
    }

    #[test]
    fn groups() {
        let etc = "root:x:0:\nwww-data:x:33:\n# odd line\nstaff:x:50:alice,bob\n";
        assert_eq!(group_from(etc, "www-data"), Some(33));
        assert_eq!(group_from(etc, "staff"), Some(50));
        assert_eq!(group_from(etc, "nobody"), None);
        assert_eq!(resolve_group("1234").unwrap(), 1234);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            resolve_addr("tcp", "127.0.0.1:7070").unwrap(),
            "127.0.0.1:7070".parse().unwrap()
        );
        let e = resolve_addr("udp", "nonsense").unwrap_err();
        assert!(e.to_string().starts_with("udp address \"nonsense\""), "{e}");
    }

    #[test]
    fn file_values_fill_what_flags_leave_unset() {
        let f = file(
            "[server]\nworkers = 3\nsocket_mode = \"660\"\nshare_fds = true\n\
             [store]\nmem_capacity = \"64M\"\ndisk_capacity = 1048576\n\
             [log]\nformat = \"json\"\nlevel = \"debug\"\n",
        );
        let s = resolve(&args(&["--data-dir", "/d", "--workers", "5"]), &f);
        assert_eq!(s.workers, 5, "flag beats file");
        assert_eq!(s.socket_mode, 0o660);
        assert!(s.share_fds);
        assert_eq!(s.mem_capacity, 64 << 20);
        assert_eq!(s.disk_capacity, 1 << 20);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_level, "debug");
        let s = resolve(&args(&["--data-dir", "/d", "--share-fds=false"]), &f);
        assert!(!s.share_fds, "--share-fds=false beats the file");
        // RUST_LOG sits between the flag and the file.
        let env = Env {
            rust_log: Some("warn".into()),
        };
        let a = args(&["--data-dir", "/d"]);
        let s = Settings::resolve(&a, Some((Path::new("t"), &f)), &env).unwrap();
        assert_eq!(s.log_level, "warn");
        let a = args(&["--data-dir", "/d", "--log-level", "error"]);
        let s = Settings::resolve(&a, Some((Path::new("t"), &f)), &env).unwrap();
        assert_eq!(s.log_level, "error");
    }

    #[test]
    fn printed_config_reads_back_to_the_same_settings() {
        let a = args(&[
            "--data-dir",
            "/d",
            "--mem-dir",
            "/m",
            "--tcp",
            "--socket-group",
            "33",
            "--mem-capacity",
            "3000",
            "--allow-uid",
            "1000=admin,read 33=read",
            "--allow-gid",
            "50=none",
            "--tcp-permissions",
            "read",
            "--max-staged-bytes-total",
            "3000",
            "--max-meta-len",
            "0",
            "--frame-timeout",
            "5400",
            "--idle-timeout",
            "2d",
        ]);
        let s = resolve(&a, &FileConfig::default());
        let text = s.to_toml().unwrap();
        let back = resolve(&args(&[]), &file(&text));
        assert_eq!(back, s, "{text}");
        assert!(
            text.contains("allow_uid = [\"33=read\", \"1000=read,admin\"]"),
            "{text}"
        );
        assert!(text.contains("frame_timeout = \"1h30m\""), "{text}");
        assert!(text.contains("idle_timeout = \"2d\""), "{text}");
        assert!(text.contains("mem_capacity = \"3000\""), "{text}");
        assert!(text.contains("disk_capacity = \"64G\""), "{text}");
        // And with the defaults (idle never, empty lists).
        let s = resolve(
            &args(&["--data-dir", "/d", "--mem-dir", "/m"]),
            &FileConfig::default(),
        );
        let text = s.to_toml().unwrap();
        assert_eq!(resolve(&args(&[]), &file(&text)), s, "{text}");
        assert!(text.contains("idle_timeout = \"never\""), "{text}");
        assert!(text.contains("allow_uid = []"), "{text}");
    }

    #[test]
    fn access_and_limits_come_from_the_file_unless_flags_set_them() {
        use objmapper_server::{Grant, Perms};
        use std::time::Duration;
        let g = |s: &str| s.parse::<Grant>().unwrap();
        let f = file(
            "[access]\nallow_uid = [\"1000=all\", \"33=read\", \"1000=write\"]\n\
             allow_gid = [\"50=read,write\"]\ntcp_permissions = \"read\"\n\
             [limits]\nmax_connections = 100\nmax_pipeline_depth = 8\nmax_staged_puts = 2\n\
             max_staged_puts_total = 30\nmax_staged_bytes_per_conn = \"1MiB\"\n\
             max_staged_bytes_total = 2097152\nmax_key_len = 100\nmax_meta_len = \"1K\"\n\
             header_timeout = \"2s\"\nframe_timeout = 3\nidle_timeout = \"1h30m\"\n",
        );
        let s = resolve(&args(&["--data-dir", "/d"]), &f);
        // One entry per id, the last one, in id order.
        assert_eq!(s.access.allow_uid, vec![g("33=read"), g("1000=write")]);
        assert_eq!(s.access.allow_gid, vec![g("50=read,write")]);
        assert_eq!(s.access.tcp_permissions, Perms::READ);
        let l = &s.limits;
        assert_eq!(l.max_connections, 100);
        assert_eq!(l.max_pipeline_depth, 8);
        assert_eq!(l.max_staged_puts, 2);
        assert_eq!(l.max_staged_puts_total, 30);
        assert_eq!(l.max_staged_bytes_per_conn, 1 << 20);
        assert_eq!(l.max_staged_bytes_total, 2 << 20);
        assert_eq!(l.max_key_len, 100);
        assert_eq!(l.max_meta_len, 1024);
        assert_eq!(l.header_timeout, Duration::from_secs(2));
        assert_eq!(l.frame_timeout, Duration::from_secs(3));
        assert_eq!(l.idle_timeout, Some(Duration::from_secs(5400)));
        let cfg = s.server_config().unwrap();
        assert_eq!(cfg.max_connections, 100);
        assert_eq!(cfg.max_key_len, 100);
        assert_eq!(cfg.idle_timeout, Some(Duration::from_secs(5400)));
        assert_eq!(cfg.access.tcp, Perms::READ);
        assert_eq!(cfg.access.perms_of(1000, 0), Perms::WRITE);

        // Flags replace the file's lists whole, and beat its values.
        let s = resolve(
            &args(&[
                "--data-dir",
                "/d",
                "--allow-uid",
                "7=read 8=write",
                "--allow-uid",
                "9=admin",
                "--tcp-permissions",
                "none",
                "--max-key-len",
                "5",
                "--idle-timeout",
                "never",
                "--header-timeout",
                "1m",
            ]),
            &f,
        );
        assert_eq!(
            s.access.allow_uid,
            vec![g("7=read"), g("8=write"), g("9=admin")]
        );
        assert_eq!(s.access.allow_gid, vec![g("50=read,write")], "not given");
        assert_eq!(s.access.tcp_permissions, Perms::NONE);
        assert_eq!(s.limits.max_key_len, 5);
        assert_eq!(s.limits.idle_timeout, None);
        assert_eq!(s.limits.header_timeout, Duration::from_secs(60));
        assert_eq!(s.limits.max_connections, 100, "from the file");

        // Without file or flags: the server's defaults.
        let s = resolve(&args(&["--data-dir", "/d"]), &FileConfig::default());
        let d = objmapper_server::ServerConfig::new("/s", "/d");
        let cfg = s.server_config().unwrap();
        assert_eq!(cfg.access, d.access);
        assert_eq!(
            objmapper_server::RuntimeLimits::of(&cfg),
            objmapper_server::RuntimeLimits::of(&d)
        );
        assert_eq!(cfg.max_connections, d.max_connections);
        assert_eq!(cfg.max_staged_puts_total, d.max_staged_puts_total);
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

    #[test]
    fn unknown_keys_and_bad_values_name_file_line_and_key() {
        let e = parse_file(
            Path::new("/etc/o.toml"),
            "[server]\nworkers = 2\nbogus_key = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/etc/o.toml, line 3"), "{e}");
        assert!(e.contains("bogus_key"), "{e}");
        let e = parse_file(Path::new("f"), "[nope]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("nope"), "{e}");
        let e = parse_file(Path::new("f"), "[store]\nmem_capacity = \"12Q\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("12Q"), "{e}");
        let e = parse_file(Path::new("f"), "[server]\nsocket_mode = 660\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"660\""), "{e}");
        let f = file("[server]\nworkers = 0\n");
        let e = Settings::resolve(
            &args(&["--data-dir", "/d"]),
            Some((Path::new("f"), &f)),
            &Env::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("workers = 0"), "{e}");
    }

    #[test]
    fn diff_lists_changed_keys() {
        let a = args(&["--data-dir", "/d", "--mem-dir", "/m"]);
        let old = resolve(&a, &FileConfig::default());
        let new = resolve(
            &a,
            &file("[store]\nmem_capacity = \"1M\"\n[server]\ntcp = \"127.0.0.1:1\"\n"),
        );
        let d = diff(&old, &new);
        let keys: Vec<&str> = d.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["server.tcp", "store.mem_capacity"], "{d:?}");
        assert_eq!(d[1].old, "\"256M\"");
        assert_eq!(d[1].new, "\"1M\"");
        assert_eq!(d[0].old, "(unset)");
        assert!(diff(&old, &old).is_empty());
        let hardened = resolve(
            &a,
            &file("[access]\nallow_uid = [\"33=read\"]\n[limits]\nidle_timeout = 60\n"),
        );
        let d = diff(&old, &hardened);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(
            (d[0].key.as_str(), d[0].old.as_str(), d[0].new.as_str()),
            ("access.allow_uid", "[]", "[\"33=read\"]")
        );
        assert_eq!(
            (d[1].key.as_str(), d[1].old.as_str(), d[1].new.as_str()),
            ("limits.idle_timeout", "\"never\"", "\"1m\"")
        );
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
}
