//! The rule of `src/ffi.rs`, checked on the source: outside `ffi`, the crate's `unsafe`
//! is limited to what exporting a C function needs.
//!
//! - `#[allow(unsafe_code)]` appears only on `mod ffi;` and right after `#[no_mangle]`
//!   (the declaration of an exported function: `#[no_mangle]` and `unsafe extern "C" fn`
//!   count as unsafe code);
//! - every `unsafe` block is one call of an `ffi` function, `unsafe { ffi::name(args) }`,
//!   with a `// SAFETY:` comment in the lines just above it;
//! - no other `unsafe`: no `unsafe fn` that is not an exported `extern "C"` function, no
//!   `unsafe impl`;
//! - the raw-pointer and raw-fd primitives appear nowhere but in `ffi`.
//!
//! The compiler enforces the rest: `unsafe_code` is denied for every module but `ffi`.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every source file but `ffi.rs`, with its path relative to `src/`.
fn outside_ffi() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let out: Vec<(String, String)> = files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .filter(|(rel, _)| rel != "ffi.rs")
        .collect();
    assert!(
        out.len() >= 8,
        "{:?}",
        out.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    out
}

/// The problems in one file's text, as "file:line: what".
fn problems(rel: &str, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut bad = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let at = format!("{rel}:{}", i + 1);
        let code = line.split("//").next().unwrap_or("");
        let t = line.trim();
        if t.starts_with("//") {
            continue;
        }
        if t.starts_with("#[allow(unsafe_code)]") {
            let exported = i > 0 && lines[i - 1].trim() == "#[no_mangle]";
            let on_ffi = lines.get(i + 1).is_some_and(|l| l.trim() == "mod ffi;");
            if !exported && !on_ffi {
                bad.push(format!(
                    "{at}: #[allow(unsafe_code)] not on an exported function"
                ));
            }
        }
        for forbidden in [
            "from_raw_parts",
            "from_raw_fd",
            "Box::from_raw",
            "Box::into_raw",
            "CStr::from_ptr",
            "ptr::read",
            "ptr::write",
            "libc::malloc",
            "libc::calloc",
            "libc::free",
            "libc::strnlen",
            "unsafe impl",
            "transmute",
        ] {
            if code.contains(forbidden) {
                bad.push(format!("{at}: `{forbidden}` belongs in ffi"));
            }
        }
        if code.contains("unsafe fn") && !code.contains("pub unsafe extern \"C\" fn") {
            bad.push(format!(
                "{at}: an `unsafe fn` that is not an exported function"
            ));
        }
        let mut rest = code;
        while let Some(k) = rest.find("unsafe {") {
            let block = &rest[k + "unsafe {".len()..];
            let Some(end) = block.find('}') else {
                bad.push(format!("{at}: an unsafe block over several lines"));
                break;
            };
            let inner = block[..end].trim();
            let one_ffi_call = inner.starts_with("ffi::")
                && inner.ends_with(')')
                && inner.matches("ffi::").count() == 1
                && !inner.contains(['{', ';', '*', '&']);
            if !one_ffi_call {
                bad.push(format!("{at}: `unsafe {{ {inner} }}` is not one ffi call"));
            }
            let commented = lines[i.saturating_sub(3)..i]
                .iter()
                .chain(std::iter::once(line))
                .any(|l| l.contains("// SAFETY:"));
            if !commented {
                bad.push(format!(
                    "{at}: unsafe block without a `// SAFETY:` comment above it"
                ));
            }
            rest = &block[end..];
        }
    }
    bad
}

#[test]
fn unsafe_stays_in_ffi() {
    let mut bad = Vec::new();
    let mut blocks = 0;
    for (rel, text) in outside_ffi() {
        blocks += text.matches("unsafe {").count();
        bad.extend(problems(&rel, &text));
    }
    assert!(
        bad.is_empty(),
        "unsafe outside src/ffi.rs:\n{}",
        bad.join("\n")
    );
    assert!(
        blocks > 20,
        "the check sees the exported functions' ffi calls ({blocks})"
    );
}

#[test]
fn the_check_sees_pointer_work() {
    let cases = [
        "    // SAFETY: x\n    let r = unsafe { p.as_mut() };\n",
        "    let r = unsafe { ffi::out(p) };\n",
        "    // SAFETY: x\n    let r = unsafe { ffi::out(p); *p = 1 };\n",
        "    let s = std::slice::from_raw_parts(p, n);\n",
        "unsafe fn helper() {}\n",
        "#[allow(unsafe_code)]\nfn helper() {}\n",
    ];
    for c in cases {
        assert!(!problems("case.rs", c).is_empty(), "not caught:\n{c}");
    }
    let fine = "#[no_mangle]\n#[allow(unsafe_code)] // exported\npub unsafe extern \"C\" fn f(p: *mut u8) {\n    // SAFETY: the contract.\n    let r = unsafe { ffi::out(p) };\n}\n";
    assert_eq!(problems("fine.rs", fine), Vec::<String>::new());
}
