/* The AVX2+FMA family's descriptor: the scalar one with every attention,
 * decode and nn kernel replaced, and the strip heights these kernels take
 * (forward: 24 rows = 3 ymm vectors, the register tile of qk and pv;
 * backward: 96 rows, a multiple of 24, so K, V, dK and dV stream once per
 * 96 queries: docs/DESIGN.md, "Backward geometry"). */
#include "kernels/arch.h"

#include <immintrin.h>

extern const attn_kernels attn__kernels_avx2;
extern const attn_bwd_kernels attn__bwd_kernels_avx2;
extern const attn_nn_kernels attn__nn_kernels_avx2;
extern const attn_feat_kernels attn__feat_kernels_avx2;

/* 12 independent chains of 8 lanes: FMA latency (4-5 cycles) times two FMA
 * pipes needs at least 10 in flight, and 12 chains plus the two constants
 * still fit the 16 ymm registers (16 chains would spill and measure the
 * spills). x' = x*a + b with a just below 1 keeps every value finite and
 * normal however long it runs. */
static double peak_fma_avx2(int64_t iters, float *sink) {
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-3f);
    /* distinct starts, or the compiler merges equal chains */
#define ATTN_X(i) _mm256_set1_ps(1.0f + 0.125f * (i))
    __m256 x0 = ATTN_X(0), x1 = ATTN_X(1), x2 = ATTN_X(2), x3 = ATTN_X(3), x4 = ATTN_X(4);
    __m256 x5 = ATTN_X(5), x6 = ATTN_X(6), x7 = ATTN_X(7), x8 = ATTN_X(8), x9 = ATTN_X(9);
    __m256 x10 = ATTN_X(10), x11 = ATTN_X(11);
#undef ATTN_X
    for (int64_t it = 0; it < iters; it++) {
        /* named registers (an array would live in memory at -O2) */
        x0 = _mm256_fmadd_ps(x0, a, b), x1 = _mm256_fmadd_ps(x1, a, b);
        x2 = _mm256_fmadd_ps(x2, a, b), x3 = _mm256_fmadd_ps(x3, a, b);
        x4 = _mm256_fmadd_ps(x4, a, b), x5 = _mm256_fmadd_ps(x5, a, b);
        x6 = _mm256_fmadd_ps(x6, a, b), x7 = _mm256_fmadd_ps(x7, a, b);
        x8 = _mm256_fmadd_ps(x8, a, b), x9 = _mm256_fmadd_ps(x9, a, b);
        x10 = _mm256_fmadd_ps(x10, a, b), x11 = _mm256_fmadd_ps(x11, a, b);
    }
    __m256 t = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
                             _mm256_add_ps(_mm256_add_ps(x4, x5), _mm256_add_ps(x6, x7)));
    t = _mm256_add_ps(t, _mm256_add_ps(_mm256_add_ps(x8, x9), _mm256_add_ps(x10, x11)));
    float f[8];
    _mm256_storeu_ps(f, t);
    *sink = f[0] + f[7];
    return (double)iters * 12.0 * 8.0 * 2.0;
}

void attn__arch_init_avx2(attn__arch *a) {
    attn__arch_init_scalar(a);
    a->name = "avx2";
    a->mr = 24;
    a->bk = 128;
    a->mrq = 8;
    a->bmr = 96;
    a->bbk = 48;
    a->bmrq = 24;
    const attn_kernels sc = a->fwd;
    a->fwd = attn__kernels_avx2;
    a->fwd.unpack_o = sc.unpack_o; /* the scalar accumulator unpack */
    a->bwd = attn__bwd_kernels_avx2;
    a->nn = attn__nn_kernels_avx2;
    a->feat = attn__feat_kernels_avx2;
    a->peak_fma = peak_fma_avx2;
    attn__decode_init_avx2(&a->dec);
}
