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
        if (i + 8 < n) /* rows come from memory once: ask for them ahead */
            for (int64_t d = 0; d < F; d += 16)
                _mm_prefetch((const char *)(xi + 8 * ldx + d), _MM_HINT_T0);
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

const attn_feat_kernels attn__feat_kernels_avx512 = {
    .elu1 = elu1_avx512,
    .perf_exp = perf_exp_avx512,
    .ratio = ratio_avx512,
};
