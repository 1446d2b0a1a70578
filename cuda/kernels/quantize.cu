// quantize.cu: activation quantization f32 -> Q8_1 blocks (d = max|x| / 127, q = round(x / d),
// s = d * sum(q)), the arithmetic of ggml's quantize_row_q8_1_ref.
// Prepended by the Rust side: common.cuh, quant.cuh.

// One warp per block of 32 values. x: [n], y: [n / 32] blocks; n a multiple of 32.
extern "C" __global__ void quantize_q8_1(const float* __restrict__ x, BlockQ8_1* __restrict__ y, int n) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int blk = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (blk >= n / QK8_1) return;
    const float v = x[blk * QK8_1 + lane];
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = (int)roundf(v * id);
    y[blk].qs[lane] = (int8_t)q;
    const int sum = warp_sum_int(q);
    if (lane == 0) {
        y[blk].d = f32_to_f16(d);
        y[blk].s = f32_to_f16((float)sum * d);
    }
}
