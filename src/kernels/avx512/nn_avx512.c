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

/* Four rows at a time, 32 columns per step in two accumulators per row
 * (eight independent FMA chains keep loads in flight; the product is bound
 * by reading W), masked column tail. */
static void gemv_avx512(const float *W, int64_t ldw, int64_t n, int64_t K, const float *x, int acc,
                        float *y) {
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *w0 = W + j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            const __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), x0, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), x0, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), x0, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), x0, a3);
            b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k + 16), x1, b0);
            b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k + 16), x1, b1);
            b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k + 16), x1, b2);
            b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k + 16), x1, b3);
        }
        for (; k < K; k += 16) {
            const __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1);
            const __m512 x0 = _mm512_maskz_loadu_ps(m, x + k);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + k), x0, a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + k), x0, a1);
            a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + k), x0, a2);
            a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + k), x0, a3);
        }
        float s[4] = {_mm512_reduce_add_ps(_mm512_add_ps(a0, b0)),
                      _mm512_reduce_add_ps(_mm512_add_ps(a1, b1)),
                      _mm512_reduce_add_ps(_mm512_add_ps(a2, b2)),
                      _mm512_reduce_add_ps(_mm512_add_ps(a3, b3))};
        for (int r = 0; r < 4; r++)
            y[j + r] = acc ? y[j + r] + s[r] : s[r];
    }
    for (; j < n; j++) {
        const float *w = W + j * ldw;
        __m512 a = _mm512_setzero_ps();
        for (int64_t k = 0; k < K; k += 16) {
            const __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1);
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + k), _mm512_maskz_loadu_ps(m, x + k), a);
        }
        const float s = _mm512_reduce_add_ps(a);
        y[j] = acc ? y[j] + s : s;
    }
}

/* bfloat16 -> float is the 16 bits moved to the top: zero-extend to 32
 * bits and shift left 16, exactly (AVX512_BF16's vdpbf16ps would also round
 * x to bf16; the loop is bound by reading W, so the two extra operations
 * per 16 weights cost nothing measurable, docs/PERFORMANCE.md). */
static inline __m512 bf16x16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* gemv with bf16 W, four rows at a time. A 32-bit lane of W holds two
 * bf16 columns: the even one becomes a float by a shift left 16, the odd one
 * by clearing the low half (no cross-lane widening), so each 64-byte line of
 * a row (32 columns) costs one load, one shift, one and, and two FMAs
 * against x's even and odd columns, split once per step for the four rows
 * (two permutes). Masked column tail of the same shape. Each step also
 * prefetches the line the next four rows read at this column: the
 * hardware prefetcher alone left the loop at about 70% of the fp32 loop's
 * bytes per second (docs/PERFORMANCE.md, "bf16 weights"). */
static void gemv_bf16_avx512(const uint16_t *W, int64_t ldw, int64_t n, int64_t K, const float *x,
                             int acc, float *y) {
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
#define EVEN(v) _mm512_castsi512_ps(_mm512_slli_epi32(v, 16))
#define ODD(v) _mm512_castsi512_ps(_mm512_and_si512(v, hi))
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const uint16_t *w0 = W + j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int64_t k = 0; k < K; k += 32) {
            __m512 xa, xb;
            __m512i v0, v1, v2, v3;
            if (K - k >= 32) {
                _mm_prefetch((const char *)(w0 + 4 * ldw + k), _MM_HINT_T0);
                _mm_prefetch((const char *)(w1 + 4 * ldw + k), _MM_HINT_T0);
                _mm_prefetch((const char *)(w2 + 4 * ldw + k), _MM_HINT_T0);
                _mm_prefetch((const char *)(w3 + 4 * ldw + k), _MM_HINT_T0);
                xa = _mm512_loadu_ps(x + k), xb = _mm512_loadu_ps(x + k + 16);
                v0 = _mm512_loadu_si512(w0 + k), v1 = _mm512_loadu_si512(w1 + k);
                v2 = _mm512_loadu_si512(w2 + k), v3 = _mm512_loadu_si512(w3 + k);
            } else { /* zeros beyond K: 0 * 0 adds nothing */
                const int64_t left = K - k;
                const __mmask32 m = (__mmask32)((1ull << left) - 1);
                xa = _mm512_maskz_loadu_ps(tail16(left), x + k);
                xb = _mm512_maskz_loadu_ps(tail16(left > 16 ? left - 16 : 0), x + k + 16);
                v0 = _mm512_maskz_loadu_epi16(m, w0 + k), v1 = _mm512_maskz_loadu_epi16(m, w1 + k);
                v2 = _mm512_maskz_loadu_epi16(m, w2 + k), v3 = _mm512_maskz_loadu_epi16(m, w3 + k);
            }
            const __m512 xe = _mm512_permutex2var_ps(xa, ie, xb);
            const __m512 xo = _mm512_permutex2var_ps(xa, io, xb);
            a0 = _mm512_fmadd_ps(EVEN(v0), xe, a0);
            a1 = _mm512_fmadd_ps(EVEN(v1), xe, a1);
            a2 = _mm512_fmadd_ps(EVEN(v2), xe, a2);
            a3 = _mm512_fmadd_ps(EVEN(v3), xe, a3);
            b0 = _mm512_fmadd_ps(ODD(v0), xo, b0);
            b1 = _mm512_fmadd_ps(ODD(v1), xo, b1);
            b2 = _mm512_fmadd_ps(ODD(v2), xo, b2);
            b3 = _mm512_fmadd_ps(ODD(v3), xo, b3);
        }
        float s[4] = {_mm512_reduce_add_ps(_mm512_add_ps(a0, b0)),
                      _mm512_reduce_add_ps(_mm512_add_ps(a1, b1)),
                      _mm512_reduce_add_ps(_mm512_add_ps(a2, b2)),
                      _mm512_reduce_add_ps(_mm512_add_ps(a3, b3))};
        for (int r = 0; r < 4; r++)
            y[j + r] = acc ? y[j + r] + s[r] : s[r];
    }
#undef EVEN
#undef ODD
    for (; j < n; j++) {
        const uint16_t *w = W + j * ldw;
        __m512 a = _mm512_setzero_ps();
        for (int64_t k = 0; k < K; k += 16) {
            const __mmask16 m = tail16(K - k);
            a = _mm512_fmadd_ps(bf16x16(_mm256_maskz_loadu_epi16(m, w + k)),
                                _mm512_maskz_loadu_ps(m, x + k), a);
        }
        const float s = _mm512_reduce_add_ps(a);
        y[j] = acc ? y[j] + s : s;
    }
}

/* gemm_bf16: blocks of 6 rows of x by 4 rows of W, 24 accumulators, 16
 * columns per step (each W vector widened once, used by six x rows); the
 * four W rows stay in L1 while every x block passes over them, and the
 * first pass prefetches the next four W rows' lines. The four sums of a
 * row of a block are reduced together (one transpose-and-add tree). Row
 * tails of x go through gemv_bf16_avx512, of W through single dot
 * products. */
static inline __m512 bf16_at(const uint16_t *p, __mmask16 m) {
    return bf16x16(_mm256_maskz_loadu_epi16(m, p));
}

/* The sums of c0..c3 as one vector of four. */
static inline __m128 reduce4(__m512 c0, __m512 c1, __m512 c2, __m512 c3) {
    const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(c0, c1), _mm512_unpackhi_ps(c0, c1));
    const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(c2, c3), _mm512_unpackhi_ps(c2, c3));
    const __m512 t =
        _mm512_add_ps(_mm512_shuffle_ps(s01, s23, 0x44), _mm512_shuffle_ps(s01, s23, 0xee));
    const __m256 h =
        _mm256_add_ps(_mm512_castps512_ps256(t),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

static inline void store4(float *o, __m128 s, int acc) {
    _mm_storeu_ps(o, acc ? _mm_add_ps(_mm_loadu_ps(o), s) : s);
}

#define MR 6
static void gemm_bf16_avx512(const uint16_t *W, int64_t ldw, int64_t n, int64_t K, const float *x,
                             int64_t ldx, int64_t M, int acc, float *y, int64_t ldy) {
    const int64_t n4 = n & ~(int64_t)3, Mb = M - M % MR;
    for (int64_t j = 0; j < n4; j += 4) {
        const uint16_t *w0 = W + j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        for (int64_t i = 0; i < Mb; i += MR) {
            const float *xr = x + i * ldx;
            const __m512 z = _mm512_setzero_ps();
            __m512 c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
            __m512 c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
            __m512 c40 = z, c41 = z, c42 = z, c43 = z, c50 = z, c51 = z, c52 = z, c53 = z;
            for (int64_t k = 0; k < K; k += 16) {
                const __mmask16 m = tail16(K - k);
                if (i == 0) {
                    _mm_prefetch((const char *)(w0 + 4 * ldw + k), _MM_HINT_T0);
                    _mm_prefetch((const char *)(w1 + 4 * ldw + k), _MM_HINT_T0);
                    _mm_prefetch((const char *)(w2 + 4 * ldw + k), _MM_HINT_T0);
                    _mm_prefetch((const char *)(w3 + 4 * ldw + k), _MM_HINT_T0);
                }
                const __m512 b0 = bf16_at(w0 + k, m), b1 = bf16_at(w1 + k, m);
                const __m512 b2 = bf16_at(w2 + k, m), b3 = bf16_at(w3 + k, m);
                __m512 a;
#define ROW(r)                                                                                     \
    a = _mm512_maskz_loadu_ps(m, xr + r * ldx + k);                                                \
    c##r##0 = _mm512_fmadd_ps(a, b0, c##r##0);                                                     \
    c##r##1 = _mm512_fmadd_ps(a, b1, c##r##1);                                                     \
    c##r##2 = _mm512_fmadd_ps(a, b2, c##r##2);                                                     \
    c##r##3 = _mm512_fmadd_ps(a, b3, c##r##3)
                ROW(0);
                ROW(1);
                ROW(2);
                ROW(3);
                ROW(4);
                ROW(5);
#undef ROW
            }
            float *o = y + i * ldy + j;
            store4(o, reduce4(c00, c01, c02, c03), acc);
            store4(o + ldy, reduce4(c10, c11, c12, c13), acc);
            store4(o + 2 * ldy, reduce4(c20, c21, c22, c23), acc);
            store4(o + 3 * ldy, reduce4(c30, c31, c32, c33), acc);
            store4(o + 4 * ldy, reduce4(c40, c41, c42, c43), acc);
            store4(o + 5 * ldy, reduce4(c50, c51, c52, c53), acc);
        }
    }
    for (int64_t i = Mb; i < M; i++) /* rows of x past the blocks */
        gemv_bf16_avx512(W, ldw, n4, K, x + i * ldx, acc, y + i * ldy);
    for (int64_t j = n4; j < n; j++) /* rows of W past the blocks */
        for (int64_t i = 0; i < M; i++) {
            __m512 a = _mm512_setzero_ps();
            for (int64_t k = 0; k < K; k += 16) {
                const __mmask16 m = tail16(K - k);
                a = _mm512_fmadd_ps(bf16_at(W + j * ldw + k, m),
                                    _mm512_maskz_loadu_ps(m, x + i * ldx + k), a);
            }
            float *o = y + i * ldy + j;
            const float s = _mm512_reduce_add_ps(a);
            *o = acc ? *o + s : s;
        }
}
#undef MR

const attn_nn_kernels attn__nn_kernels_avx512 = {
    .name = "avx512",
    .erf = erf_avx512,
    .gelu = gelu_avx512,
    .gelu_bwd = gelu_bwd_avx512,
    .gelu_tanh = gelu_tanh_avx512,
    .gelu_tanh_bwd = gelu_tanh_bwd_avx512,
    .gemv = gemv_avx512,
    .gemv_bf16 = gemv_bf16_avx512,
    .gemm_bf16 = gemm_bf16_avx512,
};
