// A run-time loop reusing a layer, a non-tensor argument, and a custom function.
use declnet::prelude::*;
use declnet::runtime::function::Function;

/// `x^2`, with its backward pass written by hand.
struct Square;

impl<B: Backend> Function<B> for Square {
    type Saved = Tensor<B>;
    fn forward(&self, input: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>)> {
        Ok((input.pow(2.0), input.try_clone()?))
    }
    fn backward(&self, input: &Tensor<B>, grad_output: &Tensor<B>) -> Result<Tensor<B>> {
        grad_output.pow_backward(input, 2.0)
    }
}

network! {
    struct Net {
        first: Linear<6, 4>,
        middle: Linear<4, 4>,
    }
    fn forward(x: [N, 6], repeats: usize) -> [N, 4] {
        let mut h = first(x).tanh();
        for _ in 0..repeats {
            h = Square.apply(middle(h)).tanh();
        }
        h
    }
}

fn main() -> Result<()> {
    let rng = &mut seeded(0);
    let mut net = Net::new(&Cpu, rng);
    let x = Tensor::randn([3, 6], &Cpu, rng);
    for repeats in [0, 1, 3] {
        net.zero_grad();
        let (y, tape) = net.forward_train(&x, repeats)?;
        assert_eq!(y.dims(), &[3, 4]);
        let grad_x = net.backward(tape, &y)?;
        assert_eq!(grad_x.dims(), &[3, 6]);
        assert_eq!(net.middle.weight.grad().is_some(), repeats > 0);
    }
    Ok(())
}
