// PyTorch's adaptive windows from 8x8 to 3x3 overlap and differ in size; declnet lowers
// adaptive pooling to uniform windows only, and says so at the layer.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 2, 8, 8]) -> [N, 2, 3, 3] {
        AdaptiveAvgPool2d<3, 3>
    }
}

fn main() {}
