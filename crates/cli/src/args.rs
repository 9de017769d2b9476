//! What the user typed: clap definitions, validated only. Anything derived from the
//! environment or defaults that need the OS happens in the command modules.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Environment:
  OBJMAPPER_SOCKET    socket path for every command (same as --socket)
  OBJMAPPER_DATA_DIR  data directory for `serve` (same as --data-dir)
  OBJMAPPER_LOG       log filter for `serve` (same as --log-level)
  OBJMAPPER_MEM_DIR   memory tier directory for `serve` (same as --mem-dir); the other
                      tier settings have variables too, listed under `objmapper serve --help`
  A flag beats its environment variable, which beats the default.

Default socket: $OBJMAPPER_SOCKET; else /run/objmapper/objmapper.sock for root; else
$XDG_RUNTIME_DIR/objmapper.sock; else /tmp/objmapper-<uid>/objmapper.sock.

Exit status:
  0  success
  1  the object was not found, the server reported an error, or the connection failed
  2  usage error (bad flag or argument, or an impossible combination such as --mode fd
     with --tcp)

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
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGTERM or SIGINT.
    Serve(ServeArgs),
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
}

/// How object bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Pass an open file descriptor (Unix socket only): no bytes cross the socket.
    Fd,
    /// Send the bytes inline on the socket.
    Copy,
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
    /// Connect over TCP to ADDR:PORT instead of the Unix socket (copy mode only).
    #[arg(long, value_name = "ADDR:PORT")]
    pub tcp: Option<String>,
    /// Transfer mode: fd or copy [default: fd on the Unix socket, copy over TCP].
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<ModeArg>,
}

/// `objmapper serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Unix socket to listen on (created with --socket-mode; its directory is created if
    /// missing).
    #[arg(
        long,
        value_name = "PATH",
        env = "OBJMAPPER_SOCKET",
        default_value_os_t = objmapper_client::default_socket_path()
    )]
    pub socket: PathBuf,
    /// Directory for the persistent store [default: /var/lib/objmapper for root, else
    /// $XDG_DATA_HOME/objmapper, else $HOME/.local/share/objmapper].
    #[arg(long, value_name = "DIR", env = "OBJMAPPER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace, or tracing EnvFilter directives).
    #[arg(
        long,
        value_name = "LEVEL",
        env = "OBJMAPPER_LOG",
        default_value = "info"
    )]
    pub log_level: String,
    /// Permission bits of the socket file, in octal (e.g. 660 to let --socket-group in).
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse_octal_mode)]
    pub socket_mode: u32,
    /// Group to own the socket file: a group name or a numeric gid [default: our group].
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Also listen on TCP at ADDR:PORT (copy mode only; off by default; no
    /// authentication, so bind it to a trusted address).
    #[arg(long, value_name = "ADDR:PORT")]
    pub tcp: Option<String>,
    /// Event-loop threads serving connections.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,
    /// Largest object accepted, in bytes (suffixes K, M, G, T are powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_size)]
    pub max_object_size: u64,
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
}

/// `objmapper put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key: any bytes, 1 to 4096 of them. Never interpreted as a path.
    #[arg(value_name = "KEY")]
    pub key: OsString,
    /// File to store, or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
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
the same work as a copy-mode one. Latency is per request, in microseconds.")]
pub struct BenchArgs {
    /// Object size in bytes (suffixes K, M, G are powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "4096", value_parser = parse_size)]
    pub size: u64,
    /// Number of distinct objects.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Concurrent connections, one thread each.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: u32,
    /// How long to run, in seconds (fractions allowed).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        conflicts_with = "requests"
    )]
    pub duration: f64,
    /// Stop after this many GETs in total instead of after --duration.
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
    #[command(flatten)]
    pub conn: ConnArgs,
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
    if secs == 0 {
        return Err(format!(
            "duration {s:?} is zero: the object would expire at once"
        ));
    }
    Ok(std::time::Duration::from_secs(secs))
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
    fn counts() {
        assert_eq!(parse_count("1000000"), Ok(1_000_000));
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        assert!(parse_count("").is_err());
        assert!(parse_count("1k").is_err());
        assert!(parse_count("-3").is_err());
    }

    #[test]
    fn meta_pairs() {
        assert_eq!(parse_meta("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_meta("a="), Ok(("a".into(), String::new())));
        assert!(parse_meta("=b").is_err());
        assert!(parse_meta("ab").is_err());
    }
}
