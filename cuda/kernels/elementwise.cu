// elementwise.cu: activations, gated units, residual add, embedding lookup, argmax, pooling of
// packed sequences.
// Prepended by the Rust side: common.cuh, quant.cuh.
// All element-wise kernels: one thread per element, any n; outputs may alias inputs.

#define ELEMENT_INDEX                                   \
    const int i = blockIdx.x * blockDim.x + threadIdx.x; \
    if (i >= n) return;

extern "C" __global__ void gelu(const float* x, float* out, int n) {
    ELEMENT_INDEX
    out[i] = gelu_f(x[i]);
}
// The exact GELU, x/2 (1 + erf(x / sqrt 2)) (Hugging Face's "gelu", which BERT is trained with).
extern "C" __global__ void gelu_erf(const float* x, float* out, int n) {
    ELEMENT_INDEX
    const float v = x[i];
    out[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}
// SwiGLU: silu(gate) * up.
extern "C" __global__ void swiglu(const float* gate, const float* up, float* out, int n) {
    ELEMENT_INDEX
    out[i] = silu_f(gate[i]) * up[i];
}
// GeGLU: gelu(gate) * up.
extern "C" __global__ void geglu(const float* gate, const float* up, float* out, int n) {
    ELEMENT_INDEX
    out[i] = gelu_f(gate[i]) * up[i];
}
extern "C" __global__ void add(const float* a, const float* b, float* out, int n) {
    ELEMENT_INDEX
    out[i] = a[i] + b[i];
}
// out[r, c] = x[r, c] + b[c]: a bias row added to every token of a batch (Phi-2, Qwen2).
extern "C" __global__ void add_rows(const float* x, const float* __restrict__ b, float* out, int nrows, int ncols) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)nrows * ncols) return;
    out[i] = x[i] + b[i % ncols];
}
extern "C" __global__ void scale(const float* x, float* out, float s, int n) {
    ELEMENT_INDEX
    out[i] = x[i] * s;
}

// Index of the largest of x[0..n) (the lowest index on ties; NaN never wins), written to out[0].
// One block of 1024 threads.
extern "C" __global__ void argmax(const float* __restrict__ x, int* __restrict__ out, int n) {
    __shared__ float sv[32];
    __shared__ int si[32];
    float best = NEG_INF;
    int bi = n;  // larger than any index: loses every tie
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = x[i];
        if (v > best || (v == best && i < bi)) {
            best = v;
            bi = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(FULL_MASK, best, o);
        const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
        if (ov > best || (ov == best && oi < bi)) {
            best = ov;
            bi = oi;
        }
    }
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        const int nwarps = blockDim.x / WARP_SIZE;
        best = lane < nwarps ? sv[lane] : NEG_INF;
        bi = lane < nwarps ? si[lane] : n;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, best, o);
            const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
            if (ov > best || (ov == best && oi < bi)) {
                best = ov;
                bi = oi;
            }
        }
        // All NaN (or n == 0): report 0 rather than an index out of range.
        if (lane == 0) out[0] = bi < n ? bi : 0;
    }
}

// Embedding lookup: out[i, :] = dequantized row ids[i] of table ([nrows] rows of ncols).
// Grid (ceil(ncols / blockDim.x), n_ids). An id outside [0, nrows) gives a row of zeros.
template <typename F>
__device__ __forceinline__ void get_rows(const uint8_t* __restrict__ table, const int* __restrict__ ids,
                                         float* __restrict__ out, int nrows, int ncols) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= ncols) return;
    const int id = ids[blockIdx.y];
    const size_t row_bytes = (size_t)(ncols / F::BS) * F::BYTES;
    out[(size_t)blockIdx.y * ncols + k] = (id >= 0 && id < nrows) ? F::get(table + (size_t)id * row_bytes, k) : 0.0f;
}

#define GET_ROWS(name, F)                                                                                    \
    extern "C" __global__ void name(const uint8_t* __restrict__ table, const int* __restrict__ ids,          \
                                    float* __restrict__ out, int nrows, int ncols) {                         \
        get_rows<F>(table, ids, out, nrows, ncols);                                                          \
    }

GET_ROWS(get_rows_f32, FmtF32)
GET_ROWS(get_rows_f16, FmtF16)
GET_ROWS(get_rows_q4_0, FmtQ4_0)
GET_ROWS(get_rows_q4_1, FmtQ4_1)
GET_ROWS(get_rows_q5_0, FmtQ5_0)
GET_ROWS(get_rows_q8_0, FmtQ8_0)
GET_ROWS(get_rows_q4_k, FmtQ4_K)
GET_ROWS(get_rows_q5_k, FmtQ5_K)
GET_ROWS(get_rows_q6_k, FmtQ6_K)
GET_ROWS(get_rows_iq4_nl, FmtIQ4_NL)
GET_ROWS(get_rows_nf4, FmtNF4)

// Pooling of packed sequences (boundaries as attention_packed's: rows seqs[i] .. seqs[i + 1]
// of x are sequence i): out row i = the mean (kind 0), the first row (1) or the last row (2)
// of sequence i; an empty sequence gives zeros. x: rows of x_stride floats, out: rows of
// out_stride floats, ncols columns of each pooled. The mean sums the rows in order in f32 and
// divides once, as the CPU backend does. Bounds are clipped to the nrows rows of x, so reads
// stay within them whatever seqs holds. Grid (ceil(ncols / blockDim.x), n_seq).
extern "C" __global__ void pool_rows(const float* __restrict__ x, const int* __restrict__ seqs,
                                     float* __restrict__ out, int nrows, int ncols, int x_stride, int out_stride,
                                     int kind) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= ncols) return;
    const int s = blockIdx.y;
    const int r0 = min(max(seqs[s], 0), nrows);
    const int r1 = min(max(seqs[s + 1], r0), nrows);
    float acc = 0.0f;
    if (r1 > r0) {
        if (kind == 1) {
            acc = x[(size_t)r0 * x_stride + c];
        } else if (kind == 2) {
            acc = x[(size_t)(r1 - 1) * x_stride + c];
        } else {
            for (int r = r0; r < r1; ++r) acc += x[(size_t)r * x_stride + c];
            acc /= (float)(r1 - r0);
        }
    }
    out[(size_t)s * out_stride + c] = acc;
}
