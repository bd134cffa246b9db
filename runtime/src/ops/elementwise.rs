//! The two tables elementwise ops are declared in: `unary_ops!` (`unary/mod.rs`) and
//! `binary_ops!` (`binary/mod.rs`). One row per op gives its formulas, forward and backward,
//! once in Rust and once in CUDA C; the macros turn the table into the op enum, its `Tensor`
//! methods, the CPU kernels' closures, the op codes and the CUDA `switch` NVRTC compiles, so no
//! op is written or numbered twice by hand.

use std::fmt::Write;

/// Which value the backward rule of a unary op reads besides the output's gradient: the op's
/// input, or its output (`ReLU`, sigmoid and tanh need only their output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The op's input `x`.
    Input,
    /// The op's output `y`.
    Output,
}

/// The operand of a binary op a partial derivative is taken with respect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// The left operand, `a` in `f(a, b)`.
    Lhs,
    /// The right operand, `b` in `f(a, b)`.
    Rhs,
}

/// A unary op's scalar function `x -> y`, one type per op. Its `call` is always inlined, so
/// a loop over it compiled for AVX2 is vectorised with AVX2 (a closure need not be inlined,
/// and a loop calling it stays as narrow as the baseline build).
pub(crate) trait UnaryFn: Copy + Send {
    fn call(self, x: f32) -> f32;
}

/// As [`UnaryFn`], for functions of two values: `f(a, b)` of a binary op, or
/// `f(grad, saved)` of a unary op's backward rule.
pub(crate) trait BinaryFn: Copy + Send {
    fn call(self, a: f32, b: f32) -> f32;
}

/// A unary op's function and its derivative, `x -> (f(x), f'(x))`, computed together (see
/// [`UnaryFn`]).
pub(crate) trait UnaryWithDerivativeFn: Copy + Send {
    fn call(self, x: f32) -> (f32, f32);
}

/// Runs a CPU kernel with a unary op's scalar function: each op calls [`Self::visit`] with its
/// own [`UnaryFn`], so the kernel's loop is compiled (and vectorised) once per op instead of
/// calling through a pointer.
pub(crate) trait UnaryVisitor {
    type Output;
    fn visit(self, f: impl UnaryFn) -> Self::Output;
}

/// As [`UnaryVisitor`], for functions of two values.
pub(crate) trait BinaryVisitor {
    type Output;
    fn visit(self, f: impl BinaryFn) -> Self::Output;
}

/// As [`UnaryVisitor`], for a function with its derivative.
pub(crate) trait UnaryWithDerivativeVisitor {
    type Output;
    fn visit(self, f: impl UnaryWithDerivativeFn) -> Self::Output;
}

/// The value a unary op's backward rule reads, `input` or `output`, as [`Saved`] names it.
macro_rules! saved_value {
    (Input, $input:ident, $output:ident) => {
        $input
    };
    (Output, $input:ident, $output:ident) => {
        $output
    };
}

/// Calls `$visitor.visit` with a [`UnaryFn`] or [`BinaryFn`] (`$trait`) whose body is `$body`
/// over the arguments `$arg`, with the op's parameters `$param` in scope.
macro_rules! visit_fn {
    ($visitor:ident, $trait:ident, [$($param:ident),*], |$($arg:ident),+| $body:expr) => {{
        #[derive(Clone, Copy)]
        struct Function { $($param: f32),* }
        impl crate::ops::elementwise::$trait for Function {
            #[inline(always)]
            #[allow(unused_variables)]
            fn call(self, $($arg: f32),+) -> f32 {
                let Function { $($param),* } = self;
                $body
            }
        }
        $visitor.visit(Function { $($param),* })
    }};
}

/// One row of a table as CUDA C: the op code, the scalar parameters' names, and each
/// function's argument names and expression (a unary op has two: forward and backward).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct CudaRow {
    pub code: i32,
    pub params: &'static [&'static str],
    pub functions: Vec<(&'static [&'static str], &'static str)>,
}

/// A CUDA `__device__` function `name(int op, float s0, float s1, float arg0, ..)` that
/// switches over `rows`: case `code` computes that row's `index`th function, with the row's
/// parameters bound to `s0`, `s1` and its argument names to `arg0`, `arg1`; an unknown op code
/// yields NaN.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn cuda_switch(name: &str, rows: &[CudaRow], index: usize) -> String {
    let args = rows.first().map_or(0, |row| row.functions[index].0.len());
    let mut source = format!("__device__ float {name}(int op, float s0, float s1");
    for arg in 0..args {
        let _ = write!(source, ", float arg{arg}");
    }
    source.push_str(") {\n    switch (op) {\n");
    for row in rows {
        let (names, expr) = row.functions[index];
        let _ = write!(source, "    case {}: {{", row.code);
        for (param, slot) in row.params.iter().zip(["s0", "s1"]) {
            let _ = write!(source, " const float {param} = {slot};");
        }
        for (arg, local) in names.iter().enumerate() {
            let _ = write!(source, " const float {local} = arg{arg};");
        }
        let _ = writeln!(source, " return {expr}; }}");
    }
    source
        .push_str("    }\n    return __int_as_float(0x7fc00000);  // NaN: an unknown op code\n}\n");
    source
}

/// `f32` for each scalar parameter of a table row.
macro_rules! param_type {
    ($param:ident) => {
        f32
    };
}

/// `_` for each scalar parameter of a table row, in a pattern.
macro_rules! param_wildcard {
    ($param:ident) => {
        _
    };
}

/// A row's scalar parameters as the kernels' two scalar slots.
macro_rules! param_slots {
    () => {
        [0.0, 0.0]
    };
    ($s0:ident) => {
        [$s0, 0.0]
    };
    ($s0:ident, $s1:ident) => {
        [$s0, $s1]
    };
}

/// Declares the unary ops: per row the variant (with its `f32` parameters and an example value
/// of each, PyTorch's default where it has one), the `Tensor` method, the forward formula
/// (Rust, then CUDA C), and the backward formula `grad * f'(..)` from the op's input or
/// output.
macro_rules! unary_ops {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $(($($param:ident = $example:literal),+))? => fn $method:ident {
            forward: |$x:ident| $forward:expr => $forward_cuda:literal,
            backward from $saved:ident: |$g:ident, $v:ident| $backward:expr => $backward_cuda:literal $(,)?
        }
    )*) => {
        /// An elementwise map `x -> f(x)`, the unit of work of [`UnaryKernel`].
        #[derive(Debug, Clone, Copy, PartialEq)]
        #[non_exhaustive]
        pub enum UnaryOp {
            $(
                $(#[doc = $doc])*
                $name $(($(crate::ops::elementwise::param_type!($param)),+))?,
            )*
        }

        impl UnaryOp {
            /// Every op once, with example parameters (PyTorch's defaults where there are
            /// any): what tests that cover the whole table iterate.
            pub const EXAMPLES: &[UnaryOp] = &[$(UnaryOp::$name $(($($example),+))?),*];

            /// Which value the backward rule reads besides the output's gradient.
            #[must_use]
            pub const fn saves(self) -> crate::ops::elementwise::Saved {
                match self {
                    $(
                        UnaryOp::$name $(($(crate::ops::elementwise::param_wildcard!($param)),+))?
                            => crate::ops::elementwise::Saved::$saved,
                    )*
                }
            }

            /// The op's code in the CUDA source and its parameters in the kernels' two
            /// scalar slots.
            #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
            pub(crate) fn encode(self) -> (i32, [f32; 2]) {
                enum Code { $($name),* }
                match self {
                    $(
                        UnaryOp::$name $(($($param),+))? => (
                            Code::$name as i32,
                            crate::ops::elementwise::param_slots!($($($param),+)?),
                        ),
                    )*
                }
            }

            /// Calls `visitor` with the forward function `x -> y`.
            pub(crate) fn forward<V: crate::ops::elementwise::UnaryVisitor>(
                self,
                visitor: V,
            ) -> V::Output {
                match self {
                    $(
                        UnaryOp::$name $(($($param),+))? => crate::ops::elementwise::visit_fn!(
                            visitor, UnaryFn, [$($($param),+)?], |$x| $forward
                        ),
                    )*
                }
            }

            /// Calls `visitor` with the backward function `(grad, saved) -> grad * f'`, where
            /// `saved` is the value [`Self::saves`] names.
            #[allow(unused_variables)]
            pub(crate) fn backward<V: crate::ops::elementwise::BinaryVisitor>(
                self,
                visitor: V,
            ) -> V::Output {
                match self {
                    $(
                        UnaryOp::$name $(($($param),+))? => crate::ops::elementwise::visit_fn!(
                            visitor, BinaryFn, [$($($param),+)?], |$g, $v| $backward
                        ),
                    )*
                }
            }

            /// Calls `visitor` with `x -> (f(x), f'(x))`, the derivative the backward rule's
            /// value at a gradient of 1.
            #[allow(unused_variables)]
            pub(crate) fn with_derivative<V: crate::ops::elementwise::UnaryWithDerivativeVisitor>(
                self,
                visitor: V,
            ) -> V::Output {
                match self {
                    $(
                        UnaryOp::$name $(($($param),+))? => {
                            #[derive(Clone, Copy)]
                            struct Function { $($($param: f32),+)? }
                            impl crate::ops::elementwise::UnaryWithDerivativeFn for Function {
                                #[inline(always)]
                                fn call(self, input: f32) -> (f32, f32) {
                                    let Function { $($($param),+)? } = self;
                                    let output = {
                                        let $x = input;
                                        $forward
                                    };
                                    let $g = 1.0f32;
                                    let $v = crate::ops::elementwise::saved_value!(
                                        $saved, input, output
                                    );
                                    (output, $backward)
                                }
                            }
                            visitor.visit(Function { $($($param),+)? })
                        }
                    )*
                }
            }

            /// The table as CUDA C, forward and backward functions per row.
            #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
            pub(crate) fn cuda_rows() -> Vec<crate::ops::elementwise::CudaRow> {
                let mut code = 0;
                let mut rows = Vec::new();
                $(
                    rows.push(crate::ops::elementwise::CudaRow {
                        code,
                        params: &[$($(stringify!($param)),+)?],
                        functions: vec![
                            (&[stringify!($x)], $forward_cuda),
                            (&[stringify!($g), stringify!($v)], $backward_cuda),
                        ],
                    });
                    code += 1;
                )*
                rows
            }
        }

        impl<B: Backend> Tensor<B> {
            $(
                $(#[doc = $doc])*
                #[must_use]
                #[track_caller]
                pub fn $method(&self $($(, $param: f32)+)?) -> Self {
                    self.map(UnaryOp::$name $(($($param),+))?)
                }
            )*
        }
    };
}

/// Declares the binary ops: per row the variant (with at most one `f32` parameter and an
/// example value), the forward formula `f(a, b)` and its partial derivatives with respect to
/// `a` and `b` (Rust, then CUDA C). Operands broadcast; the backward pass multiplies a partial
/// by the output's gradient and sums it back to the operand's shape.
macro_rules! binary_ops {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $(($param:ident = $example:literal))? {
            forward: |$a:ident, $b:ident| $forward:expr => $forward_cuda:literal,
            d_lhs: $d_lhs:expr => $d_lhs_cuda:literal,
            d_rhs: $d_rhs:expr => $d_rhs_cuda:literal $(,)?
        }
    )*) => {
        /// An elementwise map `(a, b) -> f(a, b)`, the unit of work of [`BinaryKernel`].
        #[derive(Debug, Clone, Copy, PartialEq)]
        #[non_exhaustive]
        pub enum BinaryOp {
            $(
                $(#[doc = $doc])*
                $name $((crate::ops::elementwise::param_type!($param)))?,
            )*
        }

        impl BinaryOp {
            /// Every op once, with an example parameter: what tests that cover the whole
            /// table iterate.
            pub const EXAMPLES: &[BinaryOp] = &[$(BinaryOp::$name $(($example))?),*];

            /// The op's code in the CUDA source for its function `part` (0: `f`, 1: `df/da`,
            /// 2: `df/db`) and its parameter.
            #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
            pub(crate) fn encode(self, part: i32) -> (i32, f32) {
                enum Code { $($name),* }
                match self {
                    $(
                        BinaryOp::$name $(($param))? => (
                            Code::$name as i32 * 3 + part,
                            crate::ops::elementwise::param_slots!($($param)?)[0],
                        ),
                    )*
                }
            }

            /// Calls `visitor` with `f(a, b)`.
            pub(crate) fn forward<V: crate::ops::elementwise::BinaryVisitor>(
                self,
                visitor: V,
            ) -> V::Output {
                match self {
                    $(
                        BinaryOp::$name $(($param))? => crate::ops::elementwise::visit_fn!(
                            visitor, BinaryFn, [$($param)?], |$a, $b| $forward
                        ),
                    )*
                }
            }

            /// Calls `visitor` with `df/da(a, b)` or `df/db(a, b)`.
            #[allow(unused_variables)]
            pub(crate) fn partial<V: crate::ops::elementwise::BinaryVisitor>(
                self,
                wrt: crate::ops::elementwise::Operand,
                visitor: V,
            ) -> V::Output {
                use crate::ops::elementwise::Operand;
                match (self, wrt) {
                    $(
                        (BinaryOp::$name $(($param))?, Operand::Lhs) => crate::ops::elementwise::visit_fn!(
                            visitor, BinaryFn, [$($param)?], |$a, $b| $d_lhs
                        ),
                        (BinaryOp::$name $(($param))?, Operand::Rhs) => crate::ops::elementwise::visit_fn!(
                            visitor, BinaryFn, [$($param)?], |$a, $b| $d_rhs
                        ),
                    )*
                }
            }

            /// The table as CUDA C: `f`, `df/da` and `df/db` of each op as three rows, with
            /// the codes [`Self::encode`] gives them.
            #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
            pub(crate) fn cuda_rows() -> Vec<crate::ops::elementwise::CudaRow> {
                let mut code = 0;
                let mut rows = Vec::new();
                $(
                    for (part, expr) in (0..).zip([$forward_cuda, $d_lhs_cuda, $d_rhs_cuda]) {
                        rows.push(crate::ops::elementwise::CudaRow {
                            code: code * 3 + part,
                            params: &[$(stringify!($param))?],
                            functions: vec![(&[stringify!($a), stringify!($b)], expr)],
                        });
                    }
                    code += 1;
                )*
                rows
            }
        }
    };
}

pub(crate) use {
    binary_ops, param_slots, param_type, param_wildcard, saved_value, unary_ops, visit_fn,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_switch_binds_parameters_and_arguments() {
        let rows = [
            CudaRow {
                code: 0,
                params: &[],
                functions: vec![(&["x"], "-x"), (&["g", "y"], "-g")],
            },
            CudaRow {
                code: 1,
                params: &["slope"],
                functions: vec![(&["x"], "x * slope"), (&["g", "x"], "g * slope")],
            },
        ];
        let source = cuda_switch("unary_backward", &rows, 1);
        assert!(source.starts_with(
            "__device__ float unary_backward(int op, float s0, float s1, float arg0, float arg1) {"
        ));
        assert!(
            source.contains("case 0: { const float g = arg0; const float y = arg1; return -g; }")
        );
        assert!(source.contains(
            "case 1: { const float slope = s0; const float g = arg0; const float x = arg1; \
             return g * slope; }"
        ));
    }
}
