//! Matrix products: `mm`, `addmm_`, and `t`, a transposed view that the product reads in place.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{Backend, Memory};
use crate::error::{Error, Result, or_panic};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// One GEMM, `c = alpha * op(a) * op(b) + beta * c`, on row-major buffers.
///
/// `op(a)` is `m x k`: `a` is stored `[m, k]`, or `[k, m]` when `trans_a`. Likewise `op(b)` is
/// `k x n`, stored `[k, n]` or `[n, k]`. `c` is `[m, n]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    /// Rows of `op(a)` and `c`.
    pub m: usize,
    /// Columns of `op(b)` and `c`.
    pub n: usize,
    /// Columns of `op(a)`, rows of `op(b)`.
    pub k: usize,
    /// Read `a` transposed.
    pub trans_a: bool,
    /// Read `b` transposed.
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the old `c`; 0 means `c` is not read.
    pub beta: f32,
}

impl Gemm {
    /// Floating-point operations of the product (`2mnk`).
    #[must_use]
    pub fn flops(&self) -> usize {
        2 * self.m * self.n * self.k
    }

    /// The `[rows, cols]` `a`, `b` and `c` are stored as.
    pub(crate) fn stored(&self) -> [(usize, usize); 3] {
        let &Self { m, n, k, .. } = self;
        let a = if self.trans_a { (k, m) } else { (m, k) };
        let b = if self.trans_b { (n, k) } else { (k, n) };
        [a, b, (m, n)]
    }
}

/// A 2-D operand of a matrix product: a tensor, read as it is or transposed, never copied.
///
/// `x.t()` makes one; `&Tensor` converts into one; `x.try_rows()` reads a tensor of any rank
/// as the matrix of its last dim's rows. Its `shape` is the shape the product sees.
pub struct MatView<'a, B: Backend> {
    tensor: &'a Tensor<B>,
    transposed: bool,
    /// Whether the tensor is read as `[product of the leading dims, last dim]`.
    rows_of_last: bool,
}

impl<B: Backend> std::fmt::Debug for MatView<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatView")
            .field("shape", &self.shape())
            .field("transposed", &self.transposed)
            .field("rows_of_last", &self.rows_of_last)
            .finish()
    }
}

// Written out: a derive would demand `B: Copy`, which a device holding handles is not.
#[allow(clippy::expl_impl_clone_on_copy)]
impl<B: Backend> Clone for MatView<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for MatView<'_, B> {}

impl<'a, B: Backend> From<&'a Tensor<B>> for MatView<'a, B> {
    fn from(tensor: &'a Tensor<B>) -> Self {
        Self {
            tensor,
            transposed: false,
            rows_of_last: false,
        }
    }
}

impl<'a, B: Backend> MatView<'a, B> {
    /// The shape the product sees: the tensor's own (or its rows), or its transpose.
    #[must_use]
    pub fn shape(&self) -> Shape {
        match self.matrix() {
            Some([rows, cols]) if self.transposed => Shape::from([cols, rows]),
            Some(dims) => Shape::from(dims),
            None => self.tensor.shape().clone(),
        }
    }

    /// The tensor's dims as a matrix, untransposed, if it is one.
    fn matrix(&self) -> Option<[usize; 2]> {
        match (self.tensor.dims(), self.rows_of_last) {
            ([rows, cols], _) => Some([*rows, *cols]),
            ([leading @ .., last], true) => Some([leading.iter().product(), *last]),
            _ => None,
        }
    }

    /// The transpose of this view (no copy).
    #[must_use]
    pub fn t(self) -> Self {
        Self {
            transposed: !self.transposed,
            ..self
        }
    }

    /// The matrix product of this view with `rhs`, like `torch.mm`.
    #[track_caller]
    #[must_use]
    pub fn mm(self, rhs: impl Into<MatView<'a, B>>) -> Tensor<B> {
        or_panic(self.try_mm(rhs))
    }

    /// The matrix product of this view with `rhs`.
    ///
    /// # Errors
    /// [`Error::Rank`] for an operand that is not 2-D, [`Error::MatmulInnerDims`] when the
    /// inner dims differ.
    pub fn try_mm(self, rhs: impl Into<MatView<'a, B>>) -> Result<Tensor<B>> {
        let rhs = rhs.into();
        let (m, n, k) = (self.rows("mm")?, rhs.cols("mm")?, self.cols("mm")?);
        // The product overwrites every element, unless there is nothing to sum (k = 0).
        let mut out = if k > 0 {
            Tensor::try_empty([m, n], &self.tensor.device)?
        } else {
            Tensor::try_zeros([m, n], &self.tensor.device)?
        };
        out.try_addmm_(self, rhs, 0.0, 1.0)?;
        Ok(out)
    }

    /// A new, contiguous tensor with the view's contents.
    #[track_caller]
    #[must_use]
    pub fn to_tensor(self) -> Tensor<B> {
        or_panic(self.try_to_tensor())
    }

    /// A new, contiguous tensor with the view's contents.
    ///
    /// # Errors
    /// When the device cannot allocate or copy.
    pub fn try_to_tensor(self) -> Result<Tensor<B>> {
        if !self.transposed {
            return self.tensor.try_clone()?.try_reshape(self.shape());
        }
        let (rows, cols) = (self.cols("t")?, self.rows("t")?);
        let mut out = Tensor::try_zeros(self.shape(), &self.tensor.device)?;
        let device = &self.tensor.device;
        device.transpose(&self.tensor.storage, rows, cols, &mut out.storage)?;
        Ok(out)
    }

    fn check_2d(&self, op: &'static str) -> Result<()> {
        if self.matrix().is_some() {
            Ok(())
        } else {
            Err(Error::Rank {
                op,
                expected: 2,
                found: self.tensor.shape().clone(),
            })
        }
    }

    fn rows(&self, op: &'static str) -> Result<usize> {
        self.check_2d(op)?;
        Ok(self.shape().dims()[0])
    }

    fn cols(&self, op: &'static str) -> Result<usize> {
        self.check_2d(op)?;
        Ok(self.shape().dims()[1])
    }
}

/// Where the matrices of a batched product lie in their buffers. Matrix `i` of an operand
/// starts at `offset + i * step` (a step of 0 uses one matrix for the whole batch); in a batch
/// of groups ([`GemmBatch::group`]), at `offset + (i / group) * group_step + (i % group) *
/// step`: the heads of a batch of sequences, say, each head's rows between the others'. A
/// matrix's rows lie `row_stride` apart, or one after another when it is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Strided {
    /// Where matrix 0 starts.
    pub offset: usize,
    /// The distance from one matrix to the next (in a group).
    pub step: usize,
    /// The distance from one group of matrices to the next.
    pub group_step: usize,
    /// The distance from one row of a matrix to the next; 0 for its row length.
    pub row_stride: usize,
}

impl Strided {
    /// Matrices `step` apart from `offset`, rows one after another.
    #[must_use]
    pub const fn new(offset: usize, step: usize) -> Self {
        Self {
            offset,
            step,
            group_step: 0,
            row_stride: 0,
        }
    }

    /// Where matrix `i` starts in a batch of groups of `group` matrices (0: one group).
    pub(crate) fn start(&self, i: usize, group: usize) -> usize {
        match group {
            0 => self.offset + i * self.step,
            group => self.offset + i / group * self.group_step + i % group * self.step,
        }
    }

    /// The distance between the rows of a stored matrix of `cols` columns.
    pub(crate) fn rows_apart(&self, cols: usize) -> usize {
        if self.row_stride == 0 {
            cols
        } else {
            self.row_stride
        }
    }
}

/// A batch of `count` products of `gemm`'s shape: `c[i] = alpha op(a[i]) op(b[i]) + beta c[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmBatch {
    /// How many products.
    pub count: usize,
    /// Products per group when the operands lie in groups ([`Strided::group_step`]), a
    /// divisor of `count`; 0 for one group.
    pub group: usize,
    /// Where the `a` matrices lie.
    pub a: Strided,
    /// Where the `b` matrices lie.
    pub b: Strided,
    /// Where the `c` matrices lie; they must not overlap.
    pub c: Strided,
}

/// Elements from the first to one past the last of a stored `rows x cols` matrix whose rows are
/// `rows_apart` apart; `None` on overflow.
pub(crate) fn extent(rows: usize, cols: usize, rows_apart: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(rows_apart)?.checked_add(cols)
}

impl GemmBatch {
    /// A batch of `count` products in one group, the matrices at `a`, `b` and `c`.
    #[must_use]
    pub const fn new(count: usize, a: Strided, b: Strided, c: Strided) -> Self {
        Self {
            count,
            group: 0,
            a,
            b,
            c,
        }
    }

    /// Products per group: `count` for one group.
    pub(crate) fn per_group(&self) -> usize {
        if self.group == 0 {
            self.count
        } else {
            self.group
        }
    }

    /// Checks that every matrix of the batch lies inside its buffer and that the outputs do not
    /// overlap: kernels trust these offsets.
    pub(crate) fn check(&self, gemm: &Gemm, a: usize, b: usize, c: usize) -> Result<()> {
        const OP: &str = "gemm_batched";
        self.check_fits(OP, gemm, [a, b, c])?;
        let (rows, cols) = (gemm.m, gemm.n);
        if self.count < 2 || rows * cols == 0 {
            return Ok(());
        }
        let Strided {
            offset,
            step,
            group_step,
            ..
        } = self.c;
        let rows_apart = self.c.rows_apart(cols);
        // `check_fits` has bounded every offset and extent, so these do not overflow.
        let size = extent(rows, cols, rows_apart).unwrap_or(usize::MAX);
        let per_group = self.per_group();
        let group_span = (per_group - 1) * step + size;
        // A group's matrices one after another, or side by side in the same rows.
        let apart = step >= size;
        let side_by_side = step >= cols
            && (0..self.count / per_group).all(|group| {
                (offset + group * group_step) % rows_apart + (per_group - 1) * step + cols
                    <= rows_apart
            });
        let groups_apart = self.count == per_group || group_step >= group_span;
        if (per_group > 1 && !apart && !side_by_side) || !groups_apart {
            return Err(Error::Backend {
                op: OP,
                message: format!(
                    "outputs of {rows}x{cols} (rows {rows_apart} apart) every {step}, in groups \
                     of {per_group} every {group_step}, overlap"
                ),
            });
        }
        Ok(())
    }

    /// [`Self::check`] for [`MatmulKernel::gemm_summed`]: one or more products in one group,
    /// one output (`c`'s step 0), every matrix inside its buffer.
    pub(crate) fn check_summed(&self, gemm: &Gemm, a: usize, b: usize, c: usize) -> Result<()> {
        if self.count == 0 || self.c.step != 0 || self.group != 0 {
            return Err(Error::Backend {
                op: "gemm_summed",
                message: format!(
                    "{} products (groups of {}) into outputs every {}: a sum needs one or more \
                     products in one group and one output (step 0)",
                    self.count, self.group, self.c.step
                ),
            });
        }
        self.check_fits("gemm_summed", gemm, [a, b, c])
    }

    /// Every matrix of the batch lies inside its buffer (`lens` of `a`, `b`, `c`), its rows
    /// apart, and `count` is whole groups.
    fn check_fits(&self, op: &'static str, gemm: &Gemm, lens: [usize; 3]) -> Result<()> {
        if self.group > 0 && !self.count.is_multiple_of(self.group) {
            return Err(Error::Backend {
                op,
                message: format!("{} products in groups of {}", self.count, self.group),
            });
        }
        if self.count == 0 {
            return Ok(());
        }
        let per_group = self.per_group();
        let (groups, last_in_group) = (self.count / per_group, per_group - 1);
        for ((what, strided, len), (rows, cols)) in [
            ("a", self.a, lens[0]),
            ("b", self.b, lens[1]),
            ("c", self.c, lens[2]),
        ]
        .into_iter()
        .zip(gemm.stored())
        {
            let rows_apart = strided.rows_apart(cols);
            let last = (groups - 1)
                .checked_mul(strided.group_step)
                .zip(last_in_group.checked_mul(strided.step))
                .and_then(|(group, in_group)| group.checked_add(in_group))
                .and_then(|last| last.checked_add(strided.offset));
            let end = last
                .zip(extent(rows, cols, rows_apart))
                .and_then(|(last, extent)| last.checked_add(extent));
            if (rows > 0 && rows_apart < cols) || end.is_none_or(|end| end > len) {
                return Err(Error::Backend {
                    op,
                    message: format!(
                        "{what}: {} matrices of {rows}x{cols} (rows {rows_apart} apart) from {} \
                         every {} (groups of {per_group} every {}) do not fit {len} elements",
                        self.count, strided.offset, strided.step, strided.group_step
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The kernels of matrix products.
pub trait MatmulKernel: Memory {
    /// `c = alpha * op(a) * op(b) + beta * c`, reading transposed operands in place.
    ///
    /// # Errors
    /// When the kernel fails.
    fn gemm(
        &self,
        gemm: &Gemm,
        a: &Self::Storage,
        b: &Self::Storage,
        c: &mut Self::Storage,
    ) -> Result<()>;

    /// Writes the transpose of the row-major `rows x cols` matrix `src` into `dst`.
    ///
    /// # Errors
    /// When the kernel fails.
    fn transpose(
        &self,
        src: &Self::Storage,
        rows: usize,
        cols: usize,
        dst: &mut Self::Storage,
    ) -> Result<()>;

    /// The batch of products `batch` of `gemm`'s shape over matrices inside `a`, `b` and `c`.
    ///
    /// # Errors
    /// When a matrix lies outside its buffer, the outputs overlap, or the kernel fails.
    fn gemm_batched(
        &self,
        gemm: &Gemm,
        batch: &GemmBatch,
        a: &Self::Storage,
        b: &Self::Storage,
        c: &mut Self::Storage,
    ) -> Result<()>;

    /// `c = alpha * Σ_i op(a[i]) op(b[i]) + beta * c`: the products of `batch` summed in order
    /// into its one output (`batch.c`'s step is 0), as a weight gradient sums its samples'.
    /// By default one product after another.
    ///
    /// # Errors
    /// When the batch is empty, a matrix lies outside its buffer, or the kernel fails.
    fn gemm_summed(
        &self,
        gemm: &Gemm,
        batch: &GemmBatch,
        a: &Self::Storage,
        b: &Self::Storage,
        c: &mut Self::Storage,
    ) -> Result<()> {
        summed_one_by_one(self, gemm, batch, a, b, c)
    }
}

/// [`MatmulKernel::gemm_summed`] as one product after another, each added to the output.
fn summed_one_by_one<B: MatmulKernel>(
    device: &B,
    gemm: &Gemm,
    batch: &GemmBatch,
    a: &B::Storage,
    b: &B::Storage,
    c: &mut B::Storage,
) -> Result<()> {
    if batch.count == 0 || batch.c.step != 0 {
        // The error `check_summed` gives; each product's own call checks the bounds.
        return batch.check_summed(gemm, 0, 0, 0);
    }
    for i in 0..batch.count {
        let at = |strided: Strided| Strided {
            offset: strided.start(i, batch.group),
            step: 0,
            ..strided
        };
        let gemm = Gemm {
            beta: if i == 0 { gemm.beta } else { 1.0 },
            ..*gemm
        };
        let one = GemmBatch::new(1, at(batch.a), at(batch.b), batch.c);
        device.gemm_batched(&gemm, &one, a, b, c)?;
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
impl MatmulKernel for crate::Cuda {
    fn gemm(
        &self,
        _: &Gemm,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn transpose(
        &self,
        _: &Self::Storage,
        _: usize,
        _: usize,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn gemm_batched(
        &self,
        _: &Gemm,
        _: &GemmBatch,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }
}

impl<B: Backend> Tensor<B> {
    /// The transpose of a 2-D tensor as a view that `mm` reads in place, like `torch.t`.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3], &Cpu);
    /// let gram = x.t().mm(&x); // [3, 2] x [2, 3], no copy of x
    /// assert_eq!(gram.dims(), &[3, 3]);
    /// assert_eq!(x.t().to_tensor().to_vec(), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    /// ```
    #[track_caller]
    #[must_use]
    pub fn t(&self) -> MatView<'_, B> {
        or_panic(self.try_t())
    }

    /// This tensor as the matrix of its last dim's rows, `[product of the other dims, last]`,
    /// without a copy: how `Linear` applies to the last dim of `[B, T, C]`.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::ones([2, 3, 4], &Cpu);
    /// let w = Tensor::ones([4, 5], &Cpu);
    /// assert_eq!(x.try_rows()?.try_mm(&w)?.dims(), &[6, 5]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Rank`] for a tensor without dims.
    pub fn try_rows(&self) -> Result<MatView<'_, B>> {
        let view = MatView {
            rows_of_last: true,
            ..MatView::from(self)
        };
        view.check_2d("rows")?;
        Ok(view)
    }

    /// The transpose of a 2-D tensor as a view.
    ///
    /// # Errors
    /// [`Error::Rank`] when the tensor is not 2-D.
    pub fn try_t(&self) -> Result<MatView<'_, B>> {
        let view = MatView::from(self).t();
        view.check_2d("t")?;
        Ok(view)
    }

    /// The matrix product `self x rhs` of 2-D tensors, like `torch.mm`; `rhs` may be `w.t()`.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2], &Cpu);
    /// let b = Tensor::from_vec(vec![5.0, 6.0, 7.0, 8.0], [2, 2], &Cpu);
    /// assert_eq!(a.mm(&b).to_vec(), [19.0, 22.0, 43.0, 50.0]);
    /// assert_eq!(a.mm(b.t()).to_vec(), [17.0, 23.0, 39.0, 53.0]);
    /// ```
    #[track_caller]
    #[must_use]
    pub fn mm<'a>(&'a self, rhs: impl Into<MatView<'a, B>>) -> Self {
        or_panic(self.try_mm(rhs))
    }

    /// The matrix product `self x rhs` of 2-D tensors.
    ///
    /// # Errors
    /// [`Error::Rank`] for an operand that is not 2-D, [`Error::MatmulInnerDims`] when the
    /// inner dims differ.
    pub fn try_mm<'a>(&'a self, rhs: impl Into<MatView<'a, B>>) -> Result<Self> {
        MatView::from(self).try_mm(rhs)
    }

    /// `self = beta * self + alpha * (a x b)` in place, like `torch.Tensor.addmm_`. With
    /// `beta = 1` it accumulates a gradient; with `alpha = -lr` it applies one.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::from_vec(vec![1.0, 2.0], [1, 2], &Cpu);
    /// let mut acc = Tensor::ones([2, 2], &Cpu);
    /// acc.addmm_(x.t(), &x, 1.0, 2.0); // acc += 2 x^T x
    /// assert_eq!(acc.to_vec(), [3.0, 5.0, 5.0, 9.0]);
    /// ```
    #[track_caller]
    pub fn addmm_<'a>(
        &mut self,
        a: impl Into<MatView<'a, B>>,
        b: impl Into<MatView<'a, B>>,
        beta: f32,
        alpha: f32,
    ) where
        B: 'a,
    {
        or_panic(self.try_addmm_(a, b, beta, alpha));
    }

    /// `self = beta * self + alpha * (a x b)` in place.
    ///
    /// # Errors
    /// [`Error::Rank`] for an operand that is not 2-D, [`Error::MatmulInnerDims`] when the
    /// inner dims differ, [`Error::InPlaceShape`] when `self` is not `[rows of a, cols of b]`.
    pub fn try_addmm_<'a>(
        &mut self,
        a: impl Into<MatView<'a, B>>,
        b: impl Into<MatView<'a, B>>,
        beta: f32,
        alpha: f32,
    ) -> Result<()>
    where
        B: 'a,
    {
        let (a, b) = (a.into(), b.into());
        let (m, k) = (a.rows("mm")?, a.cols("mm")?);
        let (k2, n) = (b.rows("mm")?, b.cols("mm")?);
        if k != k2 {
            return Err(Error::MatmulInnerDims {
                op: "mm",
                lhs: a.shape(),
                rhs: b.shape(),
            });
        }
        a.tensor.check_same_device("mm", b.tensor)?;
        self.check_same_device("addmm_", a.tensor)?;
        if self.dims() != [m, n] {
            return Err(Error::InPlaceShape {
                op: "addmm_",
                target: self.shape.clone(),
                result: Shape::from([m, n]),
            });
        }
        let gemm = Gemm {
            m,
            n,
            k,
            trans_a: a.transposed,
            trans_b: b.transposed,
            alpha,
            beta,
        };
        self.device.gemm(
            &gemm,
            &a.tensor.storage,
            &b.tensor.storage,
            &mut self.storage,
        )
    }
}

impl<B: Backend> Tensor<B> {
    /// The batched matrix product `self @ rhs` of `[.., M, K]` and `[.., K, N]` tensors with
    /// the same leading dims, like `torch.matmul` (without broadcasting): `[.., M, N]`.
    ///
    /// # Errors
    /// As [`Tensor::try_matmul_with`].
    pub fn try_matmul(&self, rhs: &Self) -> Result<Self> {
        self.try_matmul_with(rhs, (false, false))
    }

    /// The batched product of `self` and `rhs`, each read transposed in its last two dims
    /// when its flag says so, without a copy: `q.try_matmul_with(&k, (false, true))` is
    /// `q @ k.transpose(-2, -1)`. The gradients of `C = A @ B` are `dC @ B^T`
    /// (`(false, true)`) and `A^T @ dC` (`(true, false)`).
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let q = Tensor::ones([2, 4, 3, 8], &Cpu); // [B, H, T, D]
    /// let k = Tensor::ones([2, 4, 3, 8], &Cpu);
    /// let scores = q.try_matmul_with(&k, (false, true))?;
    /// assert_eq!(scores.dims(), &[2, 4, 3, 3]);
    /// assert_eq!(scores.to_vec()[0], 8.0);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Usage`] naming both shapes when an operand has fewer than 2 dims, the leading
    /// dims differ, or the inner dims do.
    pub fn try_matmul_with(&self, rhs: &Self, (trans_a, trans_b): (bool, bool)) -> Result<Self> {
        let mismatch = |why: String| {
            Error::Usage(format!(
                "matmul: cannot multiply {} by {}: {why}",
                self.shape, rhs.shape
            ))
        };
        let (Some((a_batch, a_mat)), Some((b_batch, b_mat))) = (
            self.dims().split_at_checked(self.rank().wrapping_sub(2)),
            rhs.dims().split_at_checked(rhs.rank().wrapping_sub(2)),
        ) else {
            return Err(mismatch("both need at least 2 dims".to_owned()));
        };
        let (m, k) = if trans_a {
            (a_mat[1], a_mat[0])
        } else {
            (a_mat[0], a_mat[1])
        };
        let (k2, n) = if trans_b {
            (b_mat[1], b_mat[0])
        } else {
            (b_mat[0], b_mat[1])
        };
        if a_batch != b_batch {
            return Err(mismatch(format!(
                "leading dims {a_batch:?} and {b_batch:?} differ"
            )));
        }
        if k != k2 {
            return Err(mismatch(format!("inner dims {k} and {k2} differ")));
        }
        self.check_same_device("matmul", rhs)?;
        let mut dims = crate::shape::Dims::from_slice(a_batch);
        dims.extend([m, n]);
        // The product overwrites every element, unless there is nothing to sum (k = 0).
        let mut out = if k > 0 {
            Self::try_empty(Shape::from(dims), &self.device)?
        } else {
            Self::try_zeros(Shape::from(dims), &self.device)?
        };
        let gemm = Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            alpha: 1.0,
            beta: 0.0,
        };
        let step = |size| Strided::new(0, size);
        let count = a_batch.iter().product();
        let batch = GemmBatch::new(count, step(m * k), step(k * n), step(m * n));
        self.device
            .gemm_batched(&gemm, &batch, &self.storage, &rhs.storage, &mut out.storage)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;
    use crate::rng::seeded;

    /// Batched products against a product per batch, every transpose combination, and the
    /// errors.
    #[test]
    fn batched_matmul_is_one_product_per_leading_index() {
        let a = Tensor::randn([2, 3, 4, 5], &Cpu, &mut seeded(1));
        let b = Tensor::randn([2, 3, 5, 6], &Cpu, &mut seeded(2));
        let c = a.try_matmul(&b).unwrap();
        assert_eq!(c.dims(), &[2, 3, 4, 6]);
        let (av, bv, cv) = (a.to_vec(), b.to_vec(), c.to_vec());
        for i in 0..6 {
            let ai = Tensor::from_slice(&av[i * 20..(i + 1) * 20], [4, 5], &Cpu);
            let bi = Tensor::from_slice(&bv[i * 30..(i + 1) * 30], [5, 6], &Cpu);
            assert_eq!(ai.mm(&bi).to_vec(), cv[i * 24..(i + 1) * 24]);
        }
        let bt = Tensor::randn([2, 3, 6, 5], &Cpu, &mut seeded(3));
        let at = Tensor::randn([2, 3, 5, 4], &Cpu, &mut seeded(4));
        assert_eq!(
            a.try_matmul_with(&bt, (false, true)).unwrap().dims(),
            &[2, 3, 4, 6]
        );
        assert_eq!(
            at.try_matmul_with(&b, (true, false)).unwrap().dims(),
            &[2, 3, 4, 6]
        );
        let error = a.try_matmul(&bt).unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: matmul: cannot multiply [2, 3, 4, 5] by [2, 3, 6, 5]: inner dims 5 and 6 differ"
        );
        assert!(a.try_matmul(&Tensor::zeros([3, 5, 6], &Cpu)).is_err());
        assert!(a.try_matmul(&Tensor::zeros([5], &Cpu)).is_err());
    }

    /// A batch large enough to share the threads gives each product's own result (17
    /// products: the threads' runs of products are not all the same length).
    #[test]
    fn a_parallel_batch_is_one_product_per_leading_index() {
        let a = Tensor::randn([17, 64, 128], &Cpu, &mut seeded(5));
        let b = Tensor::randn([17, 64, 128], &Cpu, &mut seeded(6));
        let c = a.try_matmul_with(&b, (false, true)).unwrap();
        let (av, bv, cv) = (a.to_vec(), b.to_vec(), c.to_vec());
        let size = 64 * 128;
        for i in 0..17 {
            let ai = Tensor::from_slice(&av[i * size..(i + 1) * size], [64, 128], &Cpu);
            let bi = Tensor::from_slice(&bv[i * size..(i + 1) * size], [64, 128], &Cpu);
            assert_eq!(ai.mm(bi.t()).to_vec(), cv[i * 64 * 64..(i + 1) * 64 * 64]);
        }
    }

    /// The product computed naively in f64, from row-major `[m, k]` and `[k, n]` data.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                    .sum();
                c[i * n + j] = dot as f32;
            }
        }
        c
    }

    fn assert_close(actual: &[f32], expected: &[f32]) {
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() <= 1e-4 * e.abs().max(1.0), "{a} vs {e}");
        }
    }

    #[test]
    fn every_transpose_combination_matches_the_naive_product() {
        let rng = &mut seeded(1);
        let (m, k, n) = (5, 7, 3);
        let a = Tensor::randn([m, k], &Cpu, rng);
        let b = Tensor::randn([k, n], &Cpu, rng);
        let expected = reference(&a.to_vec(), &b.to_vec(), m, k, n);
        let a_t = a.t().to_tensor(); // stored [k, m]
        let b_t = b.t().to_tensor(); // stored [n, k]
        assert_close(&a.mm(&b).to_vec(), &expected);
        assert_close(&a_t.t().mm(&b).to_vec(), &expected);
        assert_close(&a.mm(b_t.t()).to_vec(), &expected);
        assert_close(&a_t.t().mm(b_t.t()).to_vec(), &expected);
    }

    #[test]
    fn large_product_matches_reference() {
        let rng = &mut seeded(2);
        let (m, k, n) = (64, 300, 50);
        let a = Tensor::randn([m, k], &Cpu, rng);
        let b = Tensor::randn([k, n], &Cpu, rng);
        assert_close(
            &a.mm(&b).to_vec(),
            &reference(&a.to_vec(), &b.to_vec(), m, k, n),
        );
    }

    #[test]
    fn inner_dim_mismatch_names_both_shapes() {
        let a = Tensor::zeros([64, 1000], &Cpu);
        let b = Tensor::zeros([999, 100], &Cpu);
        assert_eq!(
            a.try_mm(&b).unwrap_err().to_string(),
            "mm: cannot multiply [64, 1000] by [999, 100]: inner dims 1000 and 999 differ"
        );
        // Transposed operands are reported as the product sees them.
        assert_eq!(
            a.try_mm(b.t()).unwrap_err().to_string(),
            "mm: cannot multiply [64, 1000] by [100, 999]: inner dims 1000 and 100 differ"
        );
    }

    #[test]
    #[should_panic(expected = "mm: cannot multiply [2, 3] by [2, 3]: inner dims 3 and 2 differ")]
    fn mm_panics_with_the_checked_message() {
        let a = Tensor::zeros([2, 3], &Cpu);
        let _ = a.mm(&a);
    }

    #[test]
    fn non_matrices_are_rejected() {
        let v = Tensor::zeros([3], &Cpu);
        let m = Tensor::zeros([3, 2], &Cpu);
        assert_eq!(
            v.try_mm(&m).unwrap_err().to_string(),
            "mm: expected a 2-D tensor, found shape [3]"
        );
        assert_eq!(
            v.try_t().unwrap_err().to_string(),
            "t: expected a 2-D tensor, found shape [3]"
        );
    }

    #[test]
    fn addmm_accumulates_scales_and_checks_the_target() {
        let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2], &Cpu);
        let mut c = Tensor::ones([2, 2], &Cpu);
        c.addmm_(&a, &a, 0.5, 1.0);
        assert_eq!(c.to_vec(), [7.5, 10.5, 15.5, 22.5]);
        c.addmm_(&a, &a, 0.0, -1.0);
        assert_eq!(c.to_vec(), [-7.0, -10.0, -15.0, -22.0]);
        let mut wrong = Tensor::zeros([3, 2], &Cpu);
        assert_eq!(
            wrong.try_addmm_(&a, &a, 1.0, 1.0).unwrap_err().to_string(),
            "addmm_: cannot write a result of shape [2, 2] into a tensor of shape [3, 2]"
        );
    }

    #[test]
    fn empty_inner_dim_gives_zeros() {
        let a = Tensor::zeros([2, 0], &Cpu);
        let b = Tensor::zeros([0, 3], &Cpu);
        assert_eq!(a.mm(&b).to_vec(), [0.0; 6]);
    }

    #[test]
    fn batched_products_read_their_offsets_and_check_their_bounds() {
        use crate::backend::Cpu;
        // Two 1x2 by 2x1 products sharing `a` (step 0), `b` and `c` from offset 1.
        let gemm = Gemm {
            m: 1,
            n: 1,
            k: 2,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        };
        let batch = GemmBatch::new(
            2,
            Strided::new(0, 0),
            Strided::new(1, 2),
            Strided::new(1, 1),
        );
        let (a, b) = (vec![1.0, 10.0], vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        let mut c = vec![-1.0; 3];
        Cpu.gemm_batched(&gemm, &batch, &a, &b, &mut c).unwrap();
        assert_eq!(c, [-1.0, 21.0, 43.0]);
        let short = GemmBatch { count: 3, ..batch };
        let error = Cpu.gemm_batched(&gemm, &short, &a, &b, &mut c).unwrap_err();
        assert!(error.to_string().contains("do not fit"), "{error}");
        let overlapping = GemmBatch {
            c: Strided::new(0, 0),
            ..batch
        };
        assert!(
            Cpu.gemm_batched(&gemm, &overlapping, &a, &b, &mut c)
                .is_err()
        );
    }

    /// Attention's layout: for each of `batch` sequences of `time` rows and each of `heads`
    /// heads, `q k^T` of the head's `[time, width]` columns of q and k, interleaved in rows of
    /// `[q | k]`, its `[time, time]` written side by side with the other heads' (k read
    /// transposed): the CPU kernel against a naive product per head, small (one thread) and
    /// large enough to share the threads by sequence; layouts that overlap are errors.
    #[test]
    fn batches_of_interleaved_heads_match_a_product_per_head() {
        let rng = &mut seeded(4);
        for (batch, heads, time, width) in [(2, 3, 4, 5), (8, 4, 64, 64)] {
            let row = 2 * heads * width; // [q | k] per position
            let qk = Tensor::randn([batch * time * row], &Cpu, rng).to_vec();
            let gemm = Gemm {
                m: time,
                n: time,
                k: width,
                trans_a: false,
                trans_b: true,
                alpha: 1.0,
                beta: 0.0,
            };
            let heads_of = |offset, step, row_stride| Strided {
                offset,
                step,
                group_step: time * row_stride,
                row_stride,
            };
            let out_row = heads * time;
            let grouped = GemmBatch {
                count: batch * heads,
                group: heads,
                a: heads_of(0, width, row),
                b: heads_of(heads * width, width, row),
                c: heads_of(0, time, out_row),
            };
            let mut c = vec![f32::NAN; batch * time * out_row];
            Cpu.gemm_batched(&gemm, &grouped, &qk, &qk, &mut c).unwrap();
            for (s, h) in (0..batch).flat_map(|s| (0..heads).map(move |h| (s, h))) {
                let rows = |part: usize| -> Vec<f32> {
                    (0..time)
                        .flat_map(|t| {
                            let start = (s * time + t) * row + part * heads * width + h * width;
                            qk[start..start + width].to_vec()
                        })
                        .collect()
                };
                let (q, k) = (rows(0), rows(1));
                let k_t: Vec<f32> = (0..width * time)
                    .map(|i| k[(i % time) * width + i / time])
                    .collect();
                let expected = reference(&q, &k_t, time, width, time);
                let found: Vec<f32> = (0..time)
                    .flat_map(|t| {
                        let start = (s * time + t) * out_row + h * time;
                        c[start..start + time].to_vec()
                    })
                    .collect();
                assert_close(&found, &expected);
            }
            let mut bad = [grouped; 4];
            bad[0].c.step = time - 1; // heads' columns overlap
            bad[1].c.group_step -= 1; // sequences overlap
            bad[2].count -= 1; // not whole groups
            bad[3].c.row_stride = time - 1; // rows overlap
            for bad in bad {
                assert!(
                    Cpu.gemm_batched(&gemm, &bad, &qk, &qk, &mut c).is_err(),
                    "{bad:?}"
                );
            }
        }
    }

    /// A summed batch, small (one thread), large with a small output (runs of products on the
    /// threads, one more product than parts) and large with a large output (blocks of it on
    /// the threads), with each `beta` and transposes: the CPU kernel against the products added one by one
    /// (the default) and a naive sum; an empty batch or outputs apart are errors.
    #[test]
    fn summed_products_add_up_in_order() {
        use crate::backend::Cpu;
        let rng = &mut seeded(11);
        for (m, n, k, count) in [(3, 4, 5, 3), (64, 288, 256, 5), (128, 576, 64, 4)] {
            let a = Tensor::randn([count + 1, k * m], &Cpu, rng).to_vec();
            let b = Tensor::randn([count, n * k], &Cpu, rng).to_vec();
            let start = Tensor::randn([m * n + 2], &Cpu, rng).to_vec();
            for beta in [0.0, 1.0, 0.5] {
                let gemm = Gemm {
                    m,
                    n,
                    k,
                    trans_a: true,
                    trans_b: true,
                    alpha: 0.75,
                    beta,
                };
                let batch = GemmBatch::new(
                    count,
                    Strided::new(k * m, k * m),
                    Strided::new(0, n * k),
                    Strided::new(2, 0),
                );
                let mut summed = start.clone();
                Cpu.gemm_summed(&gemm, &batch, &a, &b, &mut summed).unwrap();
                let mut one_by_one = start.clone();
                summed_one_by_one(&Cpu, &gemm, &batch, &a, &b, &mut one_by_one).unwrap();
                assert_eq!(summed[..2], start[..2], "outside the output");
                assert_close(&summed, &one_by_one);
                let mut naive: Vec<f32> = start[2..].iter().map(|v| beta * v).collect();
                for i in 0..count {
                    let at = |v: &[f32], rows, cols| {
                        Tensor::from_slice(v, [rows, cols], &Cpu)
                            .t()
                            .to_tensor()
                            .to_vec()
                    };
                    let a_i = at(&a[(i + 1) * k * m..][..k * m], k, m);
                    let b_i = at(&b[i * n * k..][..n * k], n, k);
                    for (sum, product) in naive.iter_mut().zip(reference(&a_i, &b_i, m, k, n)) {
                        *sum += 0.75 * product;
                    }
                }
                assert_close(&summed[2..], &naive);
            }
        }
        let gemm = Gemm {
            m: 1,
            n: 1,
            k: 1,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        };
        let one = Strided::new(0, 0);
        let mut c = vec![0.0];
        for (count, c_step) in [(0, 0), (2, 1)] {
            let batch = GemmBatch::new(count, one, one, Strided::new(0, c_step));
            let error = Cpu
                .gemm_summed(&gemm, &batch, &vec![1.0], &vec![1.0], &mut c)
                .unwrap_err();
            assert!(
                error.to_string().contains("one or more products"),
                "{error}"
            );
        }
    }
}
