// `bn` normalises 8 channels, but `conv` makes 16; a `BatchNorm1d` cannot take an image.
// The first error points at the layer in the list and shows both shapes, the second at the
// declared feature count; the third says which inputs `BatchNorm1d` takes.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 1, 8, 8]) -> [N, 16, 6, 6] {
        conv: Conv2d<1, 16, 3>, bn: BatchNorm2d<8>, ReLU
    }
}

network! {
    struct Flat(x: [N, 4, 8, 8]) -> [N, 4, 8, 8] {
        BatchNorm1d<4>
    }
}

fn main() {}
