// Sums over the middle axis of `[outer, len, inner]`, accumulating like `cpu.rs`.

#define BLOCK 256  // threads per block of `sum_rows_f32`; `BLOCK` in the backend's kernels.rs

// `inner == 1`: one block per row of `len` contiguous elements, accumulated in double.
extern "C" __global__ void sum_rows_f32(
    float* out, const float* x, unsigned long long rows, unsigned long long len
) {
    __shared__ double partial[BLOCK];
    for (unsigned long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* values = x + row * len;
        double acc = 0.0;
        for (unsigned long long j = threadIdx.x; j < len; j += BLOCK) {
            acc += (double)values[j];
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
            out[row] = (float)partial[0];
        }
        __syncthreads();
    }
}

// `inner > 1`: one thread per output element, adding the `len` rows in order in float, as the
// CPU adds whole rows.
extern "C" __global__ void sum_strided_f32(
    float* out, const float* x, unsigned long long outer, unsigned long long len,
    unsigned long long inner
) {
    unsigned long long n = outer * inner;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        const float* column = x + (i / inner) * len * inner + i % inner;
        float acc = 0.0f;
        for (unsigned long long j = 0; j < len; ++j) {
            acc += column[j * inner];
        }
        out[i] = acc;
    }
}
