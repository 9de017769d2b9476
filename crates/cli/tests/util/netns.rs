//! Network namespaces joined to this one by a veth pair, so a test can run a client or a
//! whole `objmapper serve` on a network stack of its own, with its own address, and
//! reach addresses in this namespace (and they it). Needs root and `ip` (iproute2).
//!
//! Each namespace gets a /30 of 10.214.0.0/16 that no address here uses yet: the host
//! end of the pair (in this namespace) is `.1` of it, the namespace end `.2`, and the
//! namespace's default route goes through the host end. Every host end is an address
//! of this namespace, so one namespace reaches a server bound to another's host end
//! (the "third host" here) without forwarding.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// A network namespace with a veth pair to this one; deleted (with the pair) on drop.
pub struct Netns {
    /// The namespace's name, as `ip netns` knows it.
    pub name: String,
    /// The host end's address (in this namespace): the namespace's gateway.
    pub host_ip: String,
    /// The namespace end's address.
    pub ns_ip: String,
    host_if: String,
}

/// Runs `ip ARGS`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// Serializes picking a subnet and claiming it, between the tests of one binary.
static CREATE: Mutex<()> = Mutex::new(());

impl Netns {
    /// A new namespace, or why this process cannot make one (not root, no `ip`, no
    /// namespaces in this container).
    pub fn new() -> Result<Netns, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        if !super::is_root() {
            return Err("not root".into());
        }
        let _one_at_a_time = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale();
        let id = std::process::id();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("objm-{id}-{n}");
        // Interface names have at most 15 bytes: "om" + pid (7) + "x" + n + side.
        let (host_if, ns_if) = (format!("om{id}x{n}h"), format!("om{id}x{n}n"));
        let used = ip(&["-o", "-4", "addr", "show"])?;
        // 16384 /30s; start where this process's id points, so that parallel test
        // binaries rarely try the same one.
        let start = id.wrapping_mul(97).wrapping_add(n.wrapping_mul(13));
        let (host_ip, ns_ip) = (0..16384u32)
            .map(|i| (start.wrapping_add(i)) % 16384)
            .map(|k| (k / 64, (k % 64) * 4))
            .map(|(c, d)| {
                (
                    format!("10.214.{c}.{}", d + 1),
                    format!("10.214.{c}.{}", d + 2),
                )
            })
            .find(|(h, _)| !used.contains(&format!(" {h}/")))
            .ok_or("no free /30 in 10.214.0.0/16")?;
        ip(&["netns", "add", &name])?;
        // From here on, drop deletes the namespace (and the pair with it).
        let ns = Netns {
            name,
            host_ip,
            ns_ip,
            host_if,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut a = vec!["-n", &*ns.name];
            a.extend_from_slice(args);
            ip(&a)
        };
        inside(&["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        inside(&["route", "add", "default", "via", &ns.host_ip])?;
        Ok(ns)
    }

    /// `c` (program, arguments, environment, working directory) run inside the
    /// namespace, through `ip netns exec` (which execs it: the child's pid is the
    /// program's).
    pub fn wrap(&self, c: &Command) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(c.get_program())
            .args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(d) = c.get_current_dir() {
            cmd.current_dir(d);
        }
        cmd
    }

    /// `objmapper ARGS` run inside the namespace.
    pub fn objmapper(&self, args: &[&str]) -> Output {
        let mut c = super::objmapper();
        c.args(args);
        self.wrap(&c).stdin(Stdio::null()).output().unwrap()
    }

    /// Takes the host end of the pair down (`up` false: the cable is pulled, and
    /// everything the namespace sends out is dropped, silently) or up again.
    pub fn set_link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Deletes the namespaces of test processes that are gone (killed before their drop
/// ran), so that they do not pile up.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("objm-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
