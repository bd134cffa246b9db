// Only const generics are allowed; `network!` adds the backend type parameter itself.
// The caret must point at `T`.
use declnet::prelude::*;

network! {
    struct Net<T>(x: [N, 784]) -> [N, 10] {
        Linear<784, 10>
    }
}

fn main() {}
