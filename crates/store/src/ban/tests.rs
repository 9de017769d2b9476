//! Unit tests of `ban`.

use super::*;

fn meta(custom: &[(&str, &[u8])]) -> ObjectMeta {
    ObjectMeta {
        key: b"k".as_slice().into(),
        version: 1,
        size: 0,
        mtime_ns: 1,
        checksum: 0,
        content_type: None,
        custom: custom
            .iter()
            .map(|(n, v)| (Box::from(*n), Box::from(*v)))
            .collect(),
        expires_at: None,
        pinned: false,
        ephemeral: false,
        filled: false,
        tier: crate::Tier::Disk,
        dirty: false,
    }
}

fn m(expr: &str, key: &[u8], custom: &[(&str, &[u8])]) -> bool {
    BanExpr::parse(expr.as_bytes())
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .matches(key, Some(&meta(custom)))
}

fn err(expr: &[u8]) -> BanError {
    BanExpr::parse(expr).expect_err("should be refused")
}

#[test]
fn every_operator() {
    assert!(m(r#"key == "a""#, b"a", &[]));
    assert!(!m(r#"key == "a""#, b"ab", &[]));
    assert!(m(r#"key != "a""#, b"ab", &[]));
    assert!(!m(r#"key != "a""#, b"a", &[]));
    assert!(m(r#"key ^ "a""#, b"abc", &[]));
    assert!(!m(r#"key ^ "b""#, b"abc", &[]));
    assert!(m(r#"meta.url ~ "^/b/""#, b"k", &[("url", b"/b/c")]));
    assert!(!m(r#"meta.url ~ "^/b/""#, b"k", &[("url", b"/a/b/")]));
    assert!(m(r#"meta.url !~ "^/b/""#, b"k", &[("url", b"/a/b/")]));
    assert!(!m(r#"meta.url !~ "^/b/""#, b"k", &[("url", b"/b/")]));
    let tags: &[u8] = b"product-1, product-42 ,cat-7\tx";
    assert!(m(r#"meta.tags has "product-42""#, b"k", &[("tags", tags)]));
    assert!(m(r#"meta.tags has "x""#, b"k", &[("tags", tags)]));
    assert!(!m(r#"meta.tags has "product-4""#, b"k", &[("tags", tags)]));
    assert!(!m(r#"meta.tags has "product""#, b"k", &[("tags", tags)]));
}

#[test]
fn missing_metadata() {
    assert!(!m(r#"meta.x == "a""#, b"k", &[]));
    assert!(!m(r#"meta.x ^ "a""#, b"k", &[]));
    assert!(!m(r#"meta.x ~ "a""#, b"k", &[]));
    assert!(!m(r#"meta.x has "a""#, b"k", &[]));
    assert!(m(r#"meta.x != "a""#, b"k", &[]));
    assert!(m(r#"meta.x !~ "a""#, b"k", &[]));
    // Names are exact.
    assert!(!m(r#"meta.URL == "a""#, b"k", &[("url", b"a")]));
}

#[test]
fn conjunction_and_whitespace() {
    let e = "  meta.tags has \"product-42\"&&key ^ \"varnish:\"  ";
    assert!(m(e, b"varnish:x", &[("tags", b"product-42")]));
    assert!(!m(e, b"other:x", &[("tags", b"product-42")]));
    assert!(!m(e, b"varnish:x", &[("tags", b"product-41")]));
    assert!(m("key\t^\n\"\"", b"anything", &[]));
}

#[test]
fn escapes() {
    assert!(m(
        r#"key ^ "varnish:example.com/a\n""#,
        b"varnish:example.com/a\nGET",
        &[]
    ));
    assert!(!m(
        r#"key ^ "varnish:example.com/a\n""#,
        b"varnish:example.com/ab",
        &[]
    ));
    assert!(m(
        r#"key == "\\\"\t\r\x00\xff\x41""#,
        b"\\\"\t\r\x00\xffA",
        &[]
    ));
    // A raw byte that is not a quote or a backslash stands for itself.
    assert!(BanExpr::parse(b"key == \"\xff\x01\"")
        .unwrap()
        .matches(b"\xff\x01", None));
    // A regex's own escapes need the backslash escaped: \\xff reaches the regex as \xff.
    assert!(m(r#"key ~ "(?-u:\\xff)""#, b"\xff", &[]));
    assert!(m(r#"meta.u ~ "\\.png$""#, b"k", &[("u", b"/a.png")]));
    assert!(!m(r#"meta.u ~ "\\.png$""#, b"k", &[("u", b"/apng")]));
}

#[test]
fn errors_name_the_problem_and_position() {
    let e = err(b"");
    assert_eq!(e.pos, 0);
    assert!(e.message.contains("empty"), "{e}");
    let e = err(b"host == \"a\"");
    assert_eq!(e.pos, 0);
    assert!(e.message.contains("unknown subject"), "{e}");
    let e = err(b"key = \"a\"");
    assert_eq!(e.pos, 4);
    assert!(e.message.contains("unknown operator"), "{e}");
    let e = err(b"key == a");
    assert_eq!(e.pos, 7);
    assert!(e.message.contains("double quotes"), "{e}");
    let e = err(b"key == \"abc");
    assert_eq!(e.pos, 7);
    assert!(e.message.contains("unterminated"), "{e}");
    let e = err(b"key == \"a\\q\"");
    assert_eq!(e.pos, 9);
    assert!(e.message.contains("unknown escape"), "{e}");
    let e = err(b"key == \"\\xZ1\"");
    assert_eq!(e.pos, 8);
    assert!(e.message.contains("hex"), "{e}");
    let e = err(b"key == \"a\" || key == \"b\"");
    assert_eq!(e.pos, 11);
    assert!(e.message.contains("&&"), "{e}");
    let e = err(b"key == \"a\" &&");
    assert_eq!(e.pos, 13);
    let e = err(b"meta. == \"a\"");
    assert_eq!(e.pos, 5);
    let e = err(b"meta.url ~ \"(\"");
    assert_eq!(e.pos, 11);
    assert!(e.message.contains("invalid regex"), "{e}");
    let e = err(b"key ~ \"\\xff\"");
    assert!(e.message.contains("UTF-8"), "{e}");
}

#[test]
fn limits() {
    let big = format!("key == \"{}\"", "a".repeat(MAX_BAN_LEN));
    assert!(err(big.as_bytes()).message.contains("exceeds the limit"));
    let conds = vec![r#"key != "x""#; MAX_BAN_CONDS].join(" && ");
    assert!(BanExpr::parse(conds.as_bytes()).is_ok());
    let more = format!("{conds} && key != \"y\"");
    assert!(err(more.as_bytes()).message.contains("more than 16"));
    // A regex that compiles past the size limit.
    let e = err(br#"key ~ "(\\w{100}){100}""#);
    assert!(e.message.contains("too big"), "{e}");
}

#[test]
fn file_roundtrip_and_damage() {
    let bans: Vec<Arc<Ban>> = [(5u64, "key ^ \"a\\n\""), (9, "meta.t has \"x\"")]
        .iter()
        .map(|(s, e)| {
            Arc::new(
                Ban::new(BanInfo {
                    stamp: *s,
                    added_ns: *s,
                    expr: e.as_bytes().into(),
                })
                .unwrap(),
            )
        })
        .collect();
    let f = encode_file(&bans);
    let back = decode_file(&f).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[1].info, bans[1].info);
    for i in 0..f.len() {
        let mut d = f.clone();
        d[i] ^= 0x40;
        assert!(decode_file(&d).is_err(), "flip at {i} accepted");
    }
    assert!(decode_file(&f[..f.len() - 1]).is_err());
    assert!(decode_file(&encode_file(&[])).unwrap().is_empty());
}

#[test]
fn the_remote_form_of_a_ban() {
    let form = |e: &str| {
        let b = BanExpr::parse(e.as_bytes()).unwrap();
        match b.remote_form() {
            RemoteForm::Purge(p) => format!("purge {}", String::from_utf8_lossy(p)),
            RemoteForm::Delete(k) => format!("delete {}", String::from_utf8_lossy(k)),
            RemoteForm::Local => "local".into(),
        }
    };
    assert_eq!(form(r#"key ^ "img/""#), "purge img/");
    // The VMOD's store.purge() with a backend prefix: the longer prefix.
    assert_eq!(form(r#"key ^ "vc:/a/1" && key ^ "vc:""#), "purge vc:/a/1");
    assert_eq!(form(r#"key ^ "a/" && key ^ "b/""#), "local");
    assert_eq!(form(r#"key == "one""#), "delete one");
    assert_eq!(form(r#"key == "one" && key ^ "o""#), "local");
    assert_eq!(form(r#"meta.url ^ "/a""#), "local");
    assert_eq!(form(r#"key ~ "x""#), "local");
    assert_eq!(form(r#"key ^ "img/" && meta.tag == "t""#), "local");
}
