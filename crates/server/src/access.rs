//! Who may connect, and what they may do: an allowlist of uids and gids checked against
//! the peer credentials (SO_PEERCRED) of each Unix-socket connection at accept time.
//!
//! A peer's permissions are the union of its uid's entry and its (primary) gid's entry.
//! Root (uid 0) has `all` unless the uid list has an entry for it ([`AccessConfig::perms_of`]).
//! A peer with none gets FORBIDDEN on its first request and is closed; a peer lacking the
//! one an op needs gets FORBIDDEN for that request. TCP peers carry no credentials: they
//! get [`AccessConfig::tcp`].

use objmapper_proto::Op;
use parking_lot::RwLock;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A set of permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms(u8);

impl Perms {
    /// No permission at all: the connection is refused.
    pub const NONE: Perms = Perms(0);
    /// GET and HEAD (and PING).
    pub const READ: Perms = Perms(1);
    /// PUT, COMMIT, ABORT, DELETE, PIN and UNPIN.
    pub const WRITE: Perms = Perms(2);
    /// The management API.
    pub const ADMIN: Perms = Perms(4);
    /// All three.
    pub const ALL: Perms = Perms(7);

    /// Whether every permission in `other` is in `self`.
    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether this set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The permission an op needs on the object socket. HELLO and PING need only some
    /// permission (any non-empty set).
    pub fn needed_for(op: Op) -> Perms {
        match op {
            Op::Hello | Op::Ping => Perms::NONE,
            Op::Get | Op::Head => Perms::READ,
            Op::Put | Op::Commit | Op::Abort | Op::Delete | Op::Pin | Op::Unpin | Op::Ban => {
                Perms::WRITE
            }
        }
    }
}

impl std::ops::BitOr for Perms {
    type Output = Perms;
    fn bitor(self, o: Perms) -> Perms {
        Perms(self.0 | o.0)
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = [
            (Perms::READ, "read"),
            (Perms::WRITE, "write"),
            (Perms::ADMIN, "admin"),
        ]
        .iter()
        .filter(|(p, _)| self.contains(*p))
        .map(|(_, n)| *n)
        .collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Perms {
    type Err = String;
    /// `read,write,admin` (any subset, comma-separated), `all` or `none`.
    fn from_str(s: &str) -> Result<Perms, String> {
        let mut p = Perms::NONE;
        for word in s.split(',').map(str::trim) {
            p = p | match word.to_ascii_lowercase().as_str() {
                "read" => Perms::READ,
                "write" => Perms::WRITE,
                "admin" => Perms::ADMIN,
                "all" => Perms::ALL,
                "none" | "" => Perms::NONE,
                other => {
                    return Err(format!(
                        "unknown permission {other:?}: expected read, write, admin, all or none"
                    ))
                }
            };
        }
        Ok(p)
    }
}

/// One allowlist entry: `ID=PERMS`, e.g. `1000=read,write`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The uid or gid.
    pub id: u32,
    /// What it may do.
    pub perms: Perms,
}

impl FromStr for Grant {
    type Err = String;
    fn from_str(s: &str) -> Result<Grant, String> {
        let (id, perms) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected ID=PERMS, e.g. 1000=read,write"))?;
        let id = id
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {id:?} is not a numeric uid/gid"))?;
        Ok(Grant {
            id,
            perms: perms.parse()?,
        })
    }
}

impl fmt::Display for Grant {
    /// `ID=PERMS`, as parsed: `1000=read,write`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.id, self.perms)
    }
}

/// Root's uid: it gets [`Perms::ALL`] unless the allowlist names it.
pub const ROOT_UID: u32 = 0;

/// The allowlist. Default: the daemon's own (effective) uid and root get
/// `read,write,admin`; nobody else gets anything; TCP peers get `read,write`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessConfig {
    /// Per-uid grants. A uid listed twice gets the last entry. Default = the daemon's own
    /// uid with all permissions.
    pub uids: Vec<Grant>,
    /// Per-gid grants, matched against the peer's primary gid. Default = empty.
    pub gids: Vec<Grant>,
    /// What a TCP peer may do (TCP carries no credentials: anyone who can reach the port
    /// is such a peer). Default = `read,write`.
    pub tcp: Perms,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            uids: vec![Grant {
                id: rustix::process::geteuid().as_raw(),
                perms: Perms::ALL,
            }],
            gids: Vec::new(),
            tcp: Perms::READ | Perms::WRITE,
        }
    }
}

impl AccessConfig {
    /// The permissions of a peer with this uid and gid. Root (uid 0) gets `all` unless
    /// the uid list names uid 0: it can read and change the store's files anyway, so
    /// refusing it the socket protects nothing and only gets in an operator's way. A
    /// `0=...` entry (`0=none`, say) takes root's rights back.
    pub fn perms_of(&self, uid: u32, gid: u32) -> Perms {
        let by_uid = self
            .uids
            .iter()
            .rev()
            .find(|g| g.id == uid)
            .map(|g| g.perms)
            .or((uid == ROOT_UID).then_some(Perms::ALL));
        let by_gid = self
            .gids
            .iter()
            .rev()
            .find(|g| g.id == gid)
            .map(|g| g.perms);
        by_uid.unwrap_or_default() | by_gid.unwrap_or_default()
    }
}

/// The allowlist in force: read at every accept (object and management sockets), replaced
/// whole by [`crate::Server::set_access`]. Each replacement bumps a generation, which open
/// connections compare (one atomic load) before each request: a changed one makes them
/// look their peer up again, so a grant or a revocation reaches open connections at their
/// next request.
#[derive(Clone)]
pub(crate) struct LiveAccess(Arc<RwLock<Arc<AccessConfig>>>, Arc<AtomicU64>);

impl LiveAccess {
    pub(crate) fn new(a: AccessConfig) -> LiveAccess {
        LiveAccess(Arc::new(RwLock::new(Arc::new(a))), Arc::default())
    }

    /// The allowlist now.
    pub(crate) fn get(&self) -> Arc<AccessConfig> {
        self.0.read().clone()
    }

    /// Replaces the allowlist.
    pub(crate) fn set(&self, a: AccessConfig) {
        *self.0.write() = Arc::new(a);
        self.1.fetch_add(1, Ordering::Release);
    }

    /// How many times the allowlist was replaced. Read it before the permissions it
    /// stands for.
    pub(crate) fn generation(&self) -> u64 {
        self.1.load(Ordering::Acquire)
    }

    /// The permissions of a Unix-socket peer with this uid and gid, now.
    pub(crate) fn perms_of(&self, uid: u32, gid: u32) -> Perms {
        self.0.read().perms_of(uid, gid)
    }

    /// What a TCP peer may do, now.
    pub(crate) fn tcp(&self) -> Perms {
        self.0.read().tcp
    }
}

/// A Unix-socket peer's credentials.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub(crate) pid: i32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The peer credentials of a connected Unix socket.
pub(crate) fn peer_of(s: &impl std::os::fd::AsFd) -> std::io::Result<Peer> {
    let c = rustix::net::sockopt::socket_peercred(s)?;
    Ok(Peer {
        pid: c.pid.as_raw_nonzero().get(),
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_union() {
        let g: Grant = "1000=read,write".parse().unwrap();
        assert_eq!(g.id, 1000);
        assert_eq!(g.perms, Perms::READ | Perms::WRITE);
        assert_eq!("5=all".parse::<Grant>().unwrap().perms, Perms::ALL);
        assert!("x=read".parse::<Grant>().is_err());
        assert!("5=execute"
            .parse::<Grant>()
            .unwrap_err()
            .contains("unknown permission"));
        assert!("5".parse::<Grant>().unwrap_err().contains("ID=PERMS"));
        let a = AccessConfig {
            uids: vec!["1000=read".parse().unwrap()],
            gids: vec!["50=write".parse().unwrap()],
            tcp: Perms::NONE,
        };
        assert_eq!(a.perms_of(1000, 50), Perms::READ | Perms::WRITE);
        assert_eq!(a.perms_of(1000, 1), Perms::READ);
        assert_eq!(a.perms_of(2, 50), Perms::WRITE);
        assert!(a.perms_of(2, 2).is_empty());
        assert_eq!((Perms::READ | Perms::ADMIN).to_string(), "read,admin");
        let g: Grant = "7=write,read".parse().unwrap();
        assert_eq!(g.to_string(), "7=read,write");
        assert_eq!(g.to_string().parse::<Grant>().unwrap(), g);
        assert_eq!("7=none".parse::<Grant>().unwrap().to_string(), "7=none");
    }

    #[test]
    fn a_replaced_allowlist_applies_to_later_lookups_only() {
        let live = LiveAccess::new(AccessConfig {
            uids: vec!["33=read".parse().unwrap()],
            gids: Vec::new(),
            tcp: Perms::READ,
        });
        let before = live.get();
        assert_eq!(live.perms_of(33, 0), Perms::READ);
        live.set(AccessConfig {
            uids: vec!["34=write".parse().unwrap()],
            gids: Vec::new(),
            tcp: Perms::NONE,
        });
        assert!(live.perms_of(33, 0).is_empty());
        assert_eq!(live.perms_of(34, 0), Perms::WRITE);
        assert!(live.tcp().is_empty());
        assert_eq!(
            before.perms_of(33, 0),
            Perms::READ,
            "a snapshot stays as it was"
        );
    }

    #[test]
    fn default_grants_only_our_own_uid_and_root() {
        let a = AccessConfig::default();
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(a.perms_of(me, 12345), Perms::ALL);
        let other = if me == 4242 { 4243 } else { 4242 };
        assert!(a.perms_of(other, 12345).is_empty());
        assert_eq!(a.perms_of(0, 12345), Perms::ALL);
    }

    #[test]
    fn root_gets_all_unless_the_uid_list_names_it() {
        let mut a = AccessConfig {
            uids: vec!["999=all".parse().unwrap()],
            gids: vec!["0=read".parse().unwrap()],
            tcp: Perms::NONE,
        };
        assert_eq!(a.perms_of(0, 0), Perms::ALL);
        assert_eq!(a.perms_of(0, 5), Perms::ALL);
        // Named: the entry is what root gets (with its group's grant, as for anyone).
        a.uids.push("0=none".parse().unwrap());
        assert_eq!(a.perms_of(0, 5), Perms::NONE);
        assert_eq!(a.perms_of(0, 0), Perms::READ);
        a.uids.push("0=read".parse().unwrap());
        assert_eq!(a.perms_of(0, 5), Perms::READ);
        // Only uid 0: gid 0 alone grants nothing more than its entry.
        assert_eq!(a.perms_of(7, 0), Perms::READ);
        assert!(a.perms_of(7, 5).is_empty());
    }
}
