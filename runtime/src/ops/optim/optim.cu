// Fused optimizer updates, one thread per element, computing what `cpu.rs` computes in the
// same order: `fmaf` exactly where the CPU uses `mul_add` (the module is compiled with
// `--fmad=false`, so nothing else is fused).
//
// `kind` is the `OptimStep` variant and `h` its hyper-parameters, in the order `cuda.rs`
// writes them; `s0`..`s2` are the state buffers in `OptimStep`'s documented order (null when
// the step has fewer). With `FLAG_DEVICE_SCALARS`, `scalars` is the parameter's
// `StepScalars` buffer (the count, a count of arrived blocks, then the learning rate and
// beta1 as the two 32-bit halves of a double each), which the kernel advances by one step of
// `rule`, computing Adam's four step-dependent scalars from it instead of reading them from
// `h`; else null.

#define KIND_SGD 0
#define KIND_ADAM 1
#define KIND_ADADELTA 2
#define KIND_ADAGRAD 3
#define KIND_RMSPROP 4

#define FLAG_MAXIMIZE 1u
#define FLAG_NESTEROV 2u
#define FLAG_FIRST 4u
#define FLAG_AMSGRAD 8u
#define FLAG_CENTERED 16u
#define FLAG_DEVICE_SCALARS 32u

struct Hyper {
    float v[8];
};

// The `Hyper` slots of Adam's step-dependent scalars, which device scalars overwrite.
#define ADAM_DECAY_FACTOR 0
#define ADAM_ONE_MINUS_BETA1 2
#define ADAM_BIAS_CORRECTION2_SQRT 6
#define ADAM_NEG_STEP_SIZE 7

// The words of a `StepScalars` buffer.
#define SCALARS_COUNT 0
#define SCALARS_ARRIVED 1
#define SCALARS_LR 2
#define SCALARS_BETA1 4

// What Adam's step scalars need besides the buffer: beta2, and AdamW's weight decay (0 for
// Adam).
struct AdamRule {
    double beta2;
    double decoupled_weight_decay;
};

// The double whose two 32-bit halves, high first, are the bits of `words[0]` and `words[1]`.
__device__ double double_from_words(const float* words) {
    return __hiloint2double(__float_as_int(words[0]), __float_as_int(words[1]));
}

// PyTorch's lerp for a scalar weight: the form depends on |weight| < 0.5.
__device__ float lerp(float start, float end, float weight) {
    if (fabsf(weight) < 0.5f) {
        return start + weight * (end - start);
    }
    return end - (end - start) * (1.0f - weight);
}

// g, negated when maximizing, plus the L2 penalty weight_decay * p.
__device__ float effective_grad(float g, float p, float weight_decay, unsigned int flags) {
    if (flags & FLAG_MAXIMIZE) {
        g = -g;
    }
    return weight_decay == 0.0f ? g : fmaf(weight_decay, p, g);
}

// Adam's scalars for the step after `scalars`' count, in double precision with the host
// path's formulas (`StepScalars::advance`): `1 - lr * decoupled_weight_decay`, `1 - beta1`,
// `sqrt(1 - beta2^t)` and `-lr / (1 - beta1^t)`. Each block's first thread computes them
// and shares them; once every block has read the count, the last block to arrive stores the
// new step in the buffer.
__device__ float4 advance_adam_scalars(float* scalars, AdamRule rule) {
    __shared__ float shared[4];
    __shared__ double step;
    if (threadIdx.x == 0) {
        double lr = double_from_words(scalars + SCALARS_LR);
        double beta1 = double_from_words(scalars + SCALARS_BETA1);
        step = (double)scalars[SCALARS_COUNT] + 1.0;
        shared[0] = rule.decoupled_weight_decay == 0.0
            ? 1.0f
            : (float)(1.0 - lr * rule.decoupled_weight_decay);
        shared[1] = (float)(1.0 - beta1);
        shared[2] = (float)sqrt(1.0 - pow(rule.beta2, step));
        shared[3] = (float)(-lr / (1.0 - pow(beta1, step)));
    }
    __syncthreads();
    float4 current = make_float4(shared[0], shared[1], shared[2], shared[3]);
    if (threadIdx.x == 0) {
        // Orders this block's read of the count before its arrival, and the last block's
        // arrival before its stores.
        __threadfence();
        unsigned int* arrived = (unsigned int*)&scalars[SCALARS_ARRIVED];
        if (atomicAdd(arrived, 1u) == gridDim.x - 1) {
            scalars[SCALARS_COUNT] = (float)step;
            *arrived = 0u;
        }
    }
    return current;
}

extern "C" __global__ void optim_step_f32(
    float* param, const float* grad, float* s0, float* s1, float* s2, float* scalars,
    unsigned long long n, int kind, unsigned int flags, Hyper h, AdamRule rule
) {
    if (flags & FLAG_DEVICE_SCALARS) {
        float4 current = advance_adam_scalars(scalars, rule);
        h.v[ADAM_DECAY_FACTOR] = current.x;
        h.v[ADAM_ONE_MINUS_BETA1] = current.y;
        h.v[ADAM_BIAS_CORRECTION2_SQRT] = current.z;
        h.v[ADAM_NEG_STEP_SIZE] = current.w;
    }
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        float p = param[i];
        switch (kind) {
        case KIND_SGD: {
            // h: lr, weight_decay, momentum, one_minus_dampening
            float lr = h.v[0], momentum = h.v[2], one_minus_dampening = h.v[3];
            float g = effective_grad(grad[i], p, h.v[1], flags);
            float update = g;
            if (momentum != 0.0f) {
                float b = (flags & FLAG_FIRST) ? g : fmaf(one_minus_dampening, g, s0[i] * momentum);
                s0[i] = b;
                update = (flags & FLAG_NESTEROV) ? fmaf(momentum, b, g) : b;
            }
            p = fmaf(-lr, update, p);
            break;
        }
        case KIND_ADAM: {
            // h: decay_factor, weight_decay, one_minus_beta1, beta2, one_minus_beta2, eps,
            //    bias_correction2_sqrt, neg_step_size
            if (h.v[ADAM_DECAY_FACTOR] != 1.0f) {
                p *= h.v[ADAM_DECAY_FACTOR];
            }
            float g = effective_grad(grad[i], p, h.v[1], flags);
            float m = lerp(s0[i], g, h.v[ADAM_ONE_MINUS_BETA1]);
            float v = s1[i] * h.v[3] + h.v[4] * g * g;
            s0[i] = m;
            s1[i] = v;
            float second = v;
            if (flags & FLAG_AMSGRAD) {
                second = fmaxf(s2[i], v);
                s2[i] = second;
            }
            float denom = sqrtf(second) / h.v[ADAM_BIAS_CORRECTION2_SQRT] + h.v[5];
            p += h.v[ADAM_NEG_STEP_SIZE] * m / denom;
            break;
        }
        case KIND_ADADELTA: {
            // h: lr, rho, one_minus_rho, eps, weight_decay
            float g = effective_grad(grad[i], p, h.v[4], flags);
            float sq = s0[i] * h.v[1] + h.v[2] * g * g;
            float std = sqrtf(sq + h.v[3]);
            float delta = sqrtf(s1[i] + h.v[3]) / std * g;
            s0[i] = sq;
            s1[i] = s1[i] * h.v[1] + h.v[2] * delta * delta;
            p += -h.v[0] * delta;
            break;
        }
        case KIND_ADAGRAD: {
            // h: neg_clr, weight_decay, eps
            float g = effective_grad(grad[i], p, h.v[1], flags);
            float sum = s0[i] + g * g;
            s0[i] = sum;
            float std = sqrtf(sum) + h.v[2];
            p += h.v[0] * g / std;
            break;
        }
        case KIND_RMSPROP: {
            // h: lr, alpha, one_minus_alpha, eps, weight_decay, momentum
            // state: square_avg, then momentum_buffer if momentum > 0, then grad_avg if centered
            float lr = h.v[0], momentum = h.v[5];
            float* buf = momentum > 0.0f ? s1 : 0;
            float* grad_avg = (flags & FLAG_CENTERED) ? (momentum > 0.0f ? s2 : s1) : 0;
            float g = effective_grad(grad[i], p, h.v[4], flags);
            float sq = s0[i] * h.v[1] + h.v[2] * g * g;
            s0[i] = sq;
            float avg;
            if (grad_avg) {
                float ga = lerp(grad_avg[i], g, h.v[2]);
                grad_avg[i] = ga;
                avg = sqrtf(sq + -ga * ga);
            } else {
                avg = sqrtf(sq);
            }
            avg += h.v[3];
            if (buf) {
                float b = buf[i] * momentum + g / avg;
                buf[i] = b;
                p += -lr * b;
            } else {
                p += -lr * g / avg;
            }
            break;
        }
        default:  // a kind this file does not know
            p = __int_as_float(0x7fc00000);
        }
        param[i] = p;
    }
}
