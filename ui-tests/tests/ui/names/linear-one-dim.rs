// `Linear<784>` gives one dim; `Linear` takes in_features and out_features.
// The caret must point at `Linear<784>`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 784] {
        Linear<784>
    }
}

fn main() {}
