// `LeakyReLU` takes one number, its negative slope; two are given.
// The caret must point at the first argument, and the message must name the parameter.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<784, 10>, LeakyReLU<0.1, 0.2>
    }
}

fn main() {}
