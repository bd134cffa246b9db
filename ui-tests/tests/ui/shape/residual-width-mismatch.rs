// A residual add of a `[N, 32]` block output to its `[N, 64]` input: both sides end in
// `.relu()`. The caret must point at `+`, and the message must name the layer that made
// each side.
use declnet::prelude::*;

network! {
    struct Net {
        block: Linear<64, 32>,
        fc: Linear<64, 64>,
    }
    fn forward(x: [N, 64]) -> [N, 64] {
        let h = fc(x).relu();
        h + block(h).relu()
    }
}

fn main() {}
