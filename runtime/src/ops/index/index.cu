// Indexing along a dim of `[outer, len, inner]`, as `cpu.rs` computes it. Index buffers hold
// whole numbers as floats, checked on the host to be in range.

// A tensor along one dim; `Line` in `cuda.rs`.
struct Line {
    unsigned long long outer, len, inner;
};

// A copy of `count` slices along a dim; `Block` in `cuda.rs`.
struct Block {
    unsigned long long outer, inner, src_len, src_offset, dst_len, dst_offset, count;
};

// One thread per `[o, i]` line: its largest (`max`) or smallest element and that index; NaN is
// the extreme, and the first of equal extremes stays.
extern "C" __global__ void extremum_f32(
    float* values, float* indices, const float* x, Line l, int max
) {
    unsigned long long n = l.outer * l.inner;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < n;
         t += step) {
        unsigned long long o = t / l.inner, i = t % l.inner;
        const float* line = x + o * l.len * l.inner + i;
        float best = line[0];
        unsigned long long best_j = 0;
        for (unsigned long long j = 1; j < l.len; ++j) {
            float v = line[j * l.inner];
            bool better = max ? v > best : v < best;
            if (!isnan(best) && (better || isnan(v))) {
                best = v;
                best_j = j;
            }
        }
        values[t] = best;
        indices[t] = (float)best_j;
    }
}

// One thread per copied element.
extern "C" __global__ void copy_block_f32(float* dst, const float* src, Block b) {
    unsigned long long n = b.outer * b.count * b.inner;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < n;
         t += step) {
        unsigned long long i = t % b.inner, j = (t / b.inner) % b.count, o = t / (b.inner * b.count);
        dst[(o * b.dst_len + b.dst_offset + j) * b.inner + i] =
            src[(o * b.src_len + b.src_offset + j) * b.inner + i];
    }
}

// One thread per output element: `out[o, j, i] = x[o, indices[j], i]`.
extern "C" __global__ void gather_f32(
    float* out, const float* x, const float* indices, unsigned long long count, Line l
) {
    unsigned long long n = l.outer * count * l.inner;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < n;
         t += step) {
        unsigned long long i = t % l.inner, j = (t / l.inner) % count, o = t / (l.inner * count);
        unsigned long long row = (unsigned long long)indices[j];
        out[t] = x[(o * l.len + row) * l.inner + i];
    }
}

// One thread per source element: `out[o, indices[j], i] += src[o, j, i]`, atomically, so
// repeated indices add up (in no fixed order).
extern "C" __global__ void scatter_add_f32(
    float* out, const float* src, const float* indices, unsigned long long count, Line l
) {
    unsigned long long n = l.outer * count * l.inner;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < n;
         t += step) {
        unsigned long long i = t % l.inner, j = (t / l.inner) % count, o = t / (l.inner * count);
        unsigned long long row = (unsigned long long)indices[j];
        atomicAdd(out + (o * l.len + row) * l.inner + i, src[t]);
    }
}

// One thread per element: `x[m, i, j] = value` where `j > i`, square matrices of `size`.
extern "C" __global__ void fill_above_diagonal_f32(
    float* x, unsigned long long matrices, unsigned long long size, float value
) {
    unsigned long long n = matrices * size * size;
    unsigned long long step = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < n;
         t += step) {
        if (t % size > (t / size) % size) {
            x[t] = value;
        }
    }
}
