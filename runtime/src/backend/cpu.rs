//! The [`Cpu`] backend's memory: `Vec<f32>` buffers. Its kernels live beside each op family's
//! other kernels, in `ops/<family>/cpu.rs`.

use super::{Memory, buffer_pool, check_fits, expect_len, warm_pool};
use crate::error::{Error, Result};

/// The host CPU. Stateless; GEMMs of the tutorial's size run on one thread, larger ones on
/// rayon's pool. Dropped tensors' large buffers are reused for new tensors of their length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cpu;

impl Memory for Cpu {
    type Storage = Vec<f32>;

    fn name(&self) -> String {
        "cpu".to_owned()
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(buffer_pool::lend(match buffer_pool::take(len) {
            Some(mut buffer) => {
                buffer.fill(0.0);
                buffer
            }
            None => vec![0.0; len],
        }))
    }

    fn empty(&self, len: usize) -> Result<Vec<f32>> {
        let buffer = buffer_pool::take(len).unwrap_or_else(|| vec![0.0; len]);
        Ok(buffer_pool::lend(buffer))
    }

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(buffer_pool::lend(match buffer_pool::take(data.len()) {
            Some(mut buffer) => {
                buffer.copy_from_slice(data);
                buffer
            }
            None => data.to_vec(),
        }))
    }

    fn upload_vec(&self, data: Vec<f32>) -> Result<Vec<f32>> {
        Ok(buffer_pool::lend(data))
    }

    fn upload_into_at(&self, data: &[f32], dst: &mut Vec<f32>, offset: usize) -> Result<()> {
        let end = check_fits("upload_into_at", data.len(), offset, dst.len())?;
        dst[offset..end].copy_from_slice(data);
        Ok(())
    }

    fn download(&self, storage: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(storage.clone())
    }

    fn download_into(&self, storage: &Vec<f32>, dst: &mut [f32]) -> Result<()> {
        expect_len("download_into", "destination", dst.len(), storage.len())?;
        dst.copy_from_slice(storage);
        Ok(())
    }

    fn copy(&self, src: &Vec<f32>) -> Result<Vec<f32>> {
        self.upload(src)
    }

    fn copy_into(&self, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        expect_len("copy_into", "destination", dst.len(), src.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn fill(&self, dst: &mut Vec<f32>, value: f32) -> Result<()> {
        dst.fill(value);
        Ok(())
    }

    fn recycle(&self, storage: &mut Vec<f32>) {
        buffer_pool::give(std::mem::take(storage));
    }
}

/// Sets how many threads the CPU kernels use (large products, batches of small ones, long
/// optimizer updates), like `torch.set_num_threads`. Without a call, `RAYON_NUM_THREADS` or
/// else the number of cores decides. Call it before the first parallel kernel: the thread
/// pool (rayon's global one, which faer shares) is built once.
///
/// # Errors
/// [`Error::Usage`] for 0 threads, or when the pool already exists.
pub fn set_num_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Err(Error::Usage(
            "set_num_threads: needs at least 1 thread".to_owned(),
        ));
    }
    build_pool(threads).map_err(|_| {
        Error::Usage(format!(
            "set_num_threads({threads}): the thread pool already exists (threads: {}); \
             set it before the first parallel kernel",
            rayon::current_num_threads()
        ))
    })
}

/// How many threads the CPU kernels use. The first call builds the pool, unless the program
/// built rayon's global pool itself.
#[must_use]
pub fn num_threads() -> usize {
    static DEFAULT_POOL: std::sync::Once = std::sync::Once::new();
    DEFAULT_POOL.call_once(|| {
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|threads| threads.parse().ok())
            .filter(|&threads| threads > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1);
        // An error means the pool exists already: the kernels use it as it is.
        let _ = build_pool(threads);
    });
    rayon::current_num_threads()
}

/// Builds rayon's global pool with `threads` threads. Built on the program's main thread,
/// that thread is one of them: a kernel it starts runs its first part there while another
/// thread takes the second, rather than handing both to the pool and sleeping until they
/// are done (the char GPT's training step on two cores: 41 ms a step against 45), and what
/// it hands to the pool keeps the pool's threads awake (see [`warm_pool`]). With one thread
/// the pool keeps its own, so that other threads' kernels never wait for `main`.
fn build_pool(threads: usize) -> std::result::Result<(), rayon::ThreadPoolBuildError> {
    let builder = rayon::ThreadPoolBuilder::new().num_threads(threads);
    let on_main = std::thread::current().name() == Some("main");
    if on_main && threads > 1 {
        builder.use_current_thread().build_global()?;
        warm_pool::set_caller();
        Ok(())
    } else {
        builder.build_global()
    }
}

/// A kernel's loops, to run compiled for the widest SIMD instructions this CPU has.
pub(crate) trait Vectorizable {
    type Output;
    /// The loops. Implementations mark it `#[inline(always)]`, and every function it calls
    /// must be inlined too, so that all of it is compiled for those instructions.
    fn run(self) -> Self::Output;
}

/// Runs `kernel` compiled for AVX-512, or AVX2 and FMA, where this CPU has them (detected
/// once), so that LLVM vectorises its scalar code 16 or 8 floats wide; elsewhere as the
/// baseline build compiles it.
pub(crate) fn vectorized<K: Vectorizable>(kernel: K) -> K::Output {
    static ARCH: std::sync::LazyLock<pulp::Arch> = std::sync::LazyLock::new(pulp::Arch::new);
    ARCH.dispatch(Dispatch(kernel))
}

/// A kernel over elements, or rows of elements, that do not depend on each other: it can run
/// in parts.
pub(crate) trait Divisible: Vectorizable<Output: Joined> + Send + Sized {
    /// How many units (elements or rows) it covers.
    fn units(&self) -> usize;
    /// Kernels over fewer elements run in one part: handing a part to another thread costs
    /// about as much as a simple map over this many. Kernels with much more work per element
    /// return less. (2^16: the char GPT's `[16, 64, 128]` activations run in two parts, 1.6
    /// ms less a step than at 2^17.)
    fn part_min_elements(&self) -> usize {
        1 << 16
    }

    /// Elements per unit.
    fn unit_len(&self) -> usize {
        1
    }
    /// The kernel over units `..mid`, and over the rest.
    fn split_at(self, mid: usize) -> (Self, Self);
}

/// What the parts of a kernel return, put together: nothing, or the first error.
pub(crate) trait Joined: Send {
    fn join(self, other: Self) -> Self;
}

impl Joined for () {
    fn join(self, (): ()) {}
}

impl Joined for Result<()> {
    fn join(self, other: Self) -> Self {
        self.and(other)
    }
}

/// Runs `kernel` as [`vectorized`] does, in parts on the rayon pool when it is large: up to
/// two per thread, so that with one core busy elsewhere the other thread takes over the parts
/// left waiting.
pub(crate) fn vectorized_in_parts<K: Divisible>(kernel: K) -> K::Output {
    let threads = num_threads();
    let elements = kernel.units() * kernel.unit_len();
    let parts = if threads < 2 {
        1
    } else {
        (elements / kernel.part_min_elements()).min(2 * threads)
    };
    in_parts(kernel, parts)
}

fn in_parts<K: Divisible>(kernel: K, parts: usize) -> K::Output {
    if parts < 2 || kernel.units() < 2 {
        return vectorized(kernel);
    }
    let first = parts / 2;
    let mid = kernel.units() * first / parts;
    let (left, right) = kernel.split_at(mid);
    let (left, right) = join(|| in_parts(left, first), || in_parts(right, parts - first));
    left.join(right)
}

/// `rayon::join`, keeping the pool's threads looking for work (see [`warm_pool`]), or `a`
/// then `b` on this thread while another program holds the pool's cores
/// ([`warm_pool::hand_off`]): how the CPU kernels hand a part to another thread.
pub(crate) fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    let _kernel = warm_pool::Kernel::start();
    if !warm_pool::hand_off() {
        return (a(), b());
    }
    rayon::join(a, || {
        let done = b();
        warm_pool::beat();
        done
    })
}

/// pulp's entry point for a [`Vectorizable`].
struct Dispatch<K>(K);

impl<K: Vectorizable> pulp::WithSimd for Dispatch<K> {
    type Output = K::Output;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> K::Output {
        self.0.run()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_that_do_not_fit_are_errors_not_panics() {
        let mut dst = vec![0.0; 2];
        let error = Cpu.copy_into(&vec![1.0; 3], &mut dst).unwrap_err();
        assert_eq!(
            error.to_string(),
            "copy_into: destination holds 2 elements, expected 3"
        );
        assert!(Cpu.copy_into(&vec![1.0], &mut dst).is_err());
        assert_eq!(dst, [0.0, 0.0], "nothing written");
        Cpu.upload_into_at(&[1.0, 2.0], &mut dst, 0).unwrap();
        assert_eq!(dst, [1.0, 2.0]);
        let error = Cpu.upload_into_at(&[3.0; 2], &mut dst, 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "upload_into_at: 2 elements from 1 do not fit a destination of 2"
        );
        assert!(Cpu.upload_into_at(&[3.0], &mut dst, usize::MAX).is_err());
        Cpu.upload_into_at(&[3.0], &mut dst, 1).unwrap();
        assert_eq!(dst, [1.0, 3.0]);
    }
}
