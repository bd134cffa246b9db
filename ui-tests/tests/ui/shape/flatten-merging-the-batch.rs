// `.flatten()` flattens from dim 0, like `torch.flatten`, which would merge the run-time
// batch `N` with `784`. The caret must point at `flatten`.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc(x.flatten())
    }
}

fn main() {}
