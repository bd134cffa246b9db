//! Compile-pass and compile-fail cases for declnet, run with trybuild by `tests/ui.rs`.
//!
//! Pass cases live in `tests/pass/`; compile-fail cases will live in `tests/ui/<phase>/`, one
//! mistake per file, each with the `.stderr` the compiler must print.
