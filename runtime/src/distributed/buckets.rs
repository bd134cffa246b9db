//! Gradient buckets: gradients packed, in the order the backward pass finishes them, into
//! buffers that are all-reduced one by one while the backward pass goes on, like PyTorch
//! DDP's reducer.

use std::any::Any;
use std::time::{Duration, Instant};

use super::{Collective, InPlaceMean, Pending, Reduced};
use crate::backend::Backend;
use crate::error::Result;
use crate::module::Module;
use crate::param::Param;

/// The first bucket's size in bytes, PyTorch DDP's: 1 MiB, so the first all-reduce starts
/// early.
pub const FIRST_BUCKET_BYTES: usize = 1024 * 1024;
/// Every later bucket's size in bytes, PyTorch DDP's `bucket_cap_mb` default: 25 MiB.
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// How the last gradient synchronisation went, from the engine's timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncTiming {
    /// The buckets all-reduced.
    pub buckets: usize,
    /// The time the engine spent all-reducing, over every bucket.
    pub communication: Duration,
    /// The part of `communication` that ran before the backward pass ended: hidden behind
    /// it.
    pub hidden: Duration,
    /// How long the caller waited for the all-reduces after the backward pass.
    pub waited: Duration,
}

impl std::ops::AddAssign for SyncTiming {
    /// Totals over several synchronisations.
    fn add_assign(&mut self, other: Self) {
        self.buckets += other.buckets;
        self.communication += other.communication;
        self.hidden += other.hidden;
        self.waited += other.waited;
    }
}

impl SyncTiming {
    /// A line for people: the communication's share of `elapsed`, and how much of it was
    /// hidden behind the backward pass.
    #[must_use]
    pub fn describe(&self, elapsed: Duration) -> String {
        let share = |part: Duration, whole: Duration| {
            100.0 * part.as_secs_f64() / whole.as_secs_f64().max(f64::MIN_POSITIVE)
        };
        format!(
            "all-reduce {:.1}% of the time ({:.0}% of it hidden behind the backward pass), \
             waiting for it {:.1}%",
            share(self.communication, elapsed),
            share(self.hidden, self.communication),
            share(self.waited, elapsed)
        )
    }
}

/// Where a parameter's gradient went this step: its bucket, its offset there, and its place
/// among the bucket's parameters (which indexes its has-gradient flag).
#[derive(Debug, Clone, Copy)]
struct Slot {
    bucket: usize,
    offset: usize,
    member: usize,
}

/// The buckets of one synchronisation. Bucket boundaries depend only on the parameters'
/// sizes and the order in which they are announced, which the generated backward fixes: so
/// every rank cuts the same buckets and issues their all-reduces in the same order.
#[derive(Debug)]
pub(crate) struct Buckets {
    /// The first bucket's capacity, in values.
    first_len: usize,
    /// Every later bucket's capacity, in values.
    len: usize,
    /// Each parameter's slot once announced this step, by visiting order.
    slots: Vec<Option<Slot>>,
    /// The bucket being filled: the gradients one after another.
    filling: Vec<f32>,
    /// One flag per parameter in `filling`: 1 when it had a gradient, appended on closing.
    flags: Vec<f32>,
    /// Each closed bucket's all-reduce (taken when waited for) and its number of parameters.
    closed: Vec<(Option<Pending>, usize)>,
    /// Buffers handed back by earlier steps, reused so a step allocates no bucket.
    spare: Vec<Vec<f32>>,
    /// The first error packing met; every collective still runs, so no rank is left waiting.
    error: Option<crate::Error>,
    /// In-place averaging: which parameters had a gradient here, and on any rank, when the
    /// ranks last agreed on it (through the host, which a CUDA graph capture cannot use).
    agreed: (Vec<f32>, Vec<f32>),
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            first_len: FIRST_BUCKET_BYTES / 4,
            len: BUCKET_BYTES / 4,
            slots: Vec::new(),
            filling: Vec::new(),
            flags: Vec::new(),
            closed: Vec::new(),
            spare: Vec::new(),
            error: None,
            agreed: (Vec::new(), Vec::new()),
        }
    }
}

impl Buckets {
    /// Sets the buckets' capacities in bytes (at least one value each).
    pub(crate) fn set_sizes(&mut self, first_bytes: usize, bytes: usize) {
        self.first_len = (first_bytes / 4).max(1);
        self.len = (bytes / 4).max(1);
    }

    /// Forgets the last step and expects `params` parameters.
    pub(crate) fn start(&mut self, params: usize) {
        self.slots.clear();
        self.slots.resize(params, None);
        self.closed.clear();
        self.flags.clear();
        self.filling.clear();
        self.error = None;
    }

    /// Packs the gradients of `module`'s parameters named `prefix` or `prefix.*` (every
    /// parameter not yet packed, for `None`), starting each bucket's all-reduce as it fills.
    pub(crate) fn announce<B: Backend, M: Module<B> + ?Sized>(
        &mut self,
        module: &M,
        prefix: Option<&str>,
        collective: &impl Collective,
    ) {
        let mut index = 0;
        module.visit_params(&mut |name, param| {
            let this = index;
            index += 1;
            let named = prefix.is_none_or(|prefix| {
                name.strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            });
            if named && this < self.slots.len() && self.slots[this].is_none() {
                self.pack(this, param, collective);
            }
        });
    }

    fn pack<B: Backend>(&mut self, index: usize, param: &Param<B>, collective: &impl Collective) {
        if self.flags.is_empty() {
            self.filling = self.spare.pop().unwrap_or_default();
            self.filling.clear();
        }
        let offset = self.filling.len();
        self.filling.resize(offset + param.value().numel(), 0.0);
        let mut flag = 0.0;
        if let Some(grad) = param.grad() {
            flag = 1.0;
            let values = &mut self.filling[offset..];
            if let Err(error) = grad.device.download_into(&grad.storage, values) {
                self.error.get_or_insert(error);
            }
        }
        self.slots[index] = Some(Slot {
            bucket: self.closed.len(),
            offset,
            member: self.flags.len(),
        });
        self.flags.push(flag);
        let capacity = if self.closed.is_empty() {
            self.first_len
        } else {
            self.len
        };
        if self.filling.len() >= capacity {
            self.close(collective);
        }
    }

    /// Appends the filling bucket's flags and starts its all-reduce.
    fn close(&mut self, collective: &impl Collective) {
        if self.flags.is_empty() {
            return;
        }
        let mut values = std::mem::take(&mut self.filling);
        values.extend_from_slice(&self.flags);
        let members = self.flags.len();
        self.flags.clear();
        let started = collective
            .start_all_reduce_mean(values)
            .map_err(|error| self.error.get_or_insert(error).clone())
            .ok();
        self.closed.push((started, members));
    }

    /// Packs what is left, closes the last bucket, waits for every all-reduce in order and
    /// writes the means back into `module`'s gradients: a parameter that had a gradient on
    /// any rank gets the mean (counting zeros where it had none); one that had none anywhere
    /// keeps none. `backward_end` is when the backward pass ended, for
    /// [`SyncTiming::hidden`].
    pub(crate) fn finish<B: Backend, M: Module<B> + ?Sized>(
        &mut self,
        module: &mut M,
        collective: &impl Collective,
        backward_end: Instant,
    ) -> Result<SyncTiming> {
        self.announce(module, None, collective);
        self.close(collective);
        let waiting = Instant::now();
        let mut timing = SyncTiming {
            buckets: self.closed.len(),
            ..SyncTiming::default()
        };
        let mut reduced: Vec<Option<(Reduced, usize)>> = Vec::with_capacity(self.closed.len());
        for (pending, members) in &mut self.closed {
            let done = pending.take().map(|pending| collective.wait(pending));
            reduced.push(match done {
                Some(Ok(done)) => {
                    timing.communication += done.finished - done.started;
                    timing.hidden += backward_end
                        .min(done.finished)
                        .saturating_duration_since(done.started);
                    Some((done, *members))
                }
                Some(Err(error)) => {
                    self.error.get_or_insert(error);
                    None
                }
                None => None,
            });
        }
        timing.waited = waiting.elapsed();
        let mut result = match self.error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        };
        let mut index = 0;
        module.visit_params_mut(&mut |_, param| {
            let slot = self.slots.get(index).copied().flatten();
            index += 1;
            let Some(slot) = slot.filter(|_| result.is_ok()) else {
                return;
            };
            let Some((done, members)) = &reduced[slot.bucket] else {
                return;
            };
            let flags = done.values.len() - members;
            if done.values[flags + slot.member] > 0.0 {
                let mean = &done.values[slot.offset..slot.offset + param.value().numel()];
                result = param.try_accumulate_grad_with(|grad, _| grad.try_copy_from_slice(mean));
            }
        });
        self.spare
            .extend(reduced.into_iter().flatten().map(|(done, _)| done.values));
        result.map(|()| timing)
    }

    /// Averages every gradient of `module` in place with `engine` (which `collective` offered),
    /// after the backward pass: first which parameters have a gradient on any rank (through
    /// `collective`, in host memory), then those parameters' gradients, in visiting order, in
    /// groups of the buckets' sizes. A parameter without a gradient here counts as zeros;
    /// one without a gradient on any rank keeps none and is not sent. While `engine`'s device
    /// records a CUDA graph, the ranks' last agreement stands, provided this rank has the
    /// gradients it had then.
    pub(crate) fn average_in_place<B: Backend, M: Module<B> + ?Sized>(
        &mut self,
        module: &mut M,
        collective: &(impl Collective + ?Sized),
        engine: &dyn InPlaceMean,
    ) -> Result<SyncTiming> {
        let started = Instant::now();
        self.flags.clear();
        module.visit_params(&mut |_, param| {
            self.flags
                .push(if param.grad().is_some() { 1.0 } else { 0.0 });
        });
        let (here, anywhere) = &mut self.agreed;
        if engine.capturing() {
            if self.flags != *here {
                return Err(crate::Error::Distributed {
                    op: "DataParallel::sync_gradients",
                    message: "a captured step must leave gradients in the parameters that \
                              the step before the capture did: the ranks agree on them \
                              through the host, which a capture cannot use"
                        .to_owned(),
                });
            }
            self.flags.clone_from(anywhere);
        } else {
            here.clone_from(&self.flags);
            collective.all_reduce_mean(&mut self.flags)?;
            anywhere.clone_from(&self.flags);
        }
        // Every rank sends every group, even after a local error, so none waits.
        let mut result = Ok(());
        let mut timing = SyncTiming::default();
        let (flags, first_len, len) = (&self.flags, self.first_len, self.len);
        let mut group: Vec<&mut dyn Any> = Vec::new();
        let mut values = 0;
        let mut index = 0;
        module.visit_params_mut(&mut |_, param| {
            let anywhere = flags[index] > 0.0;
            index += 1;
            if !anywhere {
                param.zero_grad();
                return;
            }
            if param.grad().is_none() {
                let zeroed = param
                    .try_accumulate_grad_with(|grad, _| grad.device.fill(&mut grad.storage, 0.0));
                if result.is_ok() {
                    result = zeroed;
                }
            }
            values += param.value().numel();
            group.push(param.grad_storage_mut());
            let capacity = if timing.buckets == 0 { first_len } else { len };
            if values >= capacity {
                let averaged = engine.all_reduce_mean_in_place(&mut group);
                if result.is_ok() {
                    result = averaged;
                }
                timing.buckets += 1;
                group.clear();
                values = 0;
            }
        });
        if !group.is_empty() {
            result = result.and(engine.all_reduce_mean_in_place(&mut group));
            timing.buckets += 1;
        }
        timing.waited = started.elapsed();
        result.map(|()| timing)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::{Cpu, Tensor};

    /// Three parameters of 2, 3 and 1 values.
    struct Three([Param; 3]);

    impl Module<Cpu> for Three {
        fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
            for (index, param) in self.0.iter().enumerate() {
                f(&format!("p{index}"), param);
            }
        }
        fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param)) {
            for (index, param) in self.0.iter_mut().enumerate() {
                f(&format!("p{index}"), param);
            }
        }
    }

    /// Rank 0 of two, on the CPU: the other rank's has-gradient flags and the gradients it
    /// sends are given, so every mean is (ours + theirs) / 2. Records the size of each group.
    struct TwoRanks {
        their_flags: Vec<f32>,
        their_grads: RefCell<Vec<Vec<f32>>>,
        groups: RefCell<Vec<usize>>,
        /// Whether a CUDA graph capture is pretended to run: the flags are not exchanged.
        capturing: std::cell::Cell<bool>,
    }

    fn mean_with(ours: &mut [f32], theirs: &[f32]) {
        assert_eq!(ours.len(), theirs.len(), "the ranks sent different lengths");
        for (ours, theirs) in ours.iter_mut().zip(theirs) {
            *ours = f32::midpoint(*ours, *theirs);
        }
    }

    impl Collective for TwoRanks {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce_mean(&self, values: &mut [f32]) -> Result<()> {
            mean_with(values, &self.their_flags);
            Ok(())
        }
        fn broadcast(&self, _: &mut [f32], _: usize) -> Result<()> {
            unreachable!("averaging broadcasts nothing")
        }
        fn broadcast_bytes(&self, _: &mut [u8], _: usize) -> Result<()> {
            unreachable!("averaging broadcasts nothing")
        }
        fn barrier(&self) -> Result<()> {
            unreachable!("averaging needs no barrier")
        }
    }

    impl InPlaceMean for TwoRanks {
        fn all_reduce_mean_in_place(&self, buffers: &mut [&mut dyn Any]) -> Result<()> {
            self.groups.borrow_mut().push(buffers.len());
            for buffer in buffers {
                let theirs = self.their_grads.borrow_mut().remove(0);
                mean_with(buffer.downcast_mut::<Vec<f32>>().unwrap(), &theirs);
            }
            Ok(())
        }
        fn broadcast_in_place(&self, _: &mut [&mut dyn Any], _: usize) -> Result<()> {
            unreachable!("averaging broadcasts nothing")
        }
        fn capturing(&self) -> bool {
            self.capturing.get()
        }
    }

    #[test]
    fn in_place_means_count_a_missing_gradient_as_zeros_and_send_none_nobody_has() {
        let param = |len| Param::new(Tensor::zeros([len], &Cpu));
        let mut module = Three([param(2), param(3), param(1)]);
        // p0: a gradient on both ranks; p1: only on the other, its buffer here stale; p2: none.
        module.0[0].accumulate_grad(&Tensor::from_vec(vec![1.0, 3.0], [2], &Cpu));
        module.0[1].accumulate_grad(&Tensor::full([3], 9.0, &Cpu));
        module.0[1].zero_grad();
        let ranks = TwoRanks {
            their_flags: vec![1.0, 1.0, 0.0],
            their_grads: RefCell::new(vec![vec![3.0, 5.0], vec![2.0, 4.0, 6.0]]),
            groups: RefCell::default(),
            capturing: std::cell::Cell::new(false),
        };
        let mut buckets = Buckets::default();
        // A first bucket of 2 values, then 4: p0 alone, then p1.
        buckets.set_sizes(8, 16);
        let timing = buckets
            .average_in_place(&mut module, &ranks, &ranks)
            .unwrap();
        assert_eq!(module.0[0].grad().unwrap().to_vec(), [2.0, 4.0]);
        assert_eq!(module.0[1].grad().unwrap().to_vec(), [1.0, 2.0, 3.0]);
        assert!(module.0[2].grad().is_none());
        assert_eq!(*ranks.groups.borrow(), [1, 1]);
        assert_eq!(timing.buckets, 2);
        assert!(ranks.their_grads.borrow().is_empty());

        // Captured, the same step reuses the agreement: the flags stay here, p1 is zeroed
        // and sent again, p2 is not.
        ranks.capturing.set(true);
        module.zero_grad();
        module.0[0].accumulate_grad(&Tensor::from_vec(vec![1.0, 3.0], [2], &Cpu));
        *ranks.their_grads.borrow_mut() = vec![vec![1.0, 1.0], vec![2.0, 2.0, 2.0]];
        buckets
            .average_in_place(&mut module, &ranks, &ranks)
            .unwrap();
        assert_eq!(module.0[0].grad().unwrap().to_vec(), [1.0, 2.0]);
        assert_eq!(module.0[1].grad().unwrap().to_vec(), [1.0, 1.0, 1.0]);
        assert!(module.0[2].grad().is_none());
        // A captured step whose gradients differ from the agreed step's is refused.
        module.0[2].accumulate_grad(&Tensor::ones([1], &Cpu));
        let error = buckets
            .average_in_place(&mut module, &ranks, &ranks)
            .unwrap_err();
        assert!(error.to_string().contains("captured step"), "{error}");
    }
}
