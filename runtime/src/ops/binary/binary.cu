// Elementwise binary ops over broadcast strides. The op codes are `BinaryOp`'s, encoded by
// `cuda.rs` beside this file; each arm computes what the same arm of `cpu.rs` does.

#define OP_ADD 0
#define OP_SUB 1
#define OP_MUL 2
#define OP_DIV 3
#define OP_ADD_SCALED 4
#define OP_MASKED_FILL 5
#define OP_RELU_BACKWARD 6
#define OP_CLAMP_MIN_BACKWARD 7
#define OP_SIGMOID_BACKWARD 8
#define OP_TANH_BACKWARD 9
#define OP_GELU_BACKWARD 10
#define OP_SQUARE_BACKWARD 11
#define OP_POW_BACKWARD 12

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

// The derivative of GELU: Phi(x) + x phi(x).
__device__ float gelu_derivative(float v) {
    const float FRAC_1_SQRT_2PI = 0.3989423f;
    float cdf = 0.5f * (1.0f + erff(v * 0.70710677f));
    return cdf + v * FRAC_1_SQRT_2PI * expf(-0.5f * v * v);
}

__device__ float apply(int op, float s, float a, float b) {
    switch (op) {
    case OP_ADD: return a + b;
    case OP_SUB: return a - b;
    case OP_MUL: return a * b;
    case OP_DIV: return a / b;
    case OP_ADD_SCALED: return a + s * b;
    case OP_MASKED_FILL: return b == 0.0f ? a : s;
    case OP_RELU_BACKWARD: return b > 0.0f ? a : 0.0f;
    case OP_CLAMP_MIN_BACKWARD: return b >= s ? a : 0.0f;
    case OP_SIGMOID_BACKWARD: return a * b * (1.0f - b);
    case OP_TANH_BACKWARD: return a * (1.0f - b * b);
    case OP_GELU_BACKWARD: return a * gelu_derivative(b);
    case OP_SQUARE_BACKWARD: return a * 2.0f * b;
    case OP_POW_BACKWARD: return a * s * powf(b, s - 1.0f);
    }
    return __int_as_float(0x7fc00000);  // NaN: an op code this file does not know
}

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
        out[i] = apply(op, s, lhs[l], rhs[r]);
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
        lhs[i] = apply(op, s, lhs[i], rhs[r]);
    }
}
