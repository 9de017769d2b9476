//! Turning `ConnArgs` into a transport, a transfer mode and a connected client.
//!
//! Everything that can be refused without the server is refused here, before connecting,
//! as a usage error (exit 2): a mode the transport cannot carry, an op UDP does not serve,
//! contradictory transport flags.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, Context};
use objmapper_client::{Client, Error, Mode, TlsOptions, Transport, UdpClient, V2Options};

use crate::args::{ConnArgs, ModeArg, TransportArg, DEFAULT_TCP_ADDR, DEFAULT_UDP_ADDR};
use crate::UsageError;

/// The `--timeout` of this run (`OBJMAPPER_TIMEOUT`), set once by `main`.
static TIMEOUT: OnceLock<Option<Duration>> = OnceLock::new();

/// Records `--timeout` for every connection this process makes: `None` = the default
/// ([`objmapper_client::DEFAULT_TIMEOUT`]), `Duration::MAX` = no limit.
pub fn set_timeout(t: Option<Duration>) {
    let _ = TIMEOUT.set(t);
}

/// How long to wait to connect and for each answer: `None` = forever.
pub fn timeout() -> Option<Duration> {
    match TIMEOUT.get().copied().flatten() {
        None => Some(objmapper_client::DEFAULT_TIMEOUT),
        Some(Duration::MAX) => None,
        Some(t) => Some(t),
    }
}

/// Where the server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String, TcpSecurity),
    Udp(String),
}

/// How to reach a TCP listener that speaks TLS or requires a token (files are read at
/// each connect).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpSecurity {
    /// Speak TLS, trusting the certificates in this PEM file.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain and key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry.
    pub server_name: Option<String>,
    /// The token to present in HELLO.
    pub token_file: Option<PathBuf>,
}

impl TcpSecurity {
    fn of(c: &ConnArgs) -> TcpSecurity {
        TcpSecurity {
            tls_ca: c.tls_ca.clone(),
            client_cert: c.tls_client_cert.clone().zip(c.tls_client_key.clone()),
            server_name: c.tls_server_name.clone(),
            token_file: c.token_file.clone(),
        }
    }

    fn is_plain(&self) -> bool {
        *self == TcpSecurity::default()
    }

    /// The first flag that asks for TLS or a token, for messages.
    fn flag(&self) -> Option<&'static str> {
        if self.tls_ca.is_some() {
            Some("--tls-ca")
        } else if self.client_cert.is_some() {
            Some("--tls-client-cert")
        } else if self.server_name.is_some() {
            Some("--tls-server-name")
        } else if self.token_file.is_some() {
            Some("--token-file")
        } else {
            None
        }
    }

    /// Connects to `addr` with TLS and/or the token. A token needs HELLO, so the session
    /// is V2 then (with `v2`'s options, or the defaults).
    fn connect(&self, addr: &str, v2: Option<V2Options>) -> anyhow::Result<Client> {
        let token = match &self.token_file {
            Some(p) => Some(objmapper_server::Token::from_file(p).map_err(|e| anyhow!(e))?),
            None => None,
        };
        let tls = match &self.tls_ca {
            Some(ca) => {
                let mut t = TlsOptions::new(ca)?;
                if let Some((cert, key)) = &self.client_cert {
                    t = t.client_cert(cert, key)?;
                }
                if let Some(name) = self.server_name.clone().or_else(|| host_name(addr)) {
                    t = t.server_name(&name)?;
                }
                Some(t)
            }
            None => None,
        };
        let target = Target::Tcp(addr.into(), self.clone());
        let mut c = match &tls {
            Some(t) => Client::connect_tls(addr, t).and_then(|mut c| {
                c.set_timeout(timeout())?;
                Ok(c)
            }),
            None => Client::connect_tcp_timeout(addr, timeout()),
        }
        .map_err(|e| connect_hint(e, &target))?;
        if token.is_some() || v2.is_some() {
            let secret = token.as_ref().map_or(&[][..], |t| t.as_bytes());
            c.hello_with_token(v2.unwrap_or_default(), secret)
                .map_err(|e| connect_hint(e, &target))
                .with_context(|| format!("opening a session with {addr}"))?;
        }
        Ok(c)
    }
}

/// The host part of `addr` when it is a name, not an IP address: the name the server's
/// certificate must carry.
fn host_name(addr: &str) -> Option<String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host.parse::<std::net::IpAddr>().is_err() && !host.is_empty()).then(|| host.to_string())
}

impl Target {
    pub fn transport(&self) -> Transport {
        match self {
            Target::Unix(_) => Transport::Unix,
            Target::Tcp(..) => Transport::Tcp,
            Target::Udp(_) => Transport::Udp,
        }
    }

    /// For messages: the socket path, `tcp ADDR` or `udp ADDR`.
    pub fn describe(&self) -> String {
        match self {
            Target::Unix(p) => p.display().to_string(),
            Target::Tcp(a, s) if s.tls_ca.is_some() => format!("tls {a}"),
            Target::Tcp(a, _) => format!("tcp {a}"),
            Target::Udp(a) => format!("udp {a}"),
        }
    }
}

/// The server to talk to, from --transport, --tcp, --udp and --socket.
pub fn target(c: &ConnArgs) -> anyhow::Result<Target> {
    let usage = |m: String| -> anyhow::Error { UsageError(m).into() };
    let security = TcpSecurity::of(c);
    if security.tls_ca.is_none() {
        if let Some(flag) = [
            ("--tls-client-cert", security.client_cert.is_some()),
            ("--tls-server-name", security.server_name.is_some()),
        ]
        .iter()
        .find_map(|(f, set)| set.then_some(*f))
        {
            return Err(usage(format!(
                "{flag} is for TLS: give --tls-ca too (the certificates to trust)"
            )));
        }
    }
    let t = match (c.transport, &c.tcp, &c.udp) {
        (Some(t), _, _) => t,
        (None, Some(_), Some(_)) => {
            return Err(usage(
                "both --tcp and --udp are given: choose one with --transport tcp or \
                 --transport udp"
                    .into(),
            ))
        }
        (None, Some(_), None) => TransportArg::Tcp,
        (None, None, Some(_)) => TransportArg::Udp,
        (None, None, None) if !security.is_plain() => TransportArg::Tcp,
        (None, None, None) => TransportArg::Unix,
    };
    if t != TransportArg::Tcp {
        if let Some(flag) = security.flag() {
            return Err(usage(format!(
                "{flag} applies to the TCP transport only (the Unix socket checks peer \
                 credentials; UDP has no TLS)"
            )));
        }
    }
    Ok(match t {
        TransportArg::Unix => {
            if let Some(flag) = [("--tcp", &c.tcp), ("--udp", &c.udp)]
                .iter()
                .find_map(|(f, v)| v.as_ref().map(|_| *f))
            {
                return Err(usage(format!(
                    "--transport unix and {flag} contradict each other"
                )));
            }
            Target::Unix(c.socket.clone())
        }
        TransportArg::Tcp => {
            Target::Tcp(c.tcp.clone().unwrap_or(DEFAULT_TCP_ADDR.into()), security)
        }
        TransportArg::Udp => Target::Udp(c.udp.clone().unwrap_or(DEFAULT_UDP_ADDR.into())),
    })
}

/// The transfer mode for `transport`: the one asked for, `best` (the default) being fd on
/// the Unix socket and copy elsewhere. A mode the transport cannot carry is a usage
/// error, reported before connecting.
pub fn mode_for(c: &ConnArgs, transport: Transport) -> anyhow::Result<Mode> {
    let mode = match c.mode.unwrap_or(ModeArg::Best) {
        ModeArg::Fd => Mode::Fd,
        ModeArg::Copy => Mode::Copy,
        ModeArg::Splice => Mode::Splice,
        ModeArg::Auto => Mode::Auto,
        ModeArg::Best if transport == Transport::Unix => Mode::Fd,
        ModeArg::Best => Mode::Copy,
    };
    if transport.supports(mode) {
        return Ok(mode);
    }
    let msg = match (mode, transport) {
        (Mode::Fd, t) => format!(
            "--mode fd needs a Unix socket: file descriptors cannot travel over {t} (use \
             --mode copy{})",
            if t == Transport::Tcp {
                ", splice or auto"
            } else {
                " or auto"
            }
        ),
        (m, t) => format!(
            "--mode {m} is not available over {t}: over UDP the reply is copied into \
             datagrams (use --mode copy or auto)"
        ),
    };
    Err(UsageError(msg).into())
}

/// The target and the mode, both checked.
pub fn resolve(c: &ConnArgs) -> anyhow::Result<(Target, Mode)> {
    let t = target(c)?;
    let mode = mode_for(c, t.transport())?;
    Ok((t, mode))
}

/// A usage error for a command that UDP does not serve.
pub fn not_over_udp(command: &str) -> anyhow::Error {
    UsageError(format!(
        "{command} is not available over UDP: UDP serves get, stat and ping only (use \
         --transport unix or tcp)"
    ))
    .into()
}

/// A stream connection (Unix socket or TCP) or a UDP client.
pub enum Conn {
    Stream(Box<Client>),
    Udp(UdpClient),
}

impl Conn {
    /// Connects to `target`: V1, or V2 with `v2` on a stream.
    pub fn open(target: &Target, v2: Option<V2Options>) -> anyhow::Result<Conn> {
        match target {
            Target::Udp(_) => open_target(target),
            t => Ok(Conn::Stream(Box::new(open_stream(t, v2)?))),
        }
    }

    /// False once a stream connection is unusable (UDP has no stream to break).
    pub fn usable(&self) -> bool {
        match self {
            Conn::Stream(c) => c.is_usable(),
            Conn::Udp(_) => true,
        }
    }
}

/// Connects to `target`, with a hint on failure.
pub fn open_target(target: &Target) -> anyhow::Result<Conn> {
    Ok(match target {
        Target::Udp(addr) => {
            let mut c = UdpClient::connect(addr.as_str()).map_err(|e| {
                anyhow!(
                    "cannot use udp {addr}: {e} (is the server running with `objmapper serve \
                     --udp ADDR:PORT`?)"
                )
            })?;
            // --timeout bounds the whole wait (the client's 3 attempts).
            if let Some(t) = TIMEOUT.get().copied().flatten() {
                let t = if t == Duration::MAX {
                    Duration::from_secs(3600)
                } else {
                    t
                };
                c.set_timeout(t / 3);
            }
            Conn::Udp(c)
        }
        t => Conn::Stream(Box::new(open_stream(t, None)?)),
    })
}

/// Connects over the Unix socket or TCP, V1, or V2 with `v2`. A UDP target is a usage
/// error naming `command`.
pub fn open_stream(target: &Target, v2: Option<V2Options>) -> anyhow::Result<Client> {
    let t = timeout();
    let mut c = match target {
        Target::Unix(p) => Client::connect_timeout(p, t),
        Target::Tcp(a, s) if !s.is_plain() => return s.connect(a, v2),
        Target::Tcp(a, _) => Client::connect_tcp_timeout(a.as_str(), t),
        Target::Udp(_) => return Err(not_over_udp("this command")),
    }
    .map_err(|e| connect_hint(e, target))?;
    if let Some(o) = v2 {
        c.hello(o).map_err(|e| connect_hint(e, target))?;
    }
    Ok(c)
}

/// The hint for a server that did not answer in time: what to check, and the flag.
fn timeout_hint(target: &Target) -> String {
    let waited = match timeout() {
        Some(t) => format!("{} s", t.as_secs_f64()),
        None => "ever".into(),
    };
    format!(
        "the server at {} did not answer (waited {waited}): it is not running, still \
         starting, stuck or overloaded; check it (`systemctl status objmapper`, its log), \
         or wait longer with --timeout",
        target.describe()
    )
}

/// An error with a hint at its likely cause (a timeout on any call says the server did
/// not answer).
pub fn hint(e: Error, target: &Target) -> anyhow::Error {
    if e.is_timeout() {
        return anyhow::Error::new(e).context(timeout_hint(target));
    }
    e.into()
}

/// A connection error with a hint at its likely cause.
fn connect_hint(e: Error, target: &Target) -> anyhow::Error {
    if e.is_timeout() {
        return hint(e, target);
    }
    match e {
        Error::Connect { .. } => {
            let Target::Unix(p) = target else {
                unreachable!()
            };
            anyhow!(
                "{e} (is the server running? start it with `objmapper serve --socket {}`)",
                p.display()
            )
        }
        Error::ConnectTcp { .. } => {
            anyhow!("{e} (is the server running with `objmapper serve --tcp ADDR:PORT`?)")
        }
        e => e.into(),
    }
}

/// For commands that only work on a stream (put, rm, pin, unpin): the checked target and
/// mode, refusing UDP by name.
pub fn stream_only(c: &ConnArgs, command: &str) -> anyhow::Result<(Target, Mode)> {
    let t = target(c)?;
    if t.transport() == Transport::Udp {
        return Err(not_over_udp(command));
    }
    let mode = mode_for(c, t.transport())?;
    Ok((t, mode))
}

/// The key's bytes: keys are opaque, so any bytes the shell passes are kept as is.
pub fn key_bytes(key: &std::ffi::OsStr) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    key.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::Parser;

    fn conn(args: &[&str]) -> ConnArgs {
        let mut all = vec!["objmapper", "ping", "--socket", "/s"];
        all.extend_from_slice(args);
        match Cli::parse_from(all).command {
            crate::args::Command::Ping(p) => p.conn,
            _ => unreachable!(),
        }
    }

    fn resolved(args: &[&str]) -> Result<(Target, Mode), String> {
        resolve(&conn(args)).map_err(|e| e.to_string())
    }

    #[test]
    fn transports_and_best_modes() {
        assert_eq!(resolved(&[]), Ok((Target::Unix("/s".into()), Mode::Fd)));
        assert_eq!(
            resolved(&["--tcp", "h:1"]),
            Ok((
                Target::Tcp("h:1".into(), TcpSecurity::default()),
                Mode::Copy
            ))
        );
        assert_eq!(
            resolved(&["--transport", "tcp"]),
            Ok((
                Target::Tcp(DEFAULT_TCP_ADDR.into(), TcpSecurity::default()),
                Mode::Copy
            ))
        );
        assert_eq!(
            resolved(&["--udp", "h:2", "--mode", "auto"]),
            Ok((Target::Udp("h:2".into()), Mode::Auto))
        );
        assert_eq!(
            resolved(&["--transport", "udp"]),
            Ok((Target::Udp(DEFAULT_UDP_ADDR.into()), Mode::Copy))
        );
        assert_eq!(
            resolved(&["--transport", "tcp", "--tcp", "h:1", "--mode", "splice"]),
            Ok((
                Target::Tcp("h:1".into(), TcpSecurity::default()),
                Mode::Splice
            ))
        );
        assert_eq!(
            resolved(&["--transport", "unix", "--mode", "auto"]),
            Ok((Target::Unix("/s".into()), Mode::Auto))
        );
    }

    #[test]
    fn impossible_combinations_are_usage_errors() {
        for (args, needle) in [
            (&["--transport", "tcp", "--mode", "fd"][..], "over TCP"),
            (&["--tcp", "h:1", "--mode", "fd"], "--mode fd"),
            (&["--udp", "h:1", "--mode", "fd"], "over UDP"),
            (&["--transport", "udp", "--mode", "splice"], "--mode splice"),
            (&["--tcp", "a:1", "--udp", "b:2"], "--transport"),
            (&["--transport", "unix", "--tcp", "a:1"], "contradict"),
        ] {
            let e = resolve(&conn(args)).unwrap_err();
            assert!(e.is::<UsageError>(), "{args:?}");
            assert!(e.to_string().contains(needle), "{args:?}: {e}");
        }
        let e = stream_only(&conn(&["--transport", "udp"]), "put").unwrap_err();
        assert!(e.is::<UsageError>());
        assert!(
            e.to_string().starts_with("put is not available over UDP"),
            "{e}"
        );
    }

    #[test]
    fn tls_and_token_flags_select_tcp_and_are_refused_elsewhere() {
        let secure = |ca: Option<&str>, token: Option<&str>| TcpSecurity {
            tls_ca: ca.map(PathBuf::from),
            token_file: token.map(PathBuf::from),
            ..TcpSecurity::default()
        };
        assert_eq!(
            resolved(&["--tls-ca", "/ca.pem"]),
            Ok((
                Target::Tcp(DEFAULT_TCP_ADDR.into(), secure(Some("/ca.pem"), None)),
                Mode::Copy
            ))
        );
        assert_eq!(
            resolved(&["--tcp", "h:1", "--token-file", "/t"]),
            Ok((
                Target::Tcp("h:1".into(), secure(None, Some("/t"))),
                Mode::Copy
            ))
        );
        for (args, needle) in [
            (
                &["--transport", "unix", "--tls-ca", "/ca"][..],
                "--tls-ca applies to the TCP",
            ),
            (
                &["--udp", "h:1", "--token-file", "/t"],
                "--token-file applies to the TCP",
            ),
            (
                &["--tcp", "h:1", "--tls-server-name", "x"],
                "give --tls-ca too",
            ),
            (
                &["--tls-client-cert", "/c", "--tls-client-key", "/k"],
                "give --tls-ca too",
            ),
        ] {
            let e = resolve(&conn(args)).unwrap_err();
            assert!(e.is::<UsageError>(), "{args:?}");
            assert!(e.to_string().contains(needle), "{args:?}: {e}");
        }
        // A certificate needs its key (clap).
        let r = Cli::try_parse_from([
            "objmapper",
            "ping",
            "--tls-ca",
            "/ca",
            "--tls-client-cert",
            "/c",
        ]);
        assert!(r.is_err());
    }

    #[test]
    fn the_server_name_defaults_to_the_host_when_it_is_a_name() {
        assert_eq!(
            host_name("cache.example.net:9999"),
            Some("cache.example.net".into())
        );
        assert_eq!(host_name("10.0.0.7:9999"), None);
        assert_eq!(host_name("[::1]:9999"), None);
        assert_eq!(host_name("localhost"), Some("localhost".into()));
    }
}
