/* AVX2+FMA nn element-wise kernels: erf and exact GELU, 8 lanes at a time,
 * both erf branches evaluated for every lane and blended (no branches on
 * data). Step for step the algorithm of nn_scalar.c. */
#include "kernels/nn_kernels.h"

#include <immintrin.h>
#include <math.h>

static const float erf_a[ATTN_ERF_NA] = ATTN_ERF_A;
static const float erf_b[ATTN_ERF_NB] = ATTN_ERF_B;

static inline __m256 exp_neg8(__m256 y) {
    __m256 n = _mm256_round_ps(_mm256_mul_ps(y, _mm256_set1_ps(1.44269504f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693145752f), y);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-1.42860677e-06f), r);
    __m256 p = _mm256_set1_ps(1.98412698e-04f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.38888889e-03f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.33333333e-03f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.16666667e-02f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.66666667e-01f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 erf8(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 ax = _mm256_andnot_ps(sign, x);
    /* small: x + x A(x^2) */
    __m256 t = _mm256_mul_ps(ax, ax);
    __m256 q = _mm256_set1_ps(erf_a[ATTN_ERF_NA - 1]);
    for (int i = ATTN_ERF_NA - 2; i >= 0; i--)
        q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(erf_a[i]));
    __m256 rs = _mm256_fmadd_ps(ax, q, ax);
    /* large: 1 - exp(-x^2 + B(|x| - mid)); clamp so exp stays in range */
    __m256 axc = _mm256_min_ps(ax, _mm256_set1_ps(ATTN_ERF_ONE));
    __m256 u = _mm256_sub_ps(axc, _mm256_set1_ps(ATTN_ERF_MID));
    __m256 g = _mm256_set1_ps(erf_b[ATTN_ERF_NB - 1]);
    for (int i = ATTN_ERF_NB - 2; i >= 0; i--)
        g = _mm256_fmadd_ps(g, u, _mm256_set1_ps(erf_b[i]));
    __m256 hi = _mm256_mul_ps(axc, axc);
    __m256 lo = _mm256_fmsub_ps(axc, axc, hi);
    __m256 rl =
        _mm256_sub_ps(_mm256_set1_ps(1.0f), exp_neg8(_mm256_sub_ps(_mm256_sub_ps(g, lo), hi)));
    __m256 one = _mm256_set1_ps(1.0f);
    rl = _mm256_blendv_ps(one, rl, _mm256_cmp_ps(ax, _mm256_set1_ps(ATTN_ERF_ONE), _CMP_LT_OQ));
    __m256 r =
        _mm256_blendv_ps(rl, rs, _mm256_cmp_ps(ax, _mm256_set1_ps(ATTN_ERF_SPLIT), _CMP_LT_OQ));
    r = _mm256_or_ps(r, _mm256_and_ps(sign, x));
    return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); /* NaN stays NaN */
}

static void erf_avx2(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, erf8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float bx[8] = {0}, by[8];
        for (int64_t j = i; j < n; j++)
            bx[j - i] = x[j];
        _mm256_storeu_ps(by, erf8(_mm256_loadu_ps(bx)));
        for (int64_t j = i; j < n; j++)
            y[j] = by[j - i];
    }
}

static inline __m256 gelu8(__m256 x) {
    __m256 e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
    __m256 hx = _mm256_mul_ps(_mm256_set1_ps(0.5f), x);
    return _mm256_mul_ps(hx, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static void gelu_avx2(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, gelu8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float b[8] = {0};
        for (int64_t j = i; j < n; j++)
            b[j - i] = x[j];
        _mm256_storeu_ps(b, gelu8(_mm256_loadu_ps(b)));
        for (int64_t j = i; j < n; j++)
            x[j] = b[j - i];
    }
}

static inline __m256 exp_clamped8(__m256 y) {
    y = _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(-ATTN_NN_EXP_MAX)),
                      _mm256_set1_ps(ATTN_NN_EXP_MAX));
    return exp_neg8(y);
}

static inline __m256 gelu_bwd8(__m256 v, __m256 g) {
    __m256 e = erf8(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f)));
    __m256 cdf = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    __m256 x2 = _mm256_mul_ps(v, v);
    __m256 pdf = _mm256_mul_ps(_mm256_set1_ps(0.39894228040143268f),
                               exp_clamped8(_mm256_mul_ps(_mm256_set1_ps(-0.5f), x2)));
    return _mm256_mul_ps(g, _mm256_fmadd_ps(v, pdf, cdf));
}

static inline __m256 gelu_tanh_s8(__m256 v, __m256 x2, __m256 *e_out) {
    __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(ATTN_GELU_TANH_A), x2), v, v);
    __m256 e = exp_clamped8(_mm256_mul_ps(inner, _mm256_set1_ps(ATTN_GELU_TANH_M2C)));
    *e_out = e;
    return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static inline __m256 gelu_tanh8(__m256 v, __m256 unused) {
    (void)unused;
    __m256 e;
    return _mm256_mul_ps(v, gelu_tanh_s8(v, _mm256_mul_ps(v, v), &e));
}

static inline __m256 gelu_tanh_bwd8(__m256 v, __m256 g) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 e, x2 = _mm256_mul_ps(v, v), s = gelu_tanh_s8(v, x2, &e);
    __m256 kk = _mm256_fmadd_ps(_mm256_set1_ps(ATTN_GELU_TANH_3A), x2, one);
    __m256 t1 = _mm256_mul_ps(v, _mm256_mul_ps(s, _mm256_mul_ps(e, s)));
    __m256 d = _mm256_fmadd_ps(t1, _mm256_mul_ps(_mm256_set1_ps(ATTN_GELU_TANH_2C), kk), s);
    return _mm256_mul_ps(g, d);
}

/* out[i] = f(x[i], g[i]) over n elements, the tail through a zeroed copy */
#define MAP8(NAME, F)                                                                              \
    static void NAME(const float *x, const float *g, float *out, int64_t n) {                      \
        int64_t i = 0;                                                                             \
        for (; i + 8 <= n; i += 8)                                                                 \
            _mm256_storeu_ps(out + i, F(_mm256_loadu_ps(x + i), _mm256_loadu_ps(g + i)));          \
        if (i < n) {                                                                               \
            float bx[8] = {0}, bg[8] = {0}, bo[8];                                                 \
            for (int64_t j = i; j < n; j++)                                                        \
                bx[j - i] = x[j], bg[j - i] = g[j];                                                \
            _mm256_storeu_ps(bo, F(_mm256_loadu_ps(bx), _mm256_loadu_ps(bg)));                     \
            for (int64_t j = i; j < n; j++)                                                        \
                out[j] = bo[j - i];                                                                \
        }                                                                                          \
    }
MAP8(gelu_bwd_avx2, gelu_bwd8)
MAP8(gelu_tanh_bwd_avx2, gelu_tanh_bwd8)
MAP8(gelu_tanh_map, gelu_tanh8)
#undef MAP8

static void gelu_tanh_avx2(float *x, int64_t n) {
    gelu_tanh_map(x, x, x, n);
}

const attn_nn_kernels attn__nn_kernels_avx2 = {
    .name = "avx2",
    .erf = erf_avx2,
    .gelu = gelu_avx2,
    .gelu_bwd = gelu_bwd_avx2,
    .gelu_tanh = gelu_tanh_avx2,
    .gelu_tanh_bwd = gelu_tanh_bwd_avx2,
};
