//! `host_id`, the setting the remote tier will use to tell hosts apart: declared once in
//! the table of settings, checked (a bad one is a configuration error, exit 78), printed
//! by `--print-config`, and shown by `GET /v1/stats` and `objmapper stats`.

mod util;

use serde_json::Value;
use util::{objmapper, stderr, Daemon};

#[test]
fn a_bad_host_id_is_a_configuration_error_from_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("o.toml");
    std::fs::write(&file, "[server]\nhost_id = \"\"\n").unwrap();
    let long = "h".repeat(65);
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--host-id", "cache 1"], vec![], "has ' '"),
        (vec!["--host-id", &long], vec![], "65 bytes long"),
        (vec![], vec![("OBJMAPPER_HOST_ID", "café")], "has 'é'"),
        (
            vec!["--config", file.to_str().unwrap()],
            vec![],
            "0 bytes long",
        ),
    ];
    for (args, env, why) in cases {
        let out = objmapper()
            .args(["serve", "--print-config", "--data-dir", "/nonexistent/d"])
            .args(&args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{args:?} {env:?}: {e}");
        assert!(e.contains("configuration error: host_id: host id"), "{e}");
        assert!(e.contains(why), "{e}");
        assert!(e.contains("give 1 to 64 bytes of A-Z, a-z, 0-9"), "{e}");
    }
}

#[test]
fn the_host_id_is_printed_and_defaults_to_the_hostname() {
    let print = |args: &[&str]| {
        let out = objmapper()
            .args(["serve", "--print-config", "--data-dir", "/nonexistent/d"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let t = print(&["--host-id", "cache-1.example_net"]);
    assert!(t.contains("\nhost_id = \"cache-1.example_net\"\n"), "{t}");
    let t = print(&[]);
    let host = rustix::system::uname();
    let host = host.nodename().to_str().unwrap();
    assert!(t.contains(&format!("\nhost_id = \"{host}\"\n")), "{t}");
}

#[test]
fn stats_show_the_host_id() {
    let d = Daemon::start(&["--host-id", "edge-7"]);
    let v: Value = serde_json::from_slice(&d.ok(&["stats", "--json"])).unwrap();
    assert_eq!(v["host_id"], "edge-7", "{v}");
    let text = String::from_utf8(d.ok(&["stats"])).unwrap();
    assert!(text.starts_with("host edge-7\n"), "{text}");
}
