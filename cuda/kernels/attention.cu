// attention.cu: causal attention over an f16 (or f32) KV cache, for decode and prefill, with the KV range
// split across blocks (flash-decoding: partial softmax per split, then a combine pass) and
// grouped-query attention (query head h reads KV head h / (n_head / n_kv)); and the
// bidirectional attention of packed sequences without a cache (encoders, attention_packed).
// Prepended by the Rust side: common.cuh, quant.cuh.
//
// KV cache layout: [n_ctx][n_kv][head_dim] f16 (the *_f32 kernels: f32), one row per position.
// Token t of a batch sits at position pos0[0] + t and sees positions 0 ..= pos0[0] + t
// (clipped to the n_ctx positions the cache holds), or only the last `window` of them when
// window > 0.
// pos0 lives in device memory so a captured decode graph replays unchanged every token.

#define ATT_WARPS 4
#define ATT_MAX_PER_LANE 8  // head_dim <= 256

// k, v: [ntok] rows of token_stride floats, n_kv * head_dim (= row) values each, stored as f16
// at positions pos0[0] + t of the caches; positions at or past n_ctx are dropped (never written
// out of bounds, whatever pos0 holds).
template <typename T>
__device__ __forceinline__ void kv_store(const float* __restrict__ k, const float* __restrict__ v, T* __restrict__ kc,
                                         T* __restrict__ vc, const int* __restrict__ pos0, int ntok, int token_stride,
                                         int row, int n_ctx) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= ntok * row) return;
    const int t = idx / row, e = idx % row;
    const int p = pos0[0] + t;
    if (p < 0 || p >= n_ctx) return;
    const size_t dst = (size_t)p * row + e;
    kc[dst] = kv_from_f32<T>(k[(size_t)t * token_stride + e]);
    vc[dst] = kv_from_f32<T>(v[(size_t)t * token_stride + e]);
}

#define KV_STORE(name, T)                                                                                     \
    extern "C" __global__ void name(const float* __restrict__ k, const float* __restrict__ v, T* __restrict__ kc, \
                                    T* __restrict__ vc, const int* __restrict__ pos0, int ntok, int token_stride, \
                                    int row, int n_ctx) {                                                     \
        kv_store<T>(k, v, kc, vc, pos0, ntok, token_stride, row, n_ctx);                                      \
    }
KV_STORE(kv_store_f16, uint16_t)
KV_STORE(kv_store_f32, float)

// Grid (n_head, nsplit, ntok), ATT_WARPS warps. Split s covers positions [s*chunk, (s+1)*chunk)
// clipped to the token's visible range; warps take positions round-robin with an online softmax,
// then merge in shared memory. Writes the unnormalised output and (max, sum) of the split:
//   part_o:  [ntok][n_head][nsplit][head_dim]
//   part_ml: [ntok][n_head][nsplit][2]
// q: [ntok] rows of q_stride floats, head h at h * head_dim.
template <typename T>
__device__ __forceinline__ void attention_split_t(const float* __restrict__ q, const T* __restrict__ kc,
                                                  const T* __restrict__ vc, const int* __restrict__ pos0,
                                                  float* __restrict__ part_o, float* __restrict__ part_ml,
                                                  int q_stride, int n_head, int n_kv, int head_dim, int n_ctx,
                                                  int chunk, int window, float scale) {
    __shared__ float sm_m[ATT_WARPS];
    __shared__ float sm_l[ATT_WARPS];
    __shared__ float sm_o[ATT_WARPS][ATT_MAX_PER_LANE * WARP_SIZE];
    const int h = blockIdx.x, s = blockIdx.y, t = blockIdx.z;
    const int nsplit = gridDim.y;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int kvh = h / (n_head / n_kv);
    const int kv_len = min(pos0[0] + t + 1, n_ctx);  // the cache holds n_ctx positions
    // Sliding window (Gemma-3 local layers): the query at position P sees (P - window, P].
    const int lo = window > 0 ? max(0, pos0[0] + t + 1 - window) : 0;
    const int start = max(s * chunk, lo);
    const int end = min(s * chunk + chunk, kv_len);
    const size_t kv_row = (size_t)n_kv * head_dim;

    float qr[ATT_MAX_PER_LANE], o[ATT_MAX_PER_LANE];
    const float* qh = q + (size_t)t * q_stride + (size_t)h * head_dim;
#pragma unroll
    for (int i = 0; i < ATT_MAX_PER_LANE; ++i) {
        const int e = lane + WARP_SIZE * i;
        qr[i] = e < head_dim ? qh[e] * scale : 0.0f;
        o[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int p = start + warp; p < end; p += ATT_WARPS) {
        const T* kp = kc + (size_t)p * kv_row + (size_t)kvh * head_dim;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_MAX_PER_LANE; ++i) {
            const int e = lane + WARP_SIZE * i;
            if (e < head_dim) dot += qr[i] * kv_to_f32(kp[e]);
        }
        dot = warp_sum(dot);
        const float m_new = fmaxf(m, dot);
        const float corr = expf(m - m_new);
        const float pexp = expf(dot - m_new);
        l = l * corr + pexp;
        const T* vp = vc + (size_t)p * kv_row + (size_t)kvh * head_dim;
#pragma unroll
        for (int i = 0; i < ATT_MAX_PER_LANE; ++i) {
            const int e = lane + WARP_SIZE * i;
            if (e < head_dim) o[i] = o[i] * corr + pexp * kv_to_f32(vp[e]);
        }
        m = m_new;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATT_MAX_PER_LANE; ++i) sm_o[warp][lane + WARP_SIZE * i] = o[i];
    __syncthreads();
    float mm = NEG_INF;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; ++w) mm = fmaxf(mm, sm_m[w]);
    const size_t part = ((size_t)t * n_head + h) * nsplit + s;
    for (int e = threadIdx.x; e < head_dim; e += blockDim.x) {
        float acc = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) {
            if (sm_m[w] != NEG_INF) acc += sm_o[w][e] * expf(sm_m[w] - mm);
        }
        part_o[part * head_dim + e] = acc;
    }
    if (threadIdx.x == 0) {
        float ll = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) {
            if (sm_m[w] != NEG_INF) ll += sm_l[w] * expf(sm_m[w] - mm);
        }
        part_ml[2 * part] = mm;
        part_ml[2 * part + 1] = ll;
    }
}

#define ATTENTION_SPLIT(name, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP_SIZE)                                       \
        name(const float* __restrict__ q, const T* __restrict__ kc, const T* __restrict__ vc,                 \
             const int* __restrict__ pos0, float* __restrict__ part_o, float* __restrict__ part_ml,           \
             int q_stride, int n_head, int n_kv, int head_dim, int n_ctx, int chunk, int window, float scale) { \
        attention_split_t<T>(q, kc, vc, pos0, part_o, part_ml, q_stride, n_head, n_kv, head_dim, n_ctx, chunk, \
                             window, scale);                                                                  \
    }
ATTENTION_SPLIT(attention_split, uint16_t)
ATTENTION_SPLIT(attention_split_f32, float)

// Grid (n_head, ntok): merges the nsplit partials of each (token, head) into
// out: [ntok] rows of out_stride floats, head h at h * head_dim.
// out_q8 (may be null; then head_dim and out_stride are multiples of 32): the same rows
// quantized to Q8_1 as quantize_q8_1 would, for the output projection that follows (each
// warp's 32 values of a head are one whole block).
extern "C" __global__ void attention_combine(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                             float* __restrict__ out, BlockQ8_1* __restrict__ out_q8,
                                             int out_stride, int n_head, int head_dim, int nsplit) {
    const int h = blockIdx.x, t = blockIdx.y;
    const size_t base = ((size_t)t * n_head + h) * nsplit;
    float mm = NEG_INF;
    for (int s = 0; s < nsplit; ++s) mm = fmaxf(mm, part_ml[2 * (base + s)]);
    float l = 0.0f;
    for (int s = 0; s < nsplit; ++s) {
        const float ms = part_ml[2 * (base + s)];
        if (ms != NEG_INF) l += part_ml[2 * (base + s) + 1] * expf(ms - mm);
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int e = threadIdx.x; e < head_dim; e += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < nsplit; ++s) {
            const float ms = part_ml[2 * (base + s)];
            if (ms != NEG_INF) acc += part_o[(base + s) * head_dim + e] * expf(ms - mm);
        }
        const size_t at = (size_t)t * out_stride + (size_t)h * head_dim + e;
        out[at] = acc * inv;
        // A warp's lanes are all in or all out of the loop (head_dim % 32 == 0 here).
        if (out_q8) quantize_q8_1_warp(acc * inv, out_q8 + at / QK8_1);
    }
}

// Bidirectional attention of packed sequences, without a cache (encoders): rows
// seqs[i] .. seqs[i + 1] of q, k and v are sequence i (seqs[0] = 0, seqs[n_seq] = the row
// count), and each row attends every row of its own sequence and none of the others:
//   out[t] = softmax(scale * q[t] . K[seq(t)]) . V[seq(t)], per query head, GQA as above.
// rows is the host's row count: every access stays within rows rows whatever seqs holds (a
// row whose sequence is then empty gets zeros).
// q: rows of q_stride floats (head h at h * head_dim), k and v: rows of kv_stride floats (kv
// head at kvh * head_dim), out: rows of out_stride floats.
// Grid (ceil(rows / PACKED_WARPS), n_head), PACKED_WARPS warps: warp w of block b takes query
// row b * PACKED_WARPS + w and walks the keys of its sequence with an online softmax, lanes
// over the head dimension. The warps of a block take neighbouring rows, which mostly share a
// sequence, so their K/V reads hit the same cache lines.
#define PACKED_WARPS 4
extern "C" __global__ void __launch_bounds__(PACKED_WARPS * WARP_SIZE)
    attention_packed(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                     const int* __restrict__ seqs, float* __restrict__ out, int n_seq, int rows,
                     int q_stride, int kv_stride, int out_stride, int n_head, int n_kv, int head_dim,
                     float scale) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int t = blockIdx.x * PACKED_WARPS + warp, h = blockIdx.y;
    // Whole warps leave together, and nothing below synchronises the block.
    if (t >= rows) return;
    // The sequence holding row t: seqs[lo] <= t < seqs[lo + 1] (empty sequences are skipped,
    // since their two equal bounds cannot straddle t).
    int lo = 0, hi = n_seq;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (seqs[mid] <= t) lo = mid;
        else hi = mid;
    }
    const int start = min(max(seqs[lo], 0), rows);
    const int end = min(max(seqs[lo + 1], start), rows);
    const int kvh = h / (n_head / n_kv);

    float qr[ATT_MAX_PER_LANE], o[ATT_MAX_PER_LANE];
    const float* qh = q + (size_t)t * q_stride + (size_t)h * head_dim;
#pragma unroll
    for (int i = 0; i < ATT_MAX_PER_LANE; ++i) {
        const int e = lane + WARP_SIZE * i;
        qr[i] = e < head_dim ? qh[e] : 0.0f;
        o[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int p = start; p < end; ++p) {
        const float* kp = k + (size_t)p * kv_stride + (size_t)kvh * head_dim;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_MAX_PER_LANE; ++i) {
            const int e = lane + WARP_SIZE * i;
            if (e < head_dim) dot += qr[i] * kp[e];
        }
        // The scale after the dot product, as the CPU reference applies it.
        const float s = warp_sum(dot) * scale;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new);
        const float pexp = expf(s - m_new);
        l = l * corr + pexp;
        const float* vp = v + (size_t)p * kv_stride + (size_t)kvh * head_dim;
#pragma unroll
        for (int i = 0; i < ATT_MAX_PER_LANE; ++i) {
            const int e = lane + WARP_SIZE * i;
            if (e < head_dim) o[i] = o[i] * corr + pexp * vp[e];
        }
        m = m_new;
    }
    // l >= 1 when the row's own key is in its sequence (the largest weight is exp(0)).
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float* oh = out + (size_t)t * out_stride + (size_t)h * head_dim;
#pragma unroll
    for (int i = 0; i < ATT_MAX_PER_LANE; ++i) {
        const int e = lane + WARP_SIZE * i;
        if (e < head_dim) oh[e] = o[i] * inv;
    }
}
