// Dropout with the counter-based mask of `DropoutMask::keeps` in `mod.rs`: the same hash, so
// the same mask as the CPU.

extern "C" __global__ void dropout_f32(
    float* out, const float* x, unsigned long long n, unsigned long long seed,
    unsigned int threshold, float scale
) {
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        unsigned long long z = seed + (i + 1ull) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        out[i] = (unsigned int)(z >> 40) >= threshold ? x[i] * scale : 0.0f;
    }
}
