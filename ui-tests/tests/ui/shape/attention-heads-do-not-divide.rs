// 5 heads cannot split a width of 32: the error says so at the head count.
use declnet::prelude::*;

network! {
    struct Net(x: [B, T, 32]) -> [B, T, 32] {
        CausalSelfAttention<32, 5>
    }
}

fn main() {}
