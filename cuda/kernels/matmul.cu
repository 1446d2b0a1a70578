// matmul.cu: matrix x matrix for prefill, Y[t, r] = sum_k W[r, k] X[t, k].
// Prepended by the Rust side: common.cuh, quant.cuh.
//
// W: nrows rows of ncols elements in the GGUF layout; X: [ntok, ncols] f32; Y: [ntok, nrows] f32.
// A 64-row x 64-token output tile per block of 256 threads (4 x 4 outputs each); the weight
// tile is dequantized into shared memory once per 32-wide K step and reused by all 64 tokens.
// This is the straightforward, verified version: f32 FMA, no tensor cores yet.

#define MM_BM 64
#define MM_BN 64
#define MM_BK 32
#define MM_THREADS 256

template <typename F>
__device__ __forceinline__ void matmul_tile(const uint8_t* __restrict__ w, const float* __restrict__ x,
                                            float* __restrict__ y, int nrows, int ncols, int ntok) {
    __shared__ float ws[MM_BK][MM_BM + 1];
    __shared__ float xs[MM_BK][MM_BN + 1];
    const int tx = threadIdx.x % 16;
    const int ty = threadIdx.x / 16;
    const int row_base = blockIdx.x * MM_BM;
    const int tok_base = blockIdx.y * MM_BN;
    const size_t row_bytes = (size_t)(ncols / F::BS) * F::BYTES;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < ncols; k0 += MM_BK) {
#pragma unroll
        for (int i = 0; i < (MM_BM * MM_BK) / MM_THREADS; ++i) {
            const int e = threadIdx.x + i * MM_THREADS;
            const int r = e / MM_BK, kk = e % MM_BK;
            const int row = row_base + r, k = k0 + kk;
            ws[kk][r] = (row < nrows && k < ncols) ? F::get(w + (size_t)row * row_bytes, k) : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < (MM_BN * MM_BK) / MM_THREADS; ++i) {
            const int e = threadIdx.x + i * MM_THREADS;
            const int t = e / MM_BK, kk = e % MM_BK;
            const int tok = tok_base + t, k = k0 + kk;
            xs[kk][t] = (tok < ntok && k < ncols) ? x[(size_t)tok * ncols + k] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < MM_BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = ws[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = xs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int row = row_base + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int tok = tok_base + tx + 16 * j;
            if (row < nrows && tok < ntok) y[(size_t)tok * nrows + row] = acc[i][j];
        }
    }
}

#define MATMUL(name, F)                                                                                       \
    extern "C" __global__ void __launch_bounds__(MM_THREADS)                                                  \
        name(const uint8_t* __restrict__ w, const float* __restrict__ x, float* __restrict__ y, int nrows,    \
             int ncols, int ntok) {                                                                           \
        matmul_tile<F>(w, x, y, nrows, ncols, ntok);                                                          \
    }

MATMUL(matmul_f32, FmtF32)
MATMUL(matmul_f16, FmtF16)
MATMUL(matmul_q4_0, FmtQ4_0)
MATMUL(matmul_q4_1, FmtQ4_1)
MATMUL(matmul_q5_0, FmtQ5_0)
MATMUL(matmul_q8_0, FmtQ8_0)
MATMUL(matmul_q4_k, FmtQ4_K)
MATMUL(matmul_q5_k, FmtQ5_K)
MATMUL(matmul_q6_k, FmtQ6_K)
MATMUL(matmul_iq4_nl, FmtIQ4_NL)
MATMUL(matmul_nf4, FmtNF4)
