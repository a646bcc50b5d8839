/* AVX-512 forward microkernels (this folder alone is built with
 * -mavx512f). A strip is MR = 48 query rows = 3 zmm vectors (layout in
 * kernels/kernels.h); with 32 registers the score product takes 8 keys at
 * a time and P V 8 value columns at a time (24 accumulators each), twice
 * the AVX2 tiles' reuse per load. arch_avx512.c pairs these kernels with
 * that strip height. */
#include "kernels/avx512/vmath_avx512.h"
#include "kernels/kernels.h"
#include "kernels/pack.h"

#include <assert.h>
#include <immintrin.h>
#include <math.h>

enum { MR = 48 }; /* the only strip height these kernels take */

static void pack_q_avx512(const float *q, int64_t qs, int mr, int R, int D, float scale,
                          float *qt) {
    assert(R == MR);
    attn__pack_strip(q, qs, mr, MR, D, scale, qt);
}

static void qk_avx512(const float *qt, int R, const float *k, int64_t ks, int n, int D, float *s) {
    assert(R == MR);
    dot48_avx512(qt, MR, k, ks, n, D, s);
}

/* Column by column on three 16-row groups at once: the running max, then
 * exp(s - m') and its sum; empty columns (m' = -inf) stay empty with
 * alpha = 1. A NaN score is caught by its sum rather than by a compare per
 * score (vmaxps may drop a NaN, exp never does): a column whose sum is NaN
 * gets m = l = alpha = NaN, which poisons its row as in the other families. */
static void softmax_avx512(float *s, int R, int n, float *m, float *l, float *alpha) {
    assert(R == MR);
    __m512 mo[3], mx[3], ms[3], sum[3];
    __mmask16 em[3];
    for (int g = 0; g < 3; g++)
        mo[g] = mx[g] = _mm512_loadu_ps(m + 16 * g);
    for (int j = 0; j < n; j++) {
        const float *x = s + (size_t)j * MR;
        for (int g = 0; g < 3; g++)
            mx[g] = _mm512_max_ps(mx[g], _mm512_load_ps(x + 16 * g));
    }
    const __m512 ninf = _mm512_set1_ps(-INFINITY), qnan = _mm512_set1_ps(NAN);
    for (int g = 0; g < 3; g++) {
        em[g] = _mm512_cmp_ps_mask(mx[g], ninf, _CMP_EQ_OQ);
        /* empty columns subtract 0: exp(-inf - 0) = 0 keeps them empty */
        ms[g] = _mm512_mask_blend_ps(em[g], mx[g], _mm512_setzero_ps());
        sum[g] = _mm512_setzero_ps();
    }
    for (int j = 0; j < n; j++) {
        float *x = s + (size_t)j * MR;
        for (int g = 0; g < 3; g++) {
            __m512 e = exp_avx512(_mm512_sub_ps(_mm512_load_ps(x + 16 * g), ms[g]));
            _mm512_store_ps(x + 16 * g, e);
            sum[g] = _mm512_add_ps(sum[g], e);
        }
    }
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int g = 0; g < 3; g++) {
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

/* ot = alpha*ot + P^T V for NC value columns at a time (NC = 8, 4 or 1):
 * 3*NC accumulators, per key 3 loads of p and NC broadcasts of v. Each
 * element: alpha*ot, then one FMA chain in key order, as in every family. */
#define PV_BLOCK(NC)                                                                               \
    static inline __attribute__((always_inline)) void pv_cols##NC(                                 \
        const float *p, int n, const float *v, int64_t vs, const __m512 *al, float *o) {           \
        __m512 c[NC][3];                                                                           \
        _Pragma("GCC unroll 8") for (int u = 0; u < NC; u++) for (int g = 0; g < 3; g++) c[u][g] = \
            _mm512_mul_ps(al[g], _mm512_load_ps(o + u * MR + 16 * g));                             \
        const float *a = p;                                                                        \
        for (int j = 0; j < n; j++, v += vs, a += MR) {                                            \
            __m512 a0 = _mm512_load_ps(a), a1 = _mm512_load_ps(a + 16),                            \
                   a2 = _mm512_load_ps(a + 32);                                                    \
            _Pragma("GCC unroll 8") for (int u = 0; u < NC; u++) {                                 \
                __m512 b = _mm512_set1_ps(v[u]);                                                   \
                c[u][0] = _mm512_fmadd_ps(a0, b, c[u][0]);                                         \
                c[u][1] = _mm512_fmadd_ps(a1, b, c[u][1]);                                         \
                c[u][2] = _mm512_fmadd_ps(a2, b, c[u][2]);                                         \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 8") for (int u = 0; u < NC; u++) for (int g = 0; g < 3; g++)           \
            _mm512_store_ps(o + u * MR + 16 * g, c[u][g]);                                         \
    }
PV_BLOCK(8)
PV_BLOCK(4)
PV_BLOCK(1)
#undef PV_BLOCK

static void pv_avx512(const float *p, int R, int n, const float *v, int64_t vs, int Dv,
                      const float *alpha, float *ot) {
    assert(R == MR);
    const __m512 al[3] = {_mm512_loadu_ps(alpha), _mm512_loadu_ps(alpha + 16),
                          _mm512_loadu_ps(alpha + 32)};
    int c = 0;
    for (; c + 8 <= Dv; c += 8)
        pv_cols8(p, n, v + c, vs, al, ot + (size_t)c * MR);
    for (; c + 4 <= Dv; c += 4)
        pv_cols4(p, n, v + c, vs, al, ot + (size_t)c * MR);
    for (; c < Dv; c++)
        pv_cols1(p, n, v + c, vs, al, ot + (size_t)c * MR);
}

const attn_kernels attn__kernels_avx512 = {
    .name = "avx512",
    .pack_q = pack_q_avx512,
    .qk = qk_avx512,
    .softmax = softmax_avx512,
    .pv = pv_avx512,
};
