// `forward` ends with `fc(x);`: the `;` leaves it without an output expression.
// The caret must point at the `;` after `fc(x)`, the statement that should be the output.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc(x);
    }
}

fn main() {}
