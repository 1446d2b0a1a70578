// quantize.cu: activation quantization f32 -> Q8_1 blocks (d = max|x| / 127, q = round(x / d),
// s = d * sum(q)), the arithmetic of ggml's quantize_row_q8_1_ref.
// Prepended by the Rust side: common.cuh, quant.cuh.

// One warp per block of 32 values. x: [n], y: [n / 32] blocks; n a multiple of 32.
extern "C" __global__ void quantize_q8_1(const float* __restrict__ x, BlockQ8_1* __restrict__ y, int n) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int blk = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (blk >= n / QK8_1) return;
    quantize_q8_1_warp(x[blk * QK8_1 + lane], y + blk);
}
