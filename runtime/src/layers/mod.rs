//! Layers with parameters, their PyTorch initialisation, and their forward and backward passes.
//! `network!` declares fields of these types and calls these methods.

mod linear;

pub use linear::Linear;
