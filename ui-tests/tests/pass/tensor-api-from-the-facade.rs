// The facade's prelude is enough to write stage 1 code generically over the backend.
use declnet::prelude::*;

fn forward<B: Backend>(x: &Tensor<B>, w1: &Tensor<B>, w2: &Tensor<B>) -> Tensor<B> {
    x.mm(w1).clamp_min(0.0).mm(w2)
}

fn main() {
    let rng = &mut seeded(0);
    let x = Tensor::randn([4, 3], &Cpu, rng);
    let w1 = Tensor::randn([3, 5], &Cpu, rng);
    let w2 = Tensor::randn([5, 2], &Cpu, rng);
    let y: Result<Tensor> = Ok(forward(&x, &w1, &w2));
    assert_eq!(y.unwrap().dims(), &[4, 2]);
}
