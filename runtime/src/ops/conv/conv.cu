// Unfolding for 2-D convolutions; each kernel computes what `cpu.rs` does, in the same order.

// The windows of one convolution; `Geometry` in `cuda.rs`.
struct Geometry {
    unsigned long long batch, channels, height, width;
    unsigned long long kernel, stride, padding, dilation;
    unsigned long long out_height, out_width;
};

// One thread per column entry: `cols[n, (c K + ky) K + kx, oy OW + ox]`.
extern "C" __global__ void im2col_f32(float* cols, const float* x, Geometry g) {
    unsigned long long positions = g.out_height * g.out_width;
    unsigned long long taps = g.kernel * g.kernel;
    unsigned long long total = g.batch * g.channels * taps * positions;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += step) {
        unsigned long long ox = i % g.out_width, oy = (i / g.out_width) % g.out_height;
        unsigned long long row = (i / positions) % (g.channels * taps);
        unsigned long long n = i / (positions * g.channels * taps);
        unsigned long long kx = row % g.kernel, ky = (row / g.kernel) % g.kernel;
        unsigned long long c = row / taps;
        long long y = (long long)(oy * g.stride + ky * g.dilation) - (long long)g.padding;
        long long xx = (long long)(ox * g.stride + kx * g.dilation) - (long long)g.padding;
        float v = 0.0f;
        if (y >= 0 && xx >= 0 && y < (long long)g.height && xx < (long long)g.width) {
            v = x[((n * g.channels + c) * g.height + (unsigned long long)y) * g.width
                  + (unsigned long long)xx];
        }
        cols[i] = v;
    }
}

// The output position along one dim whose tap `tap` reads input position `at`, or -1.
__device__ long long source(const Geometry& g, unsigned long long at, unsigned long long tap,
                            unsigned long long outputs) {
    long long shifted = (long long)(at + g.padding) - (long long)(tap * g.dilation);
    if (shifted < 0 || shifted % (long long)g.stride != 0) return -1;
    long long o = shifted / (long long)g.stride;
    return o < (long long)outputs ? o : -1;
}

// One thread per input element, gathering in kernel-tap order.
extern "C" __global__ void col2im_f32(float* x, const float* cols, Geometry g) {
    unsigned long long positions = g.out_height * g.out_width;
    unsigned long long rows = g.channels * g.kernel * g.kernel;
    unsigned long long total = g.batch * g.channels * g.height * g.width;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += step) {
        unsigned long long xx = i % g.width, y = (i / g.width) % g.height;
        unsigned long long c = (i / (g.width * g.height)) % g.channels;
        unsigned long long n = i / (g.width * g.height * g.channels);
        float sum = 0.0f;
        for (unsigned long long ky = 0; ky < g.kernel; ++ky) {
            long long oy = source(g, y, ky, g.out_height);
            if (oy < 0) continue;
            for (unsigned long long kx = 0; kx < g.kernel; ++kx) {
                long long ox = source(g, xx, kx, g.out_width);
                if (ox < 0) continue;
                unsigned long long row = (c * g.kernel + ky) * g.kernel + kx;
                sum += cols[(n * rows + row) * positions + (unsigned long long)oy * g.out_width
                            + (unsigned long long)ox];
            }
        }
        x[i] = sum;
    }
}
