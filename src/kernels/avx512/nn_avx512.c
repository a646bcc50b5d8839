/* AVX-512 nn element-wise kernels: erf and exact GELU, 16 lanes at a time,
 * both erf branches evaluated for every lane and blended (no branches on
 * data). Step for step the algorithm of nn_scalar.c (the same FMAs), so the
 * results equal the scalar family's to the bit (tests/test_arch.c). */
#include "kernels/nn_kernels.h"

#include <immintrin.h>
#include <math.h>

static const float erf_a[ATTN_ERF_NA] = ATTN_ERF_A;
static const float erf_b[ATTN_ERF_NB] = ATTN_ERF_B;

static inline __m512 exp_neg16(__m512 y) {
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693145752f), y);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-1.42860677e-06f), r);
    __m512 p = _mm512_set1_ps(1.98412698e-04f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.38888889e-03f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.33333333e-03f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.16666667e-02f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.66666667e-01f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

static inline __m512 erf16(__m512 x) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __m512 ax = _mm512_andnot_ps(sign, x);
    /* small: x + x A(x^2) */
    __m512 t = _mm512_mul_ps(ax, ax);
    __m512 q = _mm512_set1_ps(erf_a[ATTN_ERF_NA - 1]);
    for (int i = ATTN_ERF_NA - 2; i >= 0; i--)
        q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(erf_a[i]));
    __m512 rs = _mm512_fmadd_ps(ax, q, ax);
    /* large: 1 - exp(-x^2 + B(|x| - mid)); clamp so exp stays in range */
    __m512 axc = _mm512_min_ps(ax, _mm512_set1_ps(ATTN_ERF_ONE));
    __m512 u = _mm512_sub_ps(axc, _mm512_set1_ps(ATTN_ERF_MID));
    __m512 g = _mm512_set1_ps(erf_b[ATTN_ERF_NB - 1]);
    for (int i = ATTN_ERF_NB - 2; i >= 0; i--)
        g = _mm512_fmadd_ps(g, u, _mm512_set1_ps(erf_b[i]));
    __m512 hi = _mm512_mul_ps(axc, axc);
    __m512 lo = _mm512_fmsub_ps(axc, axc, hi);
    __m512 rl =
        _mm512_sub_ps(_mm512_set1_ps(1.0f), exp_neg16(_mm512_sub_ps(_mm512_sub_ps(g, lo), hi)));
    __m512 one = _mm512_set1_ps(1.0f);
    rl = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(ATTN_ERF_ONE), _CMP_LT_OQ), one,
                              rl);
    __m512 r = _mm512_mask_blend_ps(
        _mm512_cmp_ps_mask(ax, _mm512_set1_ps(ATTN_ERF_SPLIT), _CMP_LT_OQ), rl, rs);
    r = _mm512_or_ps(r, _mm512_and_ps(sign, x));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), r, x); /* NaN stays NaN */
}

static inline __m512 gelu16(__m512 x) {
    __m512 e = erf16(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
    __m512 hx = _mm512_mul_ps(_mm512_set1_ps(0.5f), x);
    return _mm512_mul_ps(hx, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* The tail is a masked load and store: no scratch copy. */
static void erf_avx512(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, k, erf16(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

static void gelu_avx512(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, k, gelu16(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

static inline __m512 exp_clamped16(__m512 y) {
    y = _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(-ATTN_NN_EXP_MAX)),
                      _mm512_set1_ps(ATTN_NN_EXP_MAX));
    return exp_neg16(y);
}

static inline __mmask16 tail16(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

static void gelu_bwd_avx512(const float *x, const float *dy, float *dx, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 e = erf16(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)));
        __m512 cdf = _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        __m512 x2 = _mm512_mul_ps(v, v);
        __m512 pdf = _mm512_mul_ps(_mm512_set1_ps(0.39894228040143268f),
                                   exp_clamped16(_mm512_mul_ps(_mm512_set1_ps(-0.5f), x2)));
        __m512 d = _mm512_fmadd_ps(v, pdf, cdf);
        _mm512_mask_storeu_ps(dx + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dy + i), d));
    }
}

static inline __m512 gelu_tanh_s16(__m512 v, __m512 x2, __m512 *e_out) {
    __m512 inner = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(ATTN_GELU_TANH_A), x2), v, v);
    __m512 e = exp_clamped16(_mm512_mul_ps(inner, _mm512_set1_ps(ATTN_GELU_TANH_M2C)));
    *e_out = e;
    return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

static void gelu_tanh_avx512(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 e, s = gelu_tanh_s16(v, _mm512_mul_ps(v, v), &e);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(v, s));
    }
}

static void gelu_tanh_bwd_avx512(const float *x, const float *dy, float *dx, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i), x2 = _mm512_mul_ps(v, v);
        __m512 e, s = gelu_tanh_s16(v, x2, &e);
        __m512 kk = _mm512_fmadd_ps(_mm512_set1_ps(ATTN_GELU_TANH_3A), x2, one);
        __m512 t1 = _mm512_mul_ps(v, _mm512_mul_ps(s, _mm512_mul_ps(e, s)));
        __m512 d = _mm512_fmadd_ps(t1, _mm512_mul_ps(_mm512_set1_ps(ATTN_GELU_TANH_2C), kk), s);
        _mm512_mask_storeu_ps(dx + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dy + i), d));
    }
}

const attn_nn_kernels attn__nn_kernels_avx512 = {
    .name = "avx512",
    .erf = erf_avx512,
    .gelu = gelu_avx512,
    .gelu_bwd = gelu_bwd_avx512,
    .gelu_tanh = gelu_tanh_avx512,
    .gelu_tanh_bwd = gelu_tanh_bwd_avx512,
};
