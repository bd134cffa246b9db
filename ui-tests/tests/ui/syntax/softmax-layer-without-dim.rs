// `Softmax` needs the dim it normalises, like `nn.Softmax(dim=1)`; PyTorch's implicit dim is
// deprecated. The error points at the layer's name.
use declnet::prelude::*;

network! {
    struct Classifier(x: [N, 784]) -> [N, 10] {
        Linear<784, 10>,
        Softmax,
    }
}

fn main() {}
