//! The tutorial's `TwoLayerNet`, declared once for the tests and benchmarks that train it
//! (each includes this file with `#[path]`: separate crates cannot share a module).

use declnet::prelude::*;

network! {
    /// The tutorial's `TwoLayerNet`.
    pub struct TwoLayerNet {
        linear1: Linear<1000, 100>,
        linear2: Linear<100, 10>,
    }
    fn forward(x: [N, 1000]) -> [N, 10] {
        linear2(linear1(x).clamp_min(0.0))
    }
}
