// lora.cu: the two products of a LoRA term, out += scale * B (A x), for ntok rows of x.
// Prepended by the Rust side: common.cuh, quant.cuh.
//
// A: rank x n_in, row-major f32. Bt: B transposed, rank x n_out, row-major f32 (so that the
// threads of one output row read consecutive addresses). t: ntok x rank f32 scratch. x and out
// are rows of a wider buffer (x_stride, out_stride floats apart). f32 accumulation throughout.

#define LORA_DOWN_WARPS 4
#define LORA_UP_THREADS 256
#define LORA_MAX_RANK 256

// t[tok, j] = sum_k A[j, k] x[tok, k]: one warp per (j, tok), LORA_DOWN_WARPS ranks per block;
// grid (ceil(rank / LORA_DOWN_WARPS), ntok).
extern "C" __global__ void lora_down(const float* __restrict__ a, const float* __restrict__ x,
                                     float* __restrict__ t, int rank, int n_in, int ntok, int x_stride) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int j = blockIdx.x * LORA_DOWN_WARPS + threadIdx.x / WARP_SIZE;
    const int tok = blockIdx.y;
    if (j >= rank || tok >= ntok) return;
    const float* ar = a + (size_t)j * n_in;
    const float* xr = x + (size_t)tok * x_stride;
    float s = 0.0f;
    for (int k = lane; k < n_in; k += WARP_SIZE) s = fmaf(ar[k], xr[k], s);
    s = warp_sum(s);
    if (lane == 0) t[(size_t)tok * rank + j] = s;
}

// out[tok, i] += scale * sum_j Bt[j, i] t[tok, j]: one thread per output value, the row of t in
// shared memory; grid (ceil(n_out / LORA_UP_THREADS), ntok). rank <= LORA_MAX_RANK.
extern "C" __global__ void lora_up(const float* __restrict__ bt, const float* __restrict__ t,
                                   float* __restrict__ out, float scale, int n_out, int rank, int ntok,
                                   int out_stride) {
    __shared__ float ts[LORA_MAX_RANK];
    const int tok = blockIdx.y;
    if (tok >= ntok) return;
    for (int j = threadIdx.x; j < rank; j += blockDim.x) ts[j] = t[(size_t)tok * rank + j];
    __syncthreads();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_out) return;
    float s = 0.0f;
    for (int j = 0; j < rank; ++j) s = fmaf(bt[(size_t)j * n_out + i], ts[j], s);
    float* o = out + (size_t)tok * out_stride + i;
    *o += scale * s;
}
