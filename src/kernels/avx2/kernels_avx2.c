/* AVX2 + FMA microkernels (this file alone is built with -mavx2 -mfma).
 * Geometry in kernels/kernels.h: a strip is MR = 24 query rows = 3 vectors. */
#include "kernels/kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* exp(x) for x <= 0 (or NaN): Cody-Waite range reduction x = n*ln2 + r,
 * |r| <= ln2/2, a degree-6 polynomial for exp(r) (about 1 ulp), then 2^n
 * through the exponent bits. x < -87.33 (including -inf) gives exactly 0;
 * NaN stays NaN. */
static inline __m256 exp_avx2(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.33654f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(lo, x); /* NaN in x survives (second operand) */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, p);
}

static void pack_q_avx2(const float *q, int64_t qs, int mr, int D, float scale, float *qt) {
    /* Transpose 8 rows at a time with gathers-free scalar stores: the strip is
     * packed once per task, so this is off the hot path. */
    for (int r = 0; r < ATTN_MR; r++) {
        if (r < mr) {
            const float *qr = q + (int64_t)r * qs;
            for (int d = 0; d < D; d++) qt[d * ATTN_MR + r] = scale * qr[d];
        } else {
            for (int d = 0; d < D; d++) qt[d * ATTN_MR + r] = 0.0f;
        }
    }
}

/* s[j][0..24) for 4 keys at a time: 12 accumulators, per d 3 loads of the
 * packed queries and 4 broadcasts of key elements. */
static void qk_avx2(const float *qt, const float *k, int64_t ks, int n, int D, float *s) {
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + (int64_t)j * ks, *k1 = k0 + ks, *k2 = k1 + ks, *k3 = k2 + ks;
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
        __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
        const float *a = qt;
        for (int d = 0; d < D; d++, a += ATTN_MR) {
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
        float *o = s + (size_t)j * ATTN_MR;
        _mm256_store_ps(o, c00), _mm256_store_ps(o + 8, c01), _mm256_store_ps(o + 16, c02);
        _mm256_store_ps(o + 24, c10), _mm256_store_ps(o + 32, c11), _mm256_store_ps(o + 40, c12);
        _mm256_store_ps(o + 48, c20), _mm256_store_ps(o + 56, c21), _mm256_store_ps(o + 64, c22);
        _mm256_store_ps(o + 72, c30), _mm256_store_ps(o + 80, c31), _mm256_store_ps(o + 88, c32);
    }
    for (; j < n; j++) {
        const float *k0 = k + (int64_t)j * ks;
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0;
        const float *a = qt;
        for (int d = 0; d < D; d++, a += ATTN_MR) {
            __m256 b = _mm256_broadcast_ss(k0 + d);
            c0 = _mm256_fmadd_ps(_mm256_load_ps(a), b, c0);
            c1 = _mm256_fmadd_ps(_mm256_load_ps(a + 8), b, c1);
            c2 = _mm256_fmadd_ps(_mm256_load_ps(a + 16), b, c2);
        }
        float *o = s + (size_t)j * ATTN_MR;
        _mm256_store_ps(o, c0), _mm256_store_ps(o + 8, c1), _mm256_store_ps(o + 16, c2);
    }
}

static void softmax_avx2(float *s, int n, float *m, float *l, float *alpha) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int v = 0; v < ATTN_MR; v += 8) {
        __m256 mold = _mm256_loadu_ps(m + v), mx = mold, nan = _mm256_setzero_ps();
        for (int j = 0; j < n; j++) {
            __m256 x = _mm256_load_ps(s + (size_t)j * ATTN_MR + v);
            mx = _mm256_max_ps(mx, x);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        }
        mx = _mm256_or_ps(mx, nan); /* all-ones bits: a NaN poisons its row */
        __m256 empty = _mm256_cmp_ps(mx, ninf, _CMP_EQ_OQ);
        /* empty columns subtract 0: exp(-inf - 0) = 0 keeps them empty */
        __m256 msafe = _mm256_andnot_ps(empty, mx);
        __m256 sum = _mm256_setzero_ps();
        for (int j = 0; j < n; j++) {
            float *x = s + (size_t)j * ATTN_MR + v;
            __m256 e = exp_avx2(_mm256_sub_ps(_mm256_load_ps(x), msafe));
            _mm256_store_ps(x, e);
            sum = _mm256_add_ps(sum, e);
        }
        __m256 a = exp_avx2(_mm256_sub_ps(mold, msafe));
        a = _mm256_blendv_ps(a, _mm256_set1_ps(1.0f), empty);
        __m256 lnew = _mm256_fmadd_ps(_mm256_loadu_ps(l + v), a, sum);
        _mm256_storeu_ps(alpha + v, a);
        _mm256_storeu_ps(l + v, _mm256_blendv_ps(lnew, _mm256_loadu_ps(l + v), empty));
        _mm256_storeu_ps(m + v, _mm256_blendv_ps(mx, mold, empty));
    }
}

/* 6 rows x 16 columns of o, accumulated over n keys: 12 accumulators. */
static inline void pv_6x16(const float *p, int n, const float *v, int64_t vs, float *o, int ldo) {
    __m256 c[6][2];
    for (int r = 0; r < 6; r++) {
        c[r][0] = _mm256_loadu_ps(o + r * ldo);
        c[r][1] = _mm256_loadu_ps(o + r * ldo + 8);
    }
    for (int j = 0; j < n; j++) {
        const float *vj = v + (int64_t)j * vs;
        __m256 b0 = _mm256_loadu_ps(vj), b1 = _mm256_loadu_ps(vj + 8);
        const float *pj = p + (size_t)j * ATTN_MR;
        for (int r = 0; r < 6; r++) {
            __m256 a = _mm256_broadcast_ss(pj + r);
            c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
        }
    }
    for (int r = 0; r < 6; r++) {
        _mm256_storeu_ps(o + r * ldo, c[r][0]);
        _mm256_storeu_ps(o + r * ldo + 8, c[r][1]);
    }
}

/* 6 rows x w (< 16) columns: masked loads and stores. */
static inline void pv_6xw(const float *p, int n, const float *v, int64_t vs, float *o, int ldo,
                          int w) {
    int32_t mk[16];
    for (int i = 0; i < 16; i++) mk[i] = i < w ? -1 : 0;
    __m256i m0 = _mm256_loadu_si256((const __m256i *)mk), m1 = _mm256_loadu_si256((const __m256i *)(mk + 8));
    __m256 c[6][2];
    for (int r = 0; r < 6; r++) {
        c[r][0] = _mm256_maskload_ps(o + r * ldo, m0);
        c[r][1] = _mm256_maskload_ps(o + r * ldo + 8, m1);
    }
    for (int j = 0; j < n; j++) {
        const float *vj = v + (int64_t)j * vs;
        __m256 b0 = _mm256_maskload_ps(vj, m0), b1 = _mm256_maskload_ps(vj + 8, m1);
        const float *pj = p + (size_t)j * ATTN_MR;
        for (int r = 0; r < 6; r++) {
            __m256 a = _mm256_broadcast_ss(pj + r);
            c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
        }
    }
    for (int r = 0; r < 6; r++) {
        _mm256_maskstore_ps(o + r * ldo, m0, c[r][0]);
        _mm256_maskstore_ps(o + r * ldo + 8, m1, c[r][1]);
    }
}

static void pv_avx2(const float *p, int mr, int n, const float *v, int64_t vs, int Dv, float *o,
                    int ldo) {
    for (int r0 = 0; r0 < mr; r0 += 6) {
        int c0 = 0;
        for (; c0 + 16 <= Dv; c0 += 16) pv_6x16(p + r0, n, v + c0, vs, o + (size_t)r0 * ldo + c0, ldo);
        if (c0 < Dv) pv_6xw(p + r0, n, v + c0, vs, o + (size_t)r0 * ldo + c0, ldo, Dv - c0);
    }
}

static void rescale_avx2(float *o, int ldo, int mr, int Dv, const float *alpha) {
    for (int r = 0; r < mr; r++) {
        if (alpha[r] == 1.0f) continue;
        __m256 a = _mm256_set1_ps(alpha[r]);
        float *orow = o + (size_t)r * ldo;
        int c = 0;
        for (; c + 8 <= Dv; c += 8) _mm256_storeu_ps(orow + c, _mm256_mul_ps(a, _mm256_loadu_ps(orow + c)));
        for (; c < Dv; c++) orow[c] *= alpha[r];
    }
}

const attn_kernels attn__kernels_avx2 = {
    .name = "avx2",
    .pack_q = pack_q_avx2,
    .qk = qk_avx2,
    .softmax = softmax_avx2,
    .pv = pv_avx2,
    .rescale = rescale_avx2,
};
