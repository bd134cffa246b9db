// `.log_softmax(2)` on a 2-D `[N, 10]` output: dims run from -2 to 1, as in PyTorch.
// The caret must point at the dim.
use declnet::prelude::*;

network! {
    struct Classifier {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc(x).log_softmax(2)
    }
}

fn main() {}
