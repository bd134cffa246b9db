//! The `network!` procedural macro of declnet.
//!
//! Empty for now: the macro (parse -> IR -> shape checks -> autodiff -> codegen) is the next
//! piece of work. The crate exists so the workspace layout and the facade's dependency on it
//! are in place.
