/* AVX-512 feature maps (kernels/feat_kernels.h): 16 features a lane-group,
 * masked tails, the softmax kernels' exponential (vmath_avx512.h). */
#include "kernels/feat_kernels.h"
#include "vmath_avx512.h"

#include <math.h>

static inline __mmask16 tail16(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

/* x > 0 ? x + 1 : exp(x); exp of min(x, 0) so lanes that take x + 1 never
 * reach the polynomial's overflow (NaN: the compare is false and min keeps
 * the NaN, which exp returns). */
static inline __m512 elu1_16(__m512 v) {
    const __m512 zero = _mm512_setzero_ps();
    __mmask16 pos = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
    __m512 e = exp_avx512(_mm512_min_ps(zero, v));
    return _mm512_mask_add_ps(e, pos, v, _mm512_set1_ps(1.0f));
}

static void elu1_avx512(const float *x, int64_t ldx, int64_t n, int64_t F, float *y,
                        float *colsum) {
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * ldx;
        float *yi = y + i * F;
        if (i + 32 < n) /* rows come from memory once: ask for them ahead */
            for (int64_t d = 0; d < F; d += 16)
                _mm_prefetch((const char *)(xi + 32 * ldx + d), _MM_HINT_T0);
        int64_t d = 0;
        for (; d + 16 <= F; d += 16) {
            const __m512 e = elu1_16(_mm512_loadu_ps(xi + d));
            _mm512_storeu_ps(yi + d, e);
            if (colsum) _mm512_storeu_ps(colsum + d, _mm512_add_ps(_mm512_loadu_ps(colsum + d), e));
        }
        if (d < F) {
            const __mmask16 m = tail16(F - d);
            const __m512 e = elu1_16(_mm512_maskz_loadu_ps(m, xi + d));
            _mm512_mask_storeu_ps(yi + d, m, e);
            if (colsum)
                _mm512_mask_storeu_ps(colsum + d, m,
                                      _mm512_add_ps(_mm512_maskz_loadu_ps(m, colsum + d), e));
        }
    }
}

static float rowmax16(const float *u, int64_t F) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    int64_t r = 0;
    for (; r + 16 <= F; r += 16)
        m = _mm512_max_ps(m, _mm512_loadu_ps(u + r));
    if (r < F) {
        const __mmask16 k = tail16(F - r);
        m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, u + r));
    }
    return _mm512_reduce_max_ps(m);
}

static float sumsq16(const float *x, int64_t D) {
    __m512 s = _mm512_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= D; d += 16) {
        __m512 v = _mm512_loadu_ps(x + d);
        s = _mm512_fmadd_ps(v, v, s);
    }
    if (d < D) {
        __m512 v = _mm512_maskz_loadu_ps(tail16(D - d), x + d);
        s = _mm512_fmadd_ps(v, v, s);
    }
    return _mm512_reduce_add_ps(s);
}

static float perf_exp_avx512(float *u, int64_t n, int64_t F, const float *x, int64_t ldx,
                             int64_t D, float hs, int rowshift, float norm,
                             float *colsum) {
    float emax = -INFINITY;
    if (!rowshift)
        for (int64_t i = 0; i < n; i++)
            emax = fmaxf(emax, rowmax16(u + i * F, F) - hs * sumsq16(x + i * ldx, D));
    float c = isfinite(emax) ? emax : 0.0f;
    const __m512 vn = _mm512_set1_ps(norm);
    for (int64_t i = 0; i < n; i++) {
        float *ui = u + i * F;
        const float h = hs * sumsq16(x + i * ldx, D);
        if (rowshift) {
            const float e = rowmax16(ui, F) - h;
            emax = fmaxf(emax, e);
            c = isfinite(e) ? e : 0.0f;
        }
        const __m512 sub = _mm512_set1_ps(h + c);
        int64_t r = 0;
        for (; r + 16 <= F; r += 16) {
            const __m512 e =
                _mm512_mul_ps(exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(ui + r), sub)), vn);
            _mm512_storeu_ps(ui + r, e);
            if (colsum) _mm512_storeu_ps(colsum + r, _mm512_add_ps(_mm512_loadu_ps(colsum + r), e));
        }
        if (r < F) {
            const __mmask16 m = tail16(F - r);
            const __m512 e =
                _mm512_mul_ps(exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, ui + r), sub)), vn);
            _mm512_mask_storeu_ps(ui + r, m, e);
            if (colsum)
                _mm512_mask_storeu_ps(colsum + r, m,
                                      _mm512_add_ps(_mm512_maskz_loadu_ps(m, colsum + r), e));
        }
    }
    return emax;
}

static void ratio_avx512(float *o, int64_t ldo, int64_t n, int64_t Dv, const float *phi, int64_t F,
                         const float *z) {
    for (int64_t i = 0; i < n; i++) {
        const float *pi = phi + i * F;
        __m512 a = _mm512_setzero_ps();
        int64_t r = 0;
        for (; r + 16 <= F; r += 16)
            a = _mm512_fmadd_ps(_mm512_loadu_ps(pi + r), _mm512_loadu_ps(z + r), a);
        if (r < F) {
            const __mmask16 m = tail16(F - r);
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, pi + r), _mm512_maskz_loadu_ps(m, z + r), a);
        }
        const float den = _mm512_reduce_add_ps(a);
        const __m512 inv = _mm512_set1_ps(den != 0.0f ? 1.0f / den : 0.0f);
        float *oi = o + i * ldo;
        int64_t d = 0;
        for (; d + 16 <= Dv; d += 16)
            _mm512_storeu_ps(oi + d, _mm512_mul_ps(_mm512_loadu_ps(oi + d), inv));
        if (d < Dv) {
            const __mmask16 m = tail16(Dv - d);
            _mm512_mask_storeu_ps(oi + d, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, oi + d), inv));
        }
    }
}

static float dot16(const float *a, const float *b, int64_t n) {
    __m512 s = _mm512_setzero_ps();
    int64_t r = 0;
    for (; r + 16 <= n; r += 16)
        s = _mm512_fmadd_ps(_mm512_loadu_ps(a + r), _mm512_loadu_ps(b + r), s);
    if (r < n) {
        const __mmask16 m = tail16(n - r);
        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + r), _mm512_maskz_loadu_ps(m, b + r), s);
    }
    return _mm512_reduce_add_ps(s);
}

/* NR rows (1..4) times the state, columns [d0, d0 + 64) with masks m[4]:
 * 4 x NR accumulators, per feature 4 loads of the state row and NR
 * broadcasts for 4 NR FMAs; then scaled by inv[] and stored. */
ATTN_INLINE void apply_block(const float *phi, int64_t F, const float *S, int64_t lds, int64_t d0,
                             const __mmask16 m[4], int nr, const float *inv, float *o,
                             int64_t ldo) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            acc[i][c] = _mm512_setzero_ps();
    for (int64_t r = 0; r < F; r++) {
        const float *sr = S + r * lds + d0;
        __m512 s[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            s[c] = _mm512_maskz_loadu_ps(m[c], sr + 16 * c);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m512 b = _mm512_set1_ps(phi[i * F + r]);
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                acc[i][c] = _mm512_fmadd_ps(b, s[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
        const __m512 v = _mm512_set1_ps(inv[i]);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            _mm512_mask_storeu_ps(o + i * ldo + d0 + 16 * c, m[c], _mm512_mul_ps(acc[i][c], v));
    }
}

static void apply_avx512(const float *phi, int64_t n, int64_t F, const float *S, int64_t lds,
                         const float *z, int64_t Dv, float *o, int64_t ldo) {
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        const int nr = (int)(n - i0 < 4 ? n - i0 : 4);
        /* the output rows a few blocks ahead, for writing: their misses
         * overlap the products instead of stalling the stores */
        for (int64_t i = i0 + 8; i < i0 + 12 && i < n; i++)
            for (int64_t d = 0; d < Dv; d += 16)
                __builtin_prefetch(o + i * ldo + d, 1, 3);
        float inv[4];
        for (int i = 0; i < nr; i++) {
            const float den = dot16(phi + (i0 + i) * F, z, F);
            inv[i] = den != 0.0f ? 1.0f / den : 0.0f;
        }
        for (int64_t d0 = 0; d0 < Dv; d0 += 64) {
            __mmask16 m[4];
            for (int c = 0; c < 4; c++) {
                const int64_t left = Dv - d0 - 16 * c;
                m[c] = left <= 0 ? (__mmask16)0 : tail16(left);
            }
            if (nr == 4)
                apply_block(phi + i0 * F, F, S, lds, d0, m, 4, inv, o + i0 * ldo, ldo);
            else
                apply_block(phi + i0 * F, F, S, lds, d0, m, nr, inv, o + i0 * ldo, ldo);
        }
    }
}

/* Rows [r0, r0 + NR) of the state (NR <= 4), columns [d0, d0 + 64):
 * per key 4 loads of v_j and NR broadcasts of phi for 4 NR FMAs. pf: prefetch
 * v 32 rows ahead (the first sweep over the chunk, which reads it from
 * memory). */
ATTN_INLINE void accum_block(const float *phi, int64_t n, int64_t F, int64_t r0, const float *v,
                             int64_t ldv, int64_t d0, const __mmask16 m[4], int nr, int pf,
                             float *S, int64_t lds) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            acc[i][c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j++) {
        const float *vj = v + j * ldv + d0;
        if (pf && j + 32 < n)
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                if (m[c]) _mm_prefetch((const char *)(vj + 32 * ldv + 16 * c), _MM_HINT_T0);
        __m512 x[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            x[c] = _mm512_maskz_loadu_ps(m[c], vj + 16 * c);
        const float *pj = phi + j * F + r0;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m512 b = _mm512_set1_ps(pj[i]);
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                acc[i][c] = _mm512_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            _mm512_mask_storeu_ps(S + (r0 + i) * lds + d0 + 16 * c, m[c], acc[i][c]);
    }
}

static void accum_avx512(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv,
                         int64_t Dv, float *S, int64_t lds) {
    for (int64_t d0 = 0; d0 < Dv; d0 += 64) {
        __mmask16 m[4];
        for (int c = 0; c < 4; c++) {
            const int64_t left = Dv - d0 - 16 * c;
            m[c] = left <= 0 ? (__mmask16)0 : tail16(left);
        }
        for (int64_t r0 = 0; r0 < F; r0 += 4) {
            const int nr = (int)(F - r0 < 4 ? F - r0 : 4), pf = r0 == 0;
            if (nr == 4)
                accum_block(phi, n, F, r0, v, ldv, d0, m, 4, pf, S, lds);
            else
                accum_block(phi, n, F, r0, v, ldv, d0, m, nr, pf, S, lds);
        }
    }
}

/* 8 doubles a lane group: columns [d0, d0 + 64) of one row in 8 zmm
 * accumulators; omega's row converted to double as it is loaded. */
static void perf_back_avx512(const float *x, int64_t ldx, int64_t n, int64_t D, const float *phi,
                             const float *dphi, int64_t F, const float *omega, double s,
                             float *dx, int64_t ldd) {
    const __m512d vs = _mm512_set1_pd(s);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t d0 = 0; d0 < D; d0 += 64) {
            __mmask8 m[8];
            __m512d xs[8], acc[8];
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                const int64_t left = D - d0 - 8 * c;
                m[c] = left <= 0 ? (__mmask8)0 : left >= 8 ? (__mmask8)0xff
                                                           : (__mmask8)((1u << left) - 1u);
                xs[c] = _mm512_mul_pd(
                    vs, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m[c], x + i * ldx + d0 + 8 * c)));
                acc[c] = _mm512_setzero_pd();
            }
            for (int64_t r = 0; r < F; r++) {
                const __m512d t =
                    _mm512_set1_pd((double)dphi[i * F + r] * (double)phi[i * F + r]);
                const float *w = omega + r * D + d0;
#pragma GCC unroll 8
                for (int c = 0; c < 8; c++) {
                    if (!m[c]) break;
                    const __m512d wd = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m[c], w + 8 * c));
                    acc[c] = _mm512_fmadd_pd(t, _mm512_sub_pd(wd, xs[c]), acc[c]);
                }
            }
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                if (!m[c]) break;
                _mm256_mask_storeu_ps(dx + i * ldd + d0 + 8 * c, m[c],
                                      _mm512_cvtpd_ps(_mm512_mul_pd(vs, acc[c])));
            }
        }
    }
}

const attn_feat_kernels attn__feat_kernels_avx512 = {
    .elu1 = elu1_avx512,
    .perf_exp = perf_exp_avx512,
    .ratio = ratio_avx512,
    .apply = apply_avx512,
    .accum = accum_avx512,
    .perf_back = perf_back_avx512,
};
