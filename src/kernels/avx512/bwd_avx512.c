/* AVX-512 backward microkernels (this folder alone is built with
 * -mavx512f). Layout in kernels/kernels_bwd.h: a strip is R query rows, here
 * a multiple of 48 (arch_avx512.c picks R); score-shaped tiles are
 * x[key][row]. The accumulation kernels use 6 x 64 register blocks (24 of
 * the 32 zmm registers: per step 4 loads and 6 broadcasts for 24 FMAs),
 * the column tail masked, so every element is still one FMA chain in the
 * order the contract fixes. */
#include "kernels/avx512/vmath_avx512.h"
#include "kernels/kernels_bwd.h"
#include "kernels/pack.h"

#include <assert.h>
#include <immintrin.h>

static void pack_t_avx512(const float *x, int64_t xs, int mr, int R, int D, float scale,
                          float *xt) {
    attn__pack_strip(x, xs, mr, R, D, scale, xt);
}

static void dot_t_avx512(const float *xt, int R, const float *y, int64_t ys, int n, int D, int mr,
                         float *s) {
    assert(R % 48 == 0);
    for (int g = 0; g < mr; g += 48)
        dot48_avx512(xt + g, R, y, ys, n, D, s + g);
}

/* p = exp(s - lse), dS = p (dP - D_i), 16 rows at a time up to the 16-row
 * block holding row mr-1 (padding rows have lse = +inf: p = 0). */
static void softmax_bwd_avx512(float *s, float *dp, int R, int n, int mr, const float *lse,
                               const float *di) {
    for (int v = 0; v < mr; v += 16) {
        const __m512 l = _mm512_loadu_ps(lse + v), d = _mm512_loadu_ps(di + v);
        for (int j = 0; j < n; j++) {
            float *x = s + (size_t)j * R + v, *g = dp + (size_t)j * R + v;
            __m512 p = exp_avx512(_mm512_sub_ps(_mm512_load_ps(x), l));
            _mm512_store_ps(x, p);
            _mm512_store_ps(g, _mm512_mul_ps(p, _mm512_sub_ps(_mm512_load_ps(g), d)));
        }
    }
}

/* Column masks of a 64-column block starting at c0 of N columns. */
static inline void col_masks(int c0, int N, __mmask16 *k) {
    for (int q = 0; q < 4; q++) {
        int w = N - c0 - 16 * q;
        k[q] = w >= 16 ? (__mmask16)0xffff : w > 0 ? (__mmask16)((1u << w) - 1) : 0;
    }
}

/* NK keys x 64 columns of acc, summed over the strip's mr rows:
 * acc[k*lda + c] += sum_r a[k*R + r] * b[r*bs + c], in increasing r. */
#define TN_BLOCK(NK)                                                                               \
    static inline __attribute__((always_inline)) void tn_##NK##x64(                                \
        const float *a, int R, int mr, const float *b, int64_t bs, float *acc, int64_t lda,        \
        const __mmask16 *k) {                                                                      \
        __m512 c[NK][4];                                                                           \
        _Pragma("GCC unroll 8") for (int u = 0; u < NK; u++) for (int q = 0; q < 4; q++) c[u][q] = \
            _mm512_maskz_loadu_ps(k[q], acc + u * lda + 16 * q);                                   \
        for (int r = 0; r < mr; r++) {                                                             \
            const float *br = b + (int64_t)r * bs;                                                 \
            __m512 b0 = _mm512_maskz_loadu_ps(k[0], br),                                           \
                   b1 = _mm512_maskz_loadu_ps(k[1], br + 16);                                      \
            __m512 b2 = _mm512_maskz_loadu_ps(k[2], br + 32),                                      \
                   b3 = _mm512_maskz_loadu_ps(k[3], br + 48);                                      \
            _Pragma("GCC unroll 8") for (int u = 0; u < NK; u++) {                                 \
                __m512 x = _mm512_set1_ps(a[(size_t)u * R + r]);                                   \
                c[u][0] = _mm512_fmadd_ps(x, b0, c[u][0]);                                         \
                c[u][1] = _mm512_fmadd_ps(x, b1, c[u][1]);                                         \
                c[u][2] = _mm512_fmadd_ps(x, b2, c[u][2]);                                         \
                c[u][3] = _mm512_fmadd_ps(x, b3, c[u][3]);                                         \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 8") for (int u = 0; u < NK; u++) for (int q = 0; q < 4; q++)           \
            _mm512_mask_storeu_ps(acc + u * lda + 16 * q, k[q], c[u][q]);                          \
    }
TN_BLOCK(6)
TN_BLOCK(1)
#undef TN_BLOCK

static void acc_tn_avx512(const float *a, int R, int mr, int n, const float *b, int64_t bs, int N,
                          float *acc, int64_t lda) {
    for (int c0 = 0; c0 < N; c0 += 64) {
        __mmask16 k[4];
        col_masks(c0, N, k);
        int j = 0;
        for (; j + 6 <= n; j += 6)
            tn_6x64(a + (size_t)j * R, R, mr, b + c0, bs, acc + (int64_t)j * lda + c0, lda, k);
        for (; j < n; j++)
            tn_1x64(a + (size_t)j * R, R, mr, b + c0, bs, acc + (int64_t)j * lda + c0, lda, k);
    }
}

/* NR rows x 64 columns of o, accumulated over n keys:
 * o[r*ldo + c] += sum_j a[j*R + r] * b[j*bs + c], in increasing j. */
#define NN_BLOCK(NR)                                                                               \
    static inline __attribute__((always_inline)) void nn_##NR##x64(                                \
        const float *a, int R, int n, const float *b, int64_t bs, float *o, int ldo,               \
        const __mmask16 *k) {                                                                      \
        __m512 c[NR][4];                                                                           \
        _Pragma("GCC unroll 8") for (int u = 0; u < NR; u++) for (int q = 0; q < 4; q++) c[u][q] = \
            _mm512_maskz_loadu_ps(k[q], o + (size_t)u * ldo + 16 * q);                             \
        for (int j = 0; j < n; j++) {                                                              \
            const float *bj = b + (int64_t)j * bs, *aj = a + (size_t)j * R;                        \
            __m512 b0 = _mm512_maskz_loadu_ps(k[0], bj),                                           \
                   b1 = _mm512_maskz_loadu_ps(k[1], bj + 16);                                      \
            __m512 b2 = _mm512_maskz_loadu_ps(k[2], bj + 32),                                      \
                   b3 = _mm512_maskz_loadu_ps(k[3], bj + 48);                                      \
            _Pragma("GCC unroll 8") for (int u = 0; u < NR; u++) {                                 \
                __m512 x = _mm512_set1_ps(aj[u]);                                                  \
                c[u][0] = _mm512_fmadd_ps(x, b0, c[u][0]);                                         \
                c[u][1] = _mm512_fmadd_ps(x, b1, c[u][1]);                                         \
                c[u][2] = _mm512_fmadd_ps(x, b2, c[u][2]);                                         \
                c[u][3] = _mm512_fmadd_ps(x, b3, c[u][3]);                                         \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 8") for (int u = 0; u < NR; u++) for (int q = 0; q < 4; q++)           \
            _mm512_mask_storeu_ps(o + (size_t)u * ldo + 16 * q, k[q], c[u][q]);                    \
    }
NN_BLOCK(6)
NN_BLOCK(1)
#undef NN_BLOCK

static void acc_nn_avx512(const float *a, int R, int mr, int n, const float *b, int64_t bs, int N,
                          float *o, int ldo) {
    for (int c0 = 0; c0 < N; c0 += 64) {
        __mmask16 k[4];
        col_masks(c0, N, k);
        int r = 0;
        for (; r + 6 <= mr; r += 6)
            nn_6x64(a + r, R, n, b + c0, bs, o + (size_t)r * ldo + c0, ldo, k);
        for (; r < mr; r++)
            nn_1x64(a + r, R, n, b + c0, bs, o + (size_t)r * ldo + c0, ldo, k);
    }
}

const attn_bwd_kernels attn__bwd_kernels_avx512 = {
    .name = "avx512",
    .pack_t = pack_t_avx512,
    .dot_t = dot_t_avx512,
    .softmax_bwd = softmax_bwd_avx512,
    .acc_tn = acc_tn_avx512,
    .acc_nn = acc_nn_avx512,
};
