// norm.cu: RMSNorm and LayerNorm over rows, with the fused RMSNorm -> Q8_1 quantization used
// before the decode matrix-vector products.
// Prepended by the Rust side: common.cuh, quant.cuh.

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w (ggml_rms_norm followed by the weight multiply).
// One block per row; x and out may alias.
extern "C" __global__ void rms_norm(const float* x, const float* __restrict__ w, float* out, int ncols, float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * ncols;
    float* outr = out + (size_t)blockIdx.x * ncols;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < ncols; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, scratch);
    const float scale = rsqrtf(ss / (float)ncols + eps);
    for (int i = threadIdx.x; i < ncols; i += blockDim.x) outr[i] = xr[i] * scale * w[i];
}

// out[r] = (x[r] - mean) / sqrt(var + eps) * w + b; b may be null. One block per row.
extern "C" __global__ void layer_norm(const float* x, const float* __restrict__ w, const float* __restrict__ b,
                                      float* out, int ncols, float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * ncols;
    float* outr = out + (size_t)blockIdx.x * ncols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < ncols; i += blockDim.x) s += xr[i];
    const float mean = block_sum(s, scratch) / (float)ncols;
    float v = 0.0f;
    for (int i = threadIdx.x; i < ncols; i += blockDim.x) {
        const float c = xr[i] - mean;
        v += c * c;
    }
    const float scale = rsqrtf(block_sum(v, scratch) / (float)ncols + eps);
    for (int i = threadIdx.x; i < ncols; i += blockDim.x) {
        const float y = (xr[i] - mean) * scale * w[i];
        outr[i] = b ? y + b[i] : y;
    }
}

// RMSNorm of one row (ncols a multiple of 32) straight into Q8_1 blocks: the decode path's
// norm -> quantize pair in one launch. One block per row; each warp quantizes whole blocks.
// out (may be null): the normalised f32 row as well, for the ops that read it unquantized.
__device__ __forceinline__ void rms_norm_q8_1_row(const float* x, const float* __restrict__ w, float* out,
                                                  BlockQ8_1* __restrict__ y, int ncols, float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * ncols;
    BlockQ8_1* yr = y + (size_t)blockIdx.x * (ncols / QK8_1);
    float* outr = out ? out + (size_t)blockIdx.x * ncols : nullptr;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < ncols; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, scratch);
    const float scale = rsqrtf(ss / (float)ncols + eps);
    const int lane = threadIdx.x % WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    for (int blk = threadIdx.x / WARP_SIZE; blk < ncols / QK8_1; blk += nwarps) {
        const int i = blk * QK8_1 + lane;
        const float v = xr[i] * scale * w[i];
        const float amax = warp_max(fabsf(v));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const int q = (int)roundf(v * id);
        yr[blk].qs[lane] = (int8_t)q;
        const int sum = warp_sum_int(q);
        if (lane == 0) {
            yr[blk].d = f32_to_f16(d);
            yr[blk].s = f32_to_f16((float)sum * d);
        }
        // Every lane read its own x before any writes: x and out may alias.
        if (outr) outr[i] = v;
    }
}

extern "C" __global__ void rms_norm_q8_1(const float* __restrict__ x, const float* __restrict__ w,
                                         BlockQ8_1* __restrict__ y, int ncols, float eps) {
    rms_norm_q8_1_row(x, w, nullptr, y, ncols, eps);
}

// rms_norm_q8_1 that also writes the f32 result (out may alias x): one launch gives the decode
// path both the normalised row and its Q8_1 copy for the matrix-vector products that follow.
extern "C" __global__ void rms_norm_f32_q8_1(const float* x, const float* __restrict__ w, float* out,
                                             BlockQ8_1* __restrict__ y, int ncols, float eps) {
    rms_norm_q8_1_row(x, w, out, y, ncols, eps);
}
