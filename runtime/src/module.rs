//! [`Module`]: anything that owns named parameters — what optimizers and serialization work on.

use crate::backend::Backend;
use crate::param::Param;

/// A set of parameters with PyTorch `state_dict` names (`linear1.weight`, `block.fc.bias`).
///
/// `network!` implements it for every generated network; nested networks report dotted paths.
/// Parameters are visited in declaration order, which optimizers use to key their state.
pub trait Module<B: Backend> {
    /// Calls `f` with each parameter's name and the parameter.
    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<B>));

    /// Calls `f` with each parameter's name and the parameter, mutably.
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<B>));

    /// Forgets every parameter's gradient, like `Module.zero_grad()` in PyTorch.
    fn zero_grad(&mut self) {
        self.visit_params_mut(&mut |_, param| param.zero_grad());
    }

    /// The number of trainable scalars.
    fn num_params(&self) -> usize {
        let mut count = 0;
        self.visit_params(&mut |_, param| count += param.value().numel());
        count
    }

    /// The parameters' names, in visiting order.
    fn param_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.visit_params(&mut |name, _| names.push(name.to_owned()));
        names
    }
}

/// Visits `module`'s parameters with `prefix.` in front of each name: how a network reports
/// the parameters of a network it contains.
pub fn visit_prefixed<B: Backend, M: Module<B> + ?Sized>(
    module: &M,
    prefix: &str,
    f: &mut dyn FnMut(&str, &Param<B>),
) {
    let mut full = String::with_capacity(prefix.len() + 32);
    module.visit_params(&mut |name, param| f(prefixed(&mut full, prefix, name), param));
}

/// Mutable form of [`visit_prefixed`].
pub fn visit_prefixed_mut<B: Backend, M: Module<B> + ?Sized>(
    module: &mut M,
    prefix: &str,
    f: &mut dyn FnMut(&str, &mut Param<B>),
) {
    let mut full = String::with_capacity(prefix.len() + 32);
    module.visit_params_mut(&mut |name, param| f(prefixed(&mut full, prefix, name), param));
}

/// `prefix.name`, written into `buffer` (reused across a visit, so one allocation per visit).
fn prefixed<'a>(buffer: &'a mut String, prefix: &str, name: &str) -> &'a str {
    buffer.clear();
    buffer.push_str(prefix);
    buffer.push('.');
    buffer.push_str(name);
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cpu, Tensor};

    struct Pair {
        weight: Param,
        bias: Param,
    }

    impl Module<Cpu> for Pair {
        fn visit_params(&self, f: &mut dyn FnMut(&str, &Param)) {
            f("weight", &self.weight);
            f("bias", &self.bias);
        }
        fn visit_params_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
            f("weight", &mut self.weight);
            f("bias", &mut self.bias);
        }
    }

    struct Outer {
        fc: Pair,
    }

    impl Module<Cpu> for Outer {
        fn visit_params(&self, f: &mut dyn FnMut(&str, &Param)) {
            visit_prefixed(&self.fc, "fc", f);
        }
        fn visit_params_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
            visit_prefixed_mut(&mut self.fc, "fc", f);
        }
    }

    fn outer() -> Outer {
        Outer {
            fc: Pair {
                weight: Param::new(Tensor::ones([3, 2], &Cpu)),
                bias: Param::new(Tensor::ones([3], &Cpu)),
            },
        }
    }

    #[test]
    fn names_counts_and_zero_grad() {
        let mut net = outer();
        assert_eq!(net.param_names(), ["fc.weight", "fc.bias"]);
        assert_eq!(net.num_params(), 9);
        net.fc.bias.accumulate_grad(&Tensor::ones([3], &Cpu));
        net.zero_grad();
        assert!(net.fc.bias.grad().is_none());
    }
}
