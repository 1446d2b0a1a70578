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
