// matvec.cu: matrix x vector for decode, y[r] = sum_k W[r, k] x[k] (+ residual[r]).
// Prepended by the Rust side: common.cuh, quant.cuh.
//
// W: nrows rows of ncols elements in the GGUF layout (row-major blocks). Quantized formats take
// x already quantized to Q8_1 ([ncols / 32] blocks) and use int8 dp4a dot products; F16/F32
// take x as f32. residual may be null; when it is not, it may alias y (each element is read,
// then written, by the same thread).
//
// Quantized kernels: blocks of MV_THREADS threads; `tpr` threads per row (a power of two from 8
// to MV_THREADS, chosen by the host from the row length), so one block covers MV_THREADS / tpr
// rows: several rows per warp for short rows, several warps per row for long ones. Each thread
// takes every tpr-th group of 32 weights; a shuffle reduction (plus shared memory when a row
// spans warps) ends each row. Rows of one block share the activation through L1.

#define MV_THREADS 128
#define MV_WARPS 4

template <typename F>
__device__ __forceinline__ void matvec_q(const uint8_t* __restrict__ w, const BlockQ8_1* __restrict__ x, float* y,
                                         const float* residual, int nrows, int ncols, int tpr) {
    __shared__ float partial[MV_THREADS / WARP_SIZE];
    const int rows_per_block = MV_THREADS / tpr;
    const int t = threadIdx.x % tpr;
    const int row = blockIdx.x * rows_per_block + threadIdx.x / tpr;
    const size_t row_bytes = (size_t)(ncols / F::BS) * F::BYTES;
    const int nunits = ncols / QK8_1;
    float acc = 0.0f;
    if (row < nrows) {
        const uint8_t* wr = w + (size_t)row * row_bytes;
        for (int u = t; u < nunits; u += tpr) acc += F::dot32(wr, u, x + u);
    }
    // Every thread reaches the reductions (no early exit before a shuffle or a barrier).
    if (tpr <= WARP_SIZE) {
        for (int o = tpr / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, o);
        if (t == 0 && row < nrows) y[row] = residual ? acc + residual[row] : acc;
    } else {
        acc = warp_sum(acc);
        if (threadIdx.x % WARP_SIZE == 0) partial[threadIdx.x / WARP_SIZE] = acc;
        __syncthreads();
        if (t == 0 && row < nrows) {
            const int wpr = tpr / WARP_SIZE;
            const int first = (threadIdx.x / tpr) * wpr;
            float s = 0.0f;
            for (int i = 0; i < wpr; ++i) s += partial[first + i];
            y[row] = residual ? s + residual[row] : s;
        }
    }
}

#define MATVEC_Q(name, F)                                                                                      \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                                   \
        name(const uint8_t* __restrict__ w, const BlockQ8_1* __restrict__ x, float* y, const float* residual,  \
             int nrows, int ncols, int tpr) {                                                                  \
        matvec_q<F>(w, x, y, residual, nrows, ncols, tpr);                                                     \
    }

MATVEC_Q(matvec_q4_0, FmtQ4_0)
MATVEC_Q(matvec_q4_1, FmtQ4_1)
MATVEC_Q(matvec_q5_0, FmtQ5_0)
MATVEC_Q(matvec_q8_0, FmtQ8_0)
MATVEC_Q(matvec_q4_k, FmtQ4_K)
MATVEC_Q(matvec_q5_k, FmtQ5_K)
MATVEC_Q(matvec_q6_k, FmtQ6_K)
MATVEC_Q(matvec_iq4_nl, FmtIQ4_NL)
MATVEC_Q(matvec_nf4, FmtNF4)

// ---- Q4_0, planar layout: 16-byte loads ----
//
// GGUF's 18-byte Q4_0 blocks are only 2-byte aligned, so the kernels above read them 16 bits at a
// time. The planar layout (made once at load by repack_q4_0_planar) stores the 16 quant bytes of
// every block in one plane, 16-byte aligned, then the f16 scales in a second plane:
//   bytes [0, 16 * nblocks)                 qs of block (r, b) at 16 * (r * nb + b)
//   bytes [16 * nblocks, 18 * nblocks)      d of block (r, b) as u16 at index r * nb + b
// Same size as the GGUF matrix; one 128-bit load per block.

extern "C" __global__ void repack_q4_0_planar(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst,
                                              int nblocks) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= nblocks) return;
    const BlockQ4_0* blk = (const BlockQ4_0*)src + b;
    uint32_t* q = (uint32_t*)(dst + (size_t)16 * b);
#pragma unroll
    for (int i = 0; i < 4; ++i) q[i] = (uint32_t)load_i32_a2(blk->qs + 4 * i);
    ((uint16_t*)(dst + (size_t)16 * nblocks))[b] = blk->d;
}

__device__ __forceinline__ float dot32_q4_0_planar(const uint4 q, uint16_t d, const BlockQ8_1* a) {
    const int* aq = (const int*)a->qs;
    const int v[4] = {(int)q.x, (int)q.y, (int)q.z, (int)q.w};
    int sumi = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        sumi = dp4a(v[i] & 0x0F0F0F0F, aq[i], sumi);
        sumi = dp4a((v[i] >> 4) & 0x0F0F0F0F, aq[i + 4], sumi);
    }
    sumi -= 8 * q8_sum(aq);
    return f16_to_f32(d) * f16_to_f32(a->d) * (float)sumi;
}

// Same thread layout and arithmetic as matvec_q<FmtQ4_0> (results are bit-identical).
extern "C" __global__ void __launch_bounds__(MV_THREADS)
    matvec_q4_0_planar(const uint8_t* __restrict__ w, const BlockQ8_1* __restrict__ x, float* y,
                       const float* residual, int nrows, int ncols, int tpr) {
    __shared__ float partial[MV_THREADS / WARP_SIZE];
    const int rows_per_block = MV_THREADS / tpr;
    const int t = threadIdx.x % tpr;
    const int row = blockIdx.x * rows_per_block + threadIdx.x / tpr;
    const int nb = ncols / QK4_0;
    const uint4* qs = (const uint4*)w;
    const uint16_t* ds = (const uint16_t*)(w + (size_t)16 * nb * nrows);
    float acc = 0.0f;
    if (row < nrows) {
        const size_t base = (size_t)row * nb;
        for (int u = t; u < nb; u += tpr) acc += dot32_q4_0_planar(qs[base + u], ds[base + u], x + u);
    }
    if (tpr <= WARP_SIZE) {
        for (int o = tpr / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, o);
        if (t == 0 && row < nrows) y[row] = residual ? acc + residual[row] : acc;
    } else {
        acc = warp_sum(acc);
        if (threadIdx.x % WARP_SIZE == 0) partial[threadIdx.x / WARP_SIZE] = acc;
        __syncthreads();
        if (t == 0 && row < nrows) {
            const int wpr = tpr / WARP_SIZE;
            const int first = (threadIdx.x / tpr) * wpr;
            float s = 0.0f;
            for (int i = 0; i < wpr; ++i) s += partial[first + i];
            y[row] = residual ? s + residual[row] : s;
        }
    }
}

// Gated feed-forward for decode, fused: y[r] = act(Wg[r] . x) * (Wu[r] . x), act = SiLU
// (act == 0, SwiGLU) or tanh-GELU (act == 1, GeGLU). One launch reads both matrices and never
// writes the gate and up vectors. Same thread layout as matvec_q.
template <typename F>
__device__ __forceinline__ void matvec_glu(const uint8_t* __restrict__ wg, const uint8_t* __restrict__ wu,
                                           const BlockQ8_1* __restrict__ x, float* __restrict__ y, int nrows,
                                           int ncols, int tpr, int act) {
    __shared__ float partial_g[MV_THREADS / WARP_SIZE];
    __shared__ float partial_u[MV_THREADS / WARP_SIZE];
    const int rows_per_block = MV_THREADS / tpr;
    const int t = threadIdx.x % tpr;
    const int row = blockIdx.x * rows_per_block + threadIdx.x / tpr;
    const size_t row_bytes = (size_t)(ncols / F::BS) * F::BYTES;
    const int nunits = ncols / QK8_1;
    float g = 0.0f, u = 0.0f;
    if (row < nrows) {
        const uint8_t* gr = wg + (size_t)row * row_bytes;
        const uint8_t* ur = wu + (size_t)row * row_bytes;
        for (int k = t; k < nunits; k += tpr) {
            g += F::dot32(gr, k, x + k);
            u += F::dot32(ur, k, x + k);
        }
    }
    bool write = false;
    if (tpr <= WARP_SIZE) {
        for (int o = tpr / 2; o > 0; o >>= 1) {
            g += __shfl_xor_sync(FULL_MASK, g, o);
            u += __shfl_xor_sync(FULL_MASK, u, o);
        }
        write = t == 0 && row < nrows;
    } else {
        g = warp_sum(g);
        u = warp_sum(u);
        if (threadIdx.x % WARP_SIZE == 0) {
            partial_g[threadIdx.x / WARP_SIZE] = g;
            partial_u[threadIdx.x / WARP_SIZE] = u;
        }
        __syncthreads();
        if (t == 0 && row < nrows) {
            const int wpr = tpr / WARP_SIZE;
            const int first = (threadIdx.x / tpr) * wpr;
            g = 0.0f;
            u = 0.0f;
            for (int i = 0; i < wpr; ++i) {
                g += partial_g[first + i];
                u += partial_u[first + i];
            }
            write = true;
        }
    }
    if (write) y[row] = (act ? gelu_f(g) : silu_f(g)) * u;
}

#define MATVEC_GLU(name, F)                                                                                    \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                                   \
        name(const uint8_t* __restrict__ wg, const uint8_t* __restrict__ wu, const BlockQ8_1* __restrict__ x,  \
             float* __restrict__ y, int nrows, int ncols, int tpr, int act) {                                  \
        matvec_glu<F>(wg, wu, x, y, nrows, ncols, tpr, act);                                                   \
    }

MATVEC_GLU(matvec_glu_q4_0, FmtQ4_0)
MATVEC_GLU(matvec_glu_q4_1, FmtQ4_1)
MATVEC_GLU(matvec_glu_q5_0, FmtQ5_0)
MATVEC_GLU(matvec_glu_q8_0, FmtQ8_0)
MATVEC_GLU(matvec_glu_q4_k, FmtQ4_K)
MATVEC_GLU(matvec_glu_q5_k, FmtQ5_K)
MATVEC_GLU(matvec_glu_q6_k, FmtQ6_K)
MATVEC_GLU(matvec_glu_iq4_nl, FmtIQ4_NL)
MATVEC_GLU(matvec_glu_nf4, FmtNF4)

// Unquantized weights: 16-byte loads when the row length and the buffers allow (rows then
// start 16-byte aligned), element loads otherwise.
__device__ __forceinline__ float dot8_f16(uint4 wv, const float* xv) {
    const uint32_t p[4] = {wv.x, wv.y, wv.z, wv.w};
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        s += f16_to_f32((uint16_t)(p[i] & 0xFFFF)) * xv[2 * i];
        s += f16_to_f32((uint16_t)(p[i] >> 16)) * xv[2 * i + 1];
    }
    return s;
}

// One warp per row.
extern "C" __global__ void __launch_bounds__(MV_WARPS * WARP_SIZE)
    matvec_f16(const uint16_t* __restrict__ w, const float* __restrict__ x, float* y, const float* residual, int nrows,
               int ncols) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = blockIdx.x * MV_WARPS + threadIdx.x / WARP_SIZE;
    if (row >= nrows) return;
    const uint16_t* wr = w + (size_t)row * ncols;
    float acc = 0.0f;
    if (ncols % 8 == 0 && (((size_t)w | (size_t)x) % 16) == 0) {
        for (int k = lane * 8; k < ncols; k += WARP_SIZE * 8) {
            const uint4 wv = *(const uint4*)(wr + k);
            const float4 x0 = *(const float4*)(x + k);
            const float4 x1 = *(const float4*)(x + k + 4);
            const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
            acc += dot8_f16(wv, xv);
        }
    } else {
        for (int k = lane; k < ncols; k += WARP_SIZE) acc += f16_to_f32(wr[k]) * x[k];
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = residual ? acc + residual[row] : acc;
}

extern "C" __global__ void __launch_bounds__(MV_WARPS * WARP_SIZE)
    matvec_f32(const float* __restrict__ w, const float* __restrict__ x, float* y, const float* residual, int nrows,
               int ncols) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = blockIdx.x * MV_WARPS + threadIdx.x / WARP_SIZE;
    if (row >= nrows) return;
    const float* wr = w + (size_t)row * ncols;
    float acc = 0.0f;
    if (ncols % 4 == 0 && (((size_t)w | (size_t)x) % 16) == 0) {
        for (int k = lane * 4; k < ncols; k += WARP_SIZE * 4) {
            const float4 wv = *(const float4*)(wr + k);
            const float4 xv = *(const float4*)(x + k);
            acc += wv.x * xv.x + wv.y * xv.y + wv.z * xv.z + wv.w * xv.w;
        }
    } else {
        for (int k = lane; k < ncols; k += WARP_SIZE) acc += wr[k] * x[k];
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = residual ? acc + residual[row] : acc;
}

// ---- up to three products of one input in one launch (decode's Q, K and V projections) ----
//
// y_i = W_i x for the matrices W_0, W_1, W_2 of n_0, n_1, n_2 rows (n_2 may be 0) and the same
// ncols and format: the rows of all three are numbered one after the other and laid out over
// the blocks exactly as matvec_q lays out one matrix's rows, so a row's arithmetic (and result)
// is the same as matvec_q's. One launch instead of three.

// The matrix a global row belongs to, and its row there.
struct Matvec3Row {
    const uint8_t* w;
    float* y;
    int r;
    int nrows;
    bool valid;
};

__device__ __forceinline__ Matvec3Row matvec3_row(int row, const uint8_t* w0, const uint8_t* w1, const uint8_t* w2,
                                                  float* y0, float* y1, float* y2, int n0, int n1, int n2) {
    Matvec3Row m;
    m.valid = row < n0 + n1 + n2;
    if (row < n0) {
        m.w = w0, m.y = y0, m.r = row, m.nrows = n0;
    } else if (row < n0 + n1) {
        m.w = w1, m.y = y1, m.r = row - n0, m.nrows = n1;
    } else {
        m.w = w2, m.y = y2, m.r = row - n0 - n1, m.nrows = n2;
    }
    return m;
}

// The end of a row of tpr threads (matvec_q's reduction): every thread calls it.
__device__ __forceinline__ void matvec_finish_row(float acc, int tpr, const Matvec3Row& m, float* partial) {
    const int t = threadIdx.x % tpr;
    if (tpr <= WARP_SIZE) {
        for (int o = tpr / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, o);
        if (t == 0 && m.valid) m.y[m.r] = acc;
    } else {
        acc = warp_sum(acc);
        if (threadIdx.x % WARP_SIZE == 0) partial[threadIdx.x / WARP_SIZE] = acc;
        __syncthreads();
        if (t == 0 && m.valid) {
            const int wpr = tpr / WARP_SIZE;
            const int first = (threadIdx.x / tpr) * wpr;
            float s = 0.0f;
            for (int i = 0; i < wpr; ++i) s += partial[first + i];
            m.y[m.r] = s;
        }
    }
}

template <typename F>
__device__ __forceinline__ void matvec3_q(const uint8_t* w0, const uint8_t* w1, const uint8_t* w2,
                                          const BlockQ8_1* __restrict__ x, float* y0, float* y1, float* y2, int n0,
                                          int n1, int n2, int ncols, int tpr) {
    __shared__ float partial[MV_THREADS / WARP_SIZE];
    const int rows_per_block = MV_THREADS / tpr;
    const int t = threadIdx.x % tpr;
    const Matvec3Row m =
        matvec3_row(blockIdx.x * rows_per_block + threadIdx.x / tpr, w0, w1, w2, y0, y1, y2, n0, n1, n2);
    const size_t row_bytes = (size_t)(ncols / F::BS) * F::BYTES;
    const int nunits = ncols / QK8_1;
    float acc = 0.0f;
    if (m.valid) {
        const uint8_t* wr = m.w + (size_t)m.r * row_bytes;
        for (int u = t; u < nunits; u += tpr) acc += F::dot32(wr, u, x + u);
    }
    matvec_finish_row(acc, tpr, m, partial);
}

#define MATVEC3_Q(name, F)                                                                                    \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                                  \
        name(const uint8_t* __restrict__ w0, const uint8_t* __restrict__ w1, const uint8_t* __restrict__ w2,  \
             const BlockQ8_1* __restrict__ x, float* y0, float* y1, float* y2, int n0, int n1, int n2,         \
             int ncols, int tpr) {                                                                            \
        matvec3_q<F>(w0, w1, w2, x, y0, y1, y2, n0, n1, n2, ncols, tpr);                                      \
    }

MATVEC3_Q(matvec3_q4_0, FmtQ4_0)
MATVEC3_Q(matvec3_q4_1, FmtQ4_1)
MATVEC3_Q(matvec3_q5_0, FmtQ5_0)
MATVEC3_Q(matvec3_q8_0, FmtQ8_0)
MATVEC3_Q(matvec3_q4_k, FmtQ4_K)
MATVEC3_Q(matvec3_q5_k, FmtQ5_K)
MATVEC3_Q(matvec3_q6_k, FmtQ6_K)
MATVEC3_Q(matvec3_iq4_nl, FmtIQ4_NL)
MATVEC3_Q(matvec3_nf4, FmtNF4)

// The same over three Q4_0 matrices in the planar layout (each its own qs and d planes).
extern "C" __global__ void __launch_bounds__(MV_THREADS)
    matvec3_q4_0_planar(const uint8_t* __restrict__ w0, const uint8_t* __restrict__ w1,
                        const uint8_t* __restrict__ w2, const BlockQ8_1* __restrict__ x, float* y0, float* y1,
                        float* y2, int n0, int n1, int n2, int ncols, int tpr) {
    __shared__ float partial[MV_THREADS / WARP_SIZE];
    const int rows_per_block = MV_THREADS / tpr;
    const int t = threadIdx.x % tpr;
    const Matvec3Row m =
        matvec3_row(blockIdx.x * rows_per_block + threadIdx.x / tpr, w0, w1, w2, y0, y1, y2, n0, n1, n2);
    const int nb = ncols / QK4_0;
    float acc = 0.0f;
    if (m.valid) {
        const uint4* qs = (const uint4*)m.w;
        const uint16_t* ds = (const uint16_t*)(m.w + (size_t)16 * nb * m.nrows);
        const size_t base = (size_t)m.r * nb;
        for (int u = t; u < nb; u += tpr) acc += dot32_q4_0_planar(qs[base + u], ds[base + u], x + u);
    }
    matvec_finish_row(acc, tpr, m, partial);
}
