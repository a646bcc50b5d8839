/* Vector pieces shared by the AVX2 forward and backward kernels (included
 * only by files built with -mavx2 -mfma): the exponential and the 24-row
 * score product, written once so both passes compute the same numbers. */
#ifndef ATTN_KERNELS_VMATH_AVX2_H
#define ATTN_KERNELS_VMATH_AVX2_H

#include <immintrin.h>
#include <stdint.h>

/* exp(x) for x <= 0 (or NaN), within 0.9 ulp of the exact value down to
 * x = -87.3: 0.889 ulp at most over every float in [-87.3, 0] against double
 * exp (tests/test_exp_avx2.c; ATTN_TEST_EXP_STRIDE=1 checks every float).
 * Range reduction x = n*ln2 + r, |r| <= ln2/2, with n rounded by adding
 * 1.5*2^23 + 127: the sum's low mantissa bits are then n + 127, which shifted
 * left by 23 are the bits of 2^n (no round or convert instructions). exp(r)
 * is a degree-6 polynomial in Horner form ending 1 + r*(1 + r*P(r)).
 * x < -87.33654 (including -inf, and huge negatives whose n is garbage) gives
 * exactly 0; NaN stays NaN. */
static inline __attribute__((always_inline)) __m256 exp_avx2(__m256 x) {
    const __m256 magic = _mm256_set1_ps(12583039.0f); /* 1.5*2^23 + 127 */
    __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_LT_OQ);
    __m256 nf = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
    __m256 n = _mm256_sub_ps(nf, magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x); /* ln2 in two parts */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(nf), 23));
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, scale));
}

/* s[j*ld + r] = dot(qt[:, r], k_j) for r < 24, j < n, where qt is a packed
 * strip [D][ld] (ld = ATTN_MR or ATTN_BMR, a compile-time constant at every
 * call). 4 keys at a time: 12 accumulators, per d 3 loads of the packed
 * queries and 4 broadcasts of key elements. */
static inline __attribute__((always_inline)) void
dot24_avx2(const float *qt, int ld, const float *k, int64_t ks, int n, int D, float *s) {
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + (int64_t)j * ks, *k1 = k0 + ks, *k2 = k1 + ks, *k3 = k2 + ks;
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
        __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
        const float *a = qt;
        for (int d = 0; d < D; d++, a += ld) {
            __m256 a0 = _mm256_load_ps(a), a1 = _mm256_load_ps(a + 8), a2 = _mm256_load_ps(a + 16);
            __m256 b = _mm256_broadcast_ss(k0 + d);
            c00 = _mm256_fmadd_ps(a0, b, c00);
            c01 = _mm256_fmadd_ps(a1, b, c01);
            c02 = _mm256_fmadd_ps(a2, b, c02);
            b = _mm256_broadcast_ss(k1 + d);
            c10 = _mm256_fmadd_ps(a0, b, c10);
            c11 = _mm256_fmadd_ps(a1, b, c11);
            c12 = _mm256_fmadd_ps(a2, b, c12);
            b = _mm256_broadcast_ss(k2 + d);
            c20 = _mm256_fmadd_ps(a0, b, c20);
            c21 = _mm256_fmadd_ps(a1, b, c21);
            c22 = _mm256_fmadd_ps(a2, b, c22);
            b = _mm256_broadcast_ss(k3 + d);
            c30 = _mm256_fmadd_ps(a0, b, c30);
            c31 = _mm256_fmadd_ps(a1, b, c31);
            c32 = _mm256_fmadd_ps(a2, b, c32);
        }
        float *o = s + (size_t)j * ld;
        _mm256_store_ps(o, c00), _mm256_store_ps(o + 8, c01), _mm256_store_ps(o + 16, c02);
        o += ld;
        _mm256_store_ps(o, c10), _mm256_store_ps(o + 8, c11), _mm256_store_ps(o + 16, c12);
        o += ld;
        _mm256_store_ps(o, c20), _mm256_store_ps(o + 8, c21), _mm256_store_ps(o + 16, c22);
        o += ld;
        _mm256_store_ps(o, c30), _mm256_store_ps(o + 8, c31), _mm256_store_ps(o + 16, c32);
    }
    for (; j < n; j++) {
        const float *k0 = k + (int64_t)j * ks;
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0;
        const float *a = qt;
        for (int d = 0; d < D; d++, a += ld) {
            __m256 b = _mm256_broadcast_ss(k0 + d);
            c0 = _mm256_fmadd_ps(_mm256_load_ps(a), b, c0);
            c1 = _mm256_fmadd_ps(_mm256_load_ps(a + 8), b, c1);
            c2 = _mm256_fmadd_ps(_mm256_load_ps(a + 16), b, c2);
        }
        float *o = s + (size_t)j * ld;
        _mm256_store_ps(o, c0), _mm256_store_ps(o + 8, c1), _mm256_store_ps(o + 16, c2);
    }
}

#endif
