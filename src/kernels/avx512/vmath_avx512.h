/* Vector pieces shared by the AVX-512 forward and backward kernels
 * (included only by files of this folder, built with -mavx512f): the
 * exponential and the 48-row score product, written once so both passes
 * compute the same numbers. */
#ifndef ATTN_KERNELS_VMATH_AVX512_H
#define ATTN_KERNELS_VMATH_AVX512_H

#include <immintrin.h>
#include <stdint.h>

#define ATTN_INLINE static inline __attribute__((always_inline))

/* exp(x) for x <= 0 (or NaN): the AVX2 family's algorithm and constants,
 * step for step on 16 lanes (so the two families' exponentials agree to
 * the bit): x = n*ln2 + r, n rounded by adding 1.5*2^23 + 127, whose low
 * mantissa bits shifted left by 23 are 2^n; a degree-6 polynomial ending
 * 1 + r*(1 + r*P(r)). Below -87.33654 (and -inf) exactly 0; NaN stays NaN.
 * Within 0.9 ulp of exp over [-87.3, 0] (tests/test_exp_avx2.c checks the
 * AVX2 twin; tests/test_arch.c checks this one against scalar expf). */
ATTN_INLINE __m512 exp_avx512(__m512 x) {
    const __m512 magic = _mm512_set1_ps(12583039.0f); /* 1.5*2^23 + 127 */
    __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_LT_OQ);
    __m512 nf = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic);
    __m512 n = _mm512_sub_ps(nf, magic);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x); /* ln2 in two parts */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(nf), 23));
    return _mm512_maskz_mul_ps((__mmask16)~under, p, scale);
}

/* Scores of NK keys (k0, row stride ks) for G 16-row vectors of a packed
 * strip qt [D][ld]: G*NK accumulators, per d G loads of the packed queries
 * and NK broadcasts of key elements, into o[u*ld + r]. Each sum is one FMA
 * chain in d order from 0, as in every family, whatever G and NK. */
ATTN_INLINE void dot_keys_avx512(int G, int NK, const float *qt, int ld, const float *k0,
                                 int64_t ks, int D, float *o) {
    __m512 c[16][3];
#pragma GCC unroll 16
    for (int u = 0; u < NK; u++)
#pragma GCC unroll 3
        for (int g = 0; g < G; g++)
            c[u][g] = _mm512_setzero_ps();
    const float *a = qt;
    for (int d = 0; d < D; d++, a += ld) {
        __m512 av[3];
#pragma GCC unroll 3
        for (int g = 0; g < G; g++)
            av[g] = _mm512_load_ps(a + 16 * g);
#pragma GCC unroll 16
        for (int u = 0; u < NK; u++) {
            __m512 b = _mm512_set1_ps(k0[u * ks + d]);
#pragma GCC unroll 3
            for (int g = 0; g < G; g++)
                c[u][g] = _mm512_fmadd_ps(av[g], b, c[u][g]);
        }
    }
#pragma GCC unroll 16
    for (int u = 0; u < NK; u++)
#pragma GCC unroll 3
        for (int g = 0; g < G; g++)
            _mm512_store_ps(o + (size_t)u * ld + 16 * g, c[u][g]);
}

/* The last n < 8 keys of a tile in one pass (3n chains; one key at a time
 * ran a single 64-long FMA chain per vector, latency-bound). */
ATTN_INLINE void dot_tail_avx512(int G, const float *qt, int ld, const float *k, int64_t ks, int n,
                                 int D, float *s) {
    switch (n) {
    case 7:
        dot_keys_avx512(G, 7, qt, ld, k, ks, D, s);
        break;
    case 6:
        dot_keys_avx512(G, 6, qt, ld, k, ks, D, s);
        break;
    case 5:
        dot_keys_avx512(G, 5, qt, ld, k, ks, D, s);
        break;
    case 4:
        dot_keys_avx512(G, 4, qt, ld, k, ks, D, s);
        break;
    case 3:
        dot_keys_avx512(G, 3, qt, ld, k, ks, D, s);
        break;
    case 2:
        dot_keys_avx512(G, 2, qt, ld, k, ks, D, s);
        break;
    case 1:
        dot_keys_avx512(G, 1, qt, ld, k, ks, D, s);
        break;
    default:
        break;
    }
}

/* s[j*ld + r] = dot(qt[:, r], k_j) for r < 48, j < n, where qt is a packed
 * strip [D][ld]. 8 keys at a time: 24 accumulators (of the 32 zmm
 * registers), per d 3 loads of the packed queries and 8 broadcasts of key
 * elements for 24 FMAs; the last n % 8 keys together. */
ATTN_INLINE void dot48_avx512(const float *qt, int ld, const float *k, int64_t ks, int n, int D,
                              float *s) {
    int j = 0;
    for (; j + 8 <= n; j += 8)
        dot_keys_avx512(3, 8, qt, ld, k + (int64_t)j * ks, ks, D, s + (size_t)j * ld);
    dot_tail_avx512(3, qt, ld, k + (int64_t)j * ks, ks, n - j, D, s + (size_t)j * ld);
}

/* Keys 16 at a time for one vector (16 accumulators), 8 for two, then the
 * tail together: strips of 16 or 32 rows (the forward's short strips, the
 * backward's last row group), one FMA chain per score in d order as
 * dot48_avx512's. */
ATTN_INLINE void dot_short_avx512(int G, const float *qt, int ld, const float *k, int64_t ks, int n,
                                  int D, float *s) {
    int j = 0;
    if (G == 1)
        for (; j + 16 <= n; j += 16)
            dot_keys_avx512(1, 16, qt, ld, k + (int64_t)j * ks, ks, D, s + (size_t)j * ld);
    for (; j + 8 <= n; j += 8)
        dot_keys_avx512(G, 8, qt, ld, k + (int64_t)j * ks, ks, D, s + (size_t)j * ld);
    dot_tail_avx512(G, qt, ld, k + (int64_t)j * ks, ks, n - j, D, s + (size_t)j * ld);
}

#endif
