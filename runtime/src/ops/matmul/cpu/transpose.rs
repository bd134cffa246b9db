//! The CPU transpose: 16x16 blocks in AVX-512 registers where the CPU has them (a scalar loop
//! moves about one element a cycle; the larger CNN's Winograd layers move 3.7M a step between
//! channels-first planes and channels-last buffers), element by element at the edges and
//! elsewhere. Rows may lie anywhere: each side says where its rows start.

/// Rows of `src` into columns of `dst`: `dst[dst_row(j) + i] = src[src_row(i) + j]` for `i` in
/// `0..rows`, `j` in `0..cols`. `src_row` and `dst_row` give where each row starts.
pub(crate) fn transpose(
    src: &[f32],
    src_row: impl Fn(usize) -> usize,
    dst: &mut [f32],
    dst_row: impl Fn(usize) -> usize,
    (rows, cols): (usize, usize),
) {
    let (block_rows, block_cols) = blocks::transpose(src, &src_row, dst, &dst_row, (rows, cols));
    // What the blocks left: the last rows, then the last columns of the others.
    for i in 0..rows {
        let from = if i < block_rows { block_cols } else { 0 };
        for j in from..cols {
            dst[dst_row(j) + i] = src[src_row(i) + j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod blocks {
    use pulp::x86::V4;
    use pulp::{Simd, WithSimd};
    use std::arch::x86_64::{__m512, __m512d};

    /// Elements along a block's side: one register.
    const SIDE: usize = 16;

    /// The 16x16 blocks of the transpose, where the CPU has AVX-512; returns the rows and
    /// columns they covered (multiples of 16, or 0).
    pub(super) fn transpose(
        src: &[f32],
        src_row: &impl Fn(usize) -> usize,
        dst: &mut [f32],
        dst_row: &impl Fn(usize) -> usize,
        (rows, cols): (usize, usize),
    ) -> (usize, usize) {
        let covered = (rows - rows % SIDE, cols - cols % SIDE);
        let Some(simd) = V4::try_new() else {
            return (0, 0);
        };
        Simd::vectorize(
            simd,
            Blocks {
                src,
                src_row,
                dst,
                dst_row,
                covered,
            },
        );
        covered
    }

    struct Blocks<'a, S, D> {
        src: &'a [f32],
        src_row: &'a S,
        dst: &'a mut [f32],
        dst_row: &'a D,
        covered: (usize, usize),
    }

    impl<S: Fn(usize) -> usize, D: Fn(usize) -> usize> WithSimd for Blocks<'_, S, D> {
        type Output = ();

        #[inline(always)]
        fn with_simd<T: Simd>(self, _: T) {
            let Some(simd) = V4::try_new() else {
                return;
            };
            let Blocks {
                src,
                src_row,
                dst,
                dst_row,
                covered: (rows, cols),
            } = self;
            let mut block = [simd.avx512f._mm512_setzero_ps(); SIDE];
            for i in (0..rows).step_by(SIDE) {
                for j in (0..cols).step_by(SIDE) {
                    for (r, register) in block.iter_mut().enumerate() {
                        let mut row = [0.0f32; SIDE];
                        row.copy_from_slice(&src[src_row(i + r) + j..][..SIDE]);
                        *register = pulp::cast(row);
                    }
                    for (c, column) in transpose16(simd, block).into_iter().enumerate() {
                        let column: [f32; SIDE] = pulp::cast(column);
                        dst[dst_row(j + c) + i..][..SIDE].copy_from_slice(&column);
                    }
                }
            }
        }
    }

    /// The transpose of the 16x16 block whose rows are `r`: pairs of rows interleaved by
    /// elements, then by pairs of elements, then by 128-bit lanes, twice.
    #[inline(always)]
    fn transpose16(simd: V4, r: [__m512; SIDE]) -> [__m512; SIDE] {
        let f = simd.avx512f;
        let pd = |v: __m512| f._mm512_castps_pd(v);
        let ps = |v: __m512d| f._mm512_castpd_ps(v);
        let mut t = r;
        for k in 0..SIDE / 2 {
            t[2 * k] = f._mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
            t[2 * k + 1] = f._mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
        }
        let mut u = t;
        for k in 0..SIDE / 4 {
            let (a0, a1, b0, b1) = (t[4 * k], t[4 * k + 1], t[4 * k + 2], t[4 * k + 3]);
            u[4 * k] = ps(f._mm512_unpacklo_pd(pd(a0), pd(b0)));
            u[4 * k + 1] = ps(f._mm512_unpackhi_pd(pd(a0), pd(b0)));
            u[4 * k + 2] = ps(f._mm512_unpacklo_pd(pd(a1), pd(b1)));
            u[4 * k + 3] = ps(f._mm512_unpackhi_pd(pd(a1), pd(b1)));
        }
        let mut v = u;
        for base in [0, 8] {
            for j in 0..4 {
                let (a, b) = (u[base + j], u[base + 4 + j]);
                v[base + j] = f._mm512_shuffle_f32x4::<0x88>(a, b);
                v[base + 4 + j] = f._mm512_shuffle_f32x4::<0xdd>(a, b);
            }
        }
        let mut out = v;
        for j in 0..8 {
            out[j] = f._mm512_shuffle_f32x4::<0x88>(v[j], v[8 + j]);
            out[8 + j] = f._mm512_shuffle_f32x4::<0xdd>(v[j], v[8 + j]);
        }
        out
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod blocks {
    /// No blocks: the caller moves every element.
    pub(super) fn transpose(
        _: &[f32],
        _: &impl Fn(usize) -> usize,
        _: &mut [f32],
        _: &impl Fn(usize) -> usize,
        _: (usize, usize),
    ) -> (usize, usize) {
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_lands_where_the_definition_puts_it() {
        // Whole blocks, blocks with edges, only edges; rows apart by more than their length.
        for (rows, cols) in [
            (16, 16),
            (32, 48),
            (35, 19),
            (5, 40),
            (40, 7),
            (1, 1),
            (0, 9),
        ] {
            let (src_pitch, dst_pitch) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * src_pitch).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; cols * dst_pitch];
            let src_row = |i: usize| i * src_pitch;
            let dst_row = |j: usize| j * dst_pitch;
            transpose(&src, src_row, &mut dst, dst_row, (rows, cols));
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        dst[dst_row(j) + i].to_bits(),
                        src[src_row(i) + j].to_bits(),
                        "{rows}x{cols}: ({i}, {j})"
                    );
                }
            }
        }
    }
}
