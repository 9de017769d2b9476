//! Server configuration. Every field documents its default.

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
    /// Also listen on TCP (copy mode only). Default = None (off).
    pub tcp_listen: Option<SocketAddr>,
    /// Connections accepted at once; more are closed on accept. Default = 16384.
    pub max_connections: usize,
    /// fd-mode PUTs a connection may hold staged (uncommitted) at once. Default = 16.
    pub max_staged_puts: usize,
    /// A connection that holds an incomplete frame this long without receiving a byte gets
    /// PROTOCOL_ERROR and is closed. Default = 30 s.
    pub frame_timeout: Duration,
    /// How often the store records a durability checkpoint (syncfs). Default = 30 s.
    pub checkpoint_interval: Duration,
    /// On shutdown, how long in-flight requests get to finish. Default = 5 s.
    pub shutdown_grace: Duration,
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
            tcp_listen: None,
            max_connections: 16384,
            max_staged_puts: 16,
            frame_timeout: Duration::from_secs(30),
            checkpoint_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
