//! [`DataParallel`]: a network replicated on every rank, with rank 0's weights and averaged
//! gradients.

use std::any::Any;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use super::buckets::{Buckets, SyncTiming};
use super::{Collective, InPlaceMean, optimizer_state};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::module::{Buffer, BufferMut, Module};
use crate::optim::{Optimizer, UpdateRule};
use crate::param::Param;

/// A network replicated on every rank of a [`Collective`], like PyTorch's
/// `DistributedDataParallel`.
///
/// [`DataParallel::new`] checks that every rank declared the same parameters and buffers and
/// gives every rank rank 0's values. Each rank then runs its forward and backward passes on its
/// own share of the batch, and [`DataParallel::sync_gradients`] replaces every gradient by its
/// mean over the ranks, so the optimizer makes the same step everywhere. For gradient
/// accumulation (PyTorch's `no_sync`), run several backward passes and synchronise once.
///
/// The wrapper dereferences to the network (`net.forward_train(&x)`) and is a [`Module`]
/// itself, so optimizers and [`save`](crate::io::ModuleIo::save) take it as they take the
/// network. Only rank 0 should print, plot and save: [`DataParallel::is_main`].
#[derive(Debug)]
pub struct DataParallel<M, C, B: Backend = crate::Cpu> {
    module: M,
    collective: C,
    /// The gradient buckets of a synchronisation, reused from step to step.
    buckets: Buckets,
    last_sync: SyncTiming,
    backend: PhantomData<B>,
}

impl<B: Backend, M: Module<B>, C: Collective> DataParallel<M, C, B> {
    /// Replicates `module` over the ranks of `collective`: every rank must call this with the
    /// same network. Rank 0's parameters and buffers (`BatchNorm`'s running statistics) are
    /// copied to every other rank.
    ///
    /// # Errors
    /// [`Error::Distributed`] on every rank when any rank's parameters or buffers differ from
    /// rank 0's in name, order or shape; the message on a differing rank names the first
    /// difference. An engine or device error.
    pub fn new(mut module: M, collective: C) -> Result<Self> {
        check_same_layout(&module, &collective)?;
        broadcast_state(&mut module, &collective)?;
        Ok(Self {
            module,
            collective,
            buckets: Buckets::default(),
            last_sync: SyncTiming::default(),
            backend: PhantomData,
        })
    }

    /// Replaces every parameter's gradient by its mean over the ranks, after the backward
    /// pass. A parameter that got no gradient on some ranks (a layer their control flow
    /// skipped) counts as zero there; one that got none on any rank keeps no gradient, so the
    /// optimizer skips it as usual. [`DataParallel::backward_synced`] does the same while the
    /// backward pass runs; every rank must use the same one of the two in a step.
    ///
    /// Also copies rank 0's buffers to every rank, as DDP's `broadcast_buffers` does: each
    /// rank's `BatchNorm` sees only its own shard, so its running statistics would drift
    /// apart; rank 0's are the ones kept.
    ///
    /// # Errors
    /// An engine or device error.
    pub fn sync_gradients(&mut self) -> Result<()> {
        self.backward_synced(|_, _| Ok(()))
    }

    /// Runs a backward pass that announces finished gradients, and averages them over the
    /// ranks as it goes, like DDP's reducer: `backward` gets the network and the `ready`
    /// callback to hand to the generated `backward_params_notify`, which calls it as soon as
    /// a layer's gradients are final. The gradients are packed into buckets in that order (a
    /// 1 MiB one first, then 25 MiB ones), and each bucket's all-reduce starts when it is
    /// full, on the engine's communication thread, while the backward pass goes on. The order
    /// is fixed by the network's declaration, so every rank cuts the same buckets and
    /// issues them in the same order. What the backward pass never announced is averaged
    /// after it. Then as [`DataParallel::sync_gradients`]; [`DataParallel::last_sync`] says
    /// how much communication the backward pass hid.
    ///
    /// An engine that averages in place ([`Collective::in_place`], [`Nccl`](super::Nccl))
    /// needs no buckets packed: after the backward pass, it averages the gradients where they
    /// are, in groups of the buckets' sizes, queued on the GPU's stream behind the backward
    /// pass's kernels; it does so even for one rank, so a one-GPU job runs the calls a larger
    /// one does. It also runs inside a [`StepGraph`](crate::StepGraph) capture (see
    /// [`Nccl`](super::Nccl)). [`SyncTiming::waited`] is then the time this took on the host
    /// (agreeing which gradients exist, which waits for the GPU, then queuing the calls); the
    /// engine's time on the GPU is not measured.
    ///
    /// ```ignore
    /// let (logits, tape) = net.forward_train(&x)?;
    /// let (loss, grad) = loss_fn.try_value_and_grad(&logits, &labels)?;
    /// net.zero_grad();
    /// net.backward_synced(|net, ready| net.backward_params_notify(tape, &grad, ready))?;
    /// optimizer.try_step(&mut net)?;
    /// ```
    ///
    /// # Errors
    /// What `backward` returns (every rank still takes part in every all-reduce), an engine
    /// or a device error.
    pub fn backward_synced(
        &mut self,
        backward: impl FnOnce(&mut M, &mut dyn FnMut(&M, &str) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        if let Some(engine) = self.collective.in_place() {
            let ran = backward(&mut self.module, &mut |_, _| Ok(()));
            let synced = self
                .buckets
                .average_in_place(&mut self.module, &self.collective, engine);
            let broadcast = broadcast_buffers_in_place(&mut self.module, &self.collective, engine);
            ran?;
            self.last_sync = synced?;
            return broadcast;
        }
        if self.collective.world_size() == 1 {
            return backward(&mut self.module, &mut |_, _| Ok(()));
        }
        self.buckets.start(param_count(&self.module));
        let (buckets, collective) = (&mut self.buckets, &self.collective);
        let ran = backward(&mut self.module, &mut |module, prefix| {
            buckets.announce(module, Some(prefix), collective);
            Ok(())
        });
        let backward_end = Instant::now();
        let synced = self
            .buckets
            .finish(&mut self.module, &self.collective, backward_end);
        let broadcast = broadcast_buffers(&mut self.module, &self.collective);
        ran?;
        self.last_sync = synced?;
        broadcast
    }

    /// Sets the gradient buckets' sizes in bytes: the first one's (1 MiB unless set) and
    /// every later one's (25 MiB, DDP's `bucket_cap_mb`). Smaller buckets start
    /// communicating earlier, larger ones make fewer calls. Every rank must use the same.
    pub fn set_bucket_sizes(&mut self, first_bytes: usize, bytes: usize) {
        self.buckets.set_sizes(first_bytes, bytes);
    }

    /// How the last synchronisation went: buckets, communication time, and how much of it
    /// the backward pass hid.
    pub fn last_sync(&self) -> SyncTiming {
        self.last_sync
    }

    /// Gives every rank rank 0's optimizer state (step counts, momentum and moment buffers,
    /// learning rate): after rank 0 alone loaded a checkpoint, say. Every rank must call it.
    ///
    /// # Errors
    /// On every rank when rank 0 cannot export its state; on a rank whose optimizer is of
    /// another kind or does not fit its network ([`Optimizer::try_load_state`]'s errors), or
    /// an engine or device error.
    pub fn broadcast_optimizer<R: UpdateRule>(
        &self,
        optimizer: &mut Optimizer<R, B>,
    ) -> Result<()> {
        let mut device = None;
        self.module.visit_params(&mut |_, param| {
            device.get_or_insert_with(|| param.value().device().clone());
        });
        let Some(device) = device else {
            return Ok(()); // no parameters, so no state; the same on every rank
        };
        let root = self.collective.rank() == 0;
        let (mut bytes, exported) = if root {
            match optimizer
                .try_state()
                .and_then(|state| optimizer_state::encode(&state))
            {
                Ok(bytes) => (bytes, Ok(())),
                Err(error) => (Vec::new(), Err(error)),
            }
        } else {
            (Vec::new(), Ok(()))
        };
        // Length 0 (never a state's) says rank 0 failed.
        let mut len = (bytes.len() as u64).to_le_bytes();
        self.collective.broadcast_bytes(&mut len, 0)?;
        let len = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
        exported?;
        if len == 0 {
            return Err(Error::Distributed {
                op: "broadcast_optimizer",
                message: "rank 0 could not export its optimizer state".to_owned(),
            });
        }
        bytes.resize(len, 0);
        self.collective.broadcast_bytes(&mut bytes, 0)?;
        if root {
            return Ok(());
        }
        let state = optimizer_state::decode(&bytes, &device)?;
        optimizer.try_load_state(&self.module, &state)
    }
}

impl<M, C: Collective, B: Backend> DataParallel<M, C, B> {
    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.collective.world_size()
    }

    /// Whether this is rank 0, the one that prints, plots and saves.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// The engine.
    pub fn collective(&self) -> &C {
        &self.collective
    }

    /// The network, like `ddp.module`.
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The network, mutably.
    pub fn module_mut(&mut self) -> &mut M {
        &mut self.module
    }

    /// The network, unwrapped.
    pub fn into_inner(self) -> M {
        self.module
    }
}

impl<M, C, B: Backend> Deref for DataParallel<M, C, B> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.module
    }
}

impl<M, C, B: Backend> DerefMut for DataParallel<M, C, B> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.module
    }
}

impl<B: Backend, M: Module<B>, C> Module<B> for DataParallel<M, C, B> {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param<B>)) {
        self.module.visit_params(f);
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param<B>)) {
        self.module.visit_params_mut(f);
    }
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, Buffer<'_, B>)) {
        self.module.visit_buffers(f);
    }
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, BufferMut<'_, B>)) {
        self.module.visit_buffers_mut(f);
    }
    fn visit_config(&self, f: &mut dyn FnMut(&str, String)) {
        self.module.visit_config(f);
    }
    fn set_training(&mut self, training: bool) {
        self.module.set_training(training);
    }
}

/// The number of parameters.
fn param_count<B: Backend, M: Module<B> + ?Sized>(module: &M) -> usize {
    let mut count = 0;
    module.visit_params(&mut |_, _| count += 1);
    count
}

/// One line per parameter and buffer, `name [dims]`, in visiting order: what must match on
/// every rank.
fn layout<B: Backend, M: Module<B> + ?Sized>(module: &M) -> Vec<String> {
    let mut lines = Vec::new();
    module.visit_params(&mut |name, param| {
        lines.push(format!("parameter `{name}` {}", param.value().shape()));
    });
    module.visit_buffers(&mut |name, buffer| {
        lines.push(match buffer {
            Buffer::Tensor(tensor) => format!("buffer `{name}` {}", tensor.shape()),
            Buffer::Count(_) => format!("buffer `{name}` (a count)"),
        });
    });
    lines
}

/// Fails on every rank when some rank's layout differs from rank 0's.
fn check_same_layout<B: Backend, M: Module<B> + ?Sized>(
    module: &M,
    collective: &impl Collective,
) -> Result<()> {
    let ours = layout(module);
    let theirs = broadcast_text(&ours.join("\n"), collective)?;
    let theirs: Vec<&str> = theirs.split('\n').filter(|line| !line.is_empty()).collect();
    let difference = first_difference(&ours, &theirs);
    // Which ranks differ, on every rank: each rank's slot holds 1/world when it differs.
    let world = collective.world_size();
    let mut differs = vec![0.0; world];
    differs[collective.rank()] = if difference.is_some() { 1.0 } else { 0.0 };
    collective.all_reduce_mean(&mut differs)?;
    let differing: Vec<usize> = (0..world).filter(|&rank| differs[rank] > 0.0).collect();
    if differing.is_empty() {
        return Ok(());
    }
    let message = match difference {
        Some(difference) => format!(
            "rank {} declared another network than rank 0: {difference}",
            collective.rank()
        ),
        None => format!(
            "rank(s) {differing:?} declared another network than rank 0 (their errors name \
             the first difference)"
        ),
    };
    Err(Error::Distributed {
        op: "DataParallel::new",
        message,
    })
}

/// Where `ours` first differs from rank 0's layout `theirs`, in words.
fn first_difference(ours: &[String], theirs: &[&str]) -> Option<String> {
    for (index, line) in ours.iter().enumerate() {
        match theirs.get(index) {
            Some(their) if their == line => {}
            Some(their) => return Some(format!("it has {line} where rank 0 has {their}")),
            None => return Some(format!("it has {line}, which rank 0 lacks")),
        }
    }
    theirs
        .get(ours.len())
        .map(|their| format!("rank 0 has {their}, which it lacks"))
}

/// Rank 0's `text` on every rank.
fn broadcast_text(text: &str, collective: &impl Collective) -> Result<String> {
    let mut len = (text.len() as u64).to_le_bytes();
    collective.broadcast_bytes(&mut len, 0)?;
    let len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| Error::Distributed {
        op: "DataParallel::new",
        message: "rank 0's network description does not fit in memory".to_owned(),
    })?;
    let mut bytes = vec![0; len];
    if collective.rank() == 0 {
        bytes.copy_from_slice(text.as_bytes());
    }
    collective.broadcast_bytes(&mut bytes, 0)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Copies rank 0's parameters and buffers to every rank (the layouts are known to match), in
/// place where the engine can. Every rank takes part in every broadcast, even after a local
/// error, and reports the first error at the end.
fn broadcast_state<B: Backend, M: Module<B> + ?Sized>(
    module: &mut M,
    collective: &impl Collective,
) -> Result<()> {
    if let Some(engine) = collective.in_place() {
        let mut values: Vec<&mut dyn Any> = Vec::new();
        module.visit_params_mut(&mut |_, param| values.push(&mut param.value_mut().storage));
        let mut result = engine.broadcast_in_place(&mut values, 0);
        keep_first_error(
            &mut result,
            broadcast_buffers_in_place(module, collective, engine),
        );
        return result;
    }
    let mut result = Ok(());
    module.visit_params_mut(&mut |_, param| {
        keep_first_error(&mut result, broadcast_tensor(param.value_mut(), collective));
    });
    keep_first_error(&mut result, broadcast_buffers(module, collective));
    result
}

/// Copies rank 0's buffers to every rank, as [`broadcast_state`] does, in two broadcasts (the
/// float buffers one after another, then the counts) rather than one per buffer.
fn broadcast_buffers<B: Backend, M: Module<B> + ?Sized>(
    module: &mut M,
    collective: &impl Collective,
) -> Result<()> {
    let mut result = Ok(());
    let (mut values, mut counts) = (Vec::new(), Vec::new());
    module.visit_buffers(&mut |_, buffer| match buffer {
        Buffer::Tensor(tensor) => match tensor.try_to_vec() {
            Ok(own) => values.extend(own),
            Err(error) => {
                values.resize(values.len() + tensor.numel(), 0.0);
                keep_first_error(&mut result, Err(error));
            }
        },
        Buffer::Count(count) => counts.extend(count.to_le_bytes()),
    });
    if values.is_empty() && counts.is_empty() {
        return result; // no buffers, on any rank: the layouts match
    }
    keep_first_error(&mut result, collective.broadcast(&mut values, 0));
    keep_first_error(&mut result, collective.broadcast_bytes(&mut counts, 0));
    result.clone()?;
    let mut values = values.as_slice();
    module.visit_buffers_mut(&mut |_, buffer| {
        if let BufferMut::Tensor(tensor) = buffer {
            let (own, rest) = values.split_at(tensor.numel());
            values = rest;
            keep_first_error(&mut result, tensor.try_copy_from_slice(own));
        }
    });
    set_counts(module, &counts);
    result
}

/// Sets the count buffers of `module`, in visiting order, to `counts` (8 little-endian bytes
/// each).
fn set_counts<B: Backend, M: Module<B> + ?Sized>(module: &mut M, counts: &[u8]) {
    let mut counts = counts.chunks_exact(8);
    module.visit_buffers_mut(&mut |_, buffer| {
        if let BufferMut::Count(count) = buffer
            && let Some(bytes) = counts.next().and_then(|bytes| bytes.try_into().ok())
        {
            *count = i64::from_le_bytes(bytes);
        }
    });
}

/// Copies rank 0's buffers to every rank as [`broadcast_buffers`] does, each float buffer in
/// place with `engine`; the counts through the host, except while the device records a CUDA
/// graph (which replays device work only, so leaves the counts as they are either way).
fn broadcast_buffers_in_place<B: Backend, M: Module<B> + ?Sized>(
    module: &mut M,
    collective: &impl Collective,
    engine: &dyn InPlaceMean,
) -> Result<()> {
    let mut result = Ok(());
    let mut counts = Vec::new();
    module.visit_buffers_mut(&mut |_, buffer| match buffer {
        BufferMut::Tensor(tensor) => {
            let storage: &mut dyn Any = &mut tensor.storage;
            keep_first_error(&mut result, engine.broadcast_in_place(&mut [storage], 0));
        }
        BufferMut::Count(count) => counts.extend(count.to_le_bytes()),
    });
    if counts.is_empty() || engine.capturing() {
        return result;
    }
    keep_first_error(&mut result, collective.broadcast_bytes(&mut counts, 0));
    result.clone()?;
    set_counts(module, &counts);
    result
}

/// Rank 0's values of `tensor` on every rank; this rank takes part even when it cannot read
/// its own values.
fn broadcast_tensor<B: Backend>(
    tensor: &mut crate::Tensor<B>,
    collective: &impl Collective,
) -> Result<()> {
    let (mut values, mut result) = match tensor.try_to_vec() {
        Ok(values) => (values, Ok(())),
        Err(error) => (vec![0.0; tensor.numel()], Err(error)),
    };
    keep_first_error(&mut result, collective.broadcast(&mut values, 0));
    result?;
    tensor.try_copy_from_slice(&values)
}

/// Records `next`'s error unless `result` already holds one.
fn keep_first_error(result: &mut Result<()>, next: Result<()>) {
    if result.is_ok() {
        *result = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::{InPlaceMean, Local};
    use crate::layers::Linear;
    use crate::rng::seeded;
    use crate::{Cpu, Tensor};
    use std::any::Any;

    /// A linear layer on one rank of `engine`, synchronised after a backward pass that left
    /// its bias without a gradient: the weight's is kept, and the lack of one too.
    fn one_rank_synced<C: Collective>(engine: C) -> DataParallel<Linear, C> {
        let net = Linear::<Cpu>::new(3, 2, true, &Cpu, &mut seeded(0));
        let mut net = DataParallel::new(net, engine).unwrap();
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], [1, 3], &Cpu);
        net.backward(&x, &Tensor::ones([1, 2], &Cpu), false)
            .unwrap();
        let before = net.weight.grad().unwrap().to_vec();
        net.bias.as_mut().unwrap().zero_grad();
        net.sync_gradients().unwrap();
        assert_eq!(net.weight.grad().unwrap().to_vec(), before);
        assert!(net.bias.as_ref().unwrap().grad().is_none());
        net
    }

    #[test]
    fn one_rank_keeps_its_gradients_and_the_lack_of_one() {
        one_rank_synced(Local);
    }

    /// One rank that averages and broadcasts in place (doing nothing), counting its groups.
    #[derive(Default)]
    struct InPlaceAlone {
        groups: std::cell::Cell<usize>,
        broadcasts: std::cell::Cell<usize>,
    }

    impl Collective for InPlaceAlone {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            1
        }
        fn all_reduce_mean(&self, _: &mut [f32]) -> Result<()> {
            Ok(())
        }
        fn broadcast(&self, _: &mut [f32], _: usize) -> Result<()> {
            Ok(())
        }
        fn broadcast_bytes(&self, _: &mut [u8], _: usize) -> Result<()> {
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn in_place(&self) -> Option<&dyn InPlaceMean> {
            Some(self)
        }
    }

    impl InPlaceMean for InPlaceAlone {
        fn all_reduce_mean_in_place(&self, buffers: &mut [&mut dyn Any]) -> Result<()> {
            assert!(buffers.iter().all(|buffer| buffer.is::<Vec<f32>>()));
            self.groups.set(self.groups.get() + 1);
            Ok(())
        }
        fn broadcast_in_place(&self, buffers: &mut [&mut dyn Any], root: usize) -> Result<()> {
            assert!(buffers.iter().all(|buffer| buffer.is::<Vec<f32>>()));
            assert_eq!(root, 0);
            self.broadcasts.set(self.broadcasts.get() + 1);
            Ok(())
        }
    }

    #[test]
    fn an_in_place_engine_averages_even_alone() {
        let net = one_rank_synced(InPlaceAlone::default());
        // At `new`, the weight and the bias in one group; a linear layer has no buffers.
        assert_eq!(net.collective().broadcasts.get(), 1);
        assert_eq!(net.collective().groups.get(), 1);
        assert_eq!(net.last_sync().buckets, 1);
    }

    #[test]
    fn layouts_differ_at_the_first_line_that_differs() {
        let ours = vec!["parameter `w` [2]".to_owned()];
        assert_eq!(first_difference(&ours, &["parameter `w` [2]"]), None);
        assert_eq!(
            first_difference(&ours, &["parameter `w` [3]"]).unwrap(),
            "it has parameter `w` [2] where rank 0 has parameter `w` [3]"
        );
        assert_eq!(
            first_difference(&ours, &["parameter `w` [2]", "parameter `b` [2]"]).unwrap(),
            "rank 0 has parameter `b` [2], which it lacks"
        );
        assert_eq!(
            first_difference(&ours, &[]).unwrap(),
            "it has parameter `w` [2], which rank 0 lacks"
        );
    }
}
