//! The CPU dropout kernel: each element's keep decision hashes its index, so the elements run
//! in parts on the thread pool and under the CPU's widest vectors.

use super::{DropoutKernel, DropoutMask};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;

/// The dropout of `x` into `out`, element `i` of them being element `first + i` of the tensor.
struct Dropout<'a> {
    mask: &'a DropoutMask,
    x: &'a [f32],
    out: &'a mut [f32],
    first: u64,
}

impl Divisible for Dropout<'_> {
    fn units(&self) -> usize {
        self.out.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let Dropout {
            mask,
            x,
            out,
            first,
        } = self;
        let ((x_left, x_right), (out_left, out_right)) = (x.split_at(mid), out.split_at_mut(mid));
        let part = |x, out, first| Dropout {
            mask,
            x,
            out,
            first,
        };
        (
            part(x_left, out_left, first),
            part(x_right, out_right, first + mid as u64),
        )
    }
}

impl Vectorizable for Dropout<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Dropout {
            mask,
            x,
            out,
            first,
        } = self;
        for (index, (out, &x)) in (first..).zip(out.iter_mut().zip(x)) {
            *out = if mask.keeps(index) {
                x * mask.scale
            } else {
                0.0
            };
        }
    }
}

impl DropoutKernel for Cpu {
    fn dropout(&self, mask: &DropoutMask, x: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        vectorized_in_parts(Dropout {
            mask,
            x,
            out,
            first: 0,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large enough to run in parts: every element as the mask decides for its index.
    #[test]
    fn dropout_in_parts_follows_each_index() {
        let mask = DropoutMask::new(0.3, 7).unwrap();
        let x: Vec<f32> = (0..1 << 19).map(|i| (i % 97) as f32 - 48.0).collect();
        let mut out = vec![f32::NAN; x.len()];
        Cpu.dropout(&mask, &x, &mut out).unwrap();
        for (index, (&out, &x)) in out.iter().zip(&x).enumerate() {
            let expected = if mask.keeps(index as u64) {
                x * mask.scale
            } else {
                0.0
            };
            assert_eq!(out.to_bits(), expected.to_bits(), "element {index}");
        }
    }
}
