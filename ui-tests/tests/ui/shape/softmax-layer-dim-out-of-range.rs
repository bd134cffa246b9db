// `LogSoftmax<2>` after a layer with output `[N, 10]`: dims run from -2 to 1, as in PyTorch.
// The error points at the layer's declaration.
use declnet::prelude::*;

network! {
    struct Classifier(x: [N, 784]) -> [N, 10] {
        Linear<784, 10>,
        LogSoftmax<2>,
    }
}

fn main() {}
