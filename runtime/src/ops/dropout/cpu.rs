//! The CPU dropout kernel.

use super::{DropoutKernel, DropoutMask};
use crate::backend::Cpu;
use crate::error::Result;

impl DropoutKernel for Cpu {
    fn dropout(&self, mask: &DropoutMask, x: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        for (index, (out, &x)) in out.iter_mut().zip(x).enumerate() {
            *out = if mask.keeps(index as u64) {
                x * mask.scale
            } else {
                0.0
            };
        }
        Ok(())
    }
}
