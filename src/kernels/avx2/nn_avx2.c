/* AVX2+FMA nn element-wise kernels: erf and exact GELU, 8 lanes at a time,
 * both erf branches evaluated for every lane and blended (no branches on
 * data). Step for step the algorithm of nn_scalar.c. */
#include "kernels/half.h"
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

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Four rows at a time, 8 columns per step, scalar column tail. */
static void gemv_avx2(const float *W, int64_t ldw, int64_t n, int64_t K, const float *x, int acc,
                      float *y) {
    const int64_t K8 = K & ~(int64_t)7;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *w0 = W + j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < K8; k += 8) {
            const __m256 xv = _mm256_loadu_ps(x + k);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xv, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xv, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xv, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xv, a3);
        }
        float s[4] = {hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3)};
        for (int64_t k = K8; k < K; k++) {
            s[0] = fmaf(w0[k], x[k], s[0]);
            s[1] = fmaf(w1[k], x[k], s[1]);
            s[2] = fmaf(w2[k], x[k], s[2]);
            s[3] = fmaf(w3[k], x[k], s[3]);
        }
        for (int r = 0; r < 4; r++)
            y[j + r] = acc ? y[j + r] + s[r] : s[r];
    }
    for (; j < n; j++) {
        const float *w = W + j * ldw;
        __m256 a = _mm256_setzero_ps();
        for (int64_t k = 0; k < K8; k += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a);
        float s = hsum8(a);
        for (int64_t k = K8; k < K; k++)
            s = fmaf(w[k], x[k], s);
        y[j] = acc ? y[j] + s : s;
    }
}

/* bfloat16 -> float is the 16 bits moved to the top: zero-extend to 32
 * bits and shift left 16, exactly. */
static inline __m256 bf16x8(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* gemv with bf16 W: four rows at a time, 16 columns per step in two
 * accumulators per row (one 32-byte load of W per row), then 8, then a
 * scalar column tail, prefetching the lines the next four rows read (as
 * gemv_bf16_avx512). Accumulators are named, not an array, so they stay
 * in registers. */
static void gemv_bf16_avx2(const uint16_t *W, int64_t ldw, int64_t n, int64_t K, const float *x,
                           int acc, float *y) {
#define BF16_LO(h) bf16x8(_mm256_castsi256_si128(h))
#define BF16_HI(h) bf16x8(_mm256_extracti128_si256(h, 1))
#define BF16_8(p) bf16x8(_mm_loadu_si128((const __m128i *)(p)))
    const int64_t K16 = K & ~(int64_t)15, K8 = K & ~(int64_t)7;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const uint16_t *w0 = W + j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int64_t k = 0;
        for (; k < K16; k += 16) {
            if (!(k & 31)) { /* one line per row per 32 columns: the next four rows' */
                _mm_prefetch((const char *)(w0 + 4 * ldw + k), _MM_HINT_T0);
                _mm_prefetch((const char *)(w1 + 4 * ldw + k), _MM_HINT_T0);
                _mm_prefetch((const char *)(w2 + 4 * ldw + k), _MM_HINT_T0);
                _mm_prefetch((const char *)(w3 + 4 * ldw + k), _MM_HINT_T0);
            }
            const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
            const __m256i h0 = _mm256_loadu_si256((const __m256i *)(w0 + k));
            const __m256i h1 = _mm256_loadu_si256((const __m256i *)(w1 + k));
            const __m256i h2 = _mm256_loadu_si256((const __m256i *)(w2 + k));
            const __m256i h3 = _mm256_loadu_si256((const __m256i *)(w3 + k));
            a0 = _mm256_fmadd_ps(BF16_LO(h0), x0, a0);
            a1 = _mm256_fmadd_ps(BF16_LO(h1), x0, a1);
            a2 = _mm256_fmadd_ps(BF16_LO(h2), x0, a2);
            a3 = _mm256_fmadd_ps(BF16_LO(h3), x0, a3);
            b0 = _mm256_fmadd_ps(BF16_HI(h0), x1, b0);
            b1 = _mm256_fmadd_ps(BF16_HI(h1), x1, b1);
            b2 = _mm256_fmadd_ps(BF16_HI(h2), x1, b2);
            b3 = _mm256_fmadd_ps(BF16_HI(h3), x1, b3);
        }
        for (; k < K8; k += 8) {
            const __m256 x0 = _mm256_loadu_ps(x + k);
            a0 = _mm256_fmadd_ps(BF16_8(w0 + k), x0, a0);
            a1 = _mm256_fmadd_ps(BF16_8(w1 + k), x0, a1);
            a2 = _mm256_fmadd_ps(BF16_8(w2 + k), x0, a2);
            a3 = _mm256_fmadd_ps(BF16_8(w3 + k), x0, a3);
        }
        float s[4] = {hsum8(_mm256_add_ps(a0, b0)), hsum8(_mm256_add_ps(a1, b1)),
                      hsum8(_mm256_add_ps(a2, b2)), hsum8(_mm256_add_ps(a3, b3))};
        for (int64_t c = K8; c < K; c++) {
            s[0] = fmaf(attn__bf2f(w0[c]), x[c], s[0]);
            s[1] = fmaf(attn__bf2f(w1[c]), x[c], s[1]);
            s[2] = fmaf(attn__bf2f(w2[c]), x[c], s[2]);
            s[3] = fmaf(attn__bf2f(w3[c]), x[c], s[3]);
        }
        for (int r = 0; r < 4; r++)
            y[j + r] = acc ? y[j + r] + s[r] : s[r];
    }
    for (; j < n; j++) {
        const uint16_t *w = W + j * ldw;
        __m256 a = _mm256_setzero_ps();
        for (int64_t k = 0; k < K8; k += 8)
            a = _mm256_fmadd_ps(BF16_8(w + k), _mm256_loadu_ps(x + k), a);
        float s = hsum8(a);
        for (int64_t k = K8; k < K; k++)
            s = fmaf(attn__bf2f(w[k]), x[k], s);
        y[j] = acc ? y[j] + s : s;
    }
#undef BF16_LO
#undef BF16_HI
#undef BF16_8
}

/* One row of x at a time: the n rows of W (a task's 64) stay in L2 after
 * the first. */
static void gemm_bf16_avx2(const uint16_t *W, int64_t ldw, int64_t n, int64_t K, const float *x,
                           int64_t ldx, int64_t M, int acc, float *y, int64_t ldy) {
    for (int64_t i = 0; i < M; i++)
        gemv_bf16_avx2(W, ldw, n, K, x + i * ldx, acc, y + i * ldy);
}

const attn_nn_kernels attn__nn_kernels_avx2 = {
    .name = "avx2",
    .erf = erf_avx2,
    .gelu = gelu_avx2,
    .gelu_bwd = gelu_bwd_avx2,
    .gelu_tanh = gelu_tanh_avx2,
    .gelu_tanh_bwd = gelu_tanh_bwd_avx2,
    .gemv = gemv_avx2,
    .gemv_bf16 = gemv_bf16_avx2,
    .gemm_bf16 = gemm_bf16_avx2,
};
