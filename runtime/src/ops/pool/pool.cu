// 2-D pooling over planes of `height x width`; each kernel computes what `cpu.rs` does, in the
// same order: one thread per output forward, one per input backward (gathering, so no atomics).

#define POOL_MAX 0
#define POOL_AVG 1

// The windows of one pooling; `Window` in `cuda.rs`.
struct Window {
    unsigned long long planes, height, width, out_height, out_width;
    unsigned long long kernel, stride, padding;
    int kind;
    int pad;
};

extern "C" __global__ void pool2d_f32(float* out, float* indices, const float* x, Window w) {
    unsigned long long n = w.planes * w.out_height * w.out_width;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long o = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; o < n;
         o += step) {
        unsigned long long ox = o % w.out_width, oy = (o / w.out_width) % w.out_height;
        unsigned long long p = o / (w.out_width * w.out_height);
        const float* input = x + p * w.height * w.width;
        long long y0 = (long long)(oy * w.stride) - (long long)w.padding;
        long long x0 = (long long)(ox * w.stride) - (long long)w.padding;
        long long y_start = y0 < 0 ? 0 : y0, x_start = x0 < 0 ? 0 : x0;
        long long y_end = y0 + (long long)w.kernel, x_end = x0 + (long long)w.kernel;
        if (y_end > (long long)w.height) y_end = (long long)w.height;
        if (x_end > (long long)w.width) x_end = (long long)w.width;
        if (w.kind == POOL_MAX) {
            float best = -__int_as_float(0x7f800000);  // -inf
            unsigned long long at = 0;
            for (long long y = y_start; y < y_end; ++y) {
                for (long long c = x_start; c < x_end; ++c) {
                    float v = input[y * w.width + c];
                    // The first maximum wins; NaN wins and stays.
                    if (v > best || (isnan(v) && !isnan(best))) {
                        best = v;
                        at = (unsigned long long)(y * w.width + c);
                    }
                }
            }
            out[o] = best;
            if (indices) {
                indices[o] = (float)at;
            }
        } else {
            float sum = 0.0f;
            for (long long y = y_start; y < y_end; ++y) {
                for (long long c = x_start; c < x_end; ++c) {
                    sum += input[y * w.width + c];
                }
            }
            out[o] = sum / (float)(w.kernel * w.kernel);
        }
    }
}

// The output positions along one dim whose windows cover input position `at`: [first, last).
__device__ void covering(
    const Window& w, unsigned long long at, unsigned long long outputs, unsigned long long* first,
    unsigned long long* last
) {
    unsigned long long shifted = at + w.padding;
    unsigned long long low = shifted + 1 > w.kernel ? shifted + 1 - w.kernel : 0;
    *first = (low + w.stride - 1) / w.stride;
    unsigned long long end = shifted / w.stride + 1;
    *last = end < outputs ? end : outputs;
    if (*last < *first) *last = *first;
}

extern "C" __global__ void pool2d_backward_f32(
    float* grad_in, const float* grad_out, const float* indices, Window w
) {
    unsigned long long n = w.planes * w.height * w.width;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    float area = (float)(w.kernel * w.kernel);
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        unsigned long long x = i % w.width, y = (i / w.width) % w.height;
        unsigned long long p = i / (w.width * w.height);
        unsigned long long here = y * w.width + x;
        unsigned long long y_first, y_last, x_first, x_last;
        covering(w, y, w.out_height, &y_first, &y_last);
        covering(w, x, w.out_width, &x_first, &x_last);
        float sum = 0.0f;
        for (unsigned long long oy = y_first; oy < y_last; ++oy) {
            for (unsigned long long ox = x_first; ox < x_last; ++ox) {
                unsigned long long o = (p * w.out_height + oy) * w.out_width + ox;
                if (indices) {
                    if ((unsigned long long)indices[o] == here) sum += grad_out[o];
                } else {
                    sum += grad_out[o] / area;
                }
            }
        }
        grad_in[i] = sum;
    }
}
