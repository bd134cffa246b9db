// Attention scores as `q.matmul(k)` instead of `q.matmul(k.transpose(-2, -1))`: `[B, 4, T, 8]`
// by `[B, 4, T, 8]`. The message names both shapes; the caret points at `matmul`.
use declnet::prelude::*;

network! {
    struct Scores {
        c_attn: Linear<32, 96>,
    }
    fn forward(x: [B, T, 32]) -> [B, 4, T, T] {
        let (q, k, _) = c_attn(x).split(32, 2);
        let q = q.view([B, T, 4, 8]).transpose(1, 2);
        let k = k.view([B, T, 4, 8]).transpose(1, 2);
        q.matmul(k)
    }
}

fn main() {}
