//! Seeded random number generation for initialisation and data.

/// The generator declnet seeds: xoshiro256++, whose stream does not change between `rand`
/// releases (unlike `StdRng`), so a seed gives the same numbers next year.
pub type SeededRng = rand::rngs::Xoshiro256PlusPlus;

/// A generator seeded with `seed`.
///
/// # Examples
/// ```
/// use declnet_runtime::{Cpu, Tensor, rng::seeded};
/// let a = Tensor::randn([3], &Cpu, &mut seeded(0));
/// let b = Tensor::randn([3], &Cpu, &mut seeded(0));
/// assert_eq!(a.to_vec(), b.to_vec());
/// ```
#[must_use]
pub fn seeded(seed: u64) -> SeededRng {
    rand::SeedableRng::seed_from_u64(seed)
}
