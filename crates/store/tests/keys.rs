//! Keys are opaque bytes and never become paths.

mod common;

use common::*;
use tempfile::TempDir;

#[test]
fn hostile_keys_stay_inside_the_data_dir() {
    let root = TempDir::new().unwrap();
    let data_dir = root.path().join("a/b/data");
    let store = open(&data_dir);
    let long_escape = b"../".repeat(1365);
    let keys: Vec<&[u8]> = vec![
        b"../../etc/passwd",
        b"../../../../../../../../tmp/escape",
        b"../escape",
        b"/etc/passwd",
        b"objects/../../LOCK",
        b"journal",
        b"LOCK",
        b"a\0b",
        b"\0",
        b"a/b/c",
        b".",
        b"..",
        b"/",
        b"\xff\xfe\n",
        &long_escape,
    ];
    for (i, key) in keys.iter().enumerate() {
        put(&store, key, format!("value {i}").as_bytes());
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            get_bytes(&store, key).unwrap(),
            format!("value {i}").as_bytes()
        );
    }
    // Nothing appeared outside the data directory.
    for f in files_under(root.path()) {
        assert!(f.starts_with(&data_dir), "file outside data dir: {f:?}");
    }
    let top: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["a"]);
    // Every object file has a hash-derived name.
    let objects = object_files(&data_dir);
    assert_eq!(objects.len(), keys.len());
    for f in objects {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 49);
        assert!(name.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-'));
    }
    // Store metadata files are untouched by the keys named like them.
    assert_eq!(
        std::fs::read(data_dir.join("FORMAT")).unwrap(),
        b"objmapper-store 3\n"
    );
    store.close().unwrap();
    let store = open(&data_dir);
    assert_eq!(store.len(), keys.len());
    assert_eq!(get_bytes(&store, b"../../etc/passwd").unwrap(), b"value 0");
}
