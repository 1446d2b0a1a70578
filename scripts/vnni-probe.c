/* Throughput probe for the AVX-512 GEMM micro-kernel's instruction mix (benches/RESULTS.md):
 * 16 rows x 8 tokens x one 32-value sub-block per iteration, all data in L1.
 *   mode 0: the 64 vpdpbusd alone (embedded-broadcast activations, 8 independent chains)
 *   mode 1: plus tile_kernel's float steps per token (mul, cvt, FMA, the minimum's FMA)
 *   mode 2: plus cvt + FMA only
 * Build and run (one copy per core to check that both cores reach the same rate):
 *   gcc -O3 -funroll-all-loops -march=sapphirerapids scripts/vnni-probe.c -o /tmp/vnni-probe
 *   /tmp/vnni-probe
 * It prints ns per vpdpbusd, the clock (from a chain of dependent 64-bit multiplies, 3 cycles
 * each on Intel cores; dependent adds of an immediate are no clock on Golden Cove, whose renamer
 * folds them) and the vpdpbusd per cycle that these give.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int8_t y[8 * 4096] __attribute__((aligned(64)));
static uint8_t w[64 * 8] __attribute__((aligned(64)));
static float sd[64];
#define N 2000000

__attribute__((noinline)) static float run(int mode) {
    __m512i iacc[8];
    __m512 facc[8];
    for (int t = 0; t < 8; t++) facc[t] = _mm512_setzero_ps();
    __m512 s = _mm512_set1_ps(1.0001f), mn = _mm512_set1_ps(0.5f);
    for (long it = 0; it < N; it++) {
        const int8_t *yb = y + (it & 63) * 32;
        for (int t = 0; t < 8; t++) iacc[t] = _mm512_set1_epi32(t);
        for (int j = 0; j < 8; j++) {
            __m512i wv = _mm512_load_si512(w + 64 * j);
            for (int t = 0; t < 8; t++) {
                int yv = *(const int *)(yb + t * 4096 + 4 * j);
                iacc[t] = _mm512_dpbusd_epi32(iacc[t], wv, _mm512_set1_epi32(yv));
            }
        }
        for (int t = 0; t < 8; t++) {
            if (mode == 1) {
                __m512 sc = _mm512_mul_ps(s, _mm512_set1_ps(sd[t]));
                facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[t]), sc, facc[t]);
                facc[t] = _mm512_fmadd_ps(mn, _mm512_set1_ps(sd[t + 8]), facc[t]);
            } else if (mode == 2) {
                facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[t]), s, facc[t]);
            } else {
                facc[t] = _mm512_castsi512_ps(
                    _mm512_add_epi32(iacc[t], _mm512_castps_si512(facc[t])));
            }
        }
    }
    float r = 0;
    for (int t = 0; t < 8; t++) r += _mm512_reduce_add_ps(facc[t]);
    return r;
}

int main(void) {
    long n = 300000000, x = 1;
    double c0 = now();
    for (long i = 0; i < n; i++) __asm__ volatile("imul $3, %0, %0" : "+r"(x));
    double ghz = 3.0 * n / (now() - c0) / 1e9;
    printf("clock: %.2f GHz\n", ghz);
    for (int i = 0; i < 64; i++) sd[i] = 1.0f + i * 1e-3f;
    for (int m = 0; m < 3; m++) {
        double t0 = now();
        float r = run(m);
        double t1 = now();
        double ns = (t1 - t0) / N / 64 * 1e9;
        printf("mode %d: %.3f ns per vpdpbusd, %.2f per cycle (checksum %g)\n", m, ns,
               1.0 / (ns * ghz), r);
    }
    return 0;
}
