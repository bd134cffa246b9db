// Elementwise binary ops over broadcast strides. `binary_apply` is generated from the op table
// in `mod.rs` beside this file (see `ops/elementwise.rs`) and replaces the marker line below:
// op code `3 * row + part` computes the row's value (part 0) or its partial derivative with
// respect to the left (1) or right (2) operand, as the row's Rust closures do.

#define MAX_RANK 6

// The output's shape and both operands' strides (in elements, 0 along broadcast dims),
// outermost dim first; `Layout` in `cuda.rs`.
struct Layout {
    unsigned int rank;
    unsigned int pad;
    unsigned long long shape[MAX_RANK];
    unsigned long long lhs_strides[MAX_RANK];
    unsigned long long rhs_strides[MAX_RANK];
};

// @table@

// The offsets of output element `i` in the two operands.
__device__ void offsets(
    const Layout& layout, unsigned long long i, unsigned long long* lhs, unsigned long long* rhs
) {
    unsigned long long l = 0, r = 0;
    for (int d = (int)layout.rank - 1; d >= 0; --d) {
        unsigned long long index = i % layout.shape[d];
        i /= layout.shape[d];
        l += index * layout.lhs_strides[d];
        r += index * layout.rhs_strides[d];
    }
    *lhs = l;
    *rhs = r;
}

extern "C" __global__ void binary_f32(
    float* out, const float* lhs, const float* rhs, unsigned long long n, int op, float s,
    Layout layout
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        unsigned long long l, r;
        offsets(layout, i, &l, &r);
        out[i] = binary_apply(op, s, 0.0f, lhs[l], rhs[r]);
    }
}

// `lhs` has the output's shape, so it is read and written at `i`.
extern "C" __global__ void binary_assign_f32(
    float* lhs, const float* rhs, unsigned long long n, int op, float s, Layout layout
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        unsigned long long l, r;
        offsets(layout, i, &l, &r);
        lhs[i] = binary_apply(op, s, 0.0f, lhs[i], rhs[r]);
    }
}
