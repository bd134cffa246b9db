// Elementwise unary ops. The op codes are `UnaryOp`'s, encoded by `cuda.rs` beside this file;
// each arm computes what the same arm of `cpu.rs` does, in the same order.

#define OP_NEG 0
#define OP_ADD_SCALAR 1
#define OP_MUL_SCALAR 2
#define OP_CLAMP_MIN 3
#define OP_SQUARE 4
#define OP_POW 5
#define OP_EXP 6
#define OP_LOG 7
#define OP_SIGMOID 8
#define OP_TANH 9
#define OP_GELU 10
#define OP_LT_SCALAR 11
#define OP_GT_SCALAR 12

// The logistic function, without overflow for large |v|.
__device__ float sigmoid(float v) {
    if (v >= 0.0f) {
        return 1.0f / (1.0f + expf(-v));
    }
    float e = expf(v);
    return e / (1.0f + e);
}

__device__ float apply(int op, float s, float v) {
    switch (op) {
    case OP_NEG: return -v;
    case OP_ADD_SCALAR: return v + s;
    case OP_MUL_SCALAR: return v * s;
    // `v < s` is false for NaN, so NaN passes through like in PyTorch.
    case OP_CLAMP_MIN: return v < s ? s : v;
    case OP_SQUARE: return v * v;
    case OP_POW: return powf(v, s);
    case OP_EXP: return expf(v);
    case OP_LOG: return logf(v);
    case OP_SIGMOID: return sigmoid(v);
    case OP_TANH: return tanhf(v);
    case OP_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710677f));
    case OP_LT_SCALAR: return v < s ? 1.0f : 0.0f;
    case OP_GT_SCALAR: return v > s ? 1.0f : 0.0f;
    }
    return __int_as_float(0x7fc00000);  // NaN: an op code this file does not know
}

extern "C" __global__ void unary_f32(
    float* out, const float* x, unsigned long long n, int op, float s
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        out[i] = apply(op, s, x[i]);
    }
}

extern "C" __global__ void unary_assign_f32(float* x, unsigned long long n, int op, float s) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        x[i] = apply(op, s, x[i]);
    }
}

extern "C" __global__ void fill_f32(float* x, unsigned long long n, float value) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        x[i] = value;
    }
}
