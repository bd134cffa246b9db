// `h` is `[N, 100]` before the loop, but `shrink` makes it `[N, 10]`: a tensor carried across
// iterations must keep its shape. The caret must point at the `h` that is reassigned.
use declnet::prelude::*;

network! {
    struct Net {
        first: Linear<784, 100>,
        shrink: Linear<100, 10>,
        last: Linear<100, 10>,
    }
    fn forward(x: [N, 784], repeats: usize) -> [N, 10] {
        let mut h = first(x);
        for _ in 0..repeats {
            h = shrink(h);
        }
        last(h)
    }
}

fn main() {}
