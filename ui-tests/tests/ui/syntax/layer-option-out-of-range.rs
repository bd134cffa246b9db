// A dropout probability above 1 and a momentum of 0 are compile errors at the layer.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 4]) -> [N, 4] {
        Dropout<1.5>, BatchNorm1d<4, momentum = 0>, BatchNorm1d<4, affine = 1>
    }
}

fn main() {}
