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

// ---- tensor cores, integer: mma.sync m16n8k32 s8 x s8 -> s32 over Q8_1 activations ----
//
// Y[t, r] = sum over 32-blocks b of  dw[r,b] * dx[t,b] * sum_k qw[r,k] qx[t,k]
// (+ mw[r,b] * dx[t,b] * sum_k qx[t,k] for the types with a min), where X is already quantized to Q8_1 (quantize_q8_1 over the [ntok, ncols] rows):
// the same arithmetic as the decode matrix-vector kernels, so no f16 range limit. One 32-wide
// block is exactly one m16n8k32 K step. Per block of 128 threads (2 x 2 warps): 64 rows x 64
// tokens, K staged 128 values (4 blocks) at a time in shared memory as int8 with per-block
// scales; each warp owns 32 rows x 32 tokens = 2 x 4 mma tiles.
// Fragment layouts: PTX ISA, "Matrix fragments for mma.m16n8k32" (.s8): A a0..a3 row g cols
// 4t..4t+3, a4..a7 row g+8, a8..a11 row g cols 16+4t.., a12..a15 row g+8 cols 16+4t..;
// B b0..b3 k 4t..4t+3 col g, b4..b7 k 16+4t.. col g; C c0, c1 row g cols 2t, 2t+1, c2, c3 row g+8.
// Requires ncols % 32 == 0 (a whole number of weight and Q8_1 blocks).

#define MMQ_BM 64
#define MMQ_BN 64
#define MMQ_BLOCKS 4                  // 32-wide blocks per K stage
#define MMQ_BK (32 * MMQ_BLOCKS)
#define MMQ_LD (MMQ_BK + 16)          // bytes per shared row: 36 words, conflict-free fragments
#define MMQ_THREADS 128

// mma.sync m16n8k32 needs sm_80: on older devices the module must still assemble (it also
// holds the f32 kernels), so there the mma kernels trap; the host never launches them there
// (CudaDevice::supports_mma).
__device__ __forceinline__ void mma_16832_s8(int* c, const int* a, const int* b) {
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    asm volatile("trap;");
#endif
}

// Subtract o (< 128) from each byte of x (bytes 0..255 - o stays >= 0 after the bias): the
// unsigned 4/5-bit codes become signed int8 without borrows between bytes.
__device__ __forceinline__ int sub_bytes(int x, uint32_t o4) {
    return (int)((((uint32_t)x | 0x80808080u) - o4) ^ 0x80808080u);
}

// Loaders: 32-value block `blk` of a weight row as 8 words of int8 (element 4w..4w+3 in word
// w), its scale and (Q4_1, Q4_K, Q5_K) its min: weight = d * q + m.
struct MmqQ4_0 {
    static constexpr int BS = 32;
    static constexpr int BYTES = 18;
    static constexpr bool HAS_MIN = false;
    __device__ static void load(const uint8_t* row, int blk, int* q, float* d, float* m) {
        const uint8_t* p = row + (size_t)blk * BYTES;
        const BlockQ4_0* b = (const BlockQ4_0*)p;
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            const int v = load_i32_a2(b->qs + 4 * w);
            q[w] = sub_bytes(v & 0x0F0F0F0F, 0x08080808u);
            q[w + 4] = sub_bytes((v >> 4) & 0x0F0F0F0F, 0x08080808u);
        }
        *d = f16_to_f32(b->d);
        *m = 0.0f;
    }
};
struct MmqQ4_1 {
    static constexpr int BS = 32;
    static constexpr int BYTES = 20;
    static constexpr bool HAS_MIN = true;
    __device__ static void load(const uint8_t* row, int blk, int* q, float* d, float* m) {
        const uint8_t* p = row + (size_t)blk * BYTES;
        const BlockQ4_1* b = (const BlockQ4_1*)p;
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            const int v = load_i32_a4(b->qs + 4 * w);
            q[w] = v & 0x0F0F0F0F;
            q[w + 4] = (v >> 4) & 0x0F0F0F0F;
        }
        *d = f16_to_f32(b->d);
        *m = f16_to_f32(b->m);
    }
};
struct MmqQ5_0 {
    static constexpr int BS = 32;
    static constexpr int BYTES = 22;
    static constexpr bool HAS_MIN = false;
    __device__ static void load(const uint8_t* row, int blk, int* q, float* d, float* m) {
        const uint8_t* p = row + (size_t)blk * BYTES;
        const BlockQ5_0* b = (const BlockQ5_0*)p;
        const uint32_t qh = (uint32_t)load_i32_a2(b->qh);
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            const int v = load_i32_a2(b->qs + 4 * w);
            q[w] = sub_bytes((v & 0x0F0F0F0F) | FmtQ5_0::spread4(qh >> (4 * w)), 0x10101010u);
            q[w + 4] = sub_bytes(((v >> 4) & 0x0F0F0F0F) | FmtQ5_0::spread4(qh >> (4 * w + 16)), 0x10101010u);
        }
        *d = f16_to_f32(b->d);
        *m = 0.0f;
    }
};
struct MmqQ8_0 {
    static constexpr int BS = 32;
    static constexpr int BYTES = 34;
    static constexpr bool HAS_MIN = false;
    __device__ static void load(const uint8_t* row, int blk, int* q, float* d, float* m) {
        const uint8_t* p = row + (size_t)blk * BYTES;
        const BlockQ8_0* b = (const BlockQ8_0*)p;
#pragma unroll
        for (int w = 0; w < 8; ++w) q[w] = load_i32_a2((const uint8_t*)b->qs + 4 * w);
        *d = f16_to_f32(b->d);
        *m = 0.0f;
    }
};
struct MmqIQ4_NL {
    static constexpr int BS = 32;
    static constexpr int BYTES = 18;
    static constexpr bool HAS_MIN = false;
    __device__ static void load(const uint8_t* row, int blk, int* q, float* d, float* m) {
        const uint8_t* p = row + (size_t)blk * BYTES;
        const BlockIQ4_NL* b = (const BlockIQ4_NL*)p;
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            const uint32_t v = (uint32_t)load_i32_a2(b->qs + 4 * w);
            q[w] = lookup4(kvalues_iq4nl, v & 0x0F0F0F0Fu);
            q[w + 4] = lookup4(kvalues_iq4nl, (v >> 4) & 0x0F0F0F0Fu);
        }
        *d = f16_to_f32(b->d);
        *m = 0.0f;
    }
};

// K-quants: each 32-value sub-block has its own 6-bit scale and min (scale_min_k4):
// weight = d * sc * q - dmin * m, so the block's scale is d * sc and its min -dmin * m.
struct MmqQ4_K {
    static constexpr int BS = QK_K;
    static constexpr int BYTES = 144;
    static constexpr bool HAS_MIN = true;
    __device__ static void load(const uint8_t* row, int blk, int* q, float* d, float* m) {
        const BlockQ4_K* b = (const BlockQ4_K*)row + blk / 8;
        const int sub = blk % 8;
        int sc, mn;
        scale_min_k4(sub, b->scales, &sc, &mn);
        const int shift = 4 * (sub % 2);
        const uint8_t* qs = b->qs + 32 * (sub / 2);
#pragma unroll
        for (int w = 0; w < 8; ++w) q[w] = (load_i32_a4(qs + 4 * w) >> shift) & 0x0F0F0F0F;
        *d = f16_to_f32(b->d) * (float)sc;
        *m = -f16_to_f32(b->dmin) * (float)mn;
    }
};
struct MmqQ5_K {
    static constexpr int BS = QK_K;
    static constexpr int BYTES = 176;
    static constexpr bool HAS_MIN = true;
    __device__ static void load(const uint8_t* row, int blk, int* q, float* d, float* m) {
        const BlockQ5_K* b = (const BlockQ5_K*)row + blk / 8;
        const int sub = blk % 8;
        int sc, mn;
        scale_min_k4(sub, b->scales, &sc, &mn);
        const int shift = 4 * (sub % 2);
        const uint8_t* qs = b->qs + 32 * (sub / 2);
#pragma unroll
        for (int w = 0; w < 8; ++w) {
            const int lo = (load_i32_a4(qs + 4 * w) >> shift) & 0x0F0F0F0F;
            const int hi = ((load_i32_a4(b->qh + 4 * w) >> sub) & 0x01010101) << 4;
            q[w] = lo | hi;
        }
        *d = f16_to_f32(b->d) * (float)sc;
        *m = -f16_to_f32(b->dmin) * (float)mn;
    }
};

template <typename L>
__device__ __forceinline__ void matmul_mmq_tile(const uint8_t* __restrict__ w, const BlockQ8_1* __restrict__ x,
                                                float* __restrict__ y, int nrows, int ncols, int ntok) {
    __shared__ __align__(16) int8_t ws[MMQ_BM][MMQ_LD];
    __shared__ __align__(16) int8_t xs[MMQ_BN][MMQ_LD];
    __shared__ float wd[MMQ_BM][MMQ_BLOCKS];
    __shared__ float wmin[MMQ_BM][MMQ_BLOCKS];
    __shared__ float xd[MMQ_BN][MMQ_BLOCKS];
    __shared__ float xsum[MMQ_BN][MMQ_BLOCKS];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int g = lane / 4, tig = lane % 4;
    const int wm = warp / 2, wn = warp % 2;
    const int row_base = blockIdx.x * MMQ_BM;
    const int tok_base = blockIdx.y * MMQ_BN;
    const int nblk = ncols / 32;
    const size_t row_bytes = (size_t)(ncols / L::BS) * L::BYTES;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;

    for (int b0 = 0; b0 < nblk; b0 += MMQ_BLOCKS) {
        // 64 rows x 4 blocks of weights and 64 tokens x 4 Q8_1 blocks: 2 + 2 per thread.
#pragma unroll
        for (int i = 0; i < (MMQ_BM * MMQ_BLOCKS) / MMQ_THREADS; ++i) {
            const int e = threadIdx.x + i * MMQ_THREADS;
            const int r = e / MMQ_BLOCKS, kb = e % MMQ_BLOCKS;
            const int row = row_base + r, blk = b0 + kb;
            int q[8];
            float d = 0.0f, m = 0.0f;
            if (row < nrows && blk < nblk) {
                L::load(w + (size_t)row * row_bytes, blk, q, &d, &m);
            } else {
#pragma unroll
                for (int j = 0; j < 8; ++j) q[j] = 0;
            }
            int* dst = (int*)&ws[r][kb * 32];
#pragma unroll
            for (int j = 0; j < 8; ++j) dst[j] = q[j];
            wd[r][kb] = d;
            wmin[r][kb] = m;
        }
#pragma unroll
        for (int i = 0; i < (MMQ_BN * MMQ_BLOCKS) / MMQ_THREADS; ++i) {
            const int e = threadIdx.x + i * MMQ_THREADS;
            const int t = e / MMQ_BLOCKS, kb = e % MMQ_BLOCKS;
            const int tok = tok_base + t, blk = b0 + kb;
            int* dst = (int*)&xs[t][kb * 32];
            if (tok < ntok && blk < nblk) {
                const BlockQ8_1* a = x + (size_t)tok * nblk + blk;
                const int* aq = (const int*)a->qs;
#pragma unroll
                for (int j = 0; j < 8; ++j) dst[j] = aq[j];
                xd[t][kb] = f16_to_f32(a->d);
                // The exact block sum (not Q8_1's f16 s), as the decode kernels use.
                xsum[t][kb] = L::HAS_MIN ? f16_to_f32(a->d) * (float)q8_sum(aq) : 0.0f;
            } else {
#pragma unroll
                for (int j = 0; j < 8; ++j) dst[j] = 0;
                xd[t][kb] = 0.0f;
                xsum[t][kb] = 0.0f;
            }
        }
        __syncthreads();
        // Not unrolled: keeps the fragments of one block live at a time (register pressure).
#pragma unroll 1
        for (int kb = 0; kb < MMQ_BLOCKS; ++kb) {
            const int ks = kb * 32;
            int a[2][4], b[4][2];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                const int r0 = wm * 32 + mt * 16;
                a[mt][0] = *(const int*)&ws[r0 + g][ks + 4 * tig];
                a[mt][1] = *(const int*)&ws[r0 + g + 8][ks + 4 * tig];
                a[mt][2] = *(const int*)&ws[r0 + g][ks + 16 + 4 * tig];
                a[mt][3] = *(const int*)&ws[r0 + g + 8][ks + 16 + 4 * tig];
            }
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                const int n0 = wn * 32 + nt * 8;
                b[nt][0] = *(const int*)&xs[n0 + g][ks + 4 * tig];
                b[nt][1] = *(const int*)&xs[n0 + g][ks + 16 + 4 * tig];
            }
            // This thread's rows (g, g + 8 of each m tile) and tokens (2t, 2t + 1 of each n tile):
            // their block scales, loaded once per block.
            float dw[2][2], mw[2][2], dx[4][2], sx[4][2];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int r = wm * 32 + mt * 16 + g + 8 * h;
                    dw[mt][h] = wd[r][kb];
                    mw[mt][h] = L::HAS_MIN ? wmin[r][kb] : 0.0f;
                }
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    const int t = wn * 32 + nt * 8 + 2 * tig + j;
                    dx[nt][j] = xd[t][kb];
                    sx[nt][j] = L::HAS_MIN ? xsum[t][kb] : 0.0f;
                }
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) {
                    int c[4] = {0, 0, 0, 0};
                    mma_16832_s8(c, a[mt], b[nt]);
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        float v = dw[mt][e >> 1] * dx[nt][e & 1] * (float)c[e];
                        if (L::HAS_MIN) v += mw[mt][e >> 1] * sx[nt][e & 1];
                        acc[mt][nt][e] += v;
                    }
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = row_base + wm * 32 + mt * 16 + g + (e >= 2 ? 8 : 0);
                const int tok = tok_base + wn * 32 + nt * 8 + 2 * tig + (e & 1);
                if (row < nrows && tok < ntok) y[(size_t)tok * nrows + row] = acc[mt][nt][e];
            }
        }
    }
}

#define MATMUL_MMQ(name, L)                                                                                   \
    extern "C" __global__ void __launch_bounds__(MMQ_THREADS)                                                 \
        name(const uint8_t* __restrict__ w, const BlockQ8_1* __restrict__ x, float* __restrict__ y, int nrows, \
             int ncols, int ntok) {                                                                           \
        matmul_mmq_tile<L>(w, x, y, nrows, ncols, ntok);                                                      \
    }

MATMUL_MMQ(matmul_mmq_q4_0, MmqQ4_0)
MATMUL_MMQ(matmul_mmq_q4_1, MmqQ4_1)
MATMUL_MMQ(matmul_mmq_q5_0, MmqQ5_0)
MATMUL_MMQ(matmul_mmq_q8_0, MmqQ8_0)
MATMUL_MMQ(matmul_mmq_iq4_nl, MmqIQ4_NL)
MATMUL_MMQ(matmul_mmq_q4_k, MmqQ4_K)
MATMUL_MMQ(matmul_mmq_q5_k, MmqQ5_K)
