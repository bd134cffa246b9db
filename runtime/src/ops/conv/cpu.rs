//! CPU unfolding: `im2col` writes each column entry once; `col2im` gathers per input element in
//! kernel-tap order, as `conv.cu` does.

use super::{ConvGeometry, ConvKernel};
use crate::backend::Cpu;
use crate::error::Result;

/// The output position along one dim whose tap `tap` reads input position `at`, if any.
pub(super) fn source(g: &ConvGeometry, at: usize, tap: usize, outputs: usize) -> Option<usize> {
    let shifted = (at + g.padding).checked_sub(tap * g.dilation)?;
    (shifted % g.stride == 0)
        .then_some(shifted / g.stride)
        .filter(|&o| o < outputs)
}

impl ConvKernel for Cpu {
    fn im2col(&self, g: &ConvGeometry, x: &Vec<f32>, cols: &mut Vec<f32>) -> Result<()> {
        let (plane, positions, k) = (g.height * g.width, g.positions(), g.kernel);
        for n in 0..g.batch {
            for c in 0..g.channels {
                let input = &x[(n * g.channels + c) * plane..][..plane];
                for ky in 0..k {
                    for kx in 0..k {
                        let row = (c * k + ky) * k + kx;
                        let out = &mut cols[(n * g.rows() + row) * positions..][..positions];
                        for oy in 0..g.out_height {
                            let y = (oy * g.stride + ky * g.dilation).checked_sub(g.padding);
                            for ox in 0..g.out_width {
                                let x = (ox * g.stride + kx * g.dilation).checked_sub(g.padding);
                                out[oy * g.out_width + ox] = match (y, x) {
                                    (Some(y), Some(x)) if y < g.height && x < g.width => {
                                        input[y * g.width + x]
                                    }
                                    _ => 0.0,
                                };
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn col2im(&self, g: &ConvGeometry, cols: &Vec<f32>, x: &mut Vec<f32>) -> Result<()> {
        let (plane, positions, k) = (g.height * g.width, g.positions(), g.kernel);
        for n in 0..g.batch {
            for c in 0..g.channels {
                let out = &mut x[(n * g.channels + c) * plane..][..plane];
                for y in 0..g.height {
                    for xx in 0..g.width {
                        let mut sum = 0.0;
                        for ky in 0..k {
                            let Some(oy) = source(g, y, ky, g.out_height) else {
                                continue;
                            };
                            for kx in 0..k {
                                let Some(ox) = source(g, xx, kx, g.out_width) else {
                                    continue;
                                };
                                let row = (c * k + ky) * k + kx;
                                sum +=
                                    cols[(n * g.rows() + row) * positions + oy * g.out_width + ox];
                            }
                        }
                        out[y * g.width + xx] = sum;
                    }
                }
            }
        }
        Ok(())
    }
}
