//! `objmapper serve`: configure and start the server, wait for SIGTERM/SIGINT, shut down.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use objmapper_server::{Server, ServerConfig};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

use crate::args::ServeArgs;
use crate::UsageError;

/// Runs the server until SIGTERM or SIGINT, then shuts it down cleanly.
pub fn run(a: ServeArgs) -> Result<()> {
    let filter = EnvFilter::try_new(&a.log_level)
        .map_err(|e| UsageError(format!("--log-level {:?}: {e}", a.log_level)))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let data_dir = match a.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let mut cfg = ServerConfig::new(&a.socket, &data_dir);
    cfg.socket_mode = a.socket_mode;
    cfg.socket_group = a.socket_group.as_deref().map(resolve_group).transpose()?;
    cfg.workers = a.workers as usize;
    let st = &mut cfg.store;
    st.max_object_size = a.max_object_size;
    if a.mem_dir.is_some() {
        st.mem_dir = a.mem_dir;
    }
    // Unset flags keep the store's documented defaults.
    for (arg, field) in [
        (a.mem_capacity, &mut st.mem_capacity_bytes),
        (a.mem_max_objects, &mut st.mem_max_objects),
        (a.disk_capacity, &mut st.disk_capacity_bytes),
        (a.disk_max_objects, &mut st.disk_max_objects),
        (a.direct_to_disk_threshold, &mut st.direct_to_disk_threshold),
    ] {
        if let Some(v) = arg {
            *field = v;
        }
    }
    cfg.tcp_listen = a
        .tcp
        .as_deref()
        .map(|t| resolve_addr("--tcp", t))
        .transpose()?;
    cfg.udp_listen = a
        .udp
        .as_deref()
        .map(|u| resolve_addr("--udp", u))
        .transpose()?;
    if let Some(n) = a.udp_max_response {
        cfg.udp_max_response = usize::try_from(n).map_err(|_| {
            UsageError(format!(
                "--udp-max-response {n} is too large for this machine"
            ))
        })?;
    }
    cfg.admin_enabled = !a.no_admin;
    cfg.admin_socket = a.admin_socket.clone();
    cfg.admin_tcp = a
        .admin_tcp
        .as_deref()
        .map(|t| resolve_addr("--admin-tcp", t))
        .transpose()?;
    cfg.share_fds = a.share_fds;
    cfg.access.uids.extend(a.allow_uid);
    cfg.access.gids.extend(a.allow_gid);
    if let Some(p) = a.tcp_permissions {
        cfg.access.tcp = p;
    }
    let count = |flag: &str, n: u64| {
        usize::try_from(n).map_err(|_| UsageError(format!("--{flag} {n} is too large")))
    };
    if let Some(n) = a.max_connections {
        cfg.max_connections = count("max-connections", n)?;
    }
    if let Some(n) = a.max_pipeline_depth {
        cfg.max_pipeline_depth = n;
    }
    if let Some(n) = a.max_staged_puts {
        cfg.max_staged_puts = count("max-staged-puts", n)?;
    }
    if let Some(n) = a.max_staged_puts_total {
        cfg.max_staged_puts_total = count("max-staged-puts-total", n)?;
    }
    if let Some(n) = a.max_staged_bytes_per_conn {
        cfg.max_staged_bytes_per_conn = n;
    }
    if let Some(n) = a.max_staged_bytes_total {
        cfg.max_staged_bytes_total = n;
    }
    if let Some(n) = a.max_key_len {
        cfg.max_key_len = count("max-key-len", n)?;
    }
    if let Some(n) = a.max_meta_len {
        cfg.max_meta_len = count("max-meta-len", n)?;
    }
    if let Some(d) = a.header_timeout {
        cfg.header_timeout = d;
    }
    if let Some(d) = a.frame_timeout {
        cfg.frame_timeout = d;
    }
    cfg.idle_timeout = a.idle_timeout;
    if let Some(n) = a.auto_fd_threshold {
        cfg.auto_fd_threshold = n;
    }

    // Take over SIGTERM/SIGINT before starting, so a signal during startup (recovery can
    // take a while) still leads to a clean shutdown rather than an abrupt exit.
    let mem_dir = cfg.store.resolved_mem_dir();
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let server = Server::start(cfg).context("cannot start the server")?;
    tracing::info!(
        socket = %server.socket_path().display(),
        data_dir = %data_dir.display(),
        mem_dir = %mem_dir.display(),
        "objmapper {} ready",
        env!("CARGO_PKG_VERSION")
    );
    let sig = signals.forever().next().unwrap_or(SIGTERM);
    tracing::info!(
        "received {}, shutting down (send it again to exit at once)",
        signal_name(sig)
    );
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!(
                "objmapper: {} again: exiting without a clean shutdown",
                signal_name(sig)
            );
            std::process::exit(1);
        }
    });
    server.shutdown().context("shutting down")?;
    tracing::info!("stopped");
    Ok(())
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "a signal",
    }
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
             pass --data-dir or set OBJMAPPER_DATA_DIR"
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
            "--socket-group {g:?}: no such group in /etc/group (give a numeric gid instead)"
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

fn resolve_addr(flag: &str, addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| UsageError(format!("{flag} {addr:?} is not an ADDR:PORT")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn documented_tier_defaults_match_the_store() {
        use crate::args::{parse_count, parse_size, Cli};
        use clap::CommandFactory;
        use objmapper_store::StoreConfig as S;
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let default_of = |id: &str| {
            let arg = serve.get_arguments().find(|a| a.get_id() == id).unwrap();
            let help = arg.get_help().unwrap().to_string();
            let d = help.rsplit("[default: ").next().unwrap();
            d.trim_end_matches(']').to_string()
        };
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
            resolve_addr("--tcp", "127.0.0.1:7070").unwrap(),
            "127.0.0.1:7070".parse().unwrap()
        );
        let e = resolve_addr("--udp", "nonsense").unwrap_err();
        assert!(e.to_string().starts_with("--udp \"nonsense\""), "{e}");
    }

    #[test]
    fn tcp_and_udp_flags_default_their_address_only_when_given() {
        use crate::args::{Cli, Command, DEFAULT_TCP_ADDR, DEFAULT_UDP_ADDR};
        use clap::Parser;
        let serve = |args: &[&str]| {
            let mut all = vec!["objmapper", "serve"];
            all.extend_from_slice(args);
            match Cli::parse_from(all).command {
                Command::Serve(s) => (s.tcp, s.udp),
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
