//! The `serve` configuration, in two layers (as ripgrep's lowargs/hiargs):
//!
//! - what the user wrote: the flags and `OBJMAPPER_*` variables (`ServeArgs`, read by
//!   clap from the table) and the config file ([`FileConfig`]), each parsed and checked
//!   but not combined;
//! - [`Settings`]: the effective configuration, merged setting by setting in the order
//!   flag > environment > file > default, validated, and turned into the server's
//!   `ServerConfig`.
//!
//! Every setting is one entry of `crate::settings::SETTINGS`; nothing here names one,
//! except where a setting is used (`Settings::server_config` and its neighbours).
//!
//! The file uses the flags' names with `_` for `-`, grouped in sections: `[server]` (the
//! listeners and how requests are served), `[store]` (the data and the tiers),
//! `[eviction.memory]`/`[eviction.disk]` (the S3-FIFO knobs, file only), `[admin]` (the
//! management API), `[log]` (`level`, `format`), and `[access]` and `[limits]` (the
//! allowlist and the limits). Unknown keys are an error that names the key, the file and
//! the line.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::args::ServeArgs;
use crate::defs::{Def, Defaults, Values};
pub use crate::file::{load_file, FileConfig};
use crate::hardening::{access_config, one_per_id};
pub use crate::settings::Settings;
use crate::settings::SETTINGS;
use crate::value::Value;
use crate::UsageError;
use anyhow::{Context, Result};
use objmapper_server::{RuntimeLimits, ServerConfig};

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

    /// The variable `name`, if set (only those the table names as `fallback_env`).
    fn get(&self, name: &str) -> Option<String> {
        match name {
            "RUST_LOG" => self.rust_log.clone(),
            _ => None,
        }
    }
}

/// The error for a file value outside its range.
fn out_of_range(def: &Def, path: &str, value: &str, range: &str) -> anyhow::Error {
    let msg = if def.section.starts_with("eviction.") {
        format!(
            "config file: [{}] {} = {value} is out of range: give {range}",
            def.section, def.key
        )
    } else {
        format!(
            "config file {path}: [{}]: {} = {value} is out of range: give {range}",
            def.section, def.key
        )
    };
    UsageError(msg).into()
}

/// Refuses remote tier settings given while the tier is off (no `[remote] url`): a
/// `[remote]` table with an endpoint or a credentials file but no URL would otherwise
/// leave the tier off without a word. `--print-config` leaves the table out when the
/// tier is off, so its output reads back.
fn off_remote_settings(v: &Values, given: &[&'static Def]) -> Result<(), UsageError> {
    if v.contains_key("remote") {
        return Ok(());
    }
    let set: Vec<String> = given
        .iter()
        .filter(|d| d.section == "remote")
        .map(|d| match (d.flag, d.env) {
            (Some(flag), Some(env)) => format!("{} (--{flag}, {env})", d.key),
            _ => d.key.to_string(),
        })
        .collect();
    if set.is_empty() {
        return Ok(());
    }
    Err(UsageError(format!(
        "remote: [remote] {} set, but no url, so the remote tier would be off: set [remote] \
         url (--remote s3://BUCKET/PREFIX, OBJMAPPER_REMOTE) to turn it on, or remove {}",
        set.join(", "),
        if set.len() == 1 { "it" } else { "them" }
    )))
}

impl Settings {
    /// Merges flags/environment (`a`), the file and the defaults, setting by setting.
    /// `file` comes with its path, for messages.
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
        let defaults = Defaults::get();
        let mut v = Values::new();
        // The settings a flag, a variable or the file gave (not a default).
        let mut given: Vec<&'static Def> = Vec::new();
        for def in SETTINGS {
            let from_file = || {
                let x = f.values.get(def.name)?;
                Some(match def.kind.out_of_range(x) {
                    Some((value, range)) => Err(out_of_range(def, &path, &value, &range)),
                    None => Ok(x.clone()),
                })
            };
            let value = match a.given.get(def.name) {
                Some(x) => Some(x.clone()),
                None => match def.fallback_env.and_then(|e| env.get(e)) {
                    Some(x) => Some(Value::Text(x)),
                    None => match from_file() {
                        Some(x) => Some(x?),
                        None => (def.default)(&defaults, &v).map_err(UsageError)?,
                    },
                },
            };
            let Some(mut value) = value else { continue };
            if a.given.contains_key(def.name) || f.values.contains_key(def.name) {
                given.push(def);
            }
            if let Value::Grants(g) = value {
                value = Value::Grants(one_per_id(g));
            }
            def.kind.check(&value).map_err(UsageError)?;
            v.insert(def.name, value);
        }
        off_remote_settings(&v, &given)?;
        let s = Settings::from_values(&v);
        // What the settings say together, checked now rather than after the store opens.
        if let Some(r) = s.remote_settings()? {
            r.check().map_err(|e| UsageError(format!("remote: {e}")))?;
        }
        Ok(s)
    }

    /// The memory tier's directory, derived from the data directory unless set.
    pub fn resolved_mem_dir(&self) -> PathBuf {
        match &self.mem_dir {
            Some(d) => d.clone(),
            None => ServerConfig::new(&self.socket, &self.data_dir)
                .store
                .resolved_mem_dir(),
        }
    }

    /// These settings as a complete config file (the memory tier directory resolved).
    pub fn to_file(&self) -> FileConfig {
        let mut values = self.to_values();
        values.insert("mem_dir", Value::Path(self.resolved_mem_dir()));
        FileConfig { values }
    }

    /// These settings as config file text (`serve --print-config`).
    pub fn to_toml(&self) -> Result<String> {
        let mut file = self.to_file();
        if self.remote.is_none() {
            // Its defaults only (any other value is refused without a URL), and a
            // `[remote]` table without a URL would be refused when read back.
            file.values
                .retain(|name, _| crate::settings::def(name).is_none_or(|d| d.section != "remote"));
        }
        let body = toml::to_string(&file).context("printing the configuration")?;
        let mut out = String::from(
            "# objmapper serve: effective configuration (flags > environment > file > defaults)\n",
        );
        if self.tcp.is_none() {
            out.push_str("# TCP is off: set [server] tcp = \"ADDR:PORT\" to listen\n");
        }
        if self.udp.is_none() {
            out.push_str("# UDP is off: set [server] udp = \"ADDR:PORT\" to listen\n");
        }
        if self.remote.is_none() {
            out.push_str(
                "# The remote tier is off: set [remote] url = \"s3://BUCKET/PREFIX\" to turn it \
                 on (objmapper.example.toml shows its settings)\n",
            );
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

    /// The server's configuration: where each setting is used.
    pub fn server_config(&self) -> Result<ServerConfig> {
        let mut cfg = ServerConfig::new(&self.socket, &self.data_dir);
        cfg.socket_mode = self.socket_mode;
        cfg.socket_group = self
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?;
        cfg.workers = self.workers as usize;
        cfg.busy_poll = std::time::Duration::from_micros(self.busy_poll_us.into());
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
        st.body_cache_bytes = self.body_cache;
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
        cfg.auto_fd_threshold = self.auto_fd_threshold;
        cfg.host_id = self.host_id.clone();
        cfg.remote = self.remote_settings()?;
        cfg.access = self.access();
        cfg.max_connections = self.max_connections;
        cfg.max_staged_puts_total = self.max_staged_puts_total;
        cfg.max_pipeline_depth = self.max_pipeline_depth;
        cfg.max_staged_puts = self.max_staged_puts;
        cfg.max_staged_bytes_per_conn = self.max_staged_bytes_per_conn;
        cfg.max_staged_bytes_total = self.max_staged_bytes_total;
        cfg.max_key_len = self.max_key_len;
        cfg.max_meta_len = self.max_meta_len;
        cfg.header_timeout = self.header_timeout;
        cfg.frame_timeout = self.frame_timeout;
        cfg.idle_timeout = self.idle_timeout;
        Ok(cfg)
    }

    /// The remote tier's settings, if `--remote` turns it on.
    fn remote_settings(&self) -> Result<Option<objmapper_server::RemoteSettings>, UsageError> {
        let Some(url) = &self.remote else {
            return Ok(None);
        };
        let mut r = objmapper_server::RemoteSettings::for_url(url)
            .map_err(|e| UsageError(format!("remote: {e}")))?;
        let mut c = r.client.with_region(self.remote_region.clone());
        if let Some(e) = &self.remote_endpoint {
            c = c.with_endpoint(e.clone());
        }
        match (
            &self.remote_credentials_file,
            self.remote_credentials.as_str(),
        ) {
            (Some(f), "env") => {
                c = c.with_credentials(objmapper_remote::CredentialSource::File(f.clone()));
            }
            (Some(_), other) => {
                return Err(UsageError(format!(
                    "remote: a credentials file and credentials = {other:?} name two sources \
                     of the key; give one"
                )))
            }
            (None, "instance") => {
                c = c.with_credentials(objmapper_remote::CredentialSource::Instance);
            }
            (None, _) => {}
        }
        r.client = c
            .with_multipart_threshold(self.remote_multipart_threshold)
            .with_part_size(self.remote_part_size)
            .with_upload_concurrency(self.remote_upload_concurrency as usize)
            .with_upload_memory(self.remote_upload_memory)
            .with_timeout(self.remote_timeout)
            .with_transfer_timeout(self.remote_transfer_timeout)
            .with_miss_ttl(std::time::Duration::from_millis(self.remote_miss_ttl_ms))
            .with_poll_interval(self.remote_poll_interval)
            .with_event_retention(self.remote_event_retention);
        r.queue_max_objects = usize::try_from(self.remote_queue_max_objects).unwrap_or(usize::MAX);
        r.queue_max_bytes = self.remote_queue_max_bytes;
        r.max_fetches = usize::try_from(self.remote_max_fetches).unwrap_or(usize::MAX);
        Ok(Some(r))
    }

    /// The allowlist as the server takes it (`Server::set_access`).
    pub fn access(&self) -> objmapper_server::AccessConfig {
        access_config(&self.allow_uid, &self.allow_gid, self.tcp_permissions)
    }

    /// The limits a running server can change (`Server::set_limits`).
    pub fn runtime_limits(&self) -> RuntimeLimits {
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

    /// These settings with `def` set to its value in `new` (what a running server has
    /// after applying that change).
    pub fn take(&mut self, new: &Settings, def: &Def) {
        let mut v = self.to_values();
        match new.to_values().remove(def.name) {
            Some(x) => v.insert(def.name, x),
            None => v.remove(def.name),
        };
        *self = Settings::from_values(&v);
    }
}

/// One setting that differs between two [`Settings`].
#[derive(Clone, Debug)]
pub struct Change {
    /// `section.key`, as in the file.
    pub key: String,
    /// The old value as TOML ("(unset)" if none).
    pub old: String,
    /// The new value as TOML ("(unset)" if none).
    pub new: String,
    /// The setting.
    pub def: &'static Def,
    /// Its old value (None: unset).
    pub was: Option<Value>,
    /// Its new value (None: unset).
    pub value: Option<Value>,
}

/// The settings that differ between `old` and `new`, sorted by file key.
pub fn diff(old: &Settings, new: &Settings) -> Vec<Change> {
    let (a, b) = (old.to_file().values, new.to_file().values);
    let text = |v: Option<&Value>| {
        v.and_then(|v| toml::Value::try_from(v).ok())
            .map_or_else(|| "(unset)".to_string(), |t| t.to_string())
    };
    let mut out: Vec<Change> = SETTINGS
        .iter()
        .filter_map(|d| {
            let (o, n) = (text(a.get(d.name)), text(b.get(d.name)));
            (o != n).then(|| Change {
                key: d.file_key(),
                old: o,
                new: n,
                def: d,
                was: a.get(d.name).cloned(),
                value: b.get(d.name).cloned(),
            })
        })
        .collect();
    out.sort_by(|x, y| x.key.cmp(&y.key));
    out
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
impl Settings {
    /// `a` merged with no file and no RUST_LOG.
    pub fn resolve_for_test(a: &ServeArgs) -> Settings {
        Settings::resolve(a, None, &Env::default()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::parse_file;
    use crate::value::LogFormat;

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
            "[server]\nworkers = 3\nsocket_mode = \"660\"\n\
             [store]\nmem_capacity = \"64M\"\ndisk_capacity = 1048576\n\
             [log]\nformat = \"json\"\nlevel = \"debug\"\n",
        );
        let s = resolve(&args(&["--data-dir", "/d", "--workers", "5"]), &f);
        assert_eq!(s.workers, 5, "flag beats file");
        assert_eq!(s.socket_mode, 0o660);
        assert_eq!(s.mem_capacity, 64 << 20);
        assert_eq!(s.disk_capacity, 1 << 20);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_level, "debug");
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
    fn remote_upload_sizes_reach_the_client_and_stay_in_s3_bounds() {
        let base = ["--data-dir", "/d", "--remote", "s3://bucket/p"];
        let cfg = |extra: &[&str], f: &FileConfig| {
            let a = args(&[&base[..], extra].concat());
            resolve(&a, f)
                .server_config()
                .unwrap()
                .remote
                .unwrap()
                .client
        };
        let c = cfg(&[], &FileConfig::default());
        assert_eq!((c.multipart_threshold, c.part_size), (32 << 20, 8 << 20));
        let c = cfg(
            &[
                "--remote-multipart-threshold",
                "6M",
                "--remote-part-size",
                "7M",
            ],
            &FileConfig::default(),
        );
        assert_eq!((c.multipart_threshold, c.part_size), (6 << 20, 7 << 20));
        let f = file("[remote]\nmultipart_threshold = \"5G\"\npart_size = 5242880\n");
        let c = cfg(&[], &f);
        assert_eq!((c.multipart_threshold, c.part_size), (5 << 30, 5 << 20));
        // Out of 5M..=5G: the flag is refused by its parser, the file when merged.
        for flag in ["--remote-multipart-threshold", "--remote-part-size"] {
            for v in ["4M", "5242879", "6G"] {
                use crate::args::Cli;
                use clap::Parser;
                let e = Cli::try_parse_from(["objmapper", "serve", flag, v]).unwrap_err();
                assert!(
                    e.to_string().contains("is not in 5M to 5G"),
                    "{flag} {v}: {e}"
                );
            }
        }
        for key in ["multipart_threshold", "part_size"] {
            let f = file(&format!("[remote]\n{key} = \"1M\"\n"));
            let a = args(&base);
            let e = Settings::resolve(&a, Some((Path::new("t.toml"), &f)), &Env::default())
                .unwrap_err();
            assert!(e.to_string().contains("give 5M to 5G"), "{key}: {e}");
        }
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
        assert_eq!(s.allow_uid, vec![g("33=read"), g("1000=write")]);
        assert_eq!(s.allow_gid, vec![g("50=read,write")]);
        assert_eq!(s.tcp_permissions, Perms::READ);
        let l = &s;
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
        assert_eq!(s.allow_uid, vec![g("7=read"), g("8=write"), g("9=admin")]);
        assert_eq!(s.allow_gid, vec![g("50=read,write")], "not given");
        assert_eq!(s.tcp_permissions, Perms::NONE);
        assert_eq!(s.max_key_len, 5);
        assert_eq!(s.idle_timeout, None);
        assert_eq!(s.header_timeout, Duration::from_secs(60));
        assert_eq!(s.max_connections, 100, "from the file");

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
}
