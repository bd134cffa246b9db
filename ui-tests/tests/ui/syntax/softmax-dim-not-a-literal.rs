// `.softmax(dim)` takes its dim as an integer literal, so the macro can check it against the
// shape; a variable or a float is refused at the argument, a missing dim at the method.
use declnet::prelude::*;

network! {
    struct Classifier {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784], dim: usize) -> [N, 10] {
        fc(x).softmax(dim) + fc(x).softmax(1.0) + fc(x).log_softmax()
    }
}

fn main() {}
