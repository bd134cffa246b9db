// Layer normalisation of rows of `len`, as `cpu.rs` computes it: one block of `BLOCK` threads
// per row, sums in double.

#define BLOCK 256  // threads per block; `BLOCK` in the backend's kernels.rs

// The sum of `value` over the block's threads, in `partial` (BLOCK doubles); all threads get
// it.
__device__ double block_sum(double* partial, double value) {
    partial[threadIdx.x] = value;
    __syncthreads();
    for (unsigned int half = BLOCK / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            partial[threadIdx.x] += partial[threadIdx.x + half];
        }
        __syncthreads();
    }
    double sum = partial[0];
    __syncthreads();
    return sum;
}

extern "C" __global__ void layer_norm_f32(
    float* y, float* mean, float* rstd, const float* x, const float* weight, const float* bias,
    unsigned long long rows, unsigned long long len, float eps
) {
    __shared__ double partial[BLOCK];
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* in = x + row * len;
        double acc = 0.0;
        for (unsigned long long j = threadIdx.x; j < len; j += BLOCK) acc += (double)in[j];
        double mu = block_sum(partial, acc) / (double)len;
        acc = 0.0;
        for (unsigned long long j = threadIdx.x; j < len; j += BLOCK) {
            double d = (double)in[j] - mu;
            acc += d * d;
        }
        double var = block_sum(partial, acc) / (double)len;
        float inv = (float)(1.0 / sqrt(var + (double)eps));
        float m = (float)mu;
        for (unsigned long long j = threadIdx.x; j < len; j += BLOCK) {
            float scale = weight ? weight[j] : 1.0f;
            float shift = bias ? bias[j] : 0.0f;
            y[row * len + j] = (in[j] - m) * inv * scale + shift;
        }
        if (threadIdx.x == 0) {
            mean[row] = m;
            rstd[row] = inv;
        }
    }
}

extern "C" __global__ void layer_norm_backward_f32(
    float* grad_x, const float* x, const float* grad, const float* weight, const float* mean,
    const float* rstd, unsigned long long rows, unsigned long long len
) {
    __shared__ double partial[BLOCK];
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* in = x + row * len;
        const float* g = grad + row * len;
        float m = mean[row], inv = rstd[row];
        double acc_gw = 0.0, acc_gw_xhat = 0.0;
        for (unsigned long long j = threadIdx.x; j < len; j += BLOCK) {
            float gw = g[j] * (weight ? weight[j] : 1.0f);
            float xhat = (in[j] - m) * inv;
            acc_gw += (double)gw;
            acc_gw_xhat += (double)gw * (double)xhat;
        }
        float mean_gw = (float)(block_sum(partial, acc_gw) / (double)len);
        float mean_gw_xhat = (float)(block_sum(partial, acc_gw_xhat) / (double)len);
        for (unsigned long long j = threadIdx.x; j < len; j += BLOCK) {
            float gw = g[j] * (weight ? weight[j] : 1.0f);
            float xhat = (in[j] - m) * inv;
            grad_x[row * len + j] = inv * (gw - mean_gw - xhat * mean_gw_xhat);
        }
    }
}

// The affine parameters' gradients: one thread per column, adding the rows in order in float,
// as the CPU does.
extern "C" __global__ void layer_norm_param_grads_f32(
    float* grad_weight, float* grad_bias, const float* x, const float* grad, const float* mean,
    const float* rstd, unsigned long long rows, unsigned long long len
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long j = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         j < len; j += step) {
        float acc_weight = 0.0f, acc_bias = 0.0f;
        for (unsigned long long row = 0; row < rows; ++row) {
            float g = grad[row * len + j];
            acc_weight += (x[row * len + j] - mean[row]) * rstd[row] * g;
            acc_bias += g;
        }
        grad_weight[j] = acc_weight;
        grad_bias[j] = acc_bias;
    }
}
