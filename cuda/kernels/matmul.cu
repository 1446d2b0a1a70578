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

// ---- tensor cores: mma.sync m16n8k16, f16 inputs, f32 accumulation ----
//
// The same product with W and X rounded to f16 in shared memory (W after dequantization), on
// the tensor cores (PTX ISA, "Matrix fragments for mma.m16n8k16 with floating point type").
// 128 threads (2 x 2 warps) per 64-row x 64-token tile; each warp owns 32 rows x 32 tokens as
// 2 x 4 mma tiles. Rows of the shared tiles are padded by 8 halves so that the fragment loads
// (8 rows x 4 words per instruction) fall in distinct banks.
// f16 holds activations up to 65504: callers with larger activations use the f32 kernel above.

#define MMA_BM 64
#define MMA_BN 64
#define MMA_BK 32
#define MMA_LD (MMA_BK + 8)
#define MMA_THREADS 128

__device__ __forceinline__ void mma_16816(float* c, const uint32_t* a, const uint32_t* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <typename F>
__device__ __forceinline__ void matmul_mma_tile(const uint8_t* __restrict__ w, const float* __restrict__ x,
                                                float* __restrict__ y, int nrows, int ncols, int ntok) {
    __shared__ __align__(16) uint16_t ws[MMA_BM][MMA_LD];
    __shared__ __align__(16) uint16_t xs[MMA_BN][MMA_LD];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int g = lane / 4, tig = lane % 4;  // PTX's groupID and threadID_in_group
    const int wm = warp / 2, wn = warp % 2;
    const int row_base = blockIdx.x * MMA_BM;
    const int tok_base = blockIdx.y * MMA_BN;
    const size_t row_bytes = (size_t)(ncols / F::BS) * F::BYTES;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;

    for (int k0 = 0; k0 < ncols; k0 += MMA_BK) {
#pragma unroll 4
        for (int i = 0; i < (MMA_BM * MMA_BK) / MMA_THREADS; ++i) {
            const int e = threadIdx.x + i * MMA_THREADS;
            const int r = e / MMA_BK, kk = e % MMA_BK;
            const int row = row_base + r, k = k0 + kk;
            ws[r][kk] = f32_to_f16((row < nrows && k < ncols) ? F::get(w + (size_t)row * row_bytes, k) : 0.0f);
        }
#pragma unroll 4
        for (int i = 0; i < (MMA_BN * MMA_BK) / MMA_THREADS; ++i) {
            const int e = threadIdx.x + i * MMA_THREADS;
            const int t = e / MMA_BK, kk = e % MMA_BK;
            const int tok = tok_base + t, k = k0 + kk;
            xs[t][kk] = f32_to_f16((tok < ntok && k < ncols) ? x[(size_t)tok * ncols + k] : 0.0f);
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < MMA_BK; ks += 16) {
            uint32_t a[2][4], b[4][2];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                const int r0 = wm * 32 + mt * 16;
                a[mt][0] = *(const uint32_t*)&ws[r0 + g][ks + 2 * tig];
                a[mt][1] = *(const uint32_t*)&ws[r0 + g + 8][ks + 2 * tig];
                a[mt][2] = *(const uint32_t*)&ws[r0 + g][ks + 2 * tig + 8];
                a[mt][3] = *(const uint32_t*)&ws[r0 + g + 8][ks + 2 * tig + 8];
            }
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                const int n0 = wn * 32 + nt * 8;
                b[nt][0] = *(const uint32_t*)&xs[n0 + g][ks + 2 * tig];
                b[nt][1] = *(const uint32_t*)&xs[n0 + g][ks + 2 * tig + 8];
            }
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) mma_16816(acc[mt][nt], a[mt], b[nt]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                const int row = row_base + wm * 32 + mt * 16 + g + (c >= 2 ? 8 : 0);
                const int tok = tok_base + wn * 32 + nt * 8 + 2 * tig + (c & 1);
                if (row < nrows && tok < ntok) y[(size_t)tok * nrows + row] = acc[mt][nt][c];
            }
        }
    }
}

#define MATMUL_MMA(name, F)                                                                                   \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                                 \
        name(const uint8_t* __restrict__ w, const float* __restrict__ x, float* __restrict__ y, int nrows,    \
             int ncols, int ntok) {                                                                           \
        matmul_mma_tile<F>(w, x, y, nrows, ncols, ntok);                                                      \
    }

MATMUL_MMA(matmul_mma_f32, FmtF32)
MATMUL_MMA(matmul_mma_f16, FmtF16)
MATMUL_MMA(matmul_mma_q4_0, FmtQ4_0)
MATMUL_MMA(matmul_mma_q4_1, FmtQ4_1)
MATMUL_MMA(matmul_mma_q5_0, FmtQ5_0)
MATMUL_MMA(matmul_mma_q8_0, FmtQ8_0)
MATMUL_MMA(matmul_mma_q4_k, FmtQ4_K)
MATMUL_MMA(matmul_mma_q5_k, FmtQ5_K)
MATMUL_MMA(matmul_mma_q6_k, FmtQ6_K)
MATMUL_MMA(matmul_mma_iq4_nl, FmtIQ4_NL)
MATMUL_MMA(matmul_mma_nf4, FmtNF4)
