//! Tensor operations, one folder per op family (see `README.md` beside this file).

pub mod binary;
pub mod loss;
pub mod matmul;
pub mod optim;
pub mod reduce;
pub mod softmax;
pub mod unary;
