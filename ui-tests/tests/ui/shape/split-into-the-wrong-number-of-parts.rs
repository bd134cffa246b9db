// `c_attn(x).split(32, 2)` of `[B, T, 96]` makes three parts; the pattern names two.
use declnet::prelude::*;

network! {
    struct Attention {
        c_attn: Linear<32, 96>,
    }
    fn forward(x: [B, T, 32]) -> [B, T, 32] {
        let (q, k) = c_attn(x).split(32, 2);
        q + k
    }
}

fn main() {}
