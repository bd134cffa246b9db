// `Relu` is PyTorch's `ReLU` in other letter case, not a nested network.
// The caret must point at `Relu`, and the message must suggest `ReLU`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<784, 10>, Relu
    }
}

fn main() {}
