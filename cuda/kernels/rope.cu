// rope.cu: rotary position embedding (RoFormer, arXiv:2104.09864) applied in place.
// Prepended by the Rust side: common.cuh, quant.cuh.
//
// x: [ntok] rows of token_stride floats, each holding n_head heads of head_dim at offset
// h * head_dim. Only the first n_rot dimensions of a head rotate (partial rotary, Phi-2).
// Pair i (0 <= i < n_rot/2) rotates by theta = pos * freq_scale * freq_base^(-2i/n_rot):
//   neox = 0 ("normal", llama): elements (2i, 2i+1);
//   neox = 1 (GPT-NeoX, Phi-2, Gemma, Qwen): elements (i, i + n_rot/2).
// pos: [ntok] positions in device memory, so a captured graph replays with new positions.
extern "C" __global__ void rope(float* x, const int* __restrict__ pos, int ntok, int token_stride, int n_head,
                                int head_dim, int n_rot, int neox, float freq_base, float freq_scale) {
    const int half = n_rot / 2;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= ntok * n_head * half) return;
    const int i = idx % half;
    const int h = (idx / half) % n_head;
    const int t = idx / (half * n_head);
    const float theta = (float)pos[t] * freq_scale * powf(freq_base, -2.0f * (float)i / (float)n_rot);
    float s, c;
    sincosf(theta, &s, &c);
    float* head = x + (size_t)t * token_stride + (size_t)h * head_dim;
    const int i0 = neox ? i : 2 * i;
    const int i1 = neox ? i + half : 2 * i + 1;
    const float x0 = head[i0];
    const float x1 = head[i1];
    head[i0] = x0 * c - x1 * s;
    head[i1] = x0 * s + x1 * c;
}

// ---- RoPE from a precomputed cos/sin table ----
//
// table: n_pos rows of n_rot floats, built on the host by tinyrt_kernels' RopeCache (so the
// angles, Llama-3 frequency factors (rope_freqs.weight), linear scaling and YaRN match the CPU
// backend value for value). Row layout, as RopeCache::row documents:
//   neox = 0: [cos0, sin0, cos1, sin1, ...], pairs (2i, 2i+1);
//   neox = 1: [cos0 .. cos_{h-1}, sin0 .. sin_{h-1}], pairs (i, i + h), h = n_rot / 2.
// Positions outside the table leave the row untouched (the host never asks for one).
__device__ __forceinline__ void rope_table_cs(const float* __restrict__ table, int p, int n_rot, int neox, int i,
                                              float* c, float* s) {
    const float* row = table + (size_t)p * n_rot;
    if (neox) {
        *c = row[i];
        *s = row[n_rot / 2 + i];
    } else {
        *c = row[2 * i];
        *s = row[2 * i + 1];
    }
}

// In place on ntok rows of token_stride floats, n_head heads of head_dim each; token t at
// position pos[t] (device memory: a captured graph replays with new positions).
extern "C" __global__ void rope_cached(float* x, const int* __restrict__ pos, const float* __restrict__ table,
                                       int n_pos, int ntok, int token_stride, int n_head, int head_dim, int n_rot,
                                       int neox) {
    const int half = n_rot / 2;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= ntok * n_head * half) return;
    const int i = idx % half;
    const int h = (idx / half) % n_head;
    const int t = idx / (half * n_head);
    const int p = pos[t];
    if (p < 0 || p >= n_pos) return;
    float c, s;
    rope_table_cs(table, p, n_rot, neox, i, &c, &s);
    float* head = x + (size_t)t * token_stride + (size_t)h * head_dim;
    const int i0 = neox ? i : 2 * i;
    const int i1 = neox ? i + half : 2 * i + 1;
    const float x0 = head[i0];
    const float x1 = head[i1];
    head[i0] = x0 * c - x1 * s;
    head[i1] = x0 * s + x1 * c;
}

// The decode path's QKV -> RoPE -> KV-cache write in one launch: RoPE of Q in place, RoPE of K
// written straight into the K cache (the f32 K rows are left as they were: nothing reads them
// after the cache write), V copied into the V cache, at position pos[t] of token t.
// Per token the work items are: n_head * h Q pairs, then kv_row K elements, then kv_row V
// elements (kv_row = n_kv * head_dim). Positions at or past n_ctx are never written.
template <typename T>
__device__ __forceinline__ void rope_kv_store(float* q, const float* __restrict__ k, const float* __restrict__ v,
                                              T* __restrict__ kc, T* __restrict__ vc, const int* __restrict__ pos,
                                              const float* __restrict__ table, int n_pos, int ntok, int q_stride,
                                              int kv_stride, int n_head, int n_kv, int head_dim, int n_rot, int neox,
                                              int n_ctx) {
    const int half = n_rot / 2;
    const int nq = n_head * half;
    const int kv_row = n_kv * head_dim;
    const int per_tok = nq + 2 * kv_row;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= ntok * per_tok) return;
    const int t = idx / per_tok;
    int r = idx % per_tok;
    const int p = pos[t];
    if (r < nq) {
        if (p < 0 || p >= n_pos) return;
        const int i = r % half, h = r / half;
        float c, s;
        rope_table_cs(table, p, n_rot, neox, i, &c, &s);
        float* head = q + (size_t)t * q_stride + (size_t)h * head_dim;
        const int i0 = neox ? i : 2 * i;
        const int i1 = neox ? i + half : 2 * i + 1;
        const float x0 = head[i0];
        const float x1 = head[i1];
        head[i0] = x0 * c - x1 * s;
        head[i1] = x0 * s + x1 * c;
        return;
    }
    if (p < 0 || p >= n_ctx) return;
    r -= nq;
    const size_t dst = (size_t)p * kv_row;
    if (r >= kv_row) {
        r -= kv_row;
        vc[dst + r] = kv_from_f32<T>(v[(size_t)t * kv_stride + r]);
        return;
    }
    const float* kh = k + (size_t)t * kv_stride + (size_t)(r / head_dim) * head_dim;
    const int d = r % head_dim;
    float out = kh[d];
    if (d < n_rot && p < n_pos) {
        // This element's pair and its place in it: x0' = x0 c - x1 s, x1' = x0 s + x1 c.
        const int i = neox ? (d < half ? d : d - half) : d / 2;
        const bool first = neox ? d < half : (d % 2 == 0);
        const int i0 = neox ? i : 2 * i;
        const int i1 = neox ? i + half : 2 * i + 1;
        float c, s;
        rope_table_cs(table, p, n_rot, neox, i, &c, &s);
        const float x0 = kh[i0], x1 = kh[i1];
        out = first ? x0 * c - x1 * s : x0 * s + x1 * c;
    }
    kc[dst + r] = kv_from_f32<T>(out);
}

#define ROPE_KV_STORE(name, T)                                                                                \
    extern "C" __global__ void name(float* q, const float* __restrict__ k, const float* __restrict__ v,        \
                                    T* __restrict__ kc, T* __restrict__ vc, const int* __restrict__ pos,      \
                                    const float* __restrict__ table, int n_pos, int ntok, int q_stride,       \
                                    int kv_stride, int n_head, int n_kv, int head_dim, int n_rot, int neox,   \
                                    int n_ctx) {                                                              \
        rope_kv_store<T>(q, k, v, kc, vc, pos, table, n_pos, ntok, q_stride, kv_stride, n_head, n_kv,          \
                         head_dim, n_rot, neox, n_ctx);                                                       \
    }

ROPE_KV_STORE(rope_kv_store_f16, uint16_t)
ROPE_KV_STORE(rope_kv_store_f32, float)
