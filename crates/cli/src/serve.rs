//! `objmapper serve`: merge the configuration (flags, environment, file, defaults), start
//! the server, re-read the file on SIGHUP or `objmapper reload`, shut down on
//! SIGTERM/SIGINT. Under a service manager (`NOTIFY_SOCKET`), it reports readiness,
//! reloads and shutdown (`Type=notify`; objmapper_server::Notifier).

use std::path::Path;
use std::sync::{mpsc, Arc};

use anyhow::{Context, Result};
use objmapper_server::{Notifier, Notify, RuntimeConfigPatch, Server, ServerError};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::args::ServeArgs;
use crate::config::{self, Change, Env, Settings};
use crate::defs::{Defaults, Reload};
use crate::logging::{self, LogHandle};
use crate::settings::SETTINGS;
use crate::value::Kind;
use crate::ConfigError;

/// What the main loop waits for: a signal, or a reload asked for on the management API
/// (with where to send its outcome).
enum Event {
    Signal(i32),
    Reload(mpsc::Sender<Result<String, String>>),
}

/// The file, flags and environment merged. Every error here is a [`ConfigError`].
fn configuration(
    a: &ServeArgs,
) -> Result<(
    Option<std::path::PathBuf>,
    Option<config::FileConfig>,
    Settings,
)> {
    let path = config::config_path(a);
    if let (Some(p), Some(_)) = (&path, &a.config) {
        if !p.exists() {
            anyhow::bail!(
                "cannot read config file {}: it does not exist (named by --config or \
                 OBJMAPPER_CONFIG): create it (objmapper.example.toml is a commented one) or \
                 stop naming it",
                p.display()
            );
        }
    }
    let file = path.as_deref().map(config::load_file).transpose()?;
    let settings = Settings::resolve(a, path.as_deref().zip(file.as_ref()), &Env::current())?;
    Ok((path, file, settings))
}

/// Runs the server until SIGTERM or SIGINT, then shuts it down cleanly.
pub fn run(a: ServeArgs) -> Result<()> {
    let (path, file, settings) = configuration(&a).context(ConfigError)?;
    if a.print_config {
        print!("{}", settings.to_toml()?);
        return Ok(());
    }
    // Before any thread starts: these read and clear LISTEN_* and NOTIFY_SOCKET.
    let activated = objmapper_server::take_activated_listener().context(ConfigError)?;
    let notifier = Notifier::from_env();
    let log = logging::init(&settings.log_level, settings.log_format).context(ConfigError)?;
    let notifier = notifier.unwrap_or_else(|e| {
        tracing::warn!("cannot notify the service manager: {e}; not reporting readiness");
        None
    });
    let notify = |n: Notify<'_>| {
        if let Some(x) = &notifier {
            x.send_or_warn(n);
        }
    };
    if let Some(p) = &path {
        tracing::info!("configuration file {}", p.display());
    }
    let mut cfg = settings.server_config().context(ConfigError)?;
    if let Some((p, f)) = path.as_deref().zip(file.as_ref()) {
        warn_shadowed_allowlist(&a, p, f, "");
    }
    if let Some(l) = activated {
        if let Some(p) = l.local_addr().ok().as_ref().and_then(|a| a.as_pathname()) {
            cfg.socket_path = p.to_path_buf();
        }
        // The management socket's default is the sibling of the socket actually served.
        if settings.admin_socket == objmapper_server::admin_sibling(&settings.socket) {
            cfg.admin_socket = None;
        }
        tracing::info!(
            "socket activation: serving the passed socket {} (socket_mode and socket_group \
             are the service manager's)",
            cfg.socket_path.display()
        );
        cfg.unix_listener = Some(Arc::new(l));
    }

    // Take over the signals before starting, so a SIGTERM during startup (recovery can
    // take a while) still leads to a clean shutdown rather than an abrupt exit.
    let mem_dir = cfg.store.resolved_mem_dir();
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    notify(Notify::Status(&format!(
        "starting: opening the store in {} (recovery)",
        settings.data_dir.display()
    )));
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            let config = matches!(e, ServerError::Config(_));
            let e = anyhow::Error::new(e).context("cannot start the server");
            return Err(if config { e.context(ConfigError) } else { e });
        }
    };
    // The eviction knobs are not part of the store's startup config: apply the file's.
    let knobs = startup_knobs(&settings);
    if knobs != RuntimeConfigPatch::default() {
        if let Err(e) = server.set_runtime_config(&knobs) {
            let _ = server.shutdown();
            return Err(anyhow::anyhow!("config file: eviction: {e}").context(ConfigError));
        }
    }
    let serving = format!("serving {}", server.socket_path().display());
    tracing::info!(
        socket = %server.socket_path().display(),
        data_dir = %settings.data_dir.display(),
        mem_dir = %mem_dir.display(),
        "objmapper {} ready",
        env!("CARGO_PKG_VERSION")
    );
    notify(Notify::Ready(&serving));

    // Signals and reload requests, in arrival order, to this thread.
    let (tx, rx) = mpsc::channel::<Event>();
    let sig_tx = tx.clone();
    std::thread::Builder::new()
        .name("objm-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    server.set_reload_handler(Arc::new(move || {
        let gone = || "the server is shutting down".to_string();
        let (reply_tx, reply_rx) = mpsc::channel();
        tx.send(Event::Reload(reply_tx)).map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())?
    }));

    let mut running = settings;
    let sig = loop {
        let (why, reply) = match rx.recv() {
            Ok(Event::Signal(SIGHUP)) => ("SIGHUP", None),
            Ok(Event::Signal(sig)) => break sig,
            Ok(Event::Reload(reply)) => ("objmapper reload", Some(reply)),
            Err(_) => break SIGTERM,
        };
        tracing::info!("reloading the configuration ({why})");
        notify(Notify::Reloading(&format!(
            "reloading the configuration ({why})"
        )));
        let outcome = reload(&a, &mut running, &log, &server);
        let status = match &outcome {
            Ok(_) => format!("{serving}; configuration reloaded"),
            Err(e) => format!("{serving}; last reload refused, old settings kept: {e}"),
        };
        notify(Notify::Ready(&status));
        if let Some(r) = reply {
            let _ = r.send(outcome);
        }
    };
    tracing::info!(
        "received {}, shutting down (send it again to exit at once)",
        signal_name(sig)
    );
    notify(Notify::Stopping(
        "stopping: finishing requests, writing memory-only objects to disk",
    ));
    std::thread::spawn(move || {
        for ev in rx {
            match ev {
                Event::Signal(SIGHUP) => {}
                Event::Signal(sig) => {
                    eprintln!(
                        "objmapper: {} again: exiting without a clean shutdown",
                        signal_name(sig)
                    );
                    std::process::exit(1);
                }
                Event::Reload(r) => {
                    let _ = r.send(Err("the server is shutting down".into()));
                }
            }
        }
    });
    server.shutdown().context("shutting down")?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP or `objmapper reload`: re-reads the config file (and the environment's
/// RUST_LOG), applies what can change at runtime, one log line each, and warns about the
/// rest, which needs a restart. `Ok` with a summary once the changes are in force; `Err`
/// with the reason when something was refused: a file that does not parse changes
/// nothing, a refused section keeps its old values.
fn reload(
    a: &ServeArgs,
    running: &mut Settings,
    log: &LogHandle,
    server: &Server,
) -> Result<String, String> {
    let Some(path) = config::config_path(a) else {
        let msg = format!(
            "no configuration file to re-read (give --config or create {})",
            config::default_config_path()
                .map_or_else(|| "one".to_string(), |p| p.display().to_string())
        );
        tracing::warn!("SIGHUP: {msg}");
        return Err(msg);
    };
    match reread(a, &path) {
        Ok(new) => {
            let tls = reload_tcp_security(running, &new, server);
            let applied = apply(running, new, log, server);
            match (tls, applied) {
                (Ok(()), r) => r,
                (Err(e), Ok(_)) => Err(e),
                (Err(e), Err(f)) => Err(format!("{e}; {f}")),
            }
        }
        Err(e) => {
            let msg = format!("{e:#}; the running configuration is unchanged");
            tracing::error!("SIGHUP: {msg}");
            Err(msg)
        }
    }
}

/// SIGHUP for the TCP listener's TLS certificate, client CA and token: re-reads the
/// files even when their paths did not change (a rotated certificate is usually
/// rewritten in place), all or nothing.
fn reload_tcp_security(
    running: &mut Settings,
    new: &Settings,
    server: &Server,
) -> Result<(), String> {
    let secured = |s: &Settings| {
        s.tls_cert.is_some() || s.tls_client_ca.is_some() || s.tcp_token_file.is_some()
    };
    if running.tcp.is_none() || !(secured(running) || secured(new)) {
        return Ok(());
    }
    let result = new.tcp_security().and_then(|(tls, token)| {
        server
            .reload_tcp_security(tls.as_ref(), token)
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => {
            for d in SETTINGS {
                if matches!(d.reload, Reload::TcpSecurity) {
                    running.take(new, d);
                }
            }
            tracing::info!(
                "SIGHUP: re-read the TCP listener's TLS certificate{} (for connections \
                 accepted from now on)",
                if new.tcp_token_file.is_some() {
                    " and token"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(e) => {
            let msg = format!(
                "the TCP listener's TLS settings were refused ({e:#}); it keeps the \
                 previous certificate and token"
            );
            tracing::error!("SIGHUP: {msg}");
            Err(msg)
        }
    }
}

fn reread(a: &ServeArgs, path: &Path) -> Result<Settings> {
    let file = config::load_file(path)?;
    warn_shadowed_allowlist(a, path, &file, "SIGHUP: ");
    Settings::resolve(a, Some((path, &file)), &Env::current())
}

/// Warns about allowlists in the file that a flag or variable replaces: the file's list
/// is then not used at all, and editing it changes nothing on SIGHUP.
fn warn_shadowed_allowlist(a: &ServeArgs, path: &Path, f: &config::FileConfig, prefix: &str) {
    let lists = SETTINGS.iter().filter(|d| matches!(d.kind, Kind::Grants));
    for d in lists {
        if f.values.contains_key(d.name) && a.given.contains_key(d.name) {
            tracing::warn!(
                "{prefix}[{}] {} in {} is not used: --{} or {} replaces it",
                d.section,
                d.key,
                path.display(),
                d.flag.unwrap_or_default(),
                d.env.unwrap_or_default()
            );
        }
    }
}

/// Whether a change can be applied to the running server.
fn is_runtime(c: &Change) -> bool {
    c.def.reload.applies(c.was.as_ref(), c.value.as_ref())
}

/// Applies the runtime-changeable differences between `running` and `new` (and records
/// them in `running`), and reports the others. `Ok` with what changed; `Err` naming what
/// was refused (the rest is applied).
fn apply(
    running: &mut Settings,
    new: Settings,
    log: &LogHandle,
    server: &Server,
) -> Result<String, String> {
    let changes = config::diff(running, &new);
    if changes.is_empty() {
        tracing::info!("SIGHUP: configuration re-read, nothing changed");
        return Ok("configuration re-read, nothing changed".into());
    }
    let mut refused: Vec<String> = Vec::new();
    let mut applied: Vec<&str> = Vec::new();
    let (live, restart): (Vec<&Change>, Vec<&Change>) = changes.iter().partition(|c| is_runtime(c));
    let report =
        |c: &Change| tracing::info!("SIGHUP: {} changed from {} to {}", c.key, c.old, c.new);

    let by = |f: fn(&Reload) -> bool| -> Vec<&Change> {
        live.iter().filter(|c| f(&c.def.reload)).copied().collect()
    };
    for c in by(|r| matches!(r, Reload::Log)) {
        match log.set_level(&new.log_level) {
            Ok(()) => {
                running.take(&new, c.def);
                report(c);
                applied.push(&c.key);
            }
            Err(e) => {
                tracing::error!("SIGHUP: cannot change {}: {e:#}", c.key);
                refused.push(format!("{}: {e:#}", c.key));
            }
        }
    }
    let access = by(|r| matches!(r, Reload::Access));
    if !access.is_empty() {
        server.set_access(new.access());
        for c in &access {
            running.take(&new, c.def);
            applied.push(&c.key);
            tracing::info!(
                "SIGHUP: {} changed from {} to {} (for new connections, and open ones at their \
                 next request)",
                c.key,
                c.old,
                c.new
            );
        }
    }
    let limits = by(|r| matches!(r, Reload::Limits));
    if !limits.is_empty() {
        match server.set_limits(&new.runtime_limits()) {
            Ok(()) => {
                for d in SETTINGS
                    .iter()
                    .filter(|d| matches!(d.reload, Reload::Limits))
                {
                    running.take(&new, d);
                }
                limits.iter().for_each(|c| report(c));
                applied.extend(limits.iter().map(|c| c.key.as_str()));
            }
            Err(e) => {
                let msg = format!("refused {} ({e})", config::describe(&limits));
                tracing::error!("SIGHUP: {msg}; none of them changed");
                refused.push(msg);
            }
        }
    }
    let store = by(|r| matches!(r, Reload::Store { .. }));
    if !store.is_empty() {
        let mut patch = RuntimeConfigPatch::default();
        for c in &store {
            if let (Reload::Store { patch: put, .. }, Some(v)) = (c.def.reload, &c.value) {
                put(&mut patch, v);
            }
        }
        match server.set_runtime_config(&patch) {
            Ok(_) => {
                // Every store setting takes `new`'s value, as before the table: a tier
                // switched on or off (needs a restart) is then not reported again.
                for d in SETTINGS
                    .iter()
                    .filter(|d| matches!(d.reload, Reload::Store { .. }))
                {
                    running.take(&new, d);
                }
                store.iter().for_each(|c| report(c));
                applied.extend(store.iter().map(|c| c.key.as_str()));
            }
            Err(e) => {
                let msg = format!("refused {} ({e})", config::describe(&store));
                tracing::error!("SIGHUP: {msg}; none of them changed");
                refused.push(msg);
            }
        }
    }
    if !restart.is_empty() {
        let keys: Vec<&str> = restart.iter().map(|c| c.key.as_str()).collect();
        let mut why = String::new();
        for c in &restart {
            if let Reload::Restart(Some(r)) = c.def.reload {
                why.push_str(&format!("; {}: {r}", c.key));
            }
        }
        tracing::warn!(
            "SIGHUP: {} changed but need{} a restart to take effect ({}{why}); still running \
             with the old value{}",
            keys.join(", "),
            if keys.len() == 1 { "s" } else { "" },
            config::describe(&restart),
            if keys.len() == 1 { "" } else { "s" },
        );
    }
    let mut summary = if applied.is_empty() {
        "nothing changed at runtime".to_string()
    } else {
        format!("changed {}", applied.join(", "))
    };
    if !restart.is_empty() {
        let keys: Vec<&str> = restart.iter().map(|c| c.key.as_str()).collect();
        summary.push_str(&format!("; needs a restart: {}", keys.join(", ")));
    }
    if refused.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{}; {summary}", refused.join("; ")))
    }
}

/// The settings applied right after start (`Reload::Store { at_start }`: the eviction
/// knobs, which are not part of the store's startup config) that `s` sets apart from
/// their defaults, as a patch.
fn startup_knobs(s: &Settings) -> RuntimeConfigPatch {
    let defaults = Defaults::get();
    let values = s.to_values();
    let mut p = RuntimeConfigPatch::default();
    for d in SETTINGS {
        if let (
            Reload::Store {
                patch,
                at_start: true,
                ..
            },
            Some(v),
        ) = (d.reload, values.get(d.name))
        {
            if (d.default)(&defaults, &values).ok().flatten().as_ref() != Some(v) {
                patch(&mut p, v);
            }
        }
    }
    p
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use objmapper_server::ServerConfig;
    use std::net::SocketAddr;

    /// The `[default: ...]` that `serve --help` states for the argument `id`.
    fn default_of(id: &str) -> String {
        use crate::args::Cli;
        use clap::CommandFactory;
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let arg = serve.get_arguments().find(|a| a.get_id() == id).unwrap();
        let help = arg.get_help().unwrap().to_string();
        let d = help.rsplit("[default: ").next().unwrap();
        d.trim_end_matches(']').to_string()
    }

    #[test]
    fn documented_tier_defaults_match_the_store() {
        use crate::parse::{parse_count, parse_size};
        use objmapper_store::StoreConfig as S;
        let size = |id| parse_size(&default_of(id)).unwrap();
        let count = |id| parse_count(&default_of(id)).unwrap();
        assert_eq!(size("mem_capacity"), S::DEFAULT_MEM_CAPACITY_BYTES);
        assert_eq!(count("mem_max_objects"), S::DEFAULT_MEM_MAX_OBJECTS);
        assert_eq!(size("disk_capacity"), S::DEFAULT_DISK_CAPACITY_BYTES);
        assert_eq!(count("disk_max_objects"), S::DEFAULT_DISK_MAX_OBJECTS);
        assert_eq!(
            size("direct_to_disk_threshold"),
            S::DEFAULT_DIRECT_TO_DISK_THRESHOLD
        );
    }

    #[test]
    fn tcp_and_udp_flags_default_their_address_only_when_given() {
        use crate::args::{Cli, Command, DEFAULT_TCP_ADDR, DEFAULT_UDP_ADDR};
        use clap::Parser;
        let serve = |args: &[&str]| {
            let mut all = vec!["objmapper", "serve"];
            all.extend_from_slice(args);
            match Cli::parse_from(all).command {
                Command::Serve(s) => (s.text("tcp"), s.text("udp")),
                _ => unreachable!(),
            }
        };
        assert_eq!(serve(&[]), (None, None));
        assert_eq!(
            serve(&["--tcp", "--udp"]),
            (Some(DEFAULT_TCP_ADDR.into()), Some(DEFAULT_UDP_ADDR.into()))
        );
        assert_eq!(
            serve(&["--udp", "0.0.0.0:1", "--tcp", "--workers", "3"]),
            (Some(DEFAULT_TCP_ADDR.into()), Some("0.0.0.0:1".into()))
        );
        // The documented defaults are the server's.
        assert_eq!(DEFAULT_UDP_ADDR.parse::<SocketAddr>().unwrap().port(), 9998);
    }

    #[test]
    fn documented_limit_defaults_match_the_server() {
        use crate::parse::{parse_count, parse_duration, parse_size};
        let count = |id| parse_count(&default_of(id)).unwrap();
        let size = |id| parse_size(&default_of(id)).unwrap();
        let secs = |id| parse_duration(&default_of(id)).unwrap();
        let cfg = ServerConfig::new("/s", "/d");
        assert_eq!(count("max_connections"), cfg.max_connections as u64);
        assert_eq!(count("max_pipeline_depth"), cfg.max_pipeline_depth as u64);
        assert_eq!(count("max_staged_puts"), cfg.max_staged_puts as u64);
        assert_eq!(
            count("max_staged_puts_total"),
            cfg.max_staged_puts_total as u64
        );
        assert_eq!(
            size("max_staged_bytes_per_conn"),
            cfg.max_staged_bytes_per_conn
        );
        assert_eq!(size("max_staged_bytes_total"), cfg.max_staged_bytes_total);
        assert_eq!(count("max_key_len"), cfg.max_key_len as u64);
        assert_eq!(size("max_meta_len"), cfg.max_meta_len as u64);
        assert_eq!(secs("header_timeout"), cfg.header_timeout);
        assert_eq!(secs("frame_timeout"), cfg.frame_timeout);
        assert_eq!(default_of("idle_timeout"), "never");
        assert_eq!(cfg.idle_timeout, None);
        assert_eq!(
            default_of("tcp_permissions").parse::<objmapper_server::Perms>(),
            Ok(cfg.access.tcp)
        );
    }

    #[test]
    fn documented_transport_defaults_match_the_server() {
        use crate::args::{parse_size, Cli};
        use clap::CommandFactory;
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let default_of = |id: &str| {
            let arg = serve.get_arguments().find(|a| a.get_id() == id).unwrap();
            let help = arg.get_help().unwrap().to_string();
            let d = help.rsplit("[default: ").next().unwrap();
            parse_size(d.trim_end_matches(']')).unwrap()
        };
        let cfg = ServerConfig::new("/s", "/d");
        assert_eq!(default_of("udp_max_response"), cfg.udp_max_response as u64);
        assert_eq!(default_of("auto_fd_threshold"), cfg.auto_fd_threshold);
    }
}
