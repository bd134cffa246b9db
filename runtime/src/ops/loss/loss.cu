// Per-element and per-row losses with their derivatives. The op codes are `PointwiseLoss`'s
// and `ClassLoss`'s, encoded by `cuda.rs` beside this file; each arm computes what the same
// arm of `cpu.rs` does, in the same order and precision.

#define LOSS_SQUARED 0
#define LOSS_ABSOLUTE 1
#define LOSS_SMOOTH_L1 2
#define LOSS_BCE_WITH_LOGITS 3

#define LOSS_CROSS_ENTROPY 0
#define LOSS_NLL 1

// -1, 0 or 1, like torch.sign.
__device__ float sign(float v) {
    return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
}

// The logistic function, without overflow for large |v|.
__device__ float sigmoid(float v) {
    if (v >= 0.0f) {
        return 1.0f / (1.0f + expf(-v));
    }
    float e = expf(v);
    return e / (1.0f + e);
}

extern "C" __global__ void pointwise_loss_f32(
    float* values, float* grad, const float* x, const float* t, unsigned long long n, int op,
    float beta
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        float xi = x[i];
        float d = xi - t[i];
        float v, g;
        switch (op) {
        case LOSS_SQUARED:
            v = d * d;
            g = 2.0f * d;
            break;
        case LOSS_ABSOLUTE:
            v = fabsf(d);
            g = sign(d);
            break;
        case LOSS_SMOOTH_L1:
            if (fabsf(d) < beta) {
                v = 0.5f * d * d / beta;
                g = d / beta;
            } else {
                v = fabsf(d) - 0.5f * beta;
                g = sign(d);
            }
            break;
        case LOSS_BCE_WITH_LOGITS:
            v = fmaxf(xi, 0.0f) - xi * t[i] + log1pf(expf(-fabsf(xi)));
            g = sigmoid(xi) - t[i];
            break;
        default:  // an op code this file does not know
            v = g = __int_as_float(0x7fc00000);
        }
        values[i] = v;
        grad[i] = g;
    }
}

// One thread per row of the [rows, classes] input; cross-entropy accumulates in double like
// the CPU.
extern "C" __global__ void class_loss_f32(
    float* values, float* grad, const float* x, const float* labels,
    unsigned long long rows, unsigned long long classes, int op, float label_smoothing
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long r = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         r < rows; r += step) {
        const float* row = x + r * classes;
        float* grad_row = grad + r * classes;
        float label_f = labels[r];
        // In double, where `classes` converts exactly even above 2^24.
        if (!(label_f >= 0.0f && (double)label_f < (double)classes &&
              label_f == floorf(label_f))) {
            // Out of range (the host checks first; this keeps the kernel in bounds anyway).
            values[r] = __int_as_float(0x7fc00000);
            for (unsigned long long j = 0; j < classes; ++j) {
                grad_row[j] = __int_as_float(0x7fc00000);
            }
            continue;
        }
        unsigned long long label = (unsigned long long)label_f;
        if (op == LOSS_CROSS_ENTROPY) {
            double smooth = (double)label_smoothing;
            double uniform = smooth / (double)classes;
            // log-sum-exp around the row's maximum: no overflow for large logits.
            float max_f = __int_as_float(0xff800000);  // -inf
            for (unsigned long long j = 0; j < classes; ++j) {
                max_f = fmaxf(max_f, row[j]);
            }
            double max = (double)max_f;
            double sum_exp = 0.0;
            double sum = 0.0;
            for (unsigned long long j = 0; j < classes; ++j) {
                sum_exp += exp((double)row[j] - max);
                sum += (double)row[j];
            }
            double lse = max + log(sum_exp);
            double mean = sum / (double)classes;
            double nll = lse - (double)row[label];
            values[r] = (float)((1.0 - smooth) * nll + smooth * (lse - mean));
            for (unsigned long long j = 0; j < classes; ++j) {
                double target = (j == label ? 1.0 - smooth : 0.0) + uniform;
                grad_row[j] = (float)(exp((double)row[j] - lse) - target);
            }
        } else if (op == LOSS_NLL) {
            values[r] = -row[label];
            for (unsigned long long j = 0; j < classes; ++j) {
                grad_row[j] = 0.0f;
            }
            grad_row[label] = -1.0f;
        }
    }
}
