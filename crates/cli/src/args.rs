//! What the user typed: clap definitions, validated only. Anything derived from the
//! environment or defaults that need the OS happens in the command modules.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::defs::{Defaults, Values};
use crate::parse::duration_secs;
pub use crate::parse::{parse_duration, parse_size};
use crate::settings::SETTINGS;
pub use crate::settings::{DEFAULT_TCP_ADDR, DEFAULT_UDP_ADDR};
use crate::value::Kind;

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
    /// Show the size, metadata, tier and state of the object stored under KEY; on a server
    /// with a remote tier, whether it is uploaded (asked of the management API next to
    /// the Unix socket).
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
    /// The remote tier: `flush` sends every pending upload, delete and purge now and
    /// waits for the queue to drain (exit 1 if it did not); `check` compares local
    /// objects with the remote tier (exit 1 if any is missing there); `sweep` frees the
    /// bucket's dead objects now (management API).
    Remote(RemoteArgs),
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

/// `objmapper remote flush|check|sweep`.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    #[command(subcommand)]
    pub action: RemoteAction,
}

/// What `objmapper remote` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RemoteAction {
    /// Send everything pending to the remote tier now and wait for it.
    Flush {
        /// Seconds to wait for the queue to drain.
        #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
        wait: f64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Sweep the bucket now: delete the data objects no pointer names, and replace the
    /// expired and purged versions with tombstones, --names names a request until
    /// every name was read.
    Sweep {
        /// Names whose versions one request reads, at most.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        names: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Compare local objects (under --prefix, at most --limit) with the remote tier.
    Check {
        /// Only the objects whose key starts with PREFIX.
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<OsString>,
        /// At most this many objects.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
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
/// both), else the config file, else the default (see `crate::config`). The flags are
/// made from the table of settings (`crate::settings::SETTINGS`), and what was given is
/// kept by setting name in `given`.
#[derive(Clone, Debug, Default)]
pub struct ServeArgs {
    /// Config file (TOML).
    pub config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    pub print_config: bool,
    /// The settings given by a flag or an environment variable, by name.
    pub given: Values,
}

const SERVE_AFTER_HELP: &str = "\
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
result of all of it.";

impl ServeArgs {
    /// What was given for the setting `name`, as text.
    #[cfg(test)]
    pub fn text(&self, name: &str) -> Option<String> {
        self.given.get(name).map(|v| v.text())
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        if m.contains_id("share_fds") {
            let why = crate::file::removed("server", "share_fds").unwrap_or_default();
            return Err(clap::Error::raw(
                clap::error::ErrorKind::UnknownArgument,
                format!("--share-fds (OBJMAPPER_SHARE_FDS) {why}\n"),
            ));
        }
        let mut given = Values::new();
        for d in SETTINGS.iter().filter(|d| d.flag.is_some()) {
            if let Some(v) = d.kind.given(m, d.name) {
                given.insert(d.name, v);
            }
        }
        Ok(ServeArgs {
            config: m.get_one::<PathBuf>("config").cloned(),
            print_config: m.get_flag("print_config"),
            given,
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let defaults = Defaults::get();
        let cmd = cmd
            .after_help(SERVE_AFTER_HELP)
            .arg(
                clap::Arg::new("config")
                    .long("config")
                    .value_name("PATH")
                    .env("OBJMAPPER_CONFIG")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(
                        "Config file (TOML) [default: /etc/objmapper/objmapper.toml for root, \
                         else $XDG_CONFIG_HOME/objmapper/objmapper.toml or \
                         ~/.config/objmapper/objmapper.toml; read only if it exists]",
                    ),
            )
            .arg(
                clap::Arg::new("print_config")
                    .long("print-config")
                    .action(clap::ArgAction::SetTrue)
                    .help(
                        "Print the effective configuration (flags, environment, file and \
                         defaults merged) as a config file, and exit",
                    ),
            )
            // Removed: refused with what replaced it (`crate::file::REMOVED`), not
            // "unexpected argument", and not ignored when it comes from the environment.
            .arg(
                clap::Arg::new("share_fds")
                    .long("share-fds")
                    .env("OBJMAPPER_SHARE_FDS")
                    .num_args(0..=1)
                    .require_equals(true)
                    .hide(true)
                    .hide_env(true),
            );
        SETTINGS.iter().fold(cmd, |cmd, d| {
            let Some(flag) = d.flag else { return cmd };
            let mut arg = d
                .kind
                .arg(d.name, d.key)
                .long(flag)
                .help(d.help_text(&defaults))
                .conflicts_with_all(d.conflicts);
            if let Some(env) = d.env {
                arg = arg.env(env);
            }
            if !matches!(d.kind, Kind::Disable) {
                arg = arg.value_name(d.value_name);
            }
            cmd.arg(arg)
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

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
    /// The objects are already in the store, from an earlier run with the same --keys and
    /// --size and --keep: skip storing them, so the run measures its requests only (a GET
    /// that misses counts as a miss, one of another size as an error).
    #[arg(long)]
    pub stored: bool,
    /// Requests in flight per connection, over a protocol V2 session (PIPELINE, and
    /// OUT_OF_ORDER when N > 1) [default: V1, one at a time].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub pipeline: Option<u16>,
    /// With --pipeline: gather the requests that refill the pipeline after each read and
    /// write them together (one sendmsg per read instead of one per request, as
    /// redis-benchmark -P does), instead of sending each as soon as a reply frees its
    /// place. Fewer system calls in the client, less overlap between client and server
    /// (docs/BENCHMARKS.md, "What the T5 client costs").
    #[arg(long, requires = "pipeline")]
    pub cork: bool,
    /// Open a protocol V2 session (depth 1 unless --pipeline) that promises
    /// POSITIONAL_READS: the bench only ever preads a received fd, so the server may hand
    /// out one shared description per version instead of opening one per GET (Unix socket
    /// only) [default: no promise, a private description per GET].
    #[arg(long)]
    pub positional_reads: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
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
    fn the_removed_share_fds_flag_says_what_replaced_it() {
        for argv in [
            &["objmapper", "serve", "--share-fds"][..],
            &["objmapper", "serve", "--share-fds=false"],
        ] {
            let e = Cli::try_parse_from(argv).unwrap_err().to_string();
            assert!(
                e.contains("--share-fds (OBJMAPPER_SHARE_FDS) was removed"),
                "{e}"
            );
            assert!(e.contains("POSITIONAL_READS"), "{e}");
        }
        let help = Cli::command()
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!help.contains("share-fds"), "hidden from --help");
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
