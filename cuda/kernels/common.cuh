// common.cuh: types, block layouts and helpers shared by every tinyrt CUDA kernel.
//
// The Rust side prepends this file to each .cu source before NVRTC compiles it: the NVRTC
// wheel ships no CUDA headers, so nothing here includes <cuda_fp16.h> or <cstdint>.
// Block layouts mirror tinyrt_kernels::quant (and ggml's ggml-common.h), byte for byte.

typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu
#define NEG_INF (__int_as_float(0xff800000))

// ---- half <-> float through PTX cvt (no cuda_fp16.h) ----
__device__ __forceinline__ float f16_to_f32(uint16_t h) {
    float f;
    asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ uint16_t f32_to_f16(float f) {
    uint16_t h;
    asm("{ .reg .b16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
    return h;
}

// ---- KV cache elements: f16 bit patterns (uint16_t) or f32 ----
template <typename T>
__device__ __forceinline__ T kv_from_f32(float v);
template <>
__device__ __forceinline__ uint16_t kv_from_f32<uint16_t>(float v) {
    return f32_to_f16(v);
}
template <>
__device__ __forceinline__ float kv_from_f32<float>(float v) {
    return v;
}
__device__ __forceinline__ float kv_to_f32(uint16_t v) { return f16_to_f32(v); }
__device__ __forceinline__ float kv_to_f32(float v) { return v; }

// ---- integer dot product of four int8 lanes (sm_61+) ----
__device__ __forceinline__ int dp4a(int a, int b, int c) {
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

// ---- warp reductions ----
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}
__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024). `scratch` holds 32 floats.
// Every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int nwarps = blockDim.x / WARP_SIZE;
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// ---- activations ----
__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }

// GELU, tanh approximation (as ggml_gelu): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
__device__ __forceinline__ float gelu_f(float x) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + tanhf(c * x * (1.0f + 0.044715f * x * x)));
}

// ---- unaligned-safe loads: blocks of 18/20/22/34 bytes are only 2-byte aligned ----
__device__ __forceinline__ int load_i32_a2(const uint8_t* p) {
    const uint16_t* q = (const uint16_t*)p;
    return (int)((uint32_t)q[0] | ((uint32_t)q[1] << 16));
}
__device__ __forceinline__ int load_i32_a4(const uint8_t* p) { return *(const int*)p; }

// ---- block layouts (ggml-common.h) ----
#define QK4_0 32
struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
static_assert(sizeof(BlockQ4_0) == 18, "BlockQ4_0 size");

#define QK4_1 32
struct BlockQ4_1 { uint16_t d; uint16_t m; uint8_t qs[16]; };
static_assert(sizeof(BlockQ4_1) == 20, "BlockQ4_1 size");

#define QK5_0 32
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
static_assert(sizeof(BlockQ5_0) == 22, "BlockQ5_0 size");

#define QK8_0 32
struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };
static_assert(sizeof(BlockQ8_0) == 34, "BlockQ8_0 size");

// Activation blocks: d = max|x| / 127, s = d * sum(qs) (ggml's quantize_row_q8_1_ref).
#define QK8_1 32
struct BlockQ8_1 { uint16_t d; uint16_t s; int8_t qs[32]; };
static_assert(sizeof(BlockQ8_1) == 36, "BlockQ8_1 size");

// One Q8_1 block from one warp, lane i holding value i: d = max|x| / 127, q = round(x / d),
// s = d * sum(q) (ggml's quantize_row_q8_1_ref). Every lane of the warp must call it.
__device__ __forceinline__ void quantize_q8_1_warp(float v, BlockQ8_1* __restrict__ blk) {
    const int lane = threadIdx.x % WARP_SIZE;
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = (int)roundf(v * id);
    blk->qs[lane] = (int8_t)q;
    const int sum = warp_sum_int(q);
    if (lane == 0) {
        blk->d = f32_to_f16(d);
        blk->s = f32_to_f16((float)sum * d);
    }
}

#define QK_K 256
#define K_SCALE_SIZE 12
struct BlockQ4_K { uint16_t d; uint16_t dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; };
static_assert(sizeof(BlockQ4_K) == 144, "BlockQ4_K size");

struct BlockQ5_K { uint16_t d; uint16_t dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; };
static_assert(sizeof(BlockQ5_K) == 176, "BlockQ5_K size");

struct BlockQ6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; };
static_assert(sizeof(BlockQ6_K) == 210, "BlockQ6_K size");

#define QK4_NL 32
struct BlockIQ4_NL { uint16_t d; uint8_t qs[16]; };
static_assert(sizeof(BlockIQ4_NL) == 18, "BlockIQ4_NL size");

// NF4 (QLoRA's NormalFloat4, arXiv:2305.14314) as tinyrt stores it: IQ4_NL's block layout
// (32 weights, f16 scale, low nibbles hold elements 0..15, high nibbles 16..31) with the NF4
// levels times 127, rounded, as the codebook, so the int8 dot product applies directly.
#define QK_NF4 32
struct BlockNF4 { uint16_t d; uint8_t qs[16]; };
static_assert(sizeof(BlockNF4) == 18, "BlockNF4 size");

// ggml's kvalues_iq4nl (ggml-common.h).
__device__ __constant__ int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                     1,    13,   25,  38,  53,  69,  89,  113};
// round(127 * NF4 level), levels from the QLoRA paper's appendix.
__device__ __constant__ int8_t kvalues_nf4[16] = {-127, -88, -67, -50, -36, -23, -12, 0,
                                                   10,   20,  31,  43,  56,  71,  92, 127};

// Q4_K / Q5_K packed 6-bit scale and min of sub-block j (ggml's get_scale_min_k4).
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Turn four 4-bit codes (in the low nibbles of the bytes of v) into four int8 lookups.
__device__ __forceinline__ int lookup4(const int8_t* table, uint32_t v) {
    const uint32_t b0 = (uint8_t)table[v & 0xF];
    const uint32_t b1 = (uint8_t)table[(v >> 8) & 0xF];
    const uint32_t b2 = (uint8_t)table[(v >> 16) & 0xF];
    const uint32_t b3 = (uint8_t)table[(v >> 24) & 0xF];
    return (int)(b0 | (b1 << 8) | (b2 << 16) | (b3 << 24));
}
