// `Linear` applies to the last dim of `[B, T, C]`: `proj` takes 64 features, `embed` makes 32;
// the error keeps the leading dims.
use declnet::prelude::*;

network! {
    struct Net {
        embed: Linear<16, 32>,
        proj: Linear<64, 8>,
    }
    fn forward(x: [B, T, 16]) -> [B, T, 8] {
        proj(embed(x))
    }
}

fn main() {}
