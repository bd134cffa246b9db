//! The [`Cpu`] backend: `Vec<f32>` storage, GEMM on faer, plain loops for the rest.

use super::{Backend, check_fits, expect_len};
use crate::error::Result;
use crate::ops::binary::{self, BinaryOp, Broadcast};
use crate::ops::loss::{self, ClassLoss, PointwiseLoss};
use crate::ops::matmul::{self, Gemm};
use crate::ops::optim::{self, OptimStep};
use crate::ops::reduce;
use crate::ops::softmax::{self, SoftmaxAxis, SoftmaxOp};
use crate::ops::unary::{self, UnaryOp};

/// The host CPU. Stateless; GEMMs of the tutorial's size run on one thread, larger ones on
/// rayon's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cpu;

impl Backend for Cpu {
    type Storage = Vec<f32>;

    fn name(&self) -> String {
        "cpu".to_owned()
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }

    fn upload_vec(&self, data: Vec<f32>) -> Result<Vec<f32>> {
        Ok(data)
    }

    fn upload_into_at(&self, data: &[f32], dst: &mut Vec<f32>, offset: usize) -> Result<()> {
        let end = check_fits("upload_into_at", data.len(), offset, dst.len())?;
        dst[offset..end].copy_from_slice(data);
        Ok(())
    }

    fn download(&self, storage: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(storage.clone())
    }

    fn copy(&self, src: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(src.clone())
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

    fn gemm(&self, gemm: &Gemm, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>) -> Result<()> {
        matmul::cpu::gemm(gemm, a, b, c);
        Ok(())
    }

    fn transpose(
        &self,
        src: &Vec<f32>,
        rows: usize,
        cols: usize,
        dst: &mut Vec<f32>,
    ) -> Result<()> {
        matmul::cpu::transpose(src, rows, cols, dst);
        Ok(())
    }

    fn unary(&self, op: UnaryOp, x: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        unary::cpu::unary(op, x, out);
        Ok(())
    }

    fn unary_assign(&self, op: UnaryOp, x: &mut Vec<f32>) -> Result<()> {
        unary::cpu::unary_assign(op, x);
        Ok(())
    }

    fn binary(
        &self,
        op: BinaryOp,
        lhs: &Vec<f32>,
        rhs: &Vec<f32>,
        layout: &Broadcast,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        binary::cpu::binary(op, lhs, rhs, layout, out);
        Ok(())
    }

    fn binary_assign(
        &self,
        op: BinaryOp,
        lhs: &mut Vec<f32>,
        rhs: &Vec<f32>,
        layout: &Broadcast,
    ) -> Result<()> {
        binary::cpu::binary_assign(op, lhs, rhs, layout);
        Ok(())
    }

    fn sum_axis(
        &self,
        x: &Vec<f32>,
        outer: usize,
        len: usize,
        inner: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        reduce::cpu::sum_axis(x, outer, len, inner, out);
        Ok(())
    }

    fn softmax(
        &self,
        op: SoftmaxOp,
        x: &Vec<f32>,
        axis: &SoftmaxAxis,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        softmax::cpu::softmax(op, x, axis, out);
        Ok(())
    }

    fn softmax_backward(
        &self,
        op: SoftmaxOp,
        y: &Vec<f32>,
        grad: &Vec<f32>,
        axis: &SoftmaxAxis,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        softmax::cpu::softmax_backward(op, y, grad, axis, out);
        Ok(())
    }

    fn pointwise_loss(
        &self,
        op: PointwiseLoss,
        x: &Vec<f32>,
        t: &Vec<f32>,
        values: &mut Vec<f32>,
        grad: &mut Vec<f32>,
    ) -> Result<()> {
        loss::cpu::pointwise_loss(op, x, t, values, grad);
        Ok(())
    }

    fn class_loss(
        &self,
        op: ClassLoss,
        x: &Vec<f32>,
        labels: &Vec<f32>,
        classes: usize,
        values: &mut Vec<f32>,
        grad: &mut Vec<f32>,
    ) -> Result<()> {
        loss::cpu::class_loss(op, x, labels, classes, values, grad);
        Ok(())
    }

    fn optim_step(
        &self,
        step: &OptimStep,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        state: &mut [Vec<f32>],
        scalars: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        optim::cpu::optim_step(step, param, grad, state, scalars.map(Vec::as_mut_slice))
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
