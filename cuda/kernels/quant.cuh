// quant.cuh: per-format device code shared by matvec, matmul and the embedding lookup.
//
// Each weight format is a struct with
//   BS, BYTES       elements and bytes per block;
//   get(row, k)     element k of a row, dequantized (the same arithmetic as the scalar reference
//                   dequantize_row_* in tinyrt_kernels::quant: d * q, d * q + m, ...);
//   dot32(row, u, a) dot product of the 32 weights u*32 .. u*32+31 of a row with one Q8_1
//                   activation block, integer within the 32 (dp4a), then scaled in f32.
// Layouts and dequantization formulas follow ggml-common.h / ggml-quants.c.
// Prepended after common.cuh by the Rust side.

// Sum of the 32 int8 values of an activation block (exact, no f16 rounding of `s`).
__device__ __forceinline__ int q8_sum(const int* aq) {
    int s = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) s = dp4a(aq[i], 0x01010101, s);
    return s;
}

struct FmtF32 {
    static constexpr int BS = 1;
    static constexpr int BYTES = 4;
    __device__ static float get(const uint8_t* row, int k) { return ((const float*)row)[k]; }
};

struct FmtF16 {
    static constexpr int BS = 1;
    static constexpr int BYTES = 2;
    __device__ static float get(const uint8_t* row, int k) { return f16_to_f32(((const uint16_t*)row)[k]); }
};

struct FmtQ4_0 {
    static constexpr int BS = QK4_0;
    static constexpr int BYTES = 18;
    __device__ static float get(const uint8_t* row, int k) {
        const BlockQ4_0* b = (const BlockQ4_0*)row + k / BS;
        const int j = k % BS;
        const int q = j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
        return f16_to_f32(b->d) * (float)(q - 8);
    }
    __device__ static float dot32(const uint8_t* row, int u, const BlockQ8_1* a) {
        const BlockQ4_0* b = (const BlockQ4_0*)row + u;
        const int* aq = (const int*)a->qs;
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int v = load_i32_a2(b->qs + 4 * i);
            sumi = dp4a(v & 0x0F0F0F0F, aq[i], sumi);
            sumi = dp4a((v >> 4) & 0x0F0F0F0F, aq[i + 4], sumi);
        }
        sumi -= 8 * q8_sum(aq);
        return f16_to_f32(b->d) * f16_to_f32(a->d) * (float)sumi;
    }
};

struct FmtQ4_1 {
    static constexpr int BS = QK4_1;
    static constexpr int BYTES = 20;
    __device__ static float get(const uint8_t* row, int k) {
        const BlockQ4_1* b = (const BlockQ4_1*)row + k / BS;
        const int j = k % BS;
        const int q = j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
        return f16_to_f32(b->d) * (float)q + f16_to_f32(b->m);
    }
    __device__ static float dot32(const uint8_t* row, int u, const BlockQ8_1* a) {
        const BlockQ4_1* b = (const BlockQ4_1*)row + u;
        const int* aq = (const int*)a->qs;
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int v = load_i32_a4(b->qs + 4 * i);
            sumi = dp4a(v & 0x0F0F0F0F, aq[i], sumi);
            sumi = dp4a((v >> 4) & 0x0F0F0F0F, aq[i + 4], sumi);
        }
        const float da = f16_to_f32(a->d);
        return f16_to_f32(b->d) * da * (float)sumi + f16_to_f32(b->m) * da * (float)q8_sum(aq);
    }
};

struct FmtQ5_0 {
    static constexpr int BS = QK5_0;
    static constexpr int BYTES = 22;
    __device__ static float get(const uint8_t* row, int k) {
        const BlockQ5_0* b = (const BlockQ5_0*)row + k / BS;
        const int j = k % BS;
        const uint32_t qh = (uint32_t)load_i32_a2(b->qh);
        const int lo = j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
        const int hi = (qh >> j) & 1;
        return f16_to_f32(b->d) * (float)((lo | (hi << 4)) - 16);
    }
    // Moves bits 0..3 of h to bit 4 of bytes 0..3.
    __device__ static int spread4(uint32_t h) {
        return (int)(((h & 1) << 4) | ((h & 2) << 11) | ((h & 4) << 18) | ((h & 8) << 25));
    }
    __device__ static float dot32(const uint8_t* row, int u, const BlockQ8_1* a) {
        const BlockQ5_0* b = (const BlockQ5_0*)row + u;
        const int* aq = (const int*)a->qs;
        const uint32_t qh = (uint32_t)load_i32_a2(b->qh);
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int v = load_i32_a2(b->qs + 4 * i);
            const int lo = (v & 0x0F0F0F0F) | spread4(qh >> (4 * i));
            const int hi = ((v >> 4) & 0x0F0F0F0F) | spread4(qh >> (4 * i + 16));
            sumi = dp4a(lo, aq[i], sumi);
            sumi = dp4a(hi, aq[i + 4], sumi);
        }
        sumi -= 16 * q8_sum(aq);
        return f16_to_f32(b->d) * f16_to_f32(a->d) * (float)sumi;
    }
};

struct FmtQ8_0 {
    static constexpr int BS = QK8_0;
    static constexpr int BYTES = 34;
    __device__ static float get(const uint8_t* row, int k) {
        const BlockQ8_0* b = (const BlockQ8_0*)row + k / BS;
        return f16_to_f32(b->d) * (float)b->qs[k % BS];
    }
    __device__ static float dot32(const uint8_t* row, int u, const BlockQ8_1* a) {
        const BlockQ8_0* b = (const BlockQ8_0*)row + u;
        const int* aq = (const int*)a->qs;
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) sumi = dp4a(load_i32_a2((const uint8_t*)b->qs + 4 * i), aq[i], sumi);
        return f16_to_f32(b->d) * f16_to_f32(a->d) * (float)sumi;
    }
};

struct FmtIQ4_NL {
    static constexpr int BS = QK4_NL;
    static constexpr int BYTES = 18;
    __device__ static float get(const uint8_t* row, int k) {
        const BlockIQ4_NL* b = (const BlockIQ4_NL*)row + k / BS;
        const int j = k % BS;
        const int q = j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
        return f16_to_f32(b->d) * (float)kvalues_iq4nl[q];
    }
    __device__ static float dot32(const uint8_t* row, int u, const BlockQ8_1* a) {
        const BlockIQ4_NL* b = (const BlockIQ4_NL*)row + u;
        const int* aq = (const int*)a->qs;
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t v = (uint32_t)load_i32_a2(b->qs + 4 * i);
            sumi = dp4a(lookup4(kvalues_iq4nl, v & 0x0F0F0F0F), aq[i], sumi);
            sumi = dp4a(lookup4(kvalues_iq4nl, (v >> 4) & 0x0F0F0F0F), aq[i + 4], sumi);
        }
        return f16_to_f32(b->d) * f16_to_f32(a->d) * (float)sumi;
    }
};

struct FmtNF4 {
    static constexpr int BS = QK_NF4;
    static constexpr int BYTES = 18;
    __device__ static float get(const uint8_t* row, int k) {
        const BlockNF4* b = (const BlockNF4*)row + k / BS;
        const int j = k % BS;
        const int q = j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
        return f16_to_f32(b->d) * (float)kvalues_nf4[q];
    }
    // FmtIQ4_NL's dot product with the NF4 table.
    __device__ static float dot32(const uint8_t* row, int u, const BlockQ8_1* a) {
        const BlockNF4* b = (const BlockNF4*)row + u;
        const int* aq = (const int*)a->qs;
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t v = (uint32_t)load_i32_a2(b->qs + 4 * i);
            sumi = dp4a(lookup4(kvalues_nf4, v & 0x0F0F0F0F), aq[i], sumi);
            sumi = dp4a(lookup4(kvalues_nf4, (v >> 4) & 0x0F0F0F0F), aq[i + 4], sumi);
        }
        return f16_to_f32(b->d) * f16_to_f32(a->d) * (float)sumi;
    }
};

struct FmtQ4_K {
    static constexpr int BS = QK_K;
    static constexpr int BYTES = 144;
    __device__ static float get(const uint8_t* row, int k) {
        const BlockQ4_K* b = (const BlockQ4_K*)row + k / BS;
        const int j = k % BS;
        const int sub = j / 32;  // 32-element sub-block, each with its own 6-bit scale and min
        int sc, m;
        scale_min_k4(sub, b->scales, &sc, &m);
        const uint8_t byte = b->qs[32 * (sub / 2) + j % 32];
        const int q = (sub % 2) ? (byte >> 4) : (byte & 0xF);
        return f16_to_f32(b->d) * (float)sc * (float)q - f16_to_f32(b->dmin) * (float)m;
    }
    __device__ static float dot32(const uint8_t* row, int u, const BlockQ8_1* a) {
        const BlockQ4_K* b = (const BlockQ4_K*)row + u / 8;
        const int sub = u % 8;
        int sc, m;
        scale_min_k4(sub, b->scales, &sc, &m);
        const int shift = 4 * (sub % 2);
        const uint8_t* qs = b->qs + 32 * (sub / 2);
        const int* aq = (const int*)a->qs;
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) sumi = dp4a((load_i32_a4(qs + 4 * i) >> shift) & 0x0F0F0F0F, aq[i], sumi);
        const float da = f16_to_f32(a->d);
        return f16_to_f32(b->d) * (float)sc * da * (float)sumi -
               f16_to_f32(b->dmin) * (float)m * da * (float)q8_sum(aq);
    }
};

struct FmtQ5_K {
    static constexpr int BS = QK_K;
    static constexpr int BYTES = 176;
    __device__ static float get(const uint8_t* row, int k) {
        const BlockQ5_K* b = (const BlockQ5_K*)row + k / BS;
        const int j = k % BS;
        const int sub = j / 32;
        int sc, m;
        scale_min_k4(sub, b->scales, &sc, &m);
        const uint8_t byte = b->qs[32 * (sub / 2) + j % 32];
        const int lo = (sub % 2) ? (byte >> 4) : (byte & 0xF);
        const int hi = (b->qh[j % 32] >> sub) & 1;
        return f16_to_f32(b->d) * (float)sc * (float)(lo | (hi << 4)) - f16_to_f32(b->dmin) * (float)m;
    }
    __device__ static float dot32(const uint8_t* row, int u, const BlockQ8_1* a) {
        const BlockQ5_K* b = (const BlockQ5_K*)row + u / 8;
        const int sub = u % 8;
        int sc, m;
        scale_min_k4(sub, b->scales, &sc, &m);
        const int shift = 4 * (sub % 2);
        const uint8_t* qs = b->qs + 32 * (sub / 2);
        const int* aq = (const int*)a->qs;
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int lo = (load_i32_a4(qs + 4 * i) >> shift) & 0x0F0F0F0F;
            const int hi = ((load_i32_a4(b->qh + 4 * i) >> sub) & 0x01010101) << 4;
            sumi = dp4a(lo | hi, aq[i], sumi);
        }
        const float da = f16_to_f32(a->d);
        return f16_to_f32(b->d) * (float)sc * da * (float)sumi -
               f16_to_f32(b->dmin) * (float)m * da * (float)q8_sum(aq);
    }
};

struct FmtQ6_K {
    static constexpr int BS = QK_K;
    static constexpr int BYTES = 210;
    // Sub-block `sub` (32 elements) lives in half n = sub / 4 (128 elements) as quarter r = sub % 4:
    // low bits from ql[64n + 32(r&1) + l] (low or high nibble as r < 2 or not), two high bits from
    // qh[32n + l] >> 2r, scale scales[8n + 2r + l/16] (ggml's dequantize_row_q6_K).
    __device__ static float get(const uint8_t* row, int k) {
        const BlockQ6_K* b = (const BlockQ6_K*)row + k / BS;
        const int j = k % BS;
        const int sub = j / 32, l = j % 32;
        const int n = sub / 4, r = sub % 4;
        const uint8_t lb = b->ql[64 * n + 32 * (r & 1) + l];
        const int lo = (r >> 1) ? (lb >> 4) : (lb & 0xF);
        const int hi = (b->qh[32 * n + l] >> (2 * r)) & 3;
        const int sc = b->scales[8 * n + 2 * r + l / 16];
        return f16_to_f32(b->d) * (float)sc * (float)((lo | (hi << 4)) - 32);
    }
    __device__ static float dot32(const uint8_t* row, int u, const BlockQ8_1* a) {
        const BlockQ6_K* b = (const BlockQ6_K*)row + u / 8;
        const int sub = u % 8;
        const int n = sub / 4, r = sub % 4;
        const uint8_t* ql = b->ql + 64 * n + 32 * (r & 1);
        const uint8_t* qh = b->qh + 32 * n;
        const int lshift = 4 * (r >> 1);
        const int hshift = 2 * r;
        const int* aq = (const int*)a->qs;
        int dot[2] = {0, 0};
        int asum[2] = {0, 0};
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int lo = (load_i32_a2(ql + 4 * i) >> lshift) & 0x0F0F0F0F;
            const int hi = ((load_i32_a2(qh + 4 * i) >> hshift) & 0x03030303) << 4;
            dot[i / 4] = dp4a(lo | hi, aq[i], dot[i / 4]);
            asum[i / 4] = dp4a(aq[i], 0x01010101, asum[i / 4]);
        }
        const int sc0 = b->scales[8 * n + 2 * r];
        const int sc1 = b->scales[8 * n + 2 * r + 1];
        const int sumi = sc0 * (dot[0] - 32 * asum[0]) + sc1 * (dot[1] - 32 * asum[1]);
        return f16_to_f32(b->d) * f16_to_f32(a->d) * (float)sumi;
    }
};
