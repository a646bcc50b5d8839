/* AVX2 feature maps (kernels/feat_kernels.h): 8 features a vector, tails
 * through maskload/maskstore, the softmax kernels' exponential
 * (vmath_avx2.h). */
#include "kernels/feat_kernels.h"
#include "vmath_avx2.h"

#include <math.h>

static inline __m256i tail8(int64_t left) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left > 8 ? 8 : left)), idx);
}

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* x > 0 ? x + 1 : exp(min(x, 0)) (min keeps a NaN, as x > 0 is false) */
static inline __m256 elu1_8(__m256 v) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 pos = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
    __m256 e = exp_avx2(_mm256_min_ps(zero, v));
    return _mm256_blendv_ps(e, _mm256_add_ps(v, _mm256_set1_ps(1.0f)), pos);
}

static void elu1_avx2(const float *x, int64_t ldx, int64_t n, int64_t F, float *y,
                      float *colsum) {
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * ldx;
        float *yi = y + i * F;
        int64_t d = 0;
        for (; d + 8 <= F; d += 8) {
            const __m256 e = elu1_8(_mm256_loadu_ps(xi + d));
            _mm256_storeu_ps(yi + d, e);
            if (colsum) _mm256_storeu_ps(colsum + d, _mm256_add_ps(_mm256_loadu_ps(colsum + d), e));
        }
        if (d < F) {
            const __m256i m = tail8(F - d);
            const __m256 e = elu1_8(_mm256_maskload_ps(xi + d, m));
            _mm256_maskstore_ps(yi + d, m, e);
            if (colsum)
                _mm256_maskstore_ps(colsum + d, m,
                                    _mm256_add_ps(_mm256_maskload_ps(colsum + d, m), e));
        }
    }
}

static float rowmax8(const float *u, int64_t F) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int64_t r = 0;
    for (; r + 8 <= F; r += 8)
        m = _mm256_max_ps(m, _mm256_loadu_ps(u + r));
    if (r < F) {
        const __m256i k = tail8(F - r);
        __m256 v = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_maskload_ps(u + r, k),
                                    _mm256_castsi256_ps(k));
        m = _mm256_max_ps(m, v);
    }
    return hmax8(m);
}

static float sumsq8(const float *x, int64_t D) {
    __m256 s = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
        __m256 v = _mm256_loadu_ps(x + d);
        s = _mm256_fmadd_ps(v, v, s);
    }
    if (d < D) {
        __m256 v = _mm256_maskload_ps(x + d, tail8(D - d));
        s = _mm256_fmadd_ps(v, v, s);
    }
    return hsum8(s);
}

static float perf_exp_avx2(float *u, int64_t n, int64_t F, const float *x, int64_t ldx, int64_t D,
                           float hs, int rowshift, float norm, float *colsum) {
    float emax = -INFINITY;
    if (!rowshift)
        for (int64_t i = 0; i < n; i++)
            emax = fmaxf(emax, rowmax8(u + i * F, F) - hs * sumsq8(x + i * ldx, D));
    float c = isfinite(emax) ? emax : 0.0f;
    const __m256 vn = _mm256_set1_ps(norm);
    for (int64_t i = 0; i < n; i++) {
        float *ui = u + i * F;
        const float h = hs * sumsq8(x + i * ldx, D);
        if (rowshift) {
            const float e = rowmax8(ui, F) - h;
            emax = fmaxf(emax, e);
            c = isfinite(e) ? e : 0.0f;
        }
        const __m256 sub = _mm256_set1_ps(h + c);
        int64_t r = 0;
        for (; r + 8 <= F; r += 8) {
            const __m256 e =
                _mm256_mul_ps(exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(ui + r), sub)), vn);
            _mm256_storeu_ps(ui + r, e);
            if (colsum) _mm256_storeu_ps(colsum + r, _mm256_add_ps(_mm256_loadu_ps(colsum + r), e));
        }
        if (r < F) {
            const __m256i m = tail8(F - r);
            const __m256 e =
                _mm256_mul_ps(exp_avx2(_mm256_sub_ps(_mm256_maskload_ps(ui + r, m), sub)), vn);
            _mm256_maskstore_ps(ui + r, m, e);
            if (colsum)
                _mm256_maskstore_ps(colsum + r, m,
                                    _mm256_add_ps(_mm256_maskload_ps(colsum + r, m), e));
        }
    }
    return emax;
}

static void ratio_avx2(float *o, int64_t ldo, int64_t n, int64_t Dv, const float *phi, int64_t F,
                       const float *z) {
    for (int64_t i = 0; i < n; i++) {
        const float *pi = phi + i * F;
        __m256 a = _mm256_setzero_ps();
        int64_t r = 0;
        for (; r + 8 <= F; r += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(pi + r), _mm256_loadu_ps(z + r), a);
        if (r < F) {
            const __m256i m = tail8(F - r);
            a = _mm256_fmadd_ps(_mm256_maskload_ps(pi + r, m), _mm256_maskload_ps(z + r, m), a);
        }
        const float den = hsum8(a);
        const __m256 inv = _mm256_set1_ps(den != 0.0f ? 1.0f / den : 0.0f);
        float *oi = o + i * ldo;
        int64_t d = 0;
        for (; d + 8 <= Dv; d += 8)
            _mm256_storeu_ps(oi + d, _mm256_mul_ps(_mm256_loadu_ps(oi + d), inv));
        if (d < Dv) {
            const __m256i m = tail8(Dv - d);
            _mm256_maskstore_ps(oi + d, m, _mm256_mul_ps(_mm256_maskload_ps(oi + d, m), inv));
        }
    }
}

const attn_feat_kernels attn__feat_kernels_avx2 = {
    .elu1 = elu1_avx2,
    .perf_exp = perf_exp_avx2,
    .ratio = ratio_avx2,
};
