// Per-channel sums and affine maps over `[outer, channels, inner]`, as `cpu.rs` computes them.

#define BLOCK 256  // threads per block of `channel_sum_f32`; `BLOCK` in the backend's kernels.rs

// The tensor's layout; `Layout` in `cuda.rs`.
struct Layout {
    unsigned long long outer, channels, inner;
};

// One block per channel: `out[c]` = the sum over channel `c` of `x`, or (when `mean` is given)
// of `a * (x - mean[c])`, with `a` = `x - mean[c]` when not given; accumulated in double.
extern "C" __global__ void channel_sum_f32(
    float* out, const float* x, const float* a, const float* mean, Layout l
) {
    __shared__ double partial[BLOCK];
    unsigned long long per_channel = l.outer * l.inner;
    for (unsigned long long c = blockIdx.x; c < l.channels; c += gridDim.x) {
        double center = mean ? (double)mean[c] : 0.0;
        double acc = 0.0;
        for (unsigned long long j = threadIdx.x; j < per_channel; j += BLOCK) {
            unsigned long long i = ((j / l.inner) * l.channels + c) * l.inner + j % l.inner;
            double v = (double)x[i];
            if (!mean) {
                acc += v;
            } else if (a) {
                acc += (double)a[i] * (v - center);
            } else {
                acc += (v - center) * (v - center);
            }
        }
        partial[threadIdx.x] = acc;
        __syncthreads();
        for (unsigned int half = BLOCK / 2; half > 0; half /= 2) {
            if (threadIdx.x < half) {
                partial[threadIdx.x] += partial[threadIdx.x + half];
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            out[c] = (float)partial[0];
        }
        __syncthreads();
    }
}

// `out = x * scale[c] + shift[c]`, plus `(y - center[c]) * coef[c]` when `y` is given.
extern "C" __global__ void channel_affine_f32(
    float* out, const float* x, const float* scale, const float* shift, const float* y,
    const float* center, const float* coef, Layout l
) {
    unsigned long long n = l.outer * l.channels * l.inner;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        unsigned long long c = (i / l.inner) % l.channels;
        float value = x[i] * scale[c] + shift[c];
        if (y) {
            value = value + (y[i] - center[c]) * coef[c];
        }
        out[i] = value;
    }
}
