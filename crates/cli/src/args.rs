//! What the user typed: clap definitions, validated only. Anything derived from the
//! environment or defaults that need the OS happens in the command modules.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Environment:
  OBJMAPPER_SOCKET    socket path for every command (same as --socket)
  OBJMAPPER_CONFIG    config file for `serve` (same as --config)
  OBJMAPPER_TIMEOUT   how long client commands wait for the server (same as --timeout)
  OBJMAPPER_DATA_DIR  data directory for `serve` (same as --data-dir)
  OBJMAPPER_LOG       log filter for `serve` (same as --log-level; beats RUST_LOG)
  OBJMAPPER_MEM_DIR   memory tier directory for `serve` (same as --mem-dir); every other
                      `serve` setting has a variable too, listed under `objmapper serve --help`
  A flag beats its environment variable, which beats `serve`'s config file, which beats
  the default.

Default socket: $OBJMAPPER_SOCKET; else /run/objmapper/objmapper.sock for root; else
$XDG_RUNTIME_DIR/objmapper.sock; else /tmp/objmapper-<uid>/objmapper.sock.

Transports and modes (every client command):
  --transport unix   the Unix socket (--socket); the default. Every mode works.
  --transport tcp    TCP at --tcp ADDR:PORT (default 127.0.0.1:9999, as `serve --tcp`);
                     --tcp alone implies it. Modes copy, splice and auto (= copy).
  --transport udp    UDP at --udp ADDR:PORT (default 127.0.0.1:9998, as `serve --udp`);
                     --udp alone implies it. get, stat and ping only, small objects;
                     modes copy and auto (= copy).
  --mode best (the default) is fd on the Unix socket and copy elsewhere. A mode the
  transport cannot carry (fd over TCP or UDP, splice over UDP) is refused before
  connecting, with exit status 2.

Exit status:
  0  success
  1  the object was not found, the server reported an error (for instance
     PRECONDITION_FAILED from --if-version or --if-absent), or the connection failed
  2  usage error (bad flag or argument, or an impossible combination such as --mode fd
     with --transport tcp, or put over UDP)
  78 `serve` only: configuration error (a config file that is missing, unreadable or
     invalid, a bad setting, a socket handed over by systemd that cannot be served);
     restarting will not help until the configuration is fixed

Timeouts: client commands give up after --timeout (default 30s, 0 = never) when the server
does not accept the connection or does not answer, with exit status 1.

Errors go to stderr as `objmapper: STATUS: message`, with the server's own text.";

/// objmapper: a local object store for HTTP caches that hands out file descriptors.
#[derive(Debug, Parser)]
#[command(
    name = "objmapper",
    version,
    about = "objmapper: a local object store for HTTP caches that hands out file descriptors",
    long_about = "objmapper: a local object store for HTTP caches.\n\n\
        `objmapper serve` runs the daemon. The other commands talk to it: on the same host \
        they receive an open, read-only file descriptor for an object over the Unix socket \
        (fd mode) instead of having its bytes copied through the socket.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// How long a client command waits to connect and then for each answer before it
    /// gives up with "the server did not answer" (exit 1); `0` waits forever. Not used by
    /// `serve`, nor by `verify` (a full verify can take long) [default: 30s].
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        env = "OBJMAPPER_TIMEOUT",
        value_parser = parse_client_timeout
    )]
    pub timeout: Option<std::time::Duration>,
}

/// A client timeout: a duration such as 5, 500ms, 30s or 2m; `0` = none (wait forever,
/// returned as `Duration::MAX`).
pub fn parse_client_timeout(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return match ms.parse::<u64>() {
            Ok(0) => Ok(std::time::Duration::MAX),
            Ok(n) => Ok(std::time::Duration::from_millis(n)),
            Err(_) => Err(format!("{s:?} is not a duration such as 500ms, 5s or 2m")),
        };
    }
    match duration_secs(t)? {
        0 => Ok(std::time::Duration::MAX),
        n => Ok(std::time::Duration::from_secs(n)),
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGTERM or SIGINT.
    Serve(Box<ServeArgs>),
    /// Store FILE (or stdin with `-`) under KEY.
    Put(PutArgs),
    /// Write the object stored under KEY to stdout or a file.
    Get(GetArgs),
    /// Remove the object stored under KEY (exit 1 if there is none).
    Rm(RmArgs),
    /// Show the size, metadata, tier and state of the object stored under KEY.
    Stat(StatArgs),
    /// Pin the object stored under KEY: it is never evicted (exit 1 if there is none).
    Pin(KeyArgs),
    /// Unpin the object stored under KEY so it can be evicted again (exit 1 if there is
    /// none).
    Unpin(KeyArgs),
    /// Check that the server answers.
    Ping(PingArgs),
    /// Measure GET throughput and latency against a running server.
    Bench(BenchArgs),
    /// List objects (optionally under PREFIX) with size, tier, pin, expiry, version and
    /// last access (management API).
    Ls(LsArgs),
    /// Show everything about the object under KEY (management API).
    Info(InfoArgs),
    /// Show server statistics: tiers, hits, misses, evictions, requests, errors, latency.
    Stats(AdminArgs),
    /// Promote, demote, pin or unpin a key or every key under a prefix (management API).
    Migrate(MigrateArgs),
    /// Delete one object, or every object under a prefix (needs --yes).
    Purge(PurgeArgs),
    /// Read every object (or every one under --prefix) now, at full speed, check it
    /// against its recorded checksum, and drop and list the damaged ones (management API;
    /// exit 1 if any was damaged).
    Verify(VerifyArgs),
    /// Check the store offline (stop the server first): run recovery, read every object
    /// against its checksum, list what lost+found/ holds (exit 1 if there was damage).
    Fsck(Box<FsckArgs>),
    /// Add a ban: every object stored before it that EXPR matches is gone, e.g.
    /// `objmapper ban 'key ^ "varnish:example.com/"'` (management API).
    Ban(BanArgs),
    /// List the active bans: stamp, time added, expression (management API).
    Bans(AdminArgs),
    /// Make the server re-read its configuration file, as SIGHUP does, and wait until the
    /// new settings are in force; exit 1 with the reason if they were refused (the old
    /// ones stay). The systemd unit's ExecReload= (management API).
    Reload(AdminArgs),
    /// Show or change the runtime configuration (tier capacities, eviction knobs).
    Config(ConfigArgs),
    /// A live view of ops/s, hit ratio, tier fill and evictions, refreshed every second
    /// (plain lines when stdout is not a terminal).
    Top(TopArgs),
}

/// How to reach the management API; shared by the admin commands.
#[derive(Clone, Debug, Args)]
pub struct AdminArgs {
    /// Unix socket of the server; the management API is its sibling `PATH.admin`.
    #[arg(
        long,
        value_name = "PATH",
        env = "OBJMAPPER_SOCKET",
        default_value_os_t = objmapper_client::default_socket_path()
    )]
    pub socket: PathBuf,
    /// The management API itself, a Unix socket path or HOST:PORT; overrides the sibling
    /// of --socket.
    #[arg(long, value_name = "PATH|HOST:PORT", env = "OBJMAPPER_ADMIN")]
    pub admin: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `objmapper ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only keys starting with these bytes.
    #[arg(value_name = "PREFIX")]
    pub prefix: Option<OsString>,
    /// Stop after this many objects [default: all].
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `objmapper info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The key.
    #[arg(value_name = "KEY")]
    pub key: OsString,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// What `objmapper migrate` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MigrateAction {
    /// Copy into the memory tier.
    Promote,
    /// Write to disk if needed and drop the memory copy.
    Demote,
    /// Never evict.
    Pin,
    /// Evictable again.
    Unpin,
}

impl MigrateAction {
    /// The API's name.
    pub fn name(self) -> &'static str {
        match self {
            MigrateAction::Promote => "promote",
            MigrateAction::Demote => "demote",
            MigrateAction::Pin => "pin",
            MigrateAction::Unpin => "unpin",
        }
    }
}

/// `objmapper migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// promote, demote, pin or unpin.
    #[arg(value_enum, value_name = "ACTION")]
    pub action: MigrateAction,
    /// The key (or, with --prefix, the key prefix).
    #[arg(value_name = "KEY")]
    pub key: OsString,
    /// Treat KEY as a prefix: every object under it.
    #[arg(long)]
    pub prefix: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `objmapper purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The key to delete.
    #[arg(
        value_name = "KEY",
        required_unless_present = "prefix",
        conflicts_with = "prefix"
    )]
    pub key: Option<OsString>,
    /// Delete every object whose key starts with PREFIX ("" = everything); needs --yes.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<OsString>,
    /// Confirm a purge by prefix.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `objmapper verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify only the objects whose key starts with PREFIX.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<OsString>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `objmapper fsck`: the store's directories come from the same flags, environment
/// and config file as `objmapper serve`.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Remove everything in the tiers' lost+found/ directories after listing it.
    #[arg(long)]
    pub clean: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `objmapper ban`.
#[derive(Debug, Args)]
pub struct BanArgs {
    /// The ban expression: `cond && cond ...`, each `key|meta.NAME OP "string"` with OP one
    /// of ==, !=, ^ (starts with), ~ (regex), !~, has (see docs/STORAGE.md, "Bans").
    #[arg(value_name = "EXPR")]
    pub expr: OsString,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `objmapper config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// get or set.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// `objmapper config get|set`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the runtime configuration (or one FIELD of it, e.g. memory.capacity_bytes).
    Get {
        /// One field, by its dotted name.
        #[arg(value_name = "FIELD")]
        field: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change fields: FIELD=VALUE ..., e.g. memory.capacity_bytes=512M
    /// disk.eviction.small_ratio=0.2 (sizes take K, M, G, T).
    Set {
        /// FIELD=VALUE pairs, applied together or not at all.
        #[arg(value_name = "FIELD=VALUE", required = true)]
        assignments: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `objmapper top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Draw one frame and exit (same as --iterations 1).
    #[arg(long, conflicts_with = "iterations")]
    pub once: bool,
    /// Draw this many frames, then exit [default: until interrupted].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
    /// Seconds between frames.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// How object bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Pass an open file descriptor (Unix socket only): no bytes cross the socket.
    Fd,
    /// Send the bytes inline on the socket.
    Copy,
    /// Inline, moved file -> pipe -> socket inside the server's kernel (not over UDP).
    Splice,
    /// The server picks per object: fd for large ones where fds can travel, else inline.
    Auto,
    /// fd on the Unix socket, copy over TCP and UDP.
    Best,
}

/// Which kind of socket reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// The Unix socket (--socket): every mode, fd passing.
    Unix,
    /// TCP (--tcp ADDR:PORT, default 127.0.0.1:9999).
    Tcp,
    /// UDP (--udp ADDR:PORT, default 127.0.0.1:9998): get, stat and ping only.
    Udp,
}

/// Default TCP address, the one `serve --tcp` listens on when given no address.
pub const DEFAULT_TCP_ADDR: &str = "127.0.0.1:9999";
/// Default UDP address, the one `serve --udp` listens on when given no address.
pub const DEFAULT_UDP_ADDR: &str = "127.0.0.1:9998";

/// Where and how to reach the server; shared by every client command.
#[derive(Clone, Debug, Args)]
pub struct ConnArgs {
    /// Unix socket of the server.
    #[arg(
        long,
        value_name = "PATH",
        env = "OBJMAPPER_SOCKET",
        default_value_os_t = objmapper_client::default_socket_path()
    )]
    pub socket: PathBuf,
    /// Transport: unix, tcp or udp [default: unix; tcp or udp when only --tcp or --udp is
    /// given].
    #[arg(long, value_enum, value_name = "TRANSPORT")]
    pub transport: Option<TransportArg>,
    /// TCP address of the server; implies --transport tcp [default with --transport tcp:
    /// 127.0.0.1:9999].
    #[arg(long, value_name = "ADDR:PORT")]
    pub tcp: Option<String>,
    /// UDP address of the server; implies --transport udp (get, stat and ping only)
    /// [default with --transport udp: 127.0.0.1:9998].
    #[arg(long, value_name = "ADDR:PORT")]
    pub udp: Option<String>,
    /// Transfer mode: fd, copy, splice, auto or best [default: best = fd on the Unix
    /// socket, copy over TCP and UDP].
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<ModeArg>,
    /// Speak TLS to the TCP listener, trusting the CA certificates (or the self-signed
    /// server certificate) in this PEM file; implies --transport tcp.
    #[arg(long, value_name = "PEM", env = "OBJMAPPER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM, leaf first) for a listener that requires one;
    /// needs --tls-client-key and --tls-ca.
    #[arg(
        long,
        value_name = "PEM",
        env = "OBJMAPPER_TLS_CLIENT_CERT",
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        value_name = "PEM",
        env = "OBJMAPPER_TLS_CLIENT_KEY",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
    /// The name the server's certificate must carry [default: the host of --tcp].
    #[arg(long, value_name = "NAME", env = "OBJMAPPER_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// File holding the token the TCP listener requires (mode 600; one trailing newline
    /// is ignored). It travels in HELLO, so the session is V2; implies --transport tcp.
    #[arg(long, value_name = "PATH", env = "OBJMAPPER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// `objmapper serve`.
///
/// Every setting is optional here: a flag, else its environment variable (clap reads
/// both), else the config file, else the default (see `crate::config`).
#[derive(Debug, Default, Args)]
#[command(after_help = "\
Every setting can also come from the config file (--config, default \
/etc/objmapper/objmapper.toml for root, else $XDG_CONFIG_HOME/objmapper/objmapper.toml, \
read only if it exists): `--mem-capacity` is `mem_capacity` in its [store] section, and so \
on; objmapper.example.toml lists them all. A flag beats its environment variable, which \
beats the file, which beats the default; --allow-uid/--allow-gid flags replace the \
variable's or the file's list whole. The log level also comes from RUST_LOG, after \
--log-level and OBJMAPPER_LOG and before the file. SIGHUP re-reads the file and applies \
what can change while running (log level, tier capacities and object limits, \
direct_to_disk_threshold, promote_after_hits, [eviction.*] knobs, the [access] allowlist \
for new connections, and every [limits] key but max_connections and \
max_staged_puts_total); it logs the rest as needing a restart. --print-config shows the \
result of all of it.")]
pub struct ServeArgs {
    /// Config file (TOML) [default: /etc/objmapper/objmapper.toml for root, else
    /// $XDG_CONFIG_HOME/objmapper/objmapper.toml or ~/.config/objmapper/objmapper.toml;
    /// read only if it exists].
    #[arg(long, value_name = "PATH", env = "OBJMAPPER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (flags, environment, file and defaults merged) as
    /// a config file, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Unix socket to listen on (created with --socket-mode; its directory is created if
    /// missing) [default: $OBJMAPPER_SOCKET; else /run/objmapper/objmapper.sock for root;
    /// else $XDG_RUNTIME_DIR/objmapper.sock; else /tmp/objmapper-UID/objmapper.sock].
    /// Under socket activation (LISTEN_FDS) the passed socket is used instead.
    #[arg(long, value_name = "PATH", env = "OBJMAPPER_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Directory for the persistent store [default: /var/lib/objmapper for root, else
    /// $XDG_DATA_HOME/objmapper, else $HOME/.local/share/objmapper].
    #[arg(long, value_name = "DIR", env = "OBJMAPPER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace, or tracing EnvFilter directives);
    /// beats RUST_LOG [default: info].
    #[arg(long, value_name = "LEVEL", env = "OBJMAPPER_LOG")]
    pub log_level: Option<String>,
    /// Log format on stderr: human (text lines) or json (one JSON object per line)
    /// [default: human].
    #[arg(long, value_enum, value_name = "FORMAT", env = "OBJMAPPER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Permission bits of the socket file, in octal (e.g. 660 to let --socket-group in)
    /// [default: 600].
    #[arg(long, value_name = "OCTAL", env = "OBJMAPPER_SOCKET_MODE", value_parser = parse_octal_mode)]
    pub socket_mode: Option<u32>,
    /// Group to own the socket file: a group name or a numeric gid [default: our group].
    #[arg(long, value_name = "GROUP", env = "OBJMAPPER_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// Grant a uid permissions on the object socket (checked against the peer's
    /// credentials): UID=PERMS with PERMS a comma list of read (GET, HEAD), write (PUT,
    /// COMMIT, ABORT, DELETE, PIN, UNPIN) and admin (the management API), or all or none.
    /// Repeat for more, or give several separated by spaces ("33=read 1000=all"). Our own
    /// uid has all three unless the list names it; nobody else has anything: a peer with
    /// no permission gets FORBIDDEN and is closed (see SECURITY.md). The flags replace
    /// OBJMAPPER_ALLOW_UID, which replaces [access] allow_uid [default: none but our own
    /// uid].
    #[arg(long, value_name = "UID=PERMS", env = "OBJMAPPER_ALLOW_UID", value_parser = parse_grants)]
    pub allow_uid: Vec<Grants>,
    /// Grant a gid (the peer's primary group) permissions, as --allow-uid; a peer gets
    /// the union of its uid's and its gid's grants [default: none].
    #[arg(long, value_name = "GID=PERMS", env = "OBJMAPPER_ALLOW_GID", value_parser = parse_grants)]
    pub allow_gid: Vec<Grants>,
    /// What TCP peers may do (TCP carries no credentials) [default: read,write].
    #[arg(long, value_name = "PERMS", env = "OBJMAPPER_TCP_PERMISSIONS")]
    pub tcp_permissions: Option<objmapper_server::Perms>,
    /// Connections open at once; the next gets BUSY and is closed [default: 16384].
    #[arg(long, value_name = "N", env = "OBJMAPPER_MAX_CONNECTIONS", value_parser = limit("max_connections", parse_count))]
    pub max_connections: Option<u64>,
    /// Deepest V2 pipeline granted per connection [default: 128].
    #[arg(long, value_name = "N", env = "OBJMAPPER_MAX_PIPELINE_DEPTH", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_pipeline_depth: Option<u16>,
    /// fd-mode PUTs one connection may hold staged; beyond, TOO_MANY_REQUESTS [default: 16].
    #[arg(long, value_name = "N", env = "OBJMAPPER_MAX_STAGED_PUTS", value_parser = limit("max_staged_puts", parse_count))]
    pub max_staged_puts: Option<u64>,
    /// fd-mode PUTs all connections may hold staged; beyond, BUSY [default: 1024].
    #[arg(long, value_name = "N", env = "OBJMAPPER_MAX_STAGED_PUTS_TOTAL", value_parser = limit("max_staged_puts_total", parse_count))]
    pub max_staged_puts_total: Option<u64>,
    /// Bytes one connection may hold staged; beyond, TOO_MANY_REQUESTS (suffixes K, M, G)
    /// [default: 1G].
    #[arg(long, value_name = "BYTES", env = "OBJMAPPER_MAX_STAGED_BYTES_PER_CONN", value_parser = limit("max_staged_bytes_per_conn", parse_size))]
    pub max_staged_bytes_per_conn: Option<u64>,
    /// Bytes of PUT bodies being received on all connections, counted as they arrive;
    /// beyond, BUSY (suffixes K, M, G) [default: 4G].
    #[arg(long, value_name = "BYTES", env = "OBJMAPPER_MAX_STAGED_BYTES_TOTAL", value_parser = limit("max_staged_bytes_total", parse_size))]
    pub max_staged_bytes_total: Option<u64>,
    /// Longest key accepted, 1..=4096; longer gets KEY_TOO_LONG [default: 4096].
    #[arg(long, value_name = "BYTES", env = "OBJMAPPER_MAX_KEY_LEN", value_parser = limit("max_key_len", parse_count))]
    pub max_key_len: Option<u64>,
    /// Largest metadata section accepted, up to 65536; larger gets METADATA_TOO_LARGE
    /// [default: 65536].
    #[arg(long, value_name = "BYTES", env = "OBJMAPPER_MAX_META_LEN", value_parser = limit("max_meta_len", parse_size))]
    pub max_meta_len: Option<u64>,
    /// A frame header must arrive whole within this long of its first byte (slowloris),
    /// or PROTOCOL_ERROR and close [default: 10s].
    #[arg(long, value_name = "DURATION", env = "OBJMAPPER_HEADER_TIMEOUT", value_parser = parse_timeout)]
    pub header_timeout: Option<std::time::Duration>,
    /// An unfinished frame or PUT body that receives nothing for this long gets PROTOCOL_ERROR and
    /// is closed [default: 30s].
    #[arg(long, value_name = "DURATION", env = "OBJMAPPER_FRAME_TIMEOUT", value_parser = parse_timeout)]
    pub frame_timeout: Option<std::time::Duration>,
    /// Close a connection with nothing in flight after this long without a request, or
    /// never [default: never].
    #[arg(long, value_name = "DURATION|never", env = "OBJMAPPER_IDLE_TIMEOUT", value_parser = parse_idle_timeout)]
    pub idle_timeout: Option<IdleTimeout>,
    /// Also listen on TCP (copy, splice and auto modes): at ADDR:PORT, or 127.0.0.1:9999
    /// when the flag has no value. Off without the flag. TCP peers carry no credentials
    /// (they get --tcp-permissions): an address other than loopback needs --tls-cert and
    /// --tls-key, and --tls-client-ca or --tcp-token-file (or both).
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "OBJMAPPER_TCP",
        num_args = 0..=1,
        default_missing_value = DEFAULT_TCP_ADDR
    )]
    pub tcp: Option<String>,
    /// Also serve GET, HEAD and PING of small objects over UDP: at ADDR:PORT, or
    /// 127.0.0.1:9998 when the flag has no value. Off without the flag. UDP replies can be
    /// aimed at a forged source address (amplification): keep it on loopback or a trusted
    /// network.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "OBJMAPPER_UDP",
        num_args = 0..=1,
        default_missing_value = DEFAULT_UDP_ADDR
    )]
    pub udp: Option<String>,
    /// Serve the TCP listener over TLS 1.3 with this certificate chain (PEM, leaf first).
    /// Re-read on SIGHUP, for certificate rotation.
    #[arg(long, value_name = "PEM", env = "OBJMAPPER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, value_name = "PEM", env = "OBJMAPPER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require TCP clients to present a certificate signed by a CA in this PEM file.
    #[arg(long, value_name = "PEM", env = "OBJMAPPER_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require TCP clients to present the token in this file (16 to 256 bytes, mode 600;
    /// one trailing newline is ignored) in HELLO before any other request.
    #[arg(long, value_name = "PATH", env = "OBJMAPPER_TCP_TOKEN_FILE")]
    pub tcp_token_file: Option<PathBuf>,
    /// Largest reply sent over UDP, header and metadata included (suffixes K, M); larger
    /// ones get RESPONSE_TOO_LARGE [default: 64K].
    #[arg(
        long,
        value_name = "BYTES",
        env = "OBJMAPPER_UDP_MAX_RESPONSE",
        value_parser = parse_size
    )]
    pub udp_max_response: Option<u64>,
    /// auto mode: content of at least this many bytes goes as an fd where fds can travel,
    /// smaller content inline (suffixes K, M, G) [default: 8K].
    #[arg(
        long,
        value_name = "BYTES",
        env = "OBJMAPPER_AUTO_FD_THRESHOLD",
        value_parser = parse_size
    )]
    pub auto_fd_threshold: Option<u64>,
    /// fd-mode GETs hand out a cached, shared read-only file description instead of
    /// opening a private one per GET: faster, but clients share the file offset and
    /// status flags, so they must read with pread, sendfile with an offset, or mmap.
    /// `--share-fds=false` turns it off over a config file [default: off].
    #[arg(
        long,
        value_name = "BOOL",
        env = "OBJMAPPER_SHARE_FDS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub share_fds: Option<bool>,
    /// Event-loop threads serving connections [default: 2].
    #[arg(long, value_name = "N", env = "OBJMAPPER_WORKERS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,
    /// Largest object accepted, in bytes (suffixes K, M, G, T are powers of 1024)
    /// [default: 1G].
    #[arg(long, value_name = "BYTES", env = "OBJMAPPER_MAX_OBJECT_SIZE", value_parser = parse_size)]
    pub max_object_size: Option<u64>,
    /// Directory of the memory tier; it should be on a tmpfs [default:
    /// /dev/shm/objmapper-HASH with HASH derived from the data directory; DATA_DIR/mem if
    /// there is no /dev/shm].
    #[arg(long, value_name = "DIR", env = "OBJMAPPER_MEM_DIR")]
    pub mem_dir: Option<PathBuf>,
    /// Bytes the memory tier may hold (suffixes K, M, G, T; 0 disables the memory tier)
    /// [default: 256M].
    #[arg(long, value_name = "BYTES", env = "OBJMAPPER_MEM_CAPACITY", value_parser = parse_size)]
    pub mem_capacity: Option<u64>,
    /// Objects the memory tier may hold [default: 1000000].
    #[arg(long, value_name = "N", env = "OBJMAPPER_MEM_MAX_OBJECTS", value_parser = parse_count)]
    pub mem_max_objects: Option<u64>,
    /// Bytes the disk tier may hold (suffixes K, M, G, T) [default: 64G].
    #[arg(long, value_name = "BYTES", env = "OBJMAPPER_DISK_CAPACITY", value_parser = parse_size)]
    pub disk_capacity: Option<u64>,
    /// Objects the disk tier may hold [default: 10000000].
    #[arg(long, value_name = "N", env = "OBJMAPPER_DISK_MAX_OBJECTS", value_parser = parse_count)]
    pub disk_max_objects: Option<u64>,
    /// Objects larger than this skip the memory tier and go straight to disk (suffixes K,
    /// M, G, T) [default: 16M].
    #[arg(
        long,
        value_name = "BYTES",
        env = "OBJMAPPER_DIRECT_TO_DISK_THRESHOLD",
        value_parser = parse_size
    )]
    pub direct_to_disk_threshold: Option<u64>,
    /// Disk hits before an object read from disk is copied into the memory tier, 0 to 3
    /// [default: 1].
    #[arg(long, value_name = "N", env = "OBJMAPPER_PROMOTE_AFTER_HITS", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub promote_after_hits: Option<u8>,
    /// Milliseconds a dirty memory object waits before it is written behind to disk: a key
    /// rewritten meanwhile is written once. A reboot (not a daemon crash) can lose up to
    /// this much more of the newest default-durability writes; 0 writes behind at once
    /// [default: 1000].
    #[arg(long, value_name = "MS", env = "OBJMAPPER_WRITE_BEHIND_DELAY_MS", value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub write_behind_delay_ms: Option<u64>,
    /// Bytes per second the background scrubber reads to re-verify every object against
    /// its checksum (suffixes K, M, G); 0 turns it off [default: 16M].
    #[arg(
        long,
        value_name = "BYTES",
        env = "OBJMAPPER_SCRUB_RATE",
        value_parser = parse_size
    )]
    pub scrub_rate: Option<u64>,
    /// Unix socket of the management API [default: the --socket path + `.admin`].
    #[arg(long, value_name = "PATH", env = "OBJMAPPER_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// Also serve the management API on loopback TCP: at ADDR:PORT, or 127.0.0.1:9997
    /// when the flag has no value. Only loopback addresses are accepted (no
    /// authentication). Off without the flag.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "OBJMAPPER_ADMIN_TCP",
        num_args = 0..=1,
        default_missing_value = DEFAULT_ADMIN_TCP_ADDR
    )]
    pub admin_tcp: Option<String>,
    /// Do not serve the management API at all (beats `[admin] enabled = true` in the
    /// config file).
    #[arg(long, env = "OBJMAPPER_NO_ADMIN", conflicts_with_all = ["admin_socket", "admin_tcp"])]
    pub no_admin: bool,
}

/// How `serve` writes its log.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Default management API TCP address, the one `serve --admin-tcp` uses without a value.
pub const DEFAULT_ADMIN_TCP_ADDR: &str = "127.0.0.1:9997";

/// `objmapper put`.
#[derive(Debug, Args)]
#[command(after_help = "\
With --recursive, the arguments are DIR and PREFIX: every regular file under DIR is \
stored under PREFIX followed by its path relative to DIR, with `/` between the parts \
(`put -r /var/cache/nginx nginx/` stores /var/cache/nginx/a/b as `nginx/a/b`; PREFIX may \
be empty: ''). Symbolic links are never followed and, like other non-regular files, are \
skipped with a warning. The other options apply to every file. A progress bar shows on \
stderr when it is a terminal; a summary line goes to stdout. If any file fails, each \
failure is named on stderr and the exit status is 1.")]
pub struct PutArgs {
    /// The key: any bytes, 1 to 4096 of them. Never interpreted as a path. With
    /// --recursive: the directory to load.
    #[arg(value_name = "KEY|DIR")]
    pub key: OsString,
    /// File to store, or `-` for stdin. With --recursive: the prefix of every key (may be
    /// empty).
    #[arg(value_name = "FILE|-|PREFIX")]
    pub file: OsString,
    /// Load the directory tree DIR, each regular file under PREFIX + its relative path.
    #[arg(short, long)]
    pub recursive: bool,
    /// With --recursive: files stored in parallel, over this many connections.
    #[arg(short, long, value_name = "N", requires = "recursive", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: u32,
    /// Content type to record with the object.
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Custom metadata pair; repeat for more.
    #[arg(long = "meta", value_name = "NAME=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// Return only once the object is fsynced to disk.
    #[arg(long, conflicts_with = "ephemeral")]
    pub durable: bool,
    /// Keep the object in the memory tier only: never written to disk, lost on eviction
    /// or reboot (it survives a server restart).
    #[arg(long)]
    pub ephemeral: bool,
    /// Pin the object: it is never evicted (undo with `objmapper unpin`).
    #[arg(long)]
    pub pin: bool,
    /// Expire the object after this long: seconds, or a duration such as 90s, 30m, 1h,
    /// 2d or 1h30m. After that it answers "not found".
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "expires_at")]
    pub ttl: Option<std::time::Duration>,
    /// Expire the object at this absolute time, in seconds since the Unix epoch.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub expires_at: Option<u64>,
    /// Store only if the object's current version is N (compare-and-swap); otherwise
    /// PRECONDITION_FAILED and nothing is stored (exit 1).
    #[arg(long, value_name = "N", conflicts_with_all = ["if_absent", "recursive"])]
    pub if_version: Option<u64>,
    /// Store only if nothing is stored under KEY; otherwise PRECONDITION_FAILED (exit 1).
    #[arg(long)]
    pub if_absent: bool,
    /// Print the stored object's size and version.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `objmapper get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key.
    #[arg(value_name = "KEY")]
    pub key: OsString,
    /// Write to FILE (created or truncated) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only bytes START to END, both included (as in HTTP); `START-` reads to the end. A
    /// range the object does not hold gets the server's RANGE_NOT_SATISFIABLE (exit 1).
    #[arg(long, value_name = "START-END", value_parser = parse_range)]
    pub range: Option<(u64, u64)>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `objmapper rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The key.
    #[arg(value_name = "KEY")]
    pub key: OsString,
    /// Return only once the removal is on disk.
    #[arg(long)]
    pub durable: bool,
    /// Remove only if the object's current version is N (compare-and-swap); otherwise
    /// PRECONDITION_FAILED and nothing is removed (exit 1).
    #[arg(long, value_name = "N")]
    pub if_version: Option<u64>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `objmapper pin` and `objmapper unpin`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The key.
    #[arg(value_name = "KEY")]
    pub key: OsString,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `objmapper stat`.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// The key.
    #[arg(value_name = "KEY")]
    pub key: OsString,
    /// Print one JSON object instead of `name: value` lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `objmapper ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `objmapper bench`.
#[derive(Debug, Args)]
#[command(after_help = "\
Stores --keys objects of --size bytes under `objmapper-bench/<n>` (removed afterwards \
unless --keep), then each connection (one thread each) GETs random keys. In fd mode every \
byte of each received fd is read with pread before it is closed, so an fd-mode GET does \
the same work as a copy-mode one. Latency is per request, in microseconds, from sending it \
to its reply. With --pipeline N each connection opens a protocol V2 session and keeps N \
requests in flight (the server may grant fewer; the report says how many). With \
--transport udp the GETs go over UDP and the objects are stored over --tcp if given, else \
over the Unix socket.")]
pub struct BenchArgs {
    /// Object size in bytes (suffixes K, M, G are powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "4096", value_parser = parse_size)]
    pub size: u64,
    /// Number of distinct objects.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Request mix in percent of GET, PUT, HEAD and DELETE, adding up to 100, such as
    /// `get=90,put=10` or `put` (PUT-only). PUTs rewrite a key with --size bytes (default
    /// durability); a GET or HEAD after a DELETE counts as a miss, not an error.
    #[arg(long, value_name = "OP=PCT,...", default_value = "get=100", value_parser = crate::bench::parse_ops)]
    pub ops: crate::bench::OpMix,
    /// Which keys requests go to: uniform, zipf, or zipf:ALPHA (key i with weight
    /// 1/(i+1)^ALPHA; ALPHA defaults to 0.99).
    #[arg(long, value_name = "DIST", default_value = "uniform", value_parser = crate::bench::parse_key_dist)]
    pub key_dist: crate::bench::KeyDist,
    /// Concurrent connections, one thread each unless --threads says otherwise.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: u32,
    /// Client threads: the connections are spread over them, and each thread drives its
    /// share from one poll(2) loop, as redis-benchmark does (it uses one thread) [default:
    /// one thread per connection].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub threads: Option<u32>,
    /// How long to run, in seconds (fractions allowed).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        conflicts_with = "requests"
    )]
    pub duration: f64,
    /// Stop after this many requests in total instead of after --duration.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Leave the benchmark objects in the store.
    #[arg(long)]
    pub keep: bool,
    /// Requests in flight per connection, over a protocol V2 session (PIPELINE, and
    /// OUT_OF_ORDER when N > 1) [default: V1, one at a time].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub pipeline: Option<u16>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// One `--allow-uid`/`--allow-gid` value (or its environment variable): one grant or more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants(pub Vec<objmapper_server::Grant>);

/// Parses grants separated by spaces or commas: `33=read 1000=read,write,admin`, or
/// `33=read,1000=admin`. A word without `=` is another permission of the grant before it.
pub fn parse_grants(s: &str) -> Result<Grants, String> {
    let bad = || format!("{s:?}: expected ID=PERMS (e.g. 33=read), separated by spaces");
    let mut texts: Vec<String> = Vec::new();
    for word in s.split(|c: char| c == ',' || c.is_whitespace()) {
        if word.contains('=') {
            texts.push(word.to_string());
        } else if !word.is_empty() {
            let t = texts.last_mut().ok_or_else(bad)?;
            t.push(',');
            t.push_str(word);
        }
    }
    if texts.is_empty() {
        return Err(bad());
    }
    texts
        .iter()
        .map(|t| t.parse())
        .collect::<Result<_, _>>()
        .map(Grants)
}

/// `--idle-timeout`: a duration, or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeout(pub Option<std::time::Duration>);

/// Parses `never` or a timeout ([`parse_timeout`]).
pub fn parse_idle_timeout(s: &str) -> Result<IdleTimeout, String> {
    if s.trim().eq_ignore_ascii_case("never") {
        return Ok(IdleTimeout(None));
    }
    parse_timeout(s).map(|d| IdleTimeout(Some(d)))
}

/// Parses a timeout: a duration as [`parse_duration`] reads it, more than zero.
pub fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match duration_secs(s)? {
        0 => Err(format!("timeout {s:?} is zero: give at least 1s")),
        n => Ok(std::time::Duration::from_secs(n)),
    }
}

/// A value parser for a `[limits]` number: `parse`, then the range of `key`
/// ([`crate::hardening::check_limit`]).
fn limit(
    key: &'static str,
    parse: fn(&str) -> Result<u64, String>,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s| parse(s).and_then(|n| crate::hardening::check_limit(key, n))
}

/// Parses permission bits written in octal, such as `600` or `0660`.
pub fn parse_octal_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let m = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{s:?} is not an octal mode such as 600 or 0660"))?;
    if m & !0o777 != 0 {
        return Err(format!("mode {s} has bits outside 777"));
    }
    Ok(m)
}

/// Parses a byte count: digits with an optional K, M, G or T suffix (powers of 1024,
/// `KiB` and `KB` spellings accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4096, 64K or 1G"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown size unit in {s:?}: use K, M, G or T")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a count: digits, optionally with `_` separators (`1_000_000`).
pub fn parse_count(s: &str) -> Result<u64, String> {
    let digits: String = s.trim().chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a count such as 1000000"));
    }
    digits
        .parse()
        .map_err(|_| format!("count {s:?} is too large"))
}

/// Parses a duration: plain seconds (`90`), or numbers each followed by a unit `s`, `m`,
/// `h` or `d`, such as `90s`, `30m`, `1h30m`, `2d`. It must not be zero.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match duration_secs(s)? {
        0 => Err(format!(
            "duration {s:?} is zero: the object would expire at once"
        )),
        n => Ok(std::time::Duration::from_secs(n)),
    }
}

/// A duration in whole seconds, as [`parse_duration`] reads it (zero included).
fn duration_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a duration such as 90, 90s, 30m, 1h30m or 2d");
    if t.is_empty() {
        return Err(bad());
    }
    let secs = if t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>().map_err(|_| bad())?
    } else {
        let mut total: u64 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if split == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..split].parse().map_err(|_| bad())?;
            let unit = match rest.as_bytes()[split] {
                b's' => 1,
                b'm' => 60,
                b'h' => 3600,
                b'd' => 86_400,
                _ => return Err(bad()),
            };
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration {s:?} is too long"))?;
            rest = &rest[split + 1..];
        }
        total
    };
    Ok(secs)
}

/// A duration as [`parse_duration`] reads it back: `10s`, `5m`, `1h30m`, `2d` (whole
/// seconds; `0s` for zero).
pub fn duration_text(d: std::time::Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// Parses a byte range `START-END` (END included, as in HTTP) or `START-` (to the end)
/// into `(offset, length)`, length 0 meaning "to the end".
pub fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let bad = || {
        format!(
            "{s:?} is not a range such as 0-99 (bytes 0 to 99, both included) or 100- (from \
             100 to the end)"
        )
    };
    let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
    let num = |t: &str| -> Result<u64, String> {
        if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse()
            .map_err(|_| format!("range {s:?}: {t} is too large"))
    };
    if a.is_empty() {
        return Err(format!(
            "{s:?}: suffix ranges (the last N bytes) are not supported; give START-END or \
             START-"
        ));
    }
    let start = num(a)?;
    if b.is_empty() {
        return Ok((start, 0));
    }
    let end = num(b)?;
    if end < start {
        return Err(format!("range {s:?} ends before it starts"));
    }
    let len = (end - start)
        .checked_add(1)
        .ok_or_else(|| format!("range {s:?} is too large"))?;
    Ok((start, len))
}

/// Parses `NAME=VALUE` (the name non-empty; the value may be empty or contain `=`).
pub fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal_mode("600"), Ok(0o600));
        assert_eq!(parse_octal_mode("0660"), Ok(0o660));
        assert!(parse_octal_mode("800").is_err());
        assert!(parse_octal_mode("1777").is_err());
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("90"), Ok(90));
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("30m"), Ok(1800));
        assert_eq!(d("1h30m"), Ok(5400));
        assert_eq!(d("2d"), Ok(172_800));
        assert_eq!(d(" 1h "), Ok(3600));
        for bad in [
            "",
            "0",
            "0s",
            "h",
            "1x",
            "1.5h",
            "-1",
            "1h30",
            "99999999999999999999d",
        ] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timeouts() {
        let t = |s| parse_timeout(s).map(|d| d.as_secs());
        assert_eq!(t("10s"), Ok(10));
        assert_eq!(t("90"), Ok(90));
        assert!(t("0s").unwrap_err().contains("zero"));
        assert!(t("0").unwrap_err().contains("zero"));
        assert!(t("soon").is_err());
        assert_eq!(parse_idle_timeout("never"), Ok(IdleTimeout(None)));
        assert_eq!(parse_idle_timeout(" Never "), Ok(IdleTimeout(None)));
        assert_eq!(
            parse_idle_timeout("5m"),
            Ok(IdleTimeout(Some(std::time::Duration::from_secs(300))))
        );
        assert!(parse_idle_timeout("0").is_err());
        for secs in [1, 10, 59, 60, 90, 3600, 5400, 86_400, 90_061] {
            let d = std::time::Duration::from_secs(secs);
            let text = duration_text(d);
            assert_eq!(parse_duration(&text), Ok(d), "{text}");
        }
        assert_eq!(duration_text(std::time::Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration_text(std::time::Duration::from_secs(30)), "30s");
        assert_eq!(duration_text(std::time::Duration::ZERO), "0s");
    }

    #[test]
    fn grant_lists() {
        let g = |s| parse_grants(s).map(|g| g.0.iter().map(|g| g.to_string()).collect::<Vec<_>>());
        assert_eq!(g("33=read"), Ok(vec!["33=read".to_string()]));
        assert_eq!(
            g("33=read 1000=read,write,admin"),
            Ok(vec!["33=read".into(), "1000=read,write,admin".into()])
        );
        assert_eq!(
            g(" 33=read,write,1000=admin\t7=none "),
            Ok(vec![
                "33=read,write".into(),
                "1000=admin".into(),
                "7=none".into()
            ])
        );
        assert_eq!(g("33=read, write"), Ok(vec!["33=read,write".into()]));
        assert!(g("").unwrap_err().contains("ID=PERMS"));
        assert!(g("read").unwrap_err().contains("ID=PERMS"));
        assert!(g("33=fly").unwrap_err().contains("unknown permission"));
        assert!(g("www-data=read").unwrap_err().contains("numeric"));
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("1000000"), Ok(1_000_000));
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        assert!(parse_count("").is_err());
        assert!(parse_count("1k").is_err());
        assert!(parse_count("-3").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-99"), Ok((0, 100)));
        assert_eq!(parse_range("10-10"), Ok((10, 1)));
        assert_eq!(parse_range("100-"), Ok((100, 0)));
        assert_eq!(parse_range("0-"), Ok((0, 0)));
        assert_eq!(parse_range("0-18446744073709551614"), Ok((0, u64::MAX)));
        assert!(parse_range("0-18446744073709551615").is_err());
        for bad in ["", "-", "5", "-5", "9-3", "a-b", "1-2-3", "1 - 2", "+1-2"] {
            assert!(parse_range(bad).is_err(), "{bad:?}");
        }
        assert!(parse_range("-5").unwrap_err().contains("suffix"));
    }

    #[test]
    fn meta_pairs() {
        assert_eq!(parse_meta("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_meta("a="), Ok(("a".into(), String::new())));
        assert!(parse_meta("=b").is_err());
        assert!(parse_meta("ab").is_err());
    }
}
