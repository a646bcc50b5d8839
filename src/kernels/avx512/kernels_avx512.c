/* AVX-512 forward microkernels (this folder alone is built with
 * -mavx512f). A strip is up to MR = 48 query rows = 3 zmm vectors (layout
 * in kernels/kernels.h); with 32 registers the score product takes 8 keys
 * at a time and P V 8 value columns at a time (24 accumulators each), twice
 * the AVX2 tiles' reuse per load. Shorter strips of 16 or 32 rows (a query
 * block's last rows, the global query rows) take more keys or columns at a
 * time instead. arch_avx512.c pairs these kernels with those heights. */
#include "kernels/avx512/vmath_avx512.h"
#include "kernels/kernels.h"
#include "kernels/pack.h"

#include <assert.h>
#include <immintrin.h>
#include <math.h>

enum { MR = 48 }; /* the tallest strip: 3 vectors */

/* The kernels take strips of R = 16, 32 or 48 rows (1, 2 or 3 vectors, the
 * family's mrq = 16): a strip shorter than 48 rows costs its own vectors,
 * not a full strip's. Each function below is written once for G vectors
 * and instantiated for G = 1, 2, 3; every element's arithmetic is the same
 * whatever G (one FMA chain in d order for a score, one in key order for an
 * output), so a row's results do not depend on its strip's height. */
/* x[i] (row i) becomes column i: x[c] holds element c of rows 0..15. Pairs
 * of rows interleaved, then pairs of pairs, then the 128-bit lanes. */
ATTN_INLINE void transpose16(__m512 *x) {
    __m512 t[16], u[16];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(x[2 * k], x[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(x[2 * k], x[2 * k + 1]);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) { /* u[4k + m], lane L: rows 4k..4k+3 of column 4L + m */
        const __m512d a = _mm512_castps_pd(t[4 * k]), b = _mm512_castps_pd(t[4 * k + 2]);
        const __m512d c = _mm512_castps_pd(t[4 * k + 1]), d = _mm512_castps_pd(t[4 * k + 3]);
        u[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        u[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
#pragma GCC unroll 4
    for (int m = 0; m < 4; m++) {
        const __m512 a = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
        const __m512 b = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
        const __m512 c = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
        const __m512 d = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
        x[m] = _mm512_shuffle_f32x4(a, b, 0x88);
        x[8 + m] = _mm512_shuffle_f32x4(a, b, 0xDD);
        x[4 + m] = _mm512_shuffle_f32x4(c, d, 0x88);
        x[12 + m] = _mm512_shuffle_f32x4(c, d, 0xDD);
    }
}

/* qt[d*R + r] = scale * q[r*qs + d] (attn__pack_strip's values): 16 rows
 * x 16 columns at a time through a register transpose, rows past mr zero,
 * columns past D not loaded. A strip had been packed one strided store at
 * a time, 4% of a Longformer forward whose strips see ~560 keys. */
static void pack_q_avx512(const float *q, int64_t qs, int mr, int R, int D, float scale,
                          float *qt) {
    assert(R % 16 == 0 && R >= 16 && R <= MR);
    const __m512 sc = _mm512_set1_ps(scale);
    for (int r0 = 0; r0 < R; r0 += 16)
        for (int d0 = 0; d0 < D; d0 += 16) {
            const int nd = D - d0 < 16 ? D - d0 : 16;
            const __mmask16 km = (__mmask16)((1u << nd) - 1);
            __m512 x[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                x[i] = r0 + i < mr ? _mm512_mul_ps(sc, _mm512_maskz_loadu_ps(
                                                           km, q + (int64_t)(r0 + i) * qs + d0))
                                   : _mm512_setzero_ps();
            transpose16(x);
            for (int i = 0; i < nd; i++)
                _mm512_store_ps(qt + (size_t)(d0 + i) * R + r0, x[i]);
        }
}

static void qk_avx512(const float *qt, int R, const float *k, int64_t ks, int n, int D, float *s) {
    if (R == MR)
        dot48_avx512(qt, MR, k, ks, n, D, s);
    else if (R == 32)
        dot_short_avx512(2, qt, 32, k, ks, n, D, s);
    else
        dot_short_avx512(1, qt, 16, k, ks, n, D, s);
}

/* Column by column on G 16-row groups at once: the running max, then
 * exp(s - m') and its sum; empty columns (m' = -inf) stay empty with
 * alpha = 1. A NaN score is caught by its sum rather than by a compare per
 * score (vmaxps may drop a NaN, exp never does): a column whose sum is NaN
 * gets m = l = alpha = NaN, which poisons its row as in the other families. */
ATTN_INLINE void softmax_g(int G, float *s, int n, float *m, float *l, float *alpha) {
    const int R = 16 * G;
    __m512 mo[3], mx[3], ms[3], sum[3];
    __mmask16 em[3];
#pragma GCC unroll 3
    for (int g = 0; g < G; g++)
        mo[g] = mx[g] = _mm512_loadu_ps(m + 16 * g);
    for (int j = 0; j < n; j++) {
        const float *x = s + (size_t)j * R;
#pragma GCC unroll 3
        for (int g = 0; g < G; g++)
            mx[g] = _mm512_max_ps(mx[g], _mm512_load_ps(x + 16 * g));
    }
    const __m512 ninf = _mm512_set1_ps(-INFINITY), qnan = _mm512_set1_ps(NAN);
#pragma GCC unroll 3
    for (int g = 0; g < G; g++) {
        em[g] = _mm512_cmp_ps_mask(mx[g], ninf, _CMP_EQ_OQ);
        /* empty columns subtract 0: exp(-inf - 0) = 0 keeps them empty */
        ms[g] = _mm512_mask_blend_ps(em[g], mx[g], _mm512_setzero_ps());
        sum[g] = _mm512_setzero_ps();
    }
    for (int j = 0; j < n; j++) {
        float *x = s + (size_t)j * R;
#pragma GCC unroll 3
        for (int g = 0; g < G; g++) {
            __m512 e = exp_avx512(_mm512_sub_ps(_mm512_load_ps(x + 16 * g), ms[g]));
            _mm512_store_ps(x + 16 * g, e);
            sum[g] = _mm512_add_ps(sum[g], e);
        }
    }
    const __m512 one = _mm512_set1_ps(1.0f);
#pragma GCC unroll 3
    for (int g = 0; g < G; g++) {
        __mmask16 nan = _mm512_cmp_ps_mask(sum[g], sum[g], _CMP_UNORD_Q);
        __m512 a = _mm512_mask_blend_ps(em[g], exp_avx512(_mm512_sub_ps(mo[g], ms[g])), one);
        __m512 lold = _mm512_loadu_ps(l + 16 * g);
        __m512 ln = _mm512_mask_blend_ps(em[g], _mm512_fmadd_ps(lold, a, sum[g]), lold);
        __m512 mn = _mm512_mask_blend_ps(em[g], mx[g], mo[g]);
        _mm512_storeu_ps(alpha + 16 * g, _mm512_mask_blend_ps(nan, a, qnan));
        _mm512_storeu_ps(l + 16 * g, _mm512_mask_blend_ps(nan, ln, qnan));
        _mm512_storeu_ps(m + 16 * g, _mm512_mask_blend_ps(nan, mn, qnan));
    }
}

static void softmax_avx512(float *s, int R, int n, float *m, float *l, float *alpha) {
    if (R == MR)
        softmax_g(3, s, n, m, l, alpha);
    else if (R == 32)
        softmax_g(2, s, n, m, l, alpha);
    else
        softmax_g(1, s, n, m, l, alpha);
}

/* ot = alpha*ot + P^T V for NC value columns at a time: G*NC accumulators,
 * per key G loads of p and NC broadcasts of v. Each element: alpha*ot, then
 * one FMA chain in key order, as in every family. */
ATTN_INLINE void pv_cols(int G, int NC, const float *p, int n, const float *v, int64_t vs,
                         const __m512 *al, float *o) {
    const int R = 16 * G;
    __m512 c[16][3];
#pragma GCC unroll 16
    for (int u = 0; u < NC; u++)
#pragma GCC unroll 3
        for (int g = 0; g < G; g++)
            c[u][g] = _mm512_mul_ps(al[g], _mm512_load_ps(o + u * R + 16 * g));
    const float *a = p;
    for (int j = 0; j < n; j++, v += vs, a += R) {
        __m512 av[3];
#pragma GCC unroll 3
        for (int g = 0; g < G; g++)
            av[g] = _mm512_load_ps(a + 16 * g);
#pragma GCC unroll 16
        for (int u = 0; u < NC; u++) {
            __m512 b = _mm512_set1_ps(v[u]);
#pragma GCC unroll 3
            for (int g = 0; g < G; g++)
                c[u][g] = _mm512_fmadd_ps(av[g], b, c[u][g]);
        }
    }
#pragma GCC unroll 16
    for (int u = 0; u < NC; u++)
#pragma GCC unroll 3
        for (int g = 0; g < G; g++)
            _mm512_store_ps(o + u * R + 16 * g, c[u][g]);
}

/* Value columns 8 at a time for 3 vectors, 12 for 2 and 16 for 1 (24, 24
 * and 16 accumulators of the 32 registers), then 8, 4 and 1. */
ATTN_INLINE void pv_g(int G, const float *p, int n, const float *v, int64_t vs, int Dv,
                      const float *alpha, float *ot) {
    const int R = 16 * G;
    __m512 al[3];
#pragma GCC unroll 3
    for (int g = 0; g < G; g++)
        al[g] = _mm512_loadu_ps(alpha + 16 * g);
    int c = 0;
    if (G == 1)
        for (; c + 16 <= Dv; c += 16)
            pv_cols(1, 16, p, n, v + c, vs, al, ot + (size_t)c * R);
    if (G == 2)
        for (; c + 12 <= Dv; c += 12)
            pv_cols(2, 12, p, n, v + c, vs, al, ot + (size_t)c * R);
    for (; c + 8 <= Dv; c += 8)
        pv_cols(G, 8, p, n, v + c, vs, al, ot + (size_t)c * R);
    for (; c + 4 <= Dv; c += 4)
        pv_cols(G, 4, p, n, v + c, vs, al, ot + (size_t)c * R);
    for (; c < Dv; c++)
        pv_cols(G, 1, p, n, v + c, vs, al, ot + (size_t)c * R);
}

static void pv_avx512(const float *p, int R, int n, const float *v, int64_t vs, int Dv,
                      const float *alpha, float *ot) {
    if (R == MR)
        pv_g(3, p, n, v, vs, Dv, alpha, ot);
    else if (R == 32)
        pv_g(2, p, n, v, vs, Dv, alpha, ot);
    else
        pv_g(1, p, n, v, vs, Dv, alpha, ot);
}

/* o[r*os + c] = ot[c*R + r] * inv[r]: 16 columns x 16 rows at a time
 * through the register transpose, the row tail and column tail masked. */
static void unpack_o_avx512(const float *ot, int R, int mr, int Dv, const float *inv, float *o,
                            int64_t os) {
    for (int r0 = 0; r0 < mr; r0 += 16)
        for (int c0 = 0; c0 < Dv; c0 += 16) {
            const int nc = Dv - c0 < 16 ? Dv - c0 : 16, nr = mr - r0 < 16 ? mr - r0 : 16;
            const __mmask16 km = (__mmask16)((1u << nc) - 1);
            __m512 x[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                x[i] =
                    i < nc ? _mm512_load_ps(ot + (size_t)(c0 + i) * R + r0) : _mm512_setzero_ps();
            transpose16(x);
            for (int i = 0; i < nr; i++)
                _mm512_mask_storeu_ps(o + (int64_t)(r0 + i) * os + c0, km,
                                      _mm512_mul_ps(x[i], _mm512_set1_ps(inv[r0 + i])));
        }
}

const attn_kernels attn__kernels_avx512 = {
    .name = "avx512",
    .pack_q = pack_q_avx512,
    .qk = qk_avx512,
    .softmax = softmax_avx512,
    .pv = pv_avx512,
    .unpack_o = unpack_o_avx512,
};
