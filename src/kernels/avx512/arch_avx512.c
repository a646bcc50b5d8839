/* The AVX-512 family's descriptor (AVX-512 F, DQ, BW, VL): the scalar one
 * with every attention and nn kernel replaced. Forward strips of 48 rows =
 * 3 zmm vectors, the register tile of qk and pv (8 keys or 8 value columns
 * x 3 vectors = 24 of the 32 registers); keys in blocks of bk. Backward
 * strips of 96 rows (2 x 48), key tiles of bbk. The sizes were chosen by
 * measurement (docs/PERFORMANCE.md, "AVX-512"). */
#include "kernels/arch.h"

#include <immintrin.h>

extern const attn_kernels attn__kernels_avx512;
extern const attn_bwd_kernels attn__bwd_kernels_avx512;
extern const attn_nn_kernels attn__nn_kernels_avx512;
extern const attn_feat_kernels attn__feat_kernels_avx512;

/* 16 independent chains of 16 lanes: FMA latency (4 cycles) times two
 * 512-bit FMA pipes needs at least 8 in flight; 16 chains plus the two
 * constants fit the 32 zmm registers. x' = x*a + b with a just below 1
 * stays finite and normal however long it runs. */
static double peak_fma_avx512(int64_t iters, float *sink) {
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-3f);
    __m512 x[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        x[i] = _mm512_set1_ps(1.0f + 0.125f * (float)i); /* distinct: no merged chains */
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            x[i] = _mm512_fmadd_ps(x[i], a, b);
    }
#pragma GCC unroll 16
    for (int i = 1; i < 16; i++)
        x[0] = _mm512_add_ps(x[0], x[i]);
    *sink = _mm512_reduce_add_ps(x[0]);
    return (double)iters * 16.0 * 16.0 * 2.0;
}

void attn__arch_init_avx512(attn__arch *a) {
    attn__arch_init_scalar(a);
    a->name = "avx512";
    a->mr = 48;
    a->bk = 128;
    a->mrq = 16;
    a->bmr = 96;
    a->bbk = 48;
    a->bmrq = 16;
    a->fwd = attn__kernels_avx512;
    a->bwd = attn__bwd_kernels_avx512;
    a->nn = attn__nn_kernels_avx512;
    a->feat = attn__feat_kernels_avx512;
    a->peak_fma = peak_fma_avx512;
    attn__decode_init_avx512(&a->dec);
}
