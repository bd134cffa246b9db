//! Compile-pass and compile-fail cases for declnet, run with trybuild by `tests/ui.rs`.
//!
//! Pass cases live in `tests/pass/` (each runs a forward and a backward pass); compile-fail
//! cases live in `tests/ui/<phase>/`, one mistake per file, each with the `.stderr` the
//! compiler must print.
