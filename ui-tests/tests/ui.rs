//! Runs the trybuild cases. Compiler output differs between rustc releases, so the snapshots
//! are only compared on the toolchain they were written with.

#[rustversion::attr(not(stable(1.95)), ignore = "ui snapshots are pinned to rustc 1.95")]
#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/**/*.rs");
    cases.pass("tests/pass/*.rs");
}
