//! [`Module`]: anything that owns named parameters — what optimizers and serialization work on
//! — and maybe buffers and a training mode.

use crate::backend::Backend;
use crate::param::Param;
use crate::tensor::Tensor;

/// State a module saves and loads with its parameters but does not train, PyTorch's buffers:
/// `BatchNorm`'s running statistics and its count of batches. Lent by
/// [`Module::visit_buffers`].
#[derive(Debug, Clone, Copy)]
pub enum Buffer<'a, B: Backend> {
    /// A float tensor (`running_mean`), stored as `F32`.
    Tensor(&'a Tensor<B>),
    /// An integer scalar (`num_batches_tracked`), stored as an `I64` tensor of shape `[]`.
    Count(i64),
}

/// A buffer lent mutably by [`Module::visit_buffers_mut`], to be loaded.
#[derive(Debug)]
pub enum BufferMut<'a, B: Backend> {
    /// A float tensor.
    Tensor(&'a mut Tensor<B>),
    /// An integer scalar.
    Count(&'a mut i64),
}

/// A set of parameters with PyTorch `state_dict` names (`linear1.weight`, `block.fc.bias`).
///
/// `network!` implements it for every generated network; nested networks report dotted paths.
/// Parameters are visited in declaration order, which optimizers use to key their state.
pub trait Module<B: Backend> {
    /// Calls `f` with each parameter's name and the parameter.
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param<B>));

    /// Calls `f` with each parameter's name and the parameter, mutably.
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param<B>));

    /// The parameters with their PyTorch `state_dict` names, in declaration order, like
    /// `named_parameters()`. Names and list are stored inline ([`ParamList`]), so listing up
    /// to 8 parameters allocates nothing.
    fn params(&self) -> ParamList<&Param<B>> {
        let mut params = ParamList::new();
        self.visit_params(&mut |name, param| params.push((ParamName::new(name), param)));
        params
    }

    /// The parameters with their `state_dict` names, mutably: for update loops.
    fn params_mut(&mut self) -> ParamList<&mut Param<B>> {
        let mut params = ParamList::new();
        self.visit_params_mut(&mut |name, param| params.push((ParamName::new(name), param)));
        params
    }

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

    /// Calls `f` with each buffer's `state_dict` name and the buffer, like `named_buffers()`.
    /// Modules without buffers (most) keep this default, which visits none.
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, Buffer<'_, B>)) {
        let _ = f;
    }

    /// Calls `f` with each buffer's name and the buffer, mutably (for loading).
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, BufferMut<'_, B>)) {
        let _ = f;
    }

    /// Calls `f` with each setting that shapes the computation but no tensor, by `state_dict`
    /// name and value (`attn.num_heads`, `4`): [`save`](crate::io::ModuleIo::save) writes them
    /// to the file's metadata, and loading a file whose metadata says otherwise is an error.
    /// Modules without such settings (most) keep this default, which visits none.
    fn visit_config(&self, f: &mut dyn FnMut(&str, String)) {
        let _ = f;
    }

    /// Puts the module and every module in it in training mode (`true`) or evaluation mode,
    /// which `BatchNorm` and `Dropout` read. Modules without a mode keep this default, which
    /// does nothing.
    fn set_training(&mut self, training: bool) {
        let _ = training;
    }

    /// Training mode, like `model.train()` (the mode every module starts in): `BatchNorm`
    /// normalises with each batch's statistics and updates its running ones, `Dropout` drops.
    fn train(&mut self) {
        self.set_training(true);
    }

    /// Evaluation mode, like `model.eval()`: `BatchNorm` normalises with its running
    /// statistics, `Dropout` passes its input through.
    fn eval(&mut self) {
        self.set_training(false);
    }
}

/// What [`Module::params`] and [`Module::params_mut`] return: each parameter `P` with its
/// name, the first 8 inline, so that an update loop over a small network's parameters every
/// step allocates nothing. It derefs to a slice and iterates like a `Vec`.
pub type ParamList<P> = smallvec::SmallVec<[(ParamName, P); 8]>;

/// A parameter's `state_dict` name (`block.fc.weight`), held inline up to 64 bytes so that
/// listing the parameters every step allocates no string; it reads as a `&str`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamName(smallvec::SmallVec<[u8; 64]>);

impl ParamName {
    fn new(name: &str) -> Self {
        Self(smallvec::SmallVec::from_slice(name.as_bytes()))
    }

    /// The name as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Valid UTF-8: copied from a `str`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for ParamName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for ParamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ParamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for ParamName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ParamName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<ParamName> for String {
    fn from(name: ParamName) -> Self {
        name.as_str().to_owned()
    }
}

/// Visits `module`'s parameters with `prefix.` in front of each name: how a network reports
/// the parameters of a layer it contains.
pub fn visit_prefixed<'a, B: Backend, M: Module<B> + ?Sized>(
    module: &'a M,
    prefix: &str,
    f: &mut dyn FnMut(&str, &'a Param<B>),
) {
    let mut full = NameBuffer::new();
    module.visit_params(&mut |name, param| f(full.join(prefix, name), param));
}

/// Mutable form of [`visit_prefixed`].
pub fn visit_prefixed_mut<'a, B: Backend, M: Module<B> + ?Sized>(
    module: &'a mut M,
    prefix: &str,
    f: &mut dyn FnMut(&str, &'a mut Param<B>),
) {
    let mut full = NameBuffer::new();
    module.visit_params_mut(&mut |name, param| f(full.join(prefix, name), param));
}

/// Visits `module`'s buffers with `prefix.` in front of each name.
pub fn visit_buffers_prefixed<B: Backend, M: Module<B> + ?Sized>(
    module: &M,
    prefix: &str,
    f: &mut dyn FnMut(&str, Buffer<'_, B>),
) {
    let mut full = NameBuffer::new();
    module.visit_buffers(&mut |name, buffer| f(full.join(prefix, name), buffer));
}

/// Mutable form of [`visit_buffers_prefixed`].
pub fn visit_buffers_prefixed_mut<B: Backend, M: Module<B> + ?Sized>(
    module: &mut M,
    prefix: &str,
    f: &mut dyn FnMut(&str, BufferMut<'_, B>),
) {
    let mut full = NameBuffer::new();
    module.visit_buffers_mut(&mut |name, buffer| f(full.join(prefix, name), buffer));
}

/// Visits `module`'s settings with `prefix.` in front of each name.
pub fn visit_config_prefixed<B: Backend, M: Module<B> + ?Sized>(
    module: &M,
    prefix: &str,
    f: &mut dyn FnMut(&str, String),
) {
    let mut full = NameBuffer::new();
    module.visit_config(&mut |name, value| f(full.join(prefix, name), value));
}

/// Where `prefix.name` is written during a visit: on the stack for names of up to 128 bytes,
/// so that optimizers, which visit every step, allocate nothing.
struct NameBuffer(smallvec::SmallVec<[u8; 128]>);

impl NameBuffer {
    fn new() -> Self {
        Self(smallvec::SmallVec::new())
    }

    /// `prefix.name`.
    fn join(&mut self, prefix: &str, name: &str) -> &str {
        self.0.clear();
        self.0.extend_from_slice(prefix.as_bytes());
        self.0.push(b'.');
        self.0.extend_from_slice(name.as_bytes());
        // Valid UTF-8: the concatenation of two `str`s and an ASCII dot.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
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
        fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
            f("weight", &self.weight);
            f("bias", &self.bias);
        }
        fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param)) {
            f("weight", &mut self.weight);
            f("bias", &mut self.bias);
        }
    }

    struct Outer {
        fc: Pair,
    }

    impl Module<Cpu> for Outer {
        fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
            visit_prefixed(&self.fc, "fc", f);
        }
        fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param)) {
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

    #[test]
    fn params_lists_names_inline() {
        let mut outer = Outer {
            fc: Pair {
                weight: Param::new(Tensor::zeros([2], &Cpu)),
                bias: Param::new(Tensor::zeros([1], &Cpu)),
            },
        };
        let names: Vec<String> = outer.params().into_iter().map(|(n, _)| n.into()).collect();
        assert_eq!(names, ["fc.weight", "fc.bias"]);
        let (name, param) = &mut outer.params_mut()[1];
        assert_eq!(*name, "fc.bias");
        assert_eq!(format!("{name} {name:?}"), "fc.bias \"fc.bias\"");
        param.zero_grad();
        let long = ParamName::new(&"x".repeat(100));
        assert_eq!(long.len(), 100, "names past the inline size still work");
    }
}
