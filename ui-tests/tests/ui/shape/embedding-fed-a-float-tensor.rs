// An `Embedding` looks up indices: a float input is a compile error naming what it got, and
// indices used as a tensor are one too.
use declnet::prelude::*;

network! {
    struct Net {
        embed: Embedding<10, 4>,
        fc: Linear<4, 4>,
    }
    fn forward(x: [B, T, 4], idx: Indices<[B, T]>) -> [B, T, 4] {
        let a = embed(x);
        fc(a) + idx
    }
}

fn main() {}
