// The transpose that materialises a transposed view (GEMM itself is cuBLAS, see `cuda.rs`).

// dst ([cols, rows]) = src ([rows, cols])^T, one thread per element of `dst`.
extern "C" __global__ void transpose_f32(
    float* dst, const float* src, unsigned long long rows, unsigned long long cols
) {
    unsigned long long n = rows * cols;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        unsigned long long col = i / rows;
        unsigned long long row = i % rows;
        dst[i] = src[row * cols + col];
    }
}
