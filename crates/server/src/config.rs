//! Server configuration. Every field documents its default.

use crate::access::AccessConfig;
use crate::tls::{TlsConfig, Token};
use objmapper_store::StoreConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `Server::start` needs. Build it with [`ServerConfig::new`] and override fields.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Path of the Unix stream socket. No default here: the CLI supplies the documented one.
    pub socket_path: PathBuf,
    /// Permission bits of the socket file. Default = 0o600 (owner only).
    pub socket_mode: u32,
    /// Group to give the socket file, e.g. so 0o660 lets a web server's group in.
    /// Default = None (the server's own group).
    pub socket_group: Option<u32>,
    /// The store's own settings: the data directory (disk tier), the memory tier's
    /// directory and capacities, the largest object, the direct-to-disk threshold. Each
    /// default is documented on [`StoreConfig`]'s fields; [`ServerConfig::new`] starts from
    /// `StoreConfig::new(data_dir)`.
    pub store: StoreConfig,
    /// Event-loop threads serving connections. Default = 2.
    pub workers: usize,
    /// After a wakeup that found work, a worker polls its connections without sleeping
    /// for up to this long before it blocks in `epoll_wait` again, so that a request
    /// arriving meanwhile costs no wakeup. It pays where clients run on other CPUs than
    /// the workers and cross-CPU wakeups are dear (docs/BENCHMARKS.md, "busy polling");
    /// each idle worker then spins this long after its last request. Default = zero
    /// (off), at most 10 ms.
    pub busy_poll: Duration,
    /// Also listen on TCP (copy, splice and auto modes; fds cannot cross TCP, so no fd
    /// mode). A loopback address may serve plain TCP; any other needs `tls` and client
    /// authentication (`tls.client_ca`, `tcp_token` or both), or `Server::start` refuses
    /// it. Default = None (off).
    pub tcp_listen: Option<SocketAddr>,
    /// Serve the TCP listener over TLS 1.3 with this certificate, optionally requiring
    /// client certificates. Default = None (plain TCP, loopback only).
    pub tls: Option<TlsConfig>,
    /// A TCP client must open a V2 session with a HELLO carrying this token before any
    /// other request; until then every request gets FORBIDDEN and the connection is
    /// closed. Default = None (no token).
    pub tcp_token: Option<Token>,
    /// Also serve GET (copy), HEAD and PING over UDP on this address. Default = None
    /// (off). A small spoofed request can make the server send up to `udp_max_response`
    /// bytes to someone else (amplification, see docs/PROTOCOL.md "UDP transport"): bind a
    /// loopback address unless the network is trusted.
    pub udp_listen: Option<SocketAddr>,
    /// Largest response frame (header, message, metadata and body) sent over UDP; a larger
    /// one is answered RESPONSE_TOO_LARGE. Default = 64 KiB
    /// (`objmapper_proto::udp::DEFAULT_UDP_MAX_RESPONSE`).
    pub udp_max_response: usize,
    /// Response bytes per UDP datagram, after its 8-byte header. Default = 1400
    /// (`objmapper_proto::udp::DEFAULT_UDP_PAYLOAD`: each datagram fits a 1500-byte MTU).
    pub udp_payload: usize,
    /// Who may connect over the Unix socket and what they may do (peer credentials), and
    /// what TCP peers may do. Default = the daemon's own uid gets read, write and admin,
    /// nobody else anything; TCP peers read and write (see [`AccessConfig`]).
    pub access: AccessConfig,
    /// Connections open at once. A connection over the limit gets BUSY on its first
    /// request and is closed (one that sends nothing is closed at `header_timeout`); past
    /// twice the limit new connections are closed on accept without a reply. Default =
    /// 16384.
    pub max_connections: usize,
    /// fd-mode PUTs a connection may hold staged (uncommitted) at once; beyond it a PUT
    /// gets TOO_MANY_REQUESTS. Default = 16.
    pub max_staged_puts: usize,
    /// fd-mode PUTs all connections together may hold staged; beyond it a PUT gets BUSY.
    /// Default = 1024.
    pub max_staged_puts_total: usize,
    /// Bytes a connection may have staged at once: its fd-mode staging files (their
    /// current sizes) plus a copy/splice PUT's declared length; a PUT that would exceed it
    /// gets TOO_MANY_REQUESTS (a copy/splice PUT's body is then skipped). Default = 1 GiB
    /// (the default largest object).
    pub max_staged_bytes_per_conn: u64,
    /// Bytes of the copy/splice PUT bodies being received on all connections together,
    /// counted as they arrive in steps of 1 MiB (a body declared large but not sent holds
    /// one step, not its declared length). A PUT whose first step does not fit, or whose
    /// body reaches the limit in mid-flight, gets BUSY and the rest of its body is
    /// skipped. Default = 4 GiB.
    pub max_staged_bytes_total: u64,
    /// Longest key accepted, at most `objmapper_proto::MAX_KEY_LEN` (4096); a longer key
    /// gets KEY_TOO_LONG. Default = 4096.
    pub max_key_len: usize,
    /// Largest metadata section accepted, at most `objmapper_proto::MAX_META_LEN`
    /// (65536); a larger one gets METADATA_TOO_LARGE. Default = 65536.
    pub max_meta_len: usize,
    /// A connection that holds an incomplete frame or PUT body this long without
    /// receiving a byte gets PROTOCOL_ERROR and is closed. Default = 30 s.
    pub frame_timeout: Duration,
    /// A frame header (with its key and metadata) must arrive whole within this time of
    /// its first byte, however slowly it trickles in (slowloris); otherwise
    /// PROTOCOL_ERROR and the connection is closed. Default = 10 s.
    pub header_timeout: Duration,
    /// A connection with nothing in flight that sends nothing for this long is closed
    /// (silently: it has no request to answer). Default = None (never: clients may keep
    /// pooled connections open, as with redis and memcached).
    pub idle_timeout: Option<Duration>,
    /// How often the store records a durability checkpoint (syncfs). Default = 30 s.
    pub checkpoint_interval: Duration,
    /// On shutdown, how long in-flight requests get to finish. Default = 5 s.
    pub shutdown_grace: Duration,
    /// auto mode: content (the object, or the requested range) of at least this many bytes
    /// is delivered as an fd where the connection can pass fds (a Unix socket, and on V2 a
    /// session that negotiated FD_PASSING); smaller content travels inline (copy). Over TCP
    /// auto is always copy. Default = 8 KiB (8192), where fd passing overtakes inline
    /// copy on the reference machine (docs/BENCHMARKS.md, "auto mode").
    pub auto_fd_threshold: u64,
    /// The deepest pipeline HELLO grants a V2 client: the granted depth is the smaller of
    /// this and the client's request, and at least 1. Default = 128.
    pub max_pipeline_depth: u16,
    /// Threads that run slow store mutations off the event loops: DURABLE commits and
    /// deletes (their fsyncs) and commits of large objects (their copy), so they never
    /// stall other requests. 0 runs them on the event-loop threads. Default = 2.
    pub blocking_threads: usize,
    /// A listening Unix stream socket to serve instead of binding `socket_path` (socket
    /// activation: [`crate::take_activated_listener`]). The server then leaves the socket
    /// file alone, on start and on shutdown, and `socket_mode` / `socket_group` do not
    /// apply (whoever bound it chose them). Shared so the config stays `Clone`; the
    /// server serves a duplicate of the descriptor. Default = None (bind `socket_path`).
    pub unix_listener: Option<std::sync::Arc<std::os::unix::net::UnixListener>>,
    /// Whether to serve the management API (HTTP/1.1 + JSON, docs/ADMIN.md) at all.
    /// Default = true.
    pub admin_enabled: bool,
    /// Unix socket of the management API. Default = None: the object socket's path with
    /// `.admin` appended (a sibling, e.g. `objmapper.sock.admin`), with the object
    /// socket's mode and group.
    pub admin_socket: Option<PathBuf>,
    /// Also serve the management API on this TCP address, which must be a loopback
    /// address (the API has no authentication; `Server::start` refuses any other).
    /// Default = None (off).
    pub admin_tcp: Option<SocketAddr>,
    /// This host's name among the hosts that share a remote tier: shown in the management
    /// API's `GET /v1/stats`, and the tie-break between hosts. 1 to 64 bytes of
    /// `[A-Za-z0-9._-]` ([`check_host_id`]). Default = the machine's hostname
    /// ([`default_host_id`]).
    pub host_id: String,
    /// The remote (S3) tier behind memory and disk, shared with other hosts
    /// (docs/STORAGE.md, "The remote tier"). Default = None (off).
    pub remote: Option<crate::RemoteSettings>,
}

impl ServerConfig {
    /// A configuration with the given socket and data directory and every other default
    /// (the store's included: `StoreConfig::new(data_dir)`).
    pub fn new(socket_path: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            socket_path: socket_path.into(),
            socket_mode: 0o600,
            socket_group: None,
            store: StoreConfig::new(data_dir),
            workers: 2,
            busy_poll: Duration::ZERO,
            tcp_listen: None,
            tls: None,
            tcp_token: None,
            udp_listen: None,
            udp_max_response: objmapper_proto::udp::DEFAULT_UDP_MAX_RESPONSE,
            udp_payload: objmapper_proto::udp::DEFAULT_UDP_PAYLOAD,
            access: AccessConfig::default(),
            max_connections: 16384,
            max_staged_puts: 16,
            max_staged_puts_total: 1024,
            max_staged_bytes_per_conn: 1 << 30,
            max_staged_bytes_total: 4 << 30,
            max_key_len: objmapper_proto::MAX_KEY_LEN,
            max_meta_len: objmapper_proto::MAX_META_LEN,
            frame_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            idle_timeout: None,
            checkpoint_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            auto_fd_threshold: 8 * 1024,
            max_pipeline_depth: 128,
            blocking_threads: 2,
            unix_listener: None,
            admin_enabled: true,
            admin_socket: None,
            admin_tcp: None,
            host_id: default_host_id(),
            remote: None,
        }
    }

    /// The management API's Unix socket path: [`ServerConfig::admin_socket`], or the
    /// object socket's path with `.admin` appended. `None` if the API is disabled.
    pub fn admin_socket_path(&self) -> Option<PathBuf> {
        if !self.admin_enabled {
            return None;
        }
        Some(
            self.admin_socket
                .clone()
                .unwrap_or_else(|| admin_sibling(&self.socket_path)),
        )
    }
}

impl Default for ServerConfig {
    /// Every default, with empty socket and data directory paths (they have no default
    /// here: the CLI supplies the documented ones).
    fn default() -> Self {
        ServerConfig::new("", "")
    }
}

/// The machine's hostname (`uname`'s nodename), made into a valid host id: bytes outside
/// `[A-Za-z0-9._-]` become `-` and it is cut to 64 bytes; `localhost` if it is empty.
pub fn default_host_id() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_bytes();
    let id: String = name
        .iter()
        .take(64)
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => b as char,
            _ => '-',
        })
        .collect();
    if id.is_empty() {
        "localhost".into()
    } else {
        id
    }
}

/// Whether `id` can be a host id: 1 to 64 bytes of `[A-Za-z0-9._-]`.
pub fn check_host_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!(
            "host id {id:?} is {} bytes long: give 1 to 64 bytes of A-Z, a-z, 0-9, '.', '_' \
             and '-'",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "host id {id:?} has {c:?}: give 1 to 64 bytes of A-Z, a-z, 0-9, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// The default management socket for an object socket: its path with `.admin` appended.
pub fn admin_sibling(socket: &std::path::Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".admin");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids() {
        assert_eq!(check_host_id("cache-1.example_net"), Ok(()));
        assert!(check_host_id(&"h".repeat(64)).is_ok());
        assert!(check_host_id(&"h".repeat(65))
            .unwrap_err()
            .contains("65 bytes"));
        assert!(check_host_id("").unwrap_err().contains("0 bytes"));
        assert!(check_host_id("a b").unwrap_err().contains("' '"));
        assert_eq!(check_host_id(&default_host_id()), Ok(()));
        assert_eq!(ServerConfig::default().host_id, default_host_id());
    }
}
