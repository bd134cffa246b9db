// Elementwise unary ops. `unary_forward` and `unary_backward` are generated from the op table
// in `mod.rs` beside this file (see `ops/elementwise.rs`) and replace the marker line below;
// each case computes what the same row's Rust closure does, in the same order.

// The logistic function, without overflow for large |v|.
__device__ float sigmoid(float v) {
    if (v >= 0.0f) {
        return 1.0f / (1.0f + expf(-v));
    }
    float e = expf(v);
    return e / (1.0f + e);
}

// x * Phi(x), Phi the standard normal CDF.
__device__ float gelu(float v) {
    return 0.5f * v * (1.0f + erff(v * 0.70710677f));
}

// The derivative of GELU: Phi(x) + x phi(x).
__device__ float gelu_derivative(float v) {
    const float FRAC_1_SQRT_2PI = 0.3989423f;
    float cdf = 0.5f * (1.0f + erff(v * 0.70710677f));
    return cdf + v * FRAC_1_SQRT_2PI * expf(-0.5f * v * v);
}

// @table@

extern "C" __global__ void unary_f32(
    float* out, const float* x, unsigned long long n, int op, float s0, float s1
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        out[i] = unary_forward(op, s0, s1, x[i]);
    }
}

extern "C" __global__ void unary_assign_f32(
    float* x, unsigned long long n, int op, float s0, float s1
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        x[i] = unary_forward(op, s0, s1, x[i]);
    }
}

// The op and its derivative (the backward rule at a gradient of 1, from the input or, with
// `from_output`, the output).
extern "C" __global__ void unary_with_derivative_f32(
    float* out, float* derivative, const float* x, unsigned long long n, int op, float s0,
    float s1, int from_output
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        float v = x[i];
        float y = unary_forward(op, s0, s1, v);
        out[i] = y;
        derivative[i] = unary_backward(op, s0, s1, 1.0f, from_output ? y : v);
    }
}

extern "C" __global__ void unary_assign_with_derivative_f32(
    float* x, float* derivative, unsigned long long n, int op, float s0, float s1,
    int from_output
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        float v = x[i];
        float y = unary_forward(op, s0, s1, v);
        x[i] = y;
        derivative[i] = unary_backward(op, s0, s1, 1.0f, from_output ? y : v);
    }
}

extern "C" __global__ void unary_backward_f32(
    float* out, const float* grad, const float* saved, unsigned long long n, int op, float s0,
    float s1
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        out[i] = unary_backward(op, s0, s1, grad[i], saved[i]);
    }
}

extern "C" __global__ void unary_backward_assign_f32(
    float* grad, const float* saved, unsigned long long n, int op, float s0, float s1
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        grad[i] = unary_backward(op, s0, s1, grad[i], saved[i]);
    }
}

extern "C" __global__ void fill_f32(float* x, unsigned long long n, float value) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        x[i] = value;
    }
}
