//! Shared support for integration tests. Each test file that needs it says
//! `mod support;`; not every file uses every item.
#![allow(dead_code)]

pub mod claude;
pub mod docker;
pub mod engine;
pub mod fault;
pub mod git;
pub mod tmpfs;

/// What a test does when something it needs is missing here: under
/// `CI=true` it fails (panics with `CI=true and <missing>`); otherwise it
/// prints `SKIPPED <test>: <missing>; with CI=true this fails` straight to
/// the process's stderr (the harness swallows what a passing test prints
/// through `eprintln!`, and a skipped test passes) and returns false, so
/// that the test can return early.
pub fn skip_unless_ci(missing: &str) -> bool {
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("CI=true and {missing}");
    }
    use std::io::Write;
    let name = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {name}: {missing}; with CI=true this fails"
    );
    false
}
