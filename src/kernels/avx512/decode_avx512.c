/* AVX-512 decode kernel (kernels/decode.h). Query rows go in blocks of 4:
 * per key, its row chunks of 16 are loaded once (converted in registers:
 * vcvtph2ps for F16, a 16-bit shift for BF16) and multiplied into 4 row
 * accumulators, which one transpose-and-add tree reduces to 4 scores. The
 * softmax step runs 16 keys at a time; P V keeps 4 rows x 64 value columns
 * in 16 registers while it walks the keys (64-column passes over Dv). Row
 * and column tails are masked, so any D, Dv and R <= 16 are taken. */
#include "kernels/arch.h"
#include "kernels/avx512/vmath_avx512.h"

#include <math.h>

ATTN_INLINE __mmask16 tail_mask(int left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* 16 (or fewer, masked) elements of a K or V row as float32. */
ATTN_INLINE __m512 ldc(const void *p, int64_t i, __mmask16 mk, int dt) {
    if (dt == ATTN__KV_F16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)p + i));
    if (dt == ATTN__KV_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)p + i)), 16));
    return _mm512_maskz_loadu_ps(mk, (const float *)p + i);
}

/* Lane sums of a, b, c, d into lanes 0..3 of the result. */
ATTN_INLINE __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512 y = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    y = _mm512_add_ps(y, _mm512_shuffle_f32x4(y, y, _MM_SHUFFLE(1, 0, 3, 2)));
    y = _mm512_add_ps(y, _mm512_shuffle_f32x4(y, y, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(y);
}

ATTN_INLINE void attend_body(const float *q, int R, int D, const void *k, int64_t ks,
                             const void *v, int64_t vs, int Dv, int dt, int n, const int *lim,
                             float *m, float *l, float *acc, float *s) {
    int nmax = 0;
    for (int r = 0; r < R; r++)
        nmax = lim[r] > nmax ? lim[r] : nmax;
    if (nmax == 0) return;
    /* scores, 4 rows at a time (a short block repeats its first row) */
    for (int r0 = 0; r0 < R; r0 += 4) {
        const float *q0 = q + (int64_t)r0 * D;
        const float *q1 = r0 + 1 < R ? q0 + D : q0, *q2 = r0 + 2 < R ? q0 + 2 * D : q0;
        const float *q3 = r0 + 3 < R ? q0 + 3 * D : q0;
        for (int j = 0; j < nmax; j++) {
            const int64_t kb = (int64_t)j * ks;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int d = 0; d < D; d += 16) {
                __mmask16 mk = tail_mask(D - d);
                __m512 kc = ldc(k, kb + d, mk, dt);
                a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q0 + d), kc, a0);
                a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q1 + d), kc, a1);
                a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q2 + d), kc, a2);
                a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q3 + d), kc, a3);
            }
            float t[4];
            _mm_storeu_ps(t, sum4(a0, a1, a2, a3));
            for (int i = 0; i < 4 && r0 + i < R; i++)
                s[(int64_t)(r0 + i) * n + j] = t[i];
        }
    }
    /* online softmax per row: s <- p (0 beyond lim), acc *= alpha */
    float alpha[ATTN__DEC_MAXR];
    for (int r = 0; r < R; r++) {
        float *sr = s + (int64_t)r * n;
        const int lr = lim[r];
        alpha[r] = 1.0f;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        int nan = 0;
        for (int j = 0; j < lr; j += 16) {
            __m512 x = _mm512_maskz_loadu_ps(tail_mask(lr - j), sr + j);
            nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q) != 0;
            mx = _mm512_mask_max_ps(mx, tail_mask(lr - j), mx, x);
        }
        float mxs = nan ? NAN : _mm512_reduce_max_ps(mx);
        if (mxs == -INFINITY || lr == 0) { /* no key for this row: p = 0 */
            for (int j = 0; j < nmax; j++)
                sr[j] = 0.0f;
            continue;
        }
        float mn = m[r] > mxs ? m[r] : mxs;
        if (nan) mn = NAN;
        alpha[r] = m[r] == -INFINITY ? 0.0f : expf(m[r] - mn);
        __m512 vm = _mm512_set1_ps(mn), sum = _mm512_setzero_ps();
        for (int j = 0; j < nmax; j += 16) {
            __mmask16 mk = tail_mask(nmax - j);
            __mmask16 live = j < lr ? tail_mask(lr - j) : 0;
            __m512 x = _mm512_maskz_loadu_ps(mk, sr + j);
            __m512 p = _mm512_maskz_mov_ps(live, exp_avx512(_mm512_sub_ps(x, vm)));
            sum = _mm512_add_ps(sum, p);
            _mm512_mask_storeu_ps(sr + j, mk, p);
        }
        m[r] = mn;
        l[r] = l[r] * alpha[r] + _mm512_reduce_add_ps(sum);
    }
    /* acc = acc*alpha + P V: 4 rows x 64 columns in registers per pass */
    for (int r0 = 0; r0 < R; r0 += 4) {
        const int nr = R - r0 < 4 ? R - r0 : 4;
        for (int c0 = 0; c0 < Dv; c0 += 64) {
            __m512 o[4][4];
            __mmask16 mc[4];
            for (int c = 0; c < 4; c++)
                mc[c] = c0 + 16 * c < Dv ? tail_mask(Dv - c0 - 16 * c) : 0;
            for (int i = 0; i < 4; i++)
                for (int c = 0; c < 4; c++)
                    o[i][c] = i < nr ? _mm512_mul_ps(
                                           _mm512_maskz_loadu_ps(
                                               mc[c], acc + (int64_t)(r0 + i) * Dv + c0 + 16 * c),
                                           _mm512_set1_ps(alpha[r0 + i]))
                                     : _mm512_setzero_ps();
            const float *s0 = s + (int64_t)r0 * n;
            const float *s1 = nr > 1 ? s0 + n : s0, *s2 = nr > 2 ? s0 + 2 * n : s0;
            const float *s3 = nr > 3 ? s0 + 3 * n : s0;
            for (int j = 0; j < nmax; j++) {
                const int64_t vb = (int64_t)j * vs + c0;
                __m512 p0 = _mm512_set1_ps(s0[j]), p1 = _mm512_set1_ps(s1[j]);
                __m512 p2 = _mm512_set1_ps(s2[j]), p3 = _mm512_set1_ps(s3[j]);
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++) {
                    __m512 vc = ldc(v, vb + 16 * c, mc[c], dt);
                    o[0][c] = _mm512_fmadd_ps(p0, vc, o[0][c]);
                    o[1][c] = _mm512_fmadd_ps(p1, vc, o[1][c]);
                    o[2][c] = _mm512_fmadd_ps(p2, vc, o[2][c]);
                    o[3][c] = _mm512_fmadd_ps(p3, vc, o[3][c]);
                }
            }
            for (int i = 0; i < nr; i++)
                for (int c = 0; c < 4; c++)
                    _mm512_mask_storeu_ps(acc + (int64_t)(r0 + i) * Dv + c0 + 16 * c, mc[c],
                                          o[i][c]);
        }
    }
}

static void attend_avx512(const float *q, int R, int D, const void *k, int64_t ks, const void *v,
                          int64_t vs, int Dv, int dt, int n, const int *lim, float *m, float *l,
                          float *acc, float *s) {
    if (dt == ATTN__KV_F16)
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_F16, n, lim, m, l, acc, s);
    else if (dt == ATTN__KV_BF16)
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_BF16, n, lim, m, l, acc, s);
    else
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_F32, n, lim, m, l, acc, s);
}

void attn__decode_init_avx512(attn_decode_kernels *k) {
    k->name = "avx512";
    k->attend = attend_avx512;
}
