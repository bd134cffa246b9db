//! Layers with parameters, their PyTorch initialisation, and their forward and backward passes.
//! `network!` declares fields of these types and calls these methods.

mod conv;
mod linear;

pub use conv::{Conv2d, Conv2dConfig};
pub use linear::Linear;
