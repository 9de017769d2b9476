//! Compiles every C program in examples/c with `cc -Wall -Wextra -Werror` against the
//! header and the library (static and shared), runs it against a real server, and runs
//! it again under valgrind (leaks, invalid reads/writes). Each program checks its own
//! results and that it ends with as many open fds as it started with.

mod util;

#[test]
fn every_example_has_a_test() {
    let mut names: Vec<String> = std::fs::read_dir(util::root().join("examples/c"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "c").then(|| p.file_stem().unwrap().to_string_lossy().into())
        })
        .collect();
    names.sort();
    let src = include_str!("c_examples.rs");
    for n in &names {
        assert!(
            src.contains(&format!("fn {n}()")),
            "examples/c/{n}.c has no test in c_examples.rs"
        );
    }
    assert!(names.len() >= 6, "{names:?}");
}

#[test]
fn get_seed() {
    util::run_example("get_seed");
}

#[test]
fn put_fd() {
    util::run_example("put_fd");
}

#[test]
fn put_copy() {
    util::run_example("put_copy");
}

#[test]
fn delete() {
    util::run_example("delete");
}

#[test]
fn ban() {
    util::run_example("ban");
}

#[test]
fn v2_pipeline() {
    util::run_example("v2_pipeline");
}

#[test]
fn errors() {
    util::run_example("errors");
}
