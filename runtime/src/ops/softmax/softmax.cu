// Softmax and log-softmax along the middle axis of an `[outer, len, inner]` view, one thread
// per slice, computing what `cpu.rs` computes in the same order: the slice's maximum in f32,
// its sum of exponentials and every result in double precision.

#define OP_SOFTMAX 0
#define OP_LOG_SOFTMAX 1

extern "C" __global__ void softmax_f32(
    float* out, const float* x, unsigned long long outer, unsigned long long len,
    unsigned long long inner, int op
) {
    unsigned long long slices = outer * inner;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long s = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         s < slices; s += step) {
        unsigned long long base = (s / inner) * len * inner + s % inner;
        float max_f = __int_as_float(0xff800000);  // -inf
        for (unsigned long long j = 0; j < len; ++j) {
            max_f = fmaxf(max_f, x[base + j * inner]);
        }
        double max = (double)max_f;
        double sum_exp = 0.0;
        for (unsigned long long j = 0; j < len; ++j) {
            sum_exp += exp((double)x[base + j * inner] - max);
        }
        if (op == OP_SOFTMAX) {
            for (unsigned long long j = 0; j < len; ++j) {
                unsigned long long k = base + j * inner;
                out[k] = (float)(exp((double)x[k] - max) / sum_exp);
            }
        } else {
            double log_sum = max + log(sum_exp);
            for (unsigned long long j = 0; j < len; ++j) {
                unsigned long long k = base + j * inner;
                out[k] = (float)((double)x[k] - log_sum);
            }
        }
    }
}

extern "C" __global__ void softmax_backward_f32(
    float* out, const float* y, const float* g, unsigned long long outer,
    unsigned long long len, unsigned long long inner, int op
) {
    unsigned long long slices = outer * inner;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long s = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         s < slices; s += step) {
        unsigned long long base = (s / inner) * len * inner + s % inner;
        double acc = 0.0;
        for (unsigned long long j = 0; j < len; ++j) {
            unsigned long long k = base + j * inner;
            acc += op == OP_SOFTMAX ? (double)g[k] * (double)y[k] : (double)g[k];
        }
        for (unsigned long long j = 0; j < len; ++j) {
            unsigned long long k = base + j * inner;
            out[k] = op == OP_SOFTMAX ? (float)(((double)g[k] - acc) * (double)y[k])
                                      : (float)((double)g[k] - exp((double)y[k]) * acc);
        }
    }
}

// Causal attention weights from `[.., size, size]` scores, one thread per row: row `r`
// normalises `scale * x` over its first `r % size + 1` entries, as `cpu.rs` does, and writes
// 0 after them.
extern "C" __global__ void causal_softmax_f32(
    float* out, const float* x, unsigned long long rows, unsigned long long size, float scale
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long r = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         r < rows; r += step) {
        unsigned long long base = r * size, seen = r % size + 1;
        float max_f = __int_as_float(0xff800000);  // -inf
        for (unsigned long long j = 0; j < seen; ++j) {
            max_f = fmaxf(max_f, x[base + j] * scale);
        }
        double max = (double)max_f;
        double sum_exp = 0.0;
        for (unsigned long long j = 0; j < seen; ++j) {
            sum_exp += exp((double)(x[base + j] * scale) - max);
        }
        for (unsigned long long j = 0; j < seen; ++j) {
            out[base + j] = (float)(exp((double)(x[base + j] * scale) - max) / sum_exp);
        }
        for (unsigned long long j = seen; j < size; ++j) {
            out[base + j] = 0.0f;
        }
    }
}

// The gradient through `causal_softmax_f32`, from its output `y` and the output's gradient
// `g`: `scale * y * (g - sum(g * y))` over row `r`'s first `r % size + 1` entries, and 0
// after them, as `cpu.rs` computes it (the masked entries get no gradient, and their `g` is
// not read).
extern "C" __global__ void causal_softmax_backward_f32(
    float* out, const float* y, const float* g, unsigned long long rows,
    unsigned long long size, float scale
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long r = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         r < rows; r += step) {
        unsigned long long base = r * size, seen = r % size + 1;
        double dot = 0.0;
        for (unsigned long long j = 0; j < seen; ++j) {
            dot += (double)g[base + j] * (double)y[base + j];
        }
        for (unsigned long long j = 0; j < seen; ++j) {
            unsigned long long k = base + j;
            out[k] = (float)(((double)g[k] - dot) * (double)y[k] * (double)scale);
        }
        for (unsigned long long j = seen; j < size; ++j) {
            out[base + j] = 0.0f;
        }
    }
}
