//! The table of `serve` settings ([`SETTINGS`]) and the struct that holds them decided
//! ([`Settings`]), both declared by one list: each entry is one setting (see
//! `crate::defs` for what an entry says). The order is the config file's and
//! `--print-config`'s: `[server]`, `[access]`, `[limits]`, `[store]`,
//! `[eviction.memory]`, `[eviction.disk]`, `[admin]`, `[log]`, `[remote]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use objmapper_server::{EvictionPatch, Grant, Perms, RuntimeConfigPatch, TierPatch};

use crate::defs::{settings_table, Reload};
use crate::value::{Kind, LogFormat, Value};

/// Default TCP address, the one `serve --tcp` listens on when given no address.
pub const DEFAULT_TCP_ADDR: &str = "127.0.0.1:9999";
/// Default UDP address, the one `serve --udp` listens on when given no address.
pub const DEFAULT_UDP_ADDR: &str = "127.0.0.1:9998";
/// Default management API TCP address, the one `serve --admin-tcp` uses without a value.
pub const DEFAULT_ADMIN_TCP_ADDR: &str = "127.0.0.1:9997";

settings_table! {
    // [server]
    socket: PathBuf = {
        section: "server", key: "socket", flag: Some("socket"), env: Some("OBJMAPPER_SOCKET"),
        value_name: "PATH", kind: Kind::Path,
        default: |_, _| Ok(Some(Value::Path(objmapper_client::default_socket_path()))),
        help: "Unix socket to listen on (created with --socket-mode; its directory is created \
               if missing) [default: $OBJMAPPER_SOCKET; else /run/objmapper/objmapper.sock for \
               root; else $XDG_RUNTIME_DIR/objmapper.sock; else \
               /tmp/objmapper-UID/objmapper.sock]. Under socket activation (LISTEN_FDS) the \
               passed socket is used instead",
    }
    socket_mode: u32 = {
        section: "server", key: "socket_mode", flag: Some("socket-mode"),
        env: Some("OBJMAPPER_SOCKET_MODE"), value_name: "OCTAL", kind: Kind::Octal,
        default: |d, _| Ok(Some(Value::Mode(d.server.socket_mode))),
        help: "Permission bits of the socket file, in octal (e.g. 660 to let --socket-group \
               in) [default: {default}]",
    }
    socket_group: Option<String> = {
        section: "server", key: "socket_group", flag: Some("socket-group"),
        env: Some("OBJMAPPER_SOCKET_GROUP"), value_name: "GROUP",
        help: "Group to own the socket file: a group name or a numeric gid [default: our \
               group]",
    }
    workers: u32 = {
        section: "server", key: "workers", flag: Some("workers"), env: Some("OBJMAPPER_WORKERS"),
        value_name: "N", kind: Kind::Int { bits: 32, min: 1, max: 1024, file_checked: true },
        default: |d, _| usize_int(d.server.workers),
        help: "Event-loop threads serving connections [default: {default}]",
    }
    busy_poll_us: u32 = {
        section: "server", key: "busy_poll_us", flag: Some("busy-poll-us"),
        env: Some("OBJMAPPER_BUSY_POLL_US"), value_name: "MICROSECONDS",
        kind: Kind::Int { bits: 32, min: 0, max: 10_000, file_checked: true },
        default: |d, _| int(d.server.busy_poll.as_micros() as u64),
        help: "After work, a worker polls for more without sleeping for this many \
               microseconds (0 to 10000) before it waits in epoll again: a request that \
               arrives meanwhile costs no wakeup. Pays when clients run on other CPUs; \
               costs up to that much CPU after every request; 0 is off [default: {default}]",
    }
    tcp: Option<String> = {
        section: "server", key: "tcp", flag: Some("tcp"), env: Some("OBJMAPPER_TCP"),
        value_name: "ADDR:PORT", kind: Kind::Addr(DEFAULT_TCP_ADDR),
        help: "Also listen on TCP (copy, splice and auto modes): at ADDR:PORT, or \
               127.0.0.1:9999 when the flag has no value. Off without the flag. TCP peers \
               carry no credentials (they get --tcp-permissions): an address other than \
               loopback needs --tls-cert and --tls-key, and --tls-client-ca or \
               --tcp-token-file (or both)",
    }
    udp: Option<String> = {
        section: "server", key: "udp", flag: Some("udp"), env: Some("OBJMAPPER_UDP"),
        value_name: "ADDR:PORT", kind: Kind::Addr(DEFAULT_UDP_ADDR),
        help: "Also serve GET, HEAD and PING of small objects over UDP: at ADDR:PORT, or \
               127.0.0.1:9998 when the flag has no value. Off without the flag. UDP replies \
               can be aimed at a forged source address (amplification): keep it on loopback \
               or a trusted network",
    }
    tls_cert: Option<PathBuf> = {
        section: "server", key: "tls_cert", flag: Some("tls-cert"), env: Some("OBJMAPPER_TLS_CERT"),
        value_name: "PEM", kind: Kind::Path, reload: Reload::TcpSecurity,
        help: "Serve the TCP listener over TLS 1.3 with this certificate chain (PEM, leaf \
               first). Re-read on SIGHUP, for certificate rotation",
    }
    tls_key: Option<PathBuf> = {
        section: "server", key: "tls_key", flag: Some("tls-key"), env: Some("OBJMAPPER_TLS_KEY"),
        value_name: "PEM", kind: Kind::Path, reload: Reload::TcpSecurity,
        help: "The TLS certificate's private key (PEM)",
    }
    tls_client_ca: Option<PathBuf> = {
        section: "server", key: "tls_client_ca", flag: Some("tls-client-ca"),
        env: Some("OBJMAPPER_TLS_CLIENT_CA"), value_name: "PEM", kind: Kind::Path,
        reload: Reload::TcpSecurity,
        help: "Require TCP clients to present a certificate signed by a CA in this PEM file",
    }
    tcp_token_file: Option<PathBuf> = {
        section: "server", key: "tcp_token_file", flag: Some("tcp-token-file"),
        env: Some("OBJMAPPER_TCP_TOKEN_FILE"), value_name: "PATH", kind: Kind::Path,
        reload: Reload::TcpSecurity,
        help: "Require TCP clients to present the token in this file (16 to 256 bytes, mode \
               600; one trailing newline is ignored) in HELLO before any other request",
    }
    udp_max_response: u64 = {
        section: "server", key: "udp_max_response", flag: Some("udp-max-response"),
        env: Some("OBJMAPPER_UDP_MAX_RESPONSE"), value_name: "BYTES", kind: Kind::Size,
        default: |d, _| size(d.server.udp_max_response as u64),
        help: "Largest reply sent over UDP, header and metadata included (suffixes K, M); \
               larger ones get RESPONSE_TOO_LARGE [default: {default}]",
    }
    auto_fd_threshold: u64 = {
        section: "server", key: "auto_fd_threshold", flag: Some("auto-fd-threshold"),
        env: Some("OBJMAPPER_AUTO_FD_THRESHOLD"), value_name: "BYTES", kind: Kind::Size,
        default: |d, _| size(d.server.auto_fd_threshold),
        help: "auto mode: content of at least this many bytes goes as an fd where fds can \
               travel, smaller content inline (suffixes K, M, G) [default: {default}]",
    }
    host_id: String = {
        section: "server", key: "host_id", flag: Some("host-id"), env: Some("OBJMAPPER_HOST_ID"),
        value_name: "ID", kind: Kind::Checked(host_id),
        default: |d, _| Ok(Some(Value::Text(d.server.host_id.clone()))),
        help: "This host's name among the hosts that share a remote tier (the tie-break \
               between them), shown by `objmapper stats`: 1 to 64 bytes of A-Z, a-z, 0-9, \
               '.', '_' and '-' [default: the machine's hostname]",
    }

    // [access]
    allow_uid: Vec<Grant> = {
        section: "access", key: "allow_uid", flag: Some("allow-uid"), env: Some("OBJMAPPER_ALLOW_UID"),
        value_name: "UID=PERMS", kind: Kind::Grants, reload: Reload::Access,
        default: |_, _| Ok(Some(Value::Grants(Vec::new()))),
        help: "Grant a uid permissions on the object socket (checked against the peer's \
               credentials): UID=PERMS with PERMS a comma list of read (GET, HEAD), write (PUT, \
               COMMIT, ABORT, DELETE, PIN, UNPIN) and admin (the management API), or all or \
               none. Repeat for more, or give several separated by spaces (\"33=read \
               1000=all\"). Our own uid has all three unless the list names it; nobody else \
               has anything: a peer with no permission gets FORBIDDEN and is closed (see \
               SECURITY.md). The flags replace OBJMAPPER_ALLOW_UID, which replaces [access] \
               allow_uid [default: none but our own uid]",
    }
    allow_gid: Vec<Grant> = {
        section: "access", key: "allow_gid", flag: Some("allow-gid"), env: Some("OBJMAPPER_ALLOW_GID"),
        value_name: "GID=PERMS", kind: Kind::Grants, reload: Reload::Access,
        default: |d, _| Ok(Some(Value::Grants(d.server.access.gids.clone()))),
        help: "Grant a gid (the peer's primary group) permissions, as --allow-uid; a peer gets \
               the union of its uid's and its gid's grants [default: none]",
    }
    tcp_permissions: Perms = {
        section: "access", key: "tcp_permissions", flag: Some("tcp-permissions"),
        env: Some("OBJMAPPER_TCP_PERMISSIONS"), value_name: "PERMS", kind: Kind::Perms,
        reload: Reload::Access,
        default: |d, _| Ok(Some(Value::Perms(d.server.access.tcp))),
        help: "What TCP peers may do (TCP carries no credentials) [default: {default}]",
    }

    // [limits]
    max_connections: usize = {
        section: "limits", key: "max_connections", flag: Some("max-connections"),
        env: Some("OBJMAPPER_MAX_CONNECTIONS"), value_name: "N", kind: Kind::Limit { size: false },
        reload: Reload::Restart(NOFILE), default: |d, _| usize_int(d.server.max_connections),
        help: "Connections open at once; the next gets BUSY and is closed [default: {default}]",
    }
    max_pipeline_depth: u16 = {
        section: "limits", key: "max_pipeline_depth", flag: Some("max-pipeline-depth"),
        env: Some("OBJMAPPER_MAX_PIPELINE_DEPTH"), value_name: "N", kind: Kind::Depth,
        reload: Reload::Limits, default: |d, _| int(d.server.max_pipeline_depth),
        help: "Deepest V2 pipeline granted per connection [default: {default}]",
    }
    max_staged_puts: usize = {
        section: "limits", key: "max_staged_puts", flag: Some("max-staged-puts"),
        env: Some("OBJMAPPER_MAX_STAGED_PUTS"), value_name: "N", kind: Kind::Limit { size: false },
        reload: Reload::Limits, default: |d, _| usize_int(d.server.max_staged_puts),
        help: "fd-mode PUTs one connection may hold staged; beyond, TOO_MANY_REQUESTS \
               [default: {default}]",
    }
    max_staged_puts_total: usize = {
        section: "limits", key: "max_staged_puts_total", flag: Some("max-staged-puts-total"),
        env: Some("OBJMAPPER_MAX_STAGED_PUTS_TOTAL"), value_name: "N",
        kind: Kind::Limit { size: false }, reload: Reload::Restart(NOFILE),
        default: |d, _| usize_int(d.server.max_staged_puts_total),
        help: "fd-mode PUTs all connections may hold staged; beyond, BUSY [default: {default}]",
    }
    max_staged_bytes_per_conn: u64 = {
        section: "limits", key: "max_staged_bytes_per_conn", flag: Some("max-staged-bytes-per-conn"),
        env: Some("OBJMAPPER_MAX_STAGED_BYTES_PER_CONN"), value_name: "BYTES",
        kind: Kind::Limit { size: true }, reload: Reload::Limits,
        default: |d, _| size(d.server.max_staged_bytes_per_conn),
        help: "Bytes one connection may hold staged; beyond, TOO_MANY_REQUESTS (suffixes K, M, \
               G) [default: {default}]",
    }
    max_staged_bytes_total: u64 = {
        section: "limits", key: "max_staged_bytes_total", flag: Some("max-staged-bytes-total"),
        env: Some("OBJMAPPER_MAX_STAGED_BYTES_TOTAL"), value_name: "BYTES",
        kind: Kind::Limit { size: true }, reload: Reload::Limits,
        default: |d, _| size(d.server.max_staged_bytes_total),
        help: "Bytes of PUT bodies being received on all connections, counted as they arrive; \
               beyond, BUSY (suffixes K, M, G) [default: {default}]",
    }
    max_key_len: usize = {
        section: "limits", key: "max_key_len", flag: Some("max-key-len"),
        env: Some("OBJMAPPER_MAX_KEY_LEN"), value_name: "BYTES", kind: Kind::Limit { size: false },
        reload: Reload::Limits, default: |d, _| usize_int(d.server.max_key_len),
        help: "Longest key accepted, 1..=4096; longer gets KEY_TOO_LONG [default: {default}]",
    }
    max_meta_len: usize = {
        section: "limits", key: "max_meta_len", flag: Some("max-meta-len"),
        env: Some("OBJMAPPER_MAX_META_LEN"), value_name: "BYTES", kind: Kind::Limit { size: true },
        reload: Reload::Limits, default: |d, _| size(d.server.max_meta_len as u64),
        help: "Largest metadata section accepted, up to 65536; larger gets METADATA_TOO_LARGE \
               [default: 65536]",
    }
    header_timeout: Duration = {
        section: "limits", key: "header_timeout", flag: Some("header-timeout"),
        env: Some("OBJMAPPER_HEADER_TIMEOUT"), value_name: "DURATION", kind: Kind::Timeout,
        reload: Reload::Limits, default: |d, _| Ok(Some(Value::Duration(d.server.header_timeout))),
        help: "A frame header must arrive whole within this long of its first byte \
               (slowloris), or PROTOCOL_ERROR and close [default: {default}]",
    }
    frame_timeout: Duration = {
        section: "limits", key: "frame_timeout", flag: Some("frame-timeout"),
        env: Some("OBJMAPPER_FRAME_TIMEOUT"), value_name: "DURATION", kind: Kind::Timeout,
        reload: Reload::Limits, default: |d, _| Ok(Some(Value::Duration(d.server.frame_timeout))),
        help: "An unfinished frame or PUT body that receives nothing for this long gets \
               PROTOCOL_ERROR and is closed [default: {default}]",
    }
    idle_timeout: Option<Duration> = {
        section: "limits", key: "idle_timeout", flag: Some("idle-timeout"),
        env: Some("OBJMAPPER_IDLE_TIMEOUT"), value_name: "DURATION|never", kind: Kind::Idle,
        reload: Reload::Limits, default: |d, _| Ok(Some(Value::Idle(d.server.idle_timeout))),
        help: "Close a connection with nothing in flight after this long without a request, \
               or never [default: {default}]",
    }

    // [store]
    data_dir: PathBuf = {
        section: "store", key: "data_dir", flag: Some("data-dir"), env: Some("OBJMAPPER_DATA_DIR"),
        value_name: "DIR", kind: Kind::Path,
        default: |_, _| default_data_dir().map(|p| Some(Value::Path(p))),
        help: "Directory for the persistent store [default: /var/lib/objmapper for root, else \
               $XDG_DATA_HOME/objmapper, else $HOME/.local/share/objmapper]",
    }
    mem_dir: Option<PathBuf> = {
        section: "store", key: "mem_dir", flag: Some("mem-dir"), env: Some("OBJMAPPER_MEM_DIR"),
        value_name: "DIR", kind: Kind::Path,
        help: "Directory of the memory tier; it should be on a tmpfs [default: \
               /dev/shm/objmapper-HASH with HASH derived from the data directory; DATA_DIR/mem \
               if there is no /dev/shm]",
    }
    mem_capacity: u64 = {
        section: "store", key: "mem_capacity", flag: Some("mem-capacity"),
        env: Some("OBJMAPPER_MEM_CAPACITY"), value_name: "BYTES", kind: Kind::Size,
        default: |d, _| size(d.server.store.mem_capacity_bytes),
        reload: Reload::Store {
            patch: |p, v| mem(p).capacity_bytes = Some(n(v)),
            at_start: false,
            zero_toggles: true,
        },
        help: "Bytes the memory tier may hold (suffixes K, M, G, T; 0 disables the memory \
               tier) [default: {default}]",
    }
    mem_max_objects: u64 = {
        section: "store", key: "mem_max_objects", flag: Some("mem-max-objects"),
        env: Some("OBJMAPPER_MEM_MAX_OBJECTS"), value_name: "N", kind: Kind::Count,
        default: |d, _| int(d.server.store.mem_max_objects),
        reload: store(|p, v| mem(p).max_objects = Some(n(v))),
        help: "Objects the memory tier may hold [default: {default}]",
    }
    disk_capacity: u64 = {
        section: "store", key: "disk_capacity", flag: Some("disk-capacity"),
        env: Some("OBJMAPPER_DISK_CAPACITY"), value_name: "BYTES", kind: Kind::Size,
        default: |d, _| size(d.server.store.disk_capacity_bytes),
        reload: store(|p, v| disk(p).capacity_bytes = Some(n(v))),
        help: "Bytes the disk tier may hold (suffixes K, M, G, T) [default: {default}]",
    }
    disk_max_objects: u64 = {
        section: "store", key: "disk_max_objects", flag: Some("disk-max-objects"),
        env: Some("OBJMAPPER_DISK_MAX_OBJECTS"), value_name: "N", kind: Kind::Count,
        default: |d, _| int(d.server.store.disk_max_objects),
        reload: store(|p, v| disk(p).max_objects = Some(n(v))),
        help: "Objects the disk tier may hold [default: {default}]",
    }
    direct_to_disk_threshold: u64 = {
        section: "store", key: "direct_to_disk_threshold", flag: Some("direct-to-disk-threshold"),
        env: Some("OBJMAPPER_DIRECT_TO_DISK_THRESHOLD"), value_name: "BYTES", kind: Kind::Size,
        default: |d, _| size(d.server.store.direct_to_disk_threshold),
        reload: store(|p, v| p.direct_to_disk_threshold = Some(n(v))),
        help: "Objects larger than this skip the memory tier and go straight to disk \
               (suffixes K, M, G, T) [default: {default}]",
    }
    max_object_size: u64 = {
        section: "store", key: "max_object_size", flag: Some("max-object-size"),
        env: Some("OBJMAPPER_MAX_OBJECT_SIZE"), value_name: "BYTES", kind: Kind::Size,
        default: |d, _| size(d.server.store.max_object_size),
        help: "Largest object accepted, in bytes (suffixes K, M, G, T are powers of 1024) \
               [default: {default}]",
    }
    promote_after_hits: u8 = {
        section: "store", key: "promote_after_hits", flag: Some("promote-after-hits"),
        env: Some("OBJMAPPER_PROMOTE_AFTER_HITS"), value_name: "N",
        kind: Kind::Int { bits: 8, min: 0, max: 3, file_checked: true },
        default: |d, _| int(d.server.store.promote_after_hits),
        reload: store(|p, v| p.promote_after_hits = Some(n(v) as u8)),
        help: "Disk hits before an object read from disk is copied into the memory tier, 0 to \
               3 [default: {default}]",
    }
    write_behind_delay_ms: u64 = {
        section: "store", key: "write_behind_delay_ms", flag: Some("write-behind-delay-ms"),
        env: Some("OBJMAPPER_WRITE_BEHIND_DELAY_MS"), value_name: "MS",
        kind: Kind::Int { bits: 64, min: 0, max: 3_600_000, file_checked: false },
        default: |d, _| int(d.server.store.write_behind_delay.as_millis() as u64),
        help: "Milliseconds a dirty memory object waits before it is written behind to disk: \
               a key rewritten meanwhile is written once. A reboot (not a daemon crash) can \
               lose up to this much more of the newest default-durability writes; 0 writes \
               behind at once [default: {default}]",
    }
    body_cache: u64 = {
        section: "store", key: "body_cache", flag: Some("body-cache"),
        env: Some("OBJMAPPER_BODY_CACHE"), value_name: "BYTES", kind: Kind::Size,
        default: |d, _| size(d.server.store.body_cache_bytes),
        help: "Bytes of small objects' contents (16 KiB or less each) each tier keeps in the \
               daemon's memory after their first read, so that GETs sending them inline \
               open and read no file; 0 keeps none (suffixes K, M, G, T are powers of 1024) \
               [default: {default}]",
    }
    scrub_rate: u64 = {
        section: "store", key: "scrub_rate", flag: Some("scrub-rate"), env: Some("OBJMAPPER_SCRUB_RATE"),
        value_name: "BYTES", kind: Kind::Size,
        default: |d, _| size(d.server.store.scrub_rate_bytes),
        help: "Bytes per second the background scrubber reads to re-verify every object \
               against its checksum (suffixes K, M, G); 0 turns it off [default: {default}]",
    }

    // [eviction.memory], [eviction.disk]: file only (and `objmapper config set`).
    mem_small_ratio: f64 = {
        section: "eviction.memory", key: "small_ratio", kind: Kind::Ratio { min: 0.01, max: 0.9 },
        default: |d, _| Ok(Some(Value::Float(d.runtime.memory.eviction.small_ratio))),
        reload: knob(|p, v| knobs(mem(p)).small_ratio = Some(f(v))),
        help: "The memory tier's S3-FIFO small queue, as a share of its capacity",
    }
    mem_promote_threshold: u8 = {
        section: "eviction.memory", key: "promote_threshold",
        kind: Kind::Int { bits: 8, min: 1, max: 3, file_checked: true },
        default: |d, _| int(d.runtime.memory.eviction.promote_threshold),
        reload: knob(|p, v| knobs(mem(p)).promote_threshold = Some(n(v) as u8)),
        help: "Hits in the memory tier's small queue that move an object to its main queue",
    }
    mem_ghost_ratio: f64 = {
        section: "eviction.memory", key: "ghost_ratio", kind: Kind::Ratio { min: 0.0, max: 4.0 },
        default: |d, _| Ok(Some(Value::Float(d.runtime.memory.eviction.ghost_ratio))),
        reload: knob(|p, v| knobs(mem(p)).ghost_ratio = Some(f(v))),
        help: "The memory tier's ghost queue, as a share of its main queue",
    }
    mem_ghost_main_evictions: bool = {
        section: "eviction.memory", key: "ghost_main_evictions", kind: Kind::Bool,
        default: |d, _| Ok(Some(Value::Bool(d.runtime.memory.eviction.ghost_main_evictions))),
        reload: knob(|p, v| knobs(mem(p)).ghost_main_evictions = Some(b(v))),
        help: "Whether the memory tier's ghost queue also remembers main-queue evictions",
    }
    disk_small_ratio: f64 = {
        section: "eviction.disk", key: "small_ratio", kind: Kind::Ratio { min: 0.01, max: 0.9 },
        default: |d, _| Ok(Some(Value::Float(d.runtime.disk.eviction.small_ratio))),
        reload: knob(|p, v| knobs(disk(p)).small_ratio = Some(f(v))),
        help: "The disk tier's S3-FIFO small queue, as a share of its capacity",
    }
    disk_promote_threshold: u8 = {
        section: "eviction.disk", key: "promote_threshold",
        kind: Kind::Int { bits: 8, min: 1, max: 3, file_checked: true },
        default: |d, _| int(d.runtime.disk.eviction.promote_threshold),
        reload: knob(|p, v| knobs(disk(p)).promote_threshold = Some(n(v) as u8)),
        help: "Hits in the disk tier's small queue that move an object to its main queue",
    }
    disk_ghost_ratio: f64 = {
        section: "eviction.disk", key: "ghost_ratio", kind: Kind::Ratio { min: 0.0, max: 4.0 },
        default: |d, _| Ok(Some(Value::Float(d.runtime.disk.eviction.ghost_ratio))),
        reload: knob(|p, v| knobs(disk(p)).ghost_ratio = Some(f(v))),
        help: "The disk tier's ghost queue, as a share of its main queue",
    }
    disk_ghost_main_evictions: bool = {
        section: "eviction.disk", key: "ghost_main_evictions", kind: Kind::Bool,
        default: |d, _| Ok(Some(Value::Bool(d.runtime.disk.eviction.ghost_main_evictions))),
        reload: knob(|p, v| knobs(disk(p)).ghost_main_evictions = Some(b(v))),
        help: "Whether the disk tier's ghost queue also remembers main-queue evictions",
    }

    // [admin]
    admin_enabled: bool = {
        section: "admin", key: "enabled", flag: Some("no-admin"), env: Some("OBJMAPPER_NO_ADMIN"),
        kind: Kind::Disable, conflicts: &["admin_socket", "admin_tcp"],
        default: |d, _| Ok(Some(Value::Bool(d.server.admin_enabled))),
        help: "Do not serve the management API at all (beats `[admin] enabled = true` in the \
               config file)",
    }
    admin_socket: PathBuf = {
        section: "admin", key: "socket", flag: Some("admin-socket"),
        env: Some("OBJMAPPER_ADMIN_SOCKET"), value_name: "PATH", kind: Kind::Path,
        default: |_, v| Ok(match v.get("socket") {
            Some(Value::Path(s)) => Some(Value::Path(objmapper_server::admin_sibling(s))),
            _ => None,
        }),
        help: "Unix socket of the management API [default: the --socket path + `.admin`]",
    }
    admin_tcp: Option<String> = {
        section: "admin", key: "tcp", flag: Some("admin-tcp"), env: Some("OBJMAPPER_ADMIN_TCP"),
        value_name: "ADDR:PORT", kind: Kind::Addr(DEFAULT_ADMIN_TCP_ADDR),
        help: "Also serve the management API on loopback TCP: at ADDR:PORT, or 127.0.0.1:9997 \
               when the flag has no value. Only loopback addresses are accepted (no \
               authentication). Off without the flag",
    }

    // [log]
    log_level: String = {
        section: "log", key: "level", flag: Some("log-level"), env: Some("OBJMAPPER_LOG"),
        fallback_env: Some("RUST_LOG"), value_name: "LEVEL", kind: Kind::Checked(log_filter),
        reload: Reload::Log, default: |_, _| Ok(Some(Value::Text("info".into()))),
        help: "Log filter (error, warn, info, debug, trace, or tracing EnvFilter directives); \
               beats RUST_LOG [default: {default}]",
    }
    log_format: LogFormat = {
        section: "log", key: "format", flag: Some("log-format"), env: Some("OBJMAPPER_LOG_FORMAT"),
        value_name: "FORMAT", kind: Kind::Format,
        default: |_, _| Ok(Some(Value::Format(LogFormat::default()))),
        help: "Log format on stderr: human (text lines) or json (one JSON object per line) \
               [default: {default}]",
    }

    // [remote]
    remote: Option<String> = {
        section: "remote", key: "url", flag: Some("remote"), env: Some("OBJMAPPER_REMOTE"),
        value_name: "s3://BUCKET/PREFIX", kind: Kind::Checked(remote_url),
        reload: Reload::Restart(None),
        help: "Turn on the remote tier: a cold tier behind memory and disk on S3-compatible \
               storage, shared by every host that names the same bucket and prefix (read-through \
               on a local miss, write-behind of every persistent object, deletes and purges \
               reach every host; docs/STORAGE.md, \"The remote tier\"). Off without it, and \
               then any other remote setting is refused",
    }
    remote_endpoint: Option<String> = {
        section: "remote", key: "endpoint", flag: Some("remote-endpoint"),
        env: Some("OBJMAPPER_REMOTE_ENDPOINT"), value_name: "URL",
        kind: Kind::Checked(remote_endpoint),
        reload: Reload::Restart(None),
        help: "The S3 endpoint (MinIO, Ceph RGW, SeaweedFS, R2, Garage): e.g. \
               http://127.0.0.1:8333; http:// only for loopback addresses [default: AWS for \
               the region]",
    }
    remote_region: String = {
        section: "remote", key: "region", flag: Some("remote-region"),
        env: Some("OBJMAPPER_REMOTE_REGION"), value_name: "REGION", kind: Kind::Text,
        reload: Reload::Restart(None),
        default: |_, _| Ok(Some(Value::Text(objmapper_server::RemoteSettings::defaults().client.region))),
        help: "The bucket's region [default: {default}]",
    }
    remote_credentials_file: Option<PathBuf> = {
        section: "remote", key: "credentials_file", flag: Some("remote-credentials-file"),
        env: Some("OBJMAPPER_REMOTE_CREDENTIALS_FILE"), value_name: "PATH", kind: Kind::Path,
        reload: Reload::Restart(None),
        help: "Read the access key from this file (mode 600 or 400, else refused), in AWS's \
               credentials file form (~/.aws/credentials): `aws_access_key_id = ...`, \
               `aws_secret_access_key = ...` and optionally `aws_session_token = ...` lines, \
               under `[default]` or no section (the same keys without `aws_` are read too); \
               read again when it changes [default: the AWS_ACCESS_KEY_ID and \
               AWS_SECRET_ACCESS_KEY variables]",
    }
    remote_credentials: String = {
        section: "remote", key: "credentials", flag: Some("remote-credentials"),
        env: Some("OBJMAPPER_REMOTE_CREDENTIALS"), value_name: "SOURCE",
        kind: Kind::Checked(remote_credentials),
        reload: Reload::Restart(None),
        default: |_, _| Ok(Some(Value::Text("env".into()))),
        help: "Where the access key comes from without a credentials file: env (the \
               AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY variables, else a web identity \
               token, an ECS task role or EKS Pod Identity that the environment names) or \
               instance (the EC2 instance profile, from the instance metadata service) \
               [default: {default}]",
    }
    remote_upload_concurrency: u64 = {
        section: "remote", key: "upload_concurrency", flag: Some("remote-upload-concurrency"),
        env: Some("OBJMAPPER_REMOTE_UPLOAD_CONCURRENCY"), value_name: "N",
        kind: Kind::Int { bits: 32, min: 1, max: 256, file_checked: true },
        reload: Reload::Restart(None),
        default: |_, _| int(objmapper_server::RemoteSettings::defaults().client.upload_concurrency as u64),
        help: "Uploads in flight at once (and parts of one multipart upload, at most 4); \
               each waits on the store's latency, so a far store wants more [default: {default}]",
    }
    remote_upload_memory: u64 = {
        section: "remote", key: "upload_memory", flag: Some("remote-upload-memory"),
        env: Some("OBJMAPPER_REMOTE_UPLOAD_MEMORY"), value_name: "BYTES",
        kind: Kind::SizeIn { min: 1 << 20, max: 1 << 40 },
        reload: Reload::Restart(None),
        default: |_, _| size(objmapper_server::RemoteSettings::defaults().client.upload_memory),
        help: "The memory the uploads in flight hold together (a version sent in one PUT, a \
               multipart upload's parts in flight); an upload waits for its share, and one \
               that needs more than this runs alone [default: {default}]",
    }
    remote_timeout: Duration = {
        section: "remote", key: "timeout", flag: Some("remote-timeout"),
        env: Some("OBJMAPPER_REMOTE_TIMEOUT"), value_name: "DURATION", kind: Kind::ShortTimeout,
        reload: Reload::Restart(None),
        default: |_, _| Ok(Some(Value::Duration(objmapper_server::RemoteSettings::defaults().client.timeout))),
        help: "How long a GET that misses locally waits for the remote tier before it \
               answers NOT_FOUND (the fetch goes on and the next GET finds the object), and \
               the bound on any remote request's silence; below a second in ms, such as \
               250ms [default: {default}]",
    }
    remote_transfer_timeout: Duration = {
        section: "remote", key: "transfer_timeout", flag: Some("remote-transfer-timeout"),
        env: Some("OBJMAPPER_REMOTE_TRANSFER_TIMEOUT"), value_name: "DURATION",
        kind: Kind::ShortTimeout, reload: Reload::Restart(None),
        default: |_, _| Ok(Some(Value::Duration(objmapper_server::RemoteSettings::defaults().client.transfer_timeout))),
        help: "The bound on one whole upload or fill from the remote tier, however steadily \
               it moves (a large object over a slow link): beyond it the upload is retried \
               later and the fill given up; below a second in ms, such as 500ms \
               [default: {default}]",
    }
    remote_miss_ttl_ms: u64 = {
        section: "remote", key: "miss_ttl_ms", flag: Some("remote-miss-ttl-ms"),
        env: Some("OBJMAPPER_REMOTE_MISS_TTL_MS"), value_name: "MS",
        kind: Kind::Int { bits: 64, min: 0, max: 3_600_000, file_checked: true },
        reload: Reload::Restart(None),
        default: |_, _| int(objmapper_server::RemoteSettings::defaults().client.miss_ttl.as_millis() as u64),
        help: "Milliseconds a remote miss is remembered, so a storm of misses on one key asks \
               the remote tier once; 0 remembers none [default: {default}]",
    }
    remote_poll_interval: Duration = {
        section: "remote", key: "poll_interval", flag: Some("remote-poll-interval"),
        env: Some("OBJMAPPER_REMOTE_POLL_INTERVAL"), value_name: "DURATION", kind: Kind::Timeout,
        reload: Reload::Restart(None),
        default: |_, _| Ok(Some(Value::Duration(objmapper_server::RemoteSettings::defaults().client.poll_interval))),
        help: "How often the shared invalidation log is read: a delete or purge on another \
               host reaches this one within about this long [default: {default}]",
    }
    remote_event_retention: Duration = {
        section: "remote", key: "event_retention", flag: Some("remote-event-retention"),
        env: Some("OBJMAPPER_REMOTE_EVENT_RETENTION"), value_name: "DURATION", kind: Kind::Timeout,
        reload: Reload::Restart(None),
        default: |_, _| Ok(Some(Value::Duration(objmapper_server::RemoteSettings::defaults().client.event_retention))),
        help: "How long the shared invalidation log keeps its events: each host prunes older \
               ones, and a host that has not read the log for longer (stopped, or cut off) \
               drops the local copies a pruned event may have covered. Every host sharing \
               the tier should use the same value; at least twice the sum of the poll \
               interval and a minute (the lookback for late events) [default: {default}]",
    }
    remote_queue_max_objects: u64 = {
        section: "remote", key: "queue_max_objects", flag: Some("remote-queue-max-objects"),
        env: Some("OBJMAPPER_REMOTE_QUEUE_MAX_OBJECTS"), value_name: "N",
        kind: Kind::CountIn { min: 1, max: u64::MAX },
        reload: Reload::Restart(None),
        default: |_, _| int(objmapper_server::RemoteSettings::defaults().queue_max_objects as u64),
        help: "Most uploads waiting at once; beyond it the oldest are dropped (counted and \
               logged), never a PUT delayed. At least 1 [default: {default}]",
    }
    remote_max_fetches: u64 = {
        section: "remote", key: "max_fetches", flag: Some("remote-max-fetches"),
        env: Some("OBJMAPPER_REMOTE_MAX_FETCHES"), value_name: "N",
        kind: Kind::CountIn { min: 1, max: u64::MAX },
        reload: Reload::Restart(None),
        default: |_, _| int(objmapper_server::RemoteSettings::defaults().max_fetches as u64),
        help: "Most read-throughs running at once; a miss beyond them answers NOT_FOUND at \
               once, without a remote fetch. At least 1 [default: {default}]",
    }
    remote_multipart_threshold: u64 = {
        section: "remote", key: "multipart_threshold", flag: Some("remote-multipart-threshold"),
        env: Some("OBJMAPPER_REMOTE_MULTIPART_THRESHOLD"), value_name: "BYTES",
        kind: Kind::SizeIn { min: 5 << 20, max: 5 << 30 },
        reload: Reload::Restart(None),
        default: |_, _| size(objmapper_server::RemoteSettings::defaults().client.multipart_threshold),
        help: "Versions up to this size go up in one PUT and come back with one GET; larger \
               ones in multipart. An upload of one PUT holds its version in memory (within \
               --remote-upload-memory). 5M to 5G [default: {default}]",
    }
    remote_part_size: u64 = {
        section: "remote", key: "part_size", flag: Some("remote-part-size"),
        env: Some("OBJMAPPER_REMOTE_PART_SIZE"), value_name: "BYTES",
        kind: Kind::SizeIn { min: 5 << 20, max: 5 << 30 },
        reload: Reload::Restart(None),
        default: |_, _| size(objmapper_server::RemoteSettings::defaults().client.part_size),
        help: "The part size of multipart uploads (larger when a version would need more than \
               S3's 10,000 parts); each upload holds up to 5 parts in memory (within \
               --remote-upload-memory). 5M to 5G \
               [default: {default}]",
    }
    remote_queue_max_bytes: u64 = {
        section: "remote", key: "queue_max_bytes", flag: Some("remote-queue-max-bytes"),
        env: Some("OBJMAPPER_REMOTE_QUEUE_MAX_BYTES"), value_name: "BYTES",
        kind: Kind::SizeIn { min: 1, max: 1 << 50 },
        reload: Reload::Restart(None),
        default: |_, _| size(objmapper_server::RemoteSettings::defaults().queue_max_bytes),
        help: "Most bytes of uploads waiting at once, as --remote-queue-max-objects. 1 to \
               1024T [default: {default}]",
    }
}

fn int(n: impl Into<u64>) -> Result<Option<Value>, String> {
    Ok(Some(Value::Int(n.into())))
}

fn size(n: impl Into<u64>) -> Result<Option<Value>, String> {
    Ok(Some(Value::Size(n.into())))
}

fn usize_int(n: usize) -> Result<Option<Value>, String> {
    Ok(Some(Value::Int(n as u64)))
}

const NOFILE: Option<&str> = Some("it sizes the open-file limit (RLIMIT_NOFILE) at start");

const fn store(patch: fn(&mut RuntimeConfigPatch, &Value)) -> Reload {
    Reload::Store {
        patch,
        at_start: false,
        zero_toggles: false,
    }
}

const fn knob(patch: fn(&mut RuntimeConfigPatch, &Value)) -> Reload {
    Reload::Store {
        patch,
        at_start: true,
        zero_toggles: false,
    }
}

fn mem(p: &mut RuntimeConfigPatch) -> &mut TierPatch {
    p.memory.get_or_insert_with(TierPatch::default)
}

fn disk(p: &mut RuntimeConfigPatch) -> &mut TierPatch {
    p.disk.get_or_insert_with(TierPatch::default)
}

fn knobs(t: &mut TierPatch) -> &mut EvictionPatch {
    t.eviction.get_or_insert_with(EvictionPatch::default)
}

/// A log filter: tracing's EnvFilter directives.
fn log_filter(t: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(t)
        .map(drop)
        .map_err(|e| format!("log level {t:?}: {e}"))
}

/// A remote tier URL: `s3://BUCKET[/PREFIX]`.
fn remote_url(t: &str) -> Result<(), String> {
    objmapper_remote::parse_url(t)
        .map(drop)
        .map_err(|e| format!("remote: {e}"))
}

/// Where the remote tier's key comes from: `env` or `instance`.
fn remote_credentials(t: &str) -> Result<(), String> {
    match t {
        "env" | "instance" => Ok(()),
        _ => Err(format!(
            "remote credentials: {t:?} is neither `env` nor `instance` (a file is \
             `credentials_file`)"
        )),
    }
}

/// A remote endpoint: `https://`, or `http://` to this machine only.
fn remote_endpoint(t: &str) -> Result<(), String> {
    objmapper_remote::check_endpoint(t).map_err(|e| format!("remote: {e}"))
}

/// A host id: 1 to 64 bytes of `[A-Za-z0-9._-]` (the server's rule).
fn host_id(t: &str) -> Result<(), String> {
    objmapper_server::check_host_id(t).map_err(|e| format!("host_id: {e}"))
}

fn n(v: &Value) -> u64 {
    match v {
        Value::Int(n) | Value::Size(n) => *n,
        _ => 0,
    }
}

fn f(v: &Value) -> f64 {
    match v {
        Value::Float(f) => *f,
        _ => 0.0,
    }
}

fn b(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

/// `/var/lib/objmapper` for root; else `$XDG_DATA_HOME/objmapper`; else
/// `$HOME/.local/share/objmapper`.
fn default_data_dir() -> Result<PathBuf, String> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    data_dir_from(
        rustix::process::geteuid().is_root(),
        env("XDG_DATA_HOME"),
        env("HOME"),
    )
    .ok_or_else(|| {
        "cannot pick a data directory: neither XDG_DATA_HOME nor HOME is set; pass \
         --data-dir, set OBJMAPPER_DATA_DIR or [store] data_dir"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::{Def, Defaults};
    use std::collections::BTreeSet;

    fn flagged() -> impl Iterator<Item = &'static Def> {
        SETTINGS.iter().filter(|d| d.flag.is_some())
    }

    #[test]
    fn every_entry_has_a_key_help_and_flag_and_variable() {
        for d in SETTINGS {
            assert!(!d.section.is_empty() && !d.key.is_empty(), "{}", d.name);
            assert!(!d.help.is_empty(), "{} has no help", d.name);
            // Only the eviction knobs are file-only (and `objmapper config set`).
            let file_only = d.section.starts_with("eviction.");
            assert_eq!(d.flag.is_none(), file_only, "{}: flag", d.name);
            assert_eq!(d.env.is_none(), file_only, "{}: variable", d.name);
            if let Some(e) = d.env {
                assert!(e.starts_with("OBJMAPPER_"), "{}: {e}", d.name);
            }
            if let Some(f) = d.flag {
                assert!(!f.starts_with('-') && !f.contains('_'), "{}: --{f}", d.name);
            }
        }
    }

    #[test]
    fn names_flags_variables_and_keys_are_unique() {
        let unique = |what: &str, v: Vec<String>| {
            let set: BTreeSet<&String> = v.iter().collect();
            assert_eq!(set.len(), v.len(), "a {what} appears twice: {v:?}");
        };
        unique(
            "name",
            SETTINGS.iter().map(|d| d.name.to_string()).collect(),
        );
        unique("file key", SETTINGS.iter().map(|d| d.file_key()).collect());
        unique(
            "flag",
            flagged().map(|d| d.flag.unwrap().to_string()).collect(),
        );
        unique(
            "variable",
            flagged().map(|d| d.env.unwrap().to_string()).collect(),
        );
        for d in flagged() {
            assert!(def(d.name).is_some());
            assert!(
                !matches!(d.flag, Some("config" | "print-config")),
                "{}",
                d.name
            );
        }
    }

    /// `serve` parsed from `args`.
    fn serve(args: &[String]) -> crate::args::ServeArgs {
        use crate::args::{Cli, Command};
        use clap::Parser;
        let all = ["objmapper".to_string(), "serve".into()].into_iter();
        match Cli::try_parse_from(all.chain(args.iter().cloned())) {
            Ok(Cli {
                command: Command::Serve(s),
                ..
            }) => *s,
            Ok(_) => unreachable!(),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn defaults_read_back_through_the_flag_and_the_file() {
        let d = Defaults::get();
        let mut decided = crate::defs::Values::new();
        for def in SETTINGS {
            let Some(v) = (def.default)(&d, &decided).unwrap() else {
                continue;
            };
            decided.insert(def.name, v.clone());
            // The file reads back what `--print-config` prints.
            let toml_value = toml::Value::try_from(&v).unwrap();
            let text = format!("[{}]\n{} = {toml_value}\n", def.section, def.key);
            let f = crate::file::parse_file(std::path::Path::new("t"), &text).unwrap();
            assert_eq!(f.values.get(def.name), Some(&v), "{text}");
            // The flag reads back the default's text.
            let Some(flag) = def.flag else { continue };
            let arg = match (def.kind, &v) {
                (Kind::Disable, _) => continue,
                (Kind::Grants, Value::Grants(g)) if g.is_empty() => continue,
                _ => format!("--{flag}={}", v.text()),
            };
            let given = serve(std::slice::from_ref(&arg)).given;
            assert_eq!(given.get(def.name), Some(&v), "{arg}");
        }
        // And every setting has a value once merged (the data directory given).
        let a = serve(&["--data-dir".into(), "/d".into()]);
        let s = Settings::resolve_for_test(&a);
        assert_eq!(Settings::from_values(&s.to_values()), s);
    }

    #[test]
    fn help_states_each_default_it_knows() {
        let d = Defaults::get();
        for def in flagged() {
            let help = def.help_text(&d);
            assert!(!help.contains('{'), "{}: {help}", def.name);
            if def.help.contains("{default}") {
                let v = (def.default)(&d, &Default::default()).unwrap().unwrap();
                assert!(help.contains(&format!("[default: {}]", v.text())), "{help}");
            }
        }
    }

    #[test]
    fn runtime_settings_are_the_ones_the_server_can_change() {
        let runtime: BTreeSet<String> = SETTINGS
            .iter()
            .filter(|d| !matches!(d.reload, Reload::Restart(_)))
            .map(|d| d.file_key())
            .collect();
        let mut want: BTreeSet<String> = [
            "log.level",
            "store.mem_capacity",
            "store.mem_max_objects",
            "store.disk_capacity",
            "store.disk_max_objects",
            "store.direct_to_disk_threshold",
            "store.promote_after_hits",
            "server.tls_cert",
            "server.tls_key",
            "server.tls_client_ca",
            "server.tcp_token_file",
            "access.allow_uid",
            "access.allow_gid",
            "access.tcp_permissions",
            "limits.max_pipeline_depth",
            "limits.max_staged_puts",
            "limits.max_staged_bytes_per_conn",
            "limits.max_staged_bytes_total",
            "limits.max_key_len",
            "limits.max_meta_len",
            "limits.header_timeout",
            "limits.frame_timeout",
            "limits.idle_timeout",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for tier in ["memory", "disk"] {
            for k in [
                "small_ratio",
                "promote_threshold",
                "ghost_ratio",
                "ghost_main_evictions",
            ] {
                want.insert(format!("eviction.{tier}.{k}"));
            }
        }
        assert_eq!(runtime, want);
        // Restart-only: host_id among them; the open-file limit says why.
        assert!(matches!(
            def("host_id").unwrap().reload,
            Reload::Restart(None)
        ));
        for name in ["max_connections", "max_staged_puts_total"] {
            assert!(matches!(
                def(name).unwrap().reload,
                Reload::Restart(Some(r)) if r.contains("RLIMIT_NOFILE")
            ));
        }
        // Switching the memory tier on or off needs a restart; resizing it does not.
        let r = def("mem_capacity").unwrap().reload;
        let (big, zero) = (Value::Size(1 << 20), Value::Size(0));
        assert!(r.applies(Some(&big), Some(&Value::Size(2 << 20))));
        assert!(!r.applies(Some(&big), Some(&zero)));
        assert!(!r.applies(Some(&zero), Some(&big)));
        assert!(def("disk_capacity")
            .unwrap()
            .reload
            .applies(None, Some(&zero)));
    }

    #[test]
    fn store_changes_make_the_patch_the_server_takes() {
        let mut p = RuntimeConfigPatch::default();
        for (name, v) in [
            ("mem_capacity", Value::Size(5)),
            ("disk_max_objects", Value::Int(6)),
            ("disk_ghost_ratio", Value::Float(0.5)),
            ("promote_after_hits", Value::Int(2)),
        ] {
            match def(name).unwrap().reload {
                Reload::Store { patch, .. } => patch(&mut p, &v),
                r => panic!("{name}: {r:?}"),
            }
        }
        let m = p.memory.unwrap();
        assert_eq!(
            (m.capacity_bytes, m.max_objects, m.eviction),
            (Some(5), None, None)
        );
        let d = p.disk.unwrap();
        assert_eq!(d.max_objects, Some(6));
        assert_eq!(d.eviction.unwrap().ghost_ratio, Some(0.5));
        assert_eq!(p.promote_after_hits, Some(2));
        assert_eq!(p.direct_to_disk_threshold, None);
    }

    #[test]
    fn a_limits_reload_leaves_the_restart_only_ones() {
        let a = serve(&["--data-dir".into(), "/d".into()]);
        let old = Settings::resolve_for_test(&a);
        let new = Settings {
            max_connections: 5,
            max_staged_puts_total: 6,
            max_key_len: 7,
            idle_timeout: Some(Duration::from_secs(8)),
            ..old.clone()
        };
        let mut after = old.clone();
        for d in SETTINGS
            .iter()
            .filter(|d| matches!(d.reload, Reload::Limits))
        {
            after.take(&new, d);
        }
        assert_eq!(after.max_connections, old.max_connections);
        assert_eq!(after.max_staged_puts_total, old.max_staged_puts_total);
        assert_eq!(after.max_key_len, 7);
        assert_eq!(after.runtime_limits(), new.runtime_limits());
    }

    /// The README's defaults table and the example file document every setting, with
    /// the real default.
    #[test]
    fn the_readme_and_the_example_file_document_every_setting() {
        let readme = include_str!("../../../README.md");
        let example = include_str!("../../../objmapper.example.toml");
        let rows: Vec<&str> = readme
            .split("### Defaults")
            .nth(1)
            .unwrap()
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .collect();
        let d = Defaults::get();
        let mut decided = crate::defs::Values::new();
        for def in SETTINGS {
            let default = (def.default)(&d, &decided).unwrap();
            if let Some(v) = &default {
                decided.insert(def.name, v.clone());
            }
            // The example: `#key = ...` under its `[section]`.
            let section = example
                .split(&format!("\n[{}]\n", def.section))
                .nth(1)
                .unwrap_or_else(|| panic!("the example has no [{}]", def.section));
            let section = section.split("\n[").next().unwrap();
            let line = section
                .lines()
                .find(|l| l.starts_with(&format!("#{} = ", def.key)))
                .unwrap_or_else(|| panic!("the example does not show {}", def.file_key()));
            if def.section.starts_with("eviction.") {
                let (_, text) = line.split_once(" = ").unwrap();
                let shown = format!("[{}]\n{} = {text}\n", def.section, def.key);
                let f = crate::file::parse_file(std::path::Path::new("ex"), &shown).unwrap();
                assert_eq!(f.values.get(def.name), default.as_ref(), "{line}");
                continue;
            }
            // The README: one row names the flag, the variable and the file key, and
            // states the default.
            let flag = format!("`--{}", def.flag.unwrap());
            let env = def.env.unwrap();
            let row = rows
                .iter()
                .find(|r| r.contains(&flag) && r.contains(env))
                .unwrap_or_else(|| panic!("the README's defaults table has no {flag} row"));
            let cells: Vec<&str> = row.split(" | ").collect();
            assert!(cells[3].contains(def.key), "{row}: no {}", def.key);
            assert!(cells[3].contains(&format!("[{}]", def.section)), "{row}");
            if let Some(v) = default.filter(|_| def.help.contains("{default}")) {
                let spelled = readme_spellings(&v);
                assert!(
                    spelled.iter().any(|s| cells[4].contains(s.as_str())),
                    "the README's default for {} is not {spelled:?}: {row}",
                    def.name
                );
            }
        }
    }

    /// How the README may write a default.
    fn readme_spellings(v: &Value) -> Vec<String> {
        let mut out = vec![v.text()];
        match v {
            Value::Size(n) => {
                for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
                    if *n != 0 && n.trailing_zeros() >= shift {
                        out.push(format!("{} {unit}", n >> shift));
                        break;
                    }
                }
            }
            Value::Int(n) => {
                let s = n.to_string();
                let mut grouped = String::new();
                for (i, c) in s.chars().enumerate() {
                    if i > 0 && (s.len() - i) % 3 == 0 {
                        grouped.push(',');
                    }
                    grouped.push(c);
                }
                out.push(grouped);
            }
            Value::Duration(d) => out.push(format!("{} s", d.as_secs())),
            Value::Bool(false) => out.push("off".into()),
            _ => {}
        }
        out
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
}
