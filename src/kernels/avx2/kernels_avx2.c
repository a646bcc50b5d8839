/* AVX2 + FMA forward microkernels (the avx2 folder alone is built with
 * -mavx2 -mfma). A strip is MR = 24 query rows = 3 vectors (kernels/kernels.h
 * for the layout), or 8 or 16 rows (1 or 2 vectors: a query block's last
 * rows, the global query rows), each element computed as in a 24-row
 * strip; arch_avx2.c pairs these kernels with those heights (mrq = 8). */
#include "kernels/avx2/vmath_avx2.h"
#include "kernels/kernels.h"
#include "kernels/pack.h"

#include <assert.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

enum { MR = 24 }; /* the tallest strip */

#define ATTN_INLINE static inline __attribute__((always_inline))

static void pack_q_avx2(const float *q, int64_t qs, int mr, int R, int D, float scale, float *qt) {
    assert(R == 8 || R == 16 || R == MR);
    attn__pack_strip(q, qs, mr, R, D, scale, qt);
}

/* Scores of NK keys for a strip of G < 3 vectors (G*NK accumulators); each
 * score one FMA chain in d order from 0, as dot24_avx2's. */
ATTN_INLINE void dot_keys(int G, int NK, const float *qt, const float *k0, int64_t ks, int D,
                          float *o) {
    const int R = 8 * G;
    __m256 c[12][2];
#pragma GCC unroll 12
    for (int u = 0; u < NK; u++)
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
            c[u][g] = _mm256_setzero_ps();
    const float *a = qt;
    for (int d = 0; d < D; d++, a += R) {
        __m256 av[2];
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
            av[g] = _mm256_load_ps(a + 8 * g);
#pragma GCC unroll 12
        for (int u = 0; u < NK; u++) {
            __m256 b = _mm256_broadcast_ss(k0 + u * ks + d);
#pragma GCC unroll 2
            for (int g = 0; g < G; g++)
                c[u][g] = _mm256_fmadd_ps(av[g], b, c[u][g]);
        }
    }
#pragma GCC unroll 12
    for (int u = 0; u < NK; u++)
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
            _mm256_store_ps(o + (size_t)u * R + 8 * g, c[u][g]);
}

/* 12 keys at a time for one vector, 6 for two (12 accumulators of the 16
 * registers), then 4 and 1. */
ATTN_INLINE void dot_short(int G, const float *qt, const float *k, int64_t ks, int n, int D,
                           float *s) {
    const int R = 8 * G;
    int j = 0;
    if (G == 1)
        for (; j + 12 <= n; j += 12)
            dot_keys(1, 12, qt, k + (int64_t)j * ks, ks, D, s + (size_t)j * R);
    if (G == 2)
        for (; j + 6 <= n; j += 6)
            dot_keys(2, 6, qt, k + (int64_t)j * ks, ks, D, s + (size_t)j * R);
    for (; j + 4 <= n; j += 4)
        dot_keys(G, 4, qt, k + (int64_t)j * ks, ks, D, s + (size_t)j * R);
    for (; j < n; j++)
        dot_keys(G, 1, qt, k + (int64_t)j * ks, ks, D, s + (size_t)j * R);
}

static void qk_avx2(const float *qt, int R, const float *k, int64_t ks, int n, int D, float *s) {
    if (R == MR)
        dot24_avx2(qt, MR, k, ks, n, D, s);
    else if (R == 16)
        dot_short(2, qt, k, ks, n, D, s);
    else
        dot_short(1, qt, k, ks, n, D, s);
}

/* softmax_avx2's steps for a strip of G < 3 vectors. */
ATTN_INLINE void softmax_short(int G, float *s, int n, float *m, float *l, float *alpha) {
    const int R = 8 * G;
    __m256 mo[2], mx[2], nan[2], em[2], ms[2], sum[2];
#pragma GCC unroll 2
    for (int g = 0; g < G; g++) {
        mo[g] = mx[g] = _mm256_loadu_ps(m + 8 * g);
        nan[g] = _mm256_setzero_ps();
    }
    for (int j = 0; j < n; j++) {
        const float *x = s + (size_t)j * R;
#pragma GCC unroll 2
        for (int g = 0; g < G; g++) {
            __m256 v = _mm256_load_ps(x + 8 * g);
            mx[g] = _mm256_max_ps(mx[g], v);
            nan[g] = _mm256_or_ps(nan[g], _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        }
    }
    const __m256 ninf = _mm256_set1_ps(-INFINITY), one = _mm256_set1_ps(1.0f);
#pragma GCC unroll 2
    for (int g = 0; g < G; g++) {
        mx[g] = _mm256_or_ps(mx[g], nan[g]); /* all-ones bits: a NaN poisons its row */
        em[g] = _mm256_cmp_ps(mx[g], ninf, _CMP_EQ_OQ);
        ms[g] = _mm256_andnot_ps(em[g], mx[g]); /* empty columns subtract 0 */
        sum[g] = _mm256_setzero_ps();
    }
    for (int j = 0; j < n; j++) {
        float *x = s + (size_t)j * R;
#pragma GCC unroll 2
        for (int g = 0; g < G; g++) {
            __m256 e = exp_avx2(_mm256_sub_ps(_mm256_load_ps(x + 8 * g), ms[g]));
            _mm256_store_ps(x + 8 * g, e);
            sum[g] = _mm256_add_ps(sum[g], e);
        }
    }
#pragma GCC unroll 2
    for (int g = 0; g < G; g++) {
        __m256 a = _mm256_blendv_ps(exp_avx2(_mm256_sub_ps(mo[g], ms[g])), one, em[g]);
        __m256 lold = _mm256_loadu_ps(l + 8 * g);
        _mm256_storeu_ps(alpha + 8 * g, a);
        _mm256_storeu_ps(l + 8 * g,
                         _mm256_blendv_ps(_mm256_fmadd_ps(lold, a, sum[g]), lold, em[g]));
        _mm256_storeu_ps(m + 8 * g, _mm256_blendv_ps(mx[g], mo[g], em[g]));
    }
}

/* ot = alpha*ot + P^T V for NC value columns of a strip of G < 3 vectors:
 * alpha*ot, then one FMA chain per element in key order, as pv_avx2's. */
ATTN_INLINE void pv_cols(int G, int NC, const float *p, int n, const float *v, int64_t vs,
                         const __m256 *al, float *o) {
    const int R = 8 * G;
    __m256 c[12][2];
#pragma GCC unroll 12
    for (int u = 0; u < NC; u++)
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
            c[u][g] = _mm256_mul_ps(al[g], _mm256_load_ps(o + u * R + 8 * g));
    const float *a = p;
    for (int j = 0; j < n; j++, v += vs, a += R) {
        __m256 av[2];
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
            av[g] = _mm256_load_ps(a + 8 * g);
#pragma GCC unroll 12
        for (int u = 0; u < NC; u++) {
            __m256 b = _mm256_broadcast_ss(v + u);
#pragma GCC unroll 2
            for (int g = 0; g < G; g++)
                c[u][g] = _mm256_fmadd_ps(av[g], b, c[u][g]);
        }
    }
#pragma GCC unroll 12
    for (int u = 0; u < NC; u++)
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
            _mm256_store_ps(o + u * R + 8 * g, c[u][g]);
}

/* 12 value columns at a time for one vector, 6 for two, then 4 and 1. */
ATTN_INLINE void pv_short(int G, const float *p, int n, const float *v, int64_t vs, int Dv,
                          const float *alpha, float *ot) {
    const int R = 8 * G;
    __m256 al[2];
#pragma GCC unroll 2
    for (int g = 0; g < G; g++)
        al[g] = _mm256_loadu_ps(alpha + 8 * g);
    int c = 0;
    if (G == 1)
        for (; c + 12 <= Dv; c += 12)
            pv_cols(1, 12, p, n, v + c, vs, al, ot + (size_t)c * R);
    if (G == 2)
        for (; c + 6 <= Dv; c += 6)
            pv_cols(2, 6, p, n, v + c, vs, al, ot + (size_t)c * R);
    for (; c + 4 <= Dv; c += 4)
        pv_cols(G, 4, p, n, v + c, vs, al, ot + (size_t)c * R);
    for (; c < Dv; c++)
        pv_cols(G, 1, p, n, v + c, vs, al, ot + (size_t)c * R);
}

/* The three 8-row column groups go through each pass together: three
 * independent chains for the out-of-order core. */
static void softmax_avx2(float *s, int R, int n, float *m, float *l, float *alpha) {
    if (R != MR) {
        if (R == 16)
            softmax_short(2, s, n, m, l, alpha);
        else
            softmax_short(1, s, n, m, l, alpha);
        return;
    }
    __m256 mx0 = _mm256_loadu_ps(m), mx1 = _mm256_loadu_ps(m + 8), mx2 = _mm256_loadu_ps(m + 16);
    const __m256 mo0 = mx0, mo1 = mx1, mo2 = mx2;
    __m256 nan0 = _mm256_setzero_ps(), nan1 = nan0, nan2 = nan0;
    for (int j = 0; j < n; j++) {
        const float *x = s + (size_t)j * MR;
        __m256 x0 = _mm256_load_ps(x), x1 = _mm256_load_ps(x + 8), x2 = _mm256_load_ps(x + 16);
        mx0 = _mm256_max_ps(mx0, x0), mx1 = _mm256_max_ps(mx1, x1), mx2 = _mm256_max_ps(mx2, x2);
        nan0 = _mm256_or_ps(nan0, _mm256_cmp_ps(x0, x0, _CMP_UNORD_Q));
        nan1 = _mm256_or_ps(nan1, _mm256_cmp_ps(x1, x1, _CMP_UNORD_Q));
        nan2 = _mm256_or_ps(nan2, _mm256_cmp_ps(x2, x2, _CMP_UNORD_Q));
    }
    /* all-ones bits: a NaN poisons its row */
    mx0 = _mm256_or_ps(mx0, nan0), mx1 = _mm256_or_ps(mx1, nan1), mx2 = _mm256_or_ps(mx2, nan2);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const __m256 em0 = _mm256_cmp_ps(mx0, ninf, _CMP_EQ_OQ),
                 em1 = _mm256_cmp_ps(mx1, ninf, _CMP_EQ_OQ);
    const __m256 em2 = _mm256_cmp_ps(mx2, ninf, _CMP_EQ_OQ);
    /* empty columns subtract 0: exp(-inf - 0) = 0 keeps them empty */
    const __m256 ms0 = _mm256_andnot_ps(em0, mx0), ms1 = _mm256_andnot_ps(em1, mx1);
    const __m256 ms2 = _mm256_andnot_ps(em2, mx2);
    __m256 sum0 = _mm256_setzero_ps(), sum1 = sum0, sum2 = sum0;
    for (int j = 0; j < n; j++) {
        float *x = s + (size_t)j * MR;
        __m256 e0 = exp_avx2(_mm256_sub_ps(_mm256_load_ps(x), ms0));
        __m256 e1 = exp_avx2(_mm256_sub_ps(_mm256_load_ps(x + 8), ms1));
        __m256 e2 = exp_avx2(_mm256_sub_ps(_mm256_load_ps(x + 16), ms2));
        _mm256_store_ps(x, e0), _mm256_store_ps(x + 8, e1), _mm256_store_ps(x + 16, e2);
        sum0 = _mm256_add_ps(sum0, e0), sum1 = _mm256_add_ps(sum1, e1),
        sum2 = _mm256_add_ps(sum2, e2);
    }
    const __m256 one = _mm256_set1_ps(1.0f);
#define ATTN_FINISH(v, mo, mx, ms, em, sum)                                                        \
    do {                                                                                           \
        __m256 a = _mm256_blendv_ps(exp_avx2(_mm256_sub_ps(mo, ms)), one, em);                     \
        __m256 lold = _mm256_loadu_ps(l + v);                                                      \
        _mm256_storeu_ps(alpha + v, a);                                                            \
        _mm256_storeu_ps(l + v, _mm256_blendv_ps(_mm256_fmadd_ps(lold, a, sum), lold, em));        \
        _mm256_storeu_ps(m + v, _mm256_blendv_ps(mx, mo, em));                                     \
    } while (0)
    ATTN_FINISH(0, mo0, mx0, ms0, em0, sum0);
    ATTN_FINISH(8, mo1, mx1, ms1, em1, sum1);
    ATTN_FINISH(16, mo2, mx2, ms2, em2, sum2);
#undef ATTN_FINISH
}

/* ot = alpha*ot + P^T V, four value columns at a time: 12 accumulators
 * (24 rows x 4 columns), per key 3 loads of p and 4 broadcasts of v. The
 * same shape as qk, with the key index as the reduction. */
static void pv_avx2(const float *p, int R, int n, const float *v, int64_t vs, int Dv,
                    const float *alpha, float *ot) {
    if (R != MR) {
        if (R == 16)
            pv_short(2, p, n, v, vs, Dv, alpha, ot);
        else
            pv_short(1, p, n, v, vs, Dv, alpha, ot);
        return;
    }
    const __m256 al0 = _mm256_loadu_ps(alpha), al1 = _mm256_loadu_ps(alpha + 8);
    const __m256 al2 = _mm256_loadu_ps(alpha + 16);
    int c = 0;
    for (; c + 4 <= Dv; c += 4) {
        float *o = ot + (size_t)c * MR;
        __m256 c00 = _mm256_mul_ps(al0, _mm256_load_ps(o)),
               c01 = _mm256_mul_ps(al1, _mm256_load_ps(o + 8));
        __m256 c02 = _mm256_mul_ps(al2, _mm256_load_ps(o + 16)),
               c10 = _mm256_mul_ps(al0, _mm256_load_ps(o + 24));
        __m256 c11 = _mm256_mul_ps(al1, _mm256_load_ps(o + 32)),
               c12 = _mm256_mul_ps(al2, _mm256_load_ps(o + 40));
        __m256 c20 = _mm256_mul_ps(al0, _mm256_load_ps(o + 48)),
               c21 = _mm256_mul_ps(al1, _mm256_load_ps(o + 56));
        __m256 c22 = _mm256_mul_ps(al2, _mm256_load_ps(o + 64)),
               c30 = _mm256_mul_ps(al0, _mm256_load_ps(o + 72));
        __m256 c31 = _mm256_mul_ps(al1, _mm256_load_ps(o + 80)),
               c32 = _mm256_mul_ps(al2, _mm256_load_ps(o + 88));
        const float *vj = v + c, *a = p;
        for (int j = 0; j < n; j++, vj += vs, a += MR) {
            __m256 a0 = _mm256_load_ps(a), a1 = _mm256_load_ps(a + 8), a2 = _mm256_load_ps(a + 16);
            __m256 b = _mm256_broadcast_ss(vj);
            c00 = _mm256_fmadd_ps(a0, b, c00);
            c01 = _mm256_fmadd_ps(a1, b, c01);
            c02 = _mm256_fmadd_ps(a2, b, c02);
            b = _mm256_broadcast_ss(vj + 1);
            c10 = _mm256_fmadd_ps(a0, b, c10);
            c11 = _mm256_fmadd_ps(a1, b, c11);
            c12 = _mm256_fmadd_ps(a2, b, c12);
            b = _mm256_broadcast_ss(vj + 2);
            c20 = _mm256_fmadd_ps(a0, b, c20);
            c21 = _mm256_fmadd_ps(a1, b, c21);
            c22 = _mm256_fmadd_ps(a2, b, c22);
            b = _mm256_broadcast_ss(vj + 3);
            c30 = _mm256_fmadd_ps(a0, b, c30);
            c31 = _mm256_fmadd_ps(a1, b, c31);
            c32 = _mm256_fmadd_ps(a2, b, c32);
        }
        _mm256_store_ps(o, c00), _mm256_store_ps(o + 8, c01), _mm256_store_ps(o + 16, c02);
        _mm256_store_ps(o + 24, c10), _mm256_store_ps(o + 32, c11), _mm256_store_ps(o + 40, c12);
        _mm256_store_ps(o + 48, c20), _mm256_store_ps(o + 56, c21), _mm256_store_ps(o + 64, c22);
        _mm256_store_ps(o + 72, c30), _mm256_store_ps(o + 80, c31), _mm256_store_ps(o + 88, c32);
    }
    for (; c < Dv; c++) {
        float *o = ot + (size_t)c * MR;
        __m256 c0 = _mm256_mul_ps(al0, _mm256_load_ps(o)),
               c1 = _mm256_mul_ps(al1, _mm256_load_ps(o + 8));
        __m256 c2 = _mm256_mul_ps(al2, _mm256_load_ps(o + 16));
        const float *vj = v + c, *a = p;
        for (int j = 0; j < n; j++, vj += vs, a += MR) {
            __m256 b = _mm256_broadcast_ss(vj);
            c0 = _mm256_fmadd_ps(_mm256_load_ps(a), b, c0);
            c1 = _mm256_fmadd_ps(_mm256_load_ps(a + 8), b, c1);
            c2 = _mm256_fmadd_ps(_mm256_load_ps(a + 16), b, c2);
        }
        _mm256_store_ps(o, c0), _mm256_store_ps(o + 8, c1), _mm256_store_ps(o + 16, c2);
    }
}

/* unpack_o: the scalar one (arch_avx2.c keeps it) */
const attn_kernels attn__kernels_avx2 = {
    .name = "avx2",
    .pack_q = pack_q_avx2,
    .qk = qk_avx2,
    .softmax = softmax_avx2,
    .pv = pv_avx2,
};
