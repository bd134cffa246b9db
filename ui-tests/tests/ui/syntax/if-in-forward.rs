// An `if` used as a value is not supported (`if` statements whose arms reassign variables
// are); the message must say what is.
// The caret must point at the `if` expression.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        if true { fc(x) } else { fc(x) }
    }
}

fn main() {}
