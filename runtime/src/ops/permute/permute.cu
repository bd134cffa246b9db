// A permutation's copy, as `cpu.rs` computes it: one thread per output element.

#define MAX_RANK 6  // `MAX_RANK` in `mod.rs`

// The output's dims and the source's stride for each; `Order` in `cuda.rs`.
struct Order {
    unsigned long long dims[MAX_RANK];
    unsigned long long strides[MAX_RANK];
    unsigned long long rank;
};

extern "C" __global__ void permute_f32(float* dst, const float* src, unsigned long long n, Order p) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        unsigned long long rest = i, offset = 0;
        for (long long dim = (long long)p.rank - 1; dim >= 0; --dim) {
            offset += (rest % p.dims[dim]) * p.strides[dim];
            rest /= p.dims[dim];
        }
        dst[i] = src[offset];
    }
}
