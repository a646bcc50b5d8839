/* AVX2 + FMA backward microkernels (the avx2 folder alone is built with
 * -mavx2 -mfma). Layout in kernels/kernels_bwd.h: a strip is R query rows,
 * here a multiple of 24 (3 vectors; arch_avx2.c picks R); score-shaped tiles
 * are x[key][row]. */
#include "kernels/avx2/vmath_avx2.h"
#include "kernels/kernels_bwd.h"
#include "kernels/pack.h"

#include <assert.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

static void pack_t_avx2(const float *x, int64_t xs, int mr, int R, int D, float scale, float *xt) {
    attn__pack_strip(x, xs, mr, R, D, scale, xt);
}

static void dot_t_avx2(const float *xt, int R, const float *y, int64_t ys, int n, int D, int mr,
                       float *s) {
    assert(R % 24 == 0);
    for (int g = 0; g < mr; g += 24)
        dot24_avx2(xt + g, R, y, ys, n, D, s + g);
}

static void softmax_bwd_avx2(float *s, float *dp, int R, int n, int mr, const float *lse,
                             const float *di) {
    for (int v = 0; v < mr; v += 24) {
        const __m256 l0 = _mm256_loadu_ps(lse + v), l1 = _mm256_loadu_ps(lse + v + 8);
        const __m256 l2 = _mm256_loadu_ps(lse + v + 16);
        const __m256 d0 = _mm256_loadu_ps(di + v), d1 = _mm256_loadu_ps(di + v + 8);
        const __m256 d2 = _mm256_loadu_ps(di + v + 16);
        for (int j = 0; j < n; j++) {
            float *x = s + (size_t)j * R + v, *g = dp + (size_t)j * R + v;
            __m256 p0 = exp_avx2(_mm256_sub_ps(_mm256_load_ps(x), l0));
            __m256 p1 = exp_avx2(_mm256_sub_ps(_mm256_load_ps(x + 8), l1));
            __m256 p2 = exp_avx2(_mm256_sub_ps(_mm256_load_ps(x + 16), l2));
            _mm256_store_ps(x, p0), _mm256_store_ps(x + 8, p1), _mm256_store_ps(x + 16, p2);
            _mm256_store_ps(g, _mm256_mul_ps(p0, _mm256_sub_ps(_mm256_load_ps(g), d0)));
            _mm256_store_ps(g + 8, _mm256_mul_ps(p1, _mm256_sub_ps(_mm256_load_ps(g + 8), d1)));
            _mm256_store_ps(g + 16, _mm256_mul_ps(p2, _mm256_sub_ps(_mm256_load_ps(g + 16), d2)));
        }
    }
}

static inline void tail_masks(int w, __m256i *m0, __m256i *m1) {
    int32_t mk[16];
    for (int i = 0; i < 16; i++)
        mk[i] = i < w ? -1 : 0;
    *m0 = _mm256_loadu_si256((const __m256i *)mk);
    *m1 = _mm256_loadu_si256((const __m256i *)(mk + 8));
}

/* Loads and stores of 16 columns, whole or masked to the tail (full is a
 * compile-time constant wherever these are inlined). */
#define LDF0(f, p) ((f) ? _mm256_loadu_ps(p) : _mm256_maskload_ps((p), m0))
#define LDF1(f, p) ((f) ? _mm256_loadu_ps((p) + 8) : _mm256_maskload_ps((p) + 8, m1))
#define STF0(f, p, x) ((f) ? _mm256_storeu_ps((p), x) : _mm256_maskstore_ps((p), m0, x))
#define STF1(f, p, x) ((f) ? _mm256_storeu_ps((p) + 8, x) : _mm256_maskstore_ps((p) + 8, m1, x))
#define LD0(p) LDF0(full, p)
#define LD1(p) LDF1(full, p)
#define ST0(p, x) STF0(full, p, x)
#define ST1(p, x) STF1(full, p, x)

/* The 6 x 16 register block (12 accumulators) of both accumulation kernels,
 * written out: GCC keeps an array of vectors on the stack. */
#define ACC6_DECL __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51
#define ACC6_LOAD(f, base, ld)                                                                     \
    c00 = LDF0(f, base), c01 = LDF1(f, base);                                                      \
    c10 = LDF0(f, base + (ld)), c11 = LDF1(f, base + (ld));                                        \
    c20 = LDF0(f, base + 2 * (ld)), c21 = LDF1(f, base + 2 * (ld));                                \
    c30 = LDF0(f, base + 3 * (ld)), c31 = LDF1(f, base + 3 * (ld));                                \
    c40 = LDF0(f, base + 4 * (ld)), c41 = LDF1(f, base + 4 * (ld));                                \
    c50 = LDF0(f, base + 5 * (ld)), c51 = LDF1(f, base + 5 * (ld))
#define ACC6_STORE(f, base, ld)                                                                    \
    STF0(f, base, c00), STF1(f, base, c01);                                                        \
    STF0(f, base + (ld), c10), STF1(f, base + (ld), c11);                                          \
    STF0(f, base + 2 * (ld), c20), STF1(f, base + 2 * (ld), c21);                                  \
    STF0(f, base + 3 * (ld), c30), STF1(f, base + 3 * (ld), c31);                                  \
    STF0(f, base + 4 * (ld), c40), STF1(f, base + 4 * (ld), c41);                                  \
    STF0(f, base + 5 * (ld), c50), STF1(f, base + 5 * (ld), c51)
/* c[k] += x_k * (b0, b1) for the 6 scalars x_k at a[k * as] */
#define ACC6_STEP(a, as)                                                                           \
    do {                                                                                           \
        __m256 x = _mm256_broadcast_ss(a);                                                         \
        c00 = _mm256_fmadd_ps(x, b0, c00), c01 = _mm256_fmadd_ps(x, b1, c01);                      \
        x = _mm256_broadcast_ss((a) + (as));                                                       \
        c10 = _mm256_fmadd_ps(x, b0, c10), c11 = _mm256_fmadd_ps(x, b1, c11);                      \
        x = _mm256_broadcast_ss((a) + 2 * (as));                                                   \
        c20 = _mm256_fmadd_ps(x, b0, c20), c21 = _mm256_fmadd_ps(x, b1, c21);                      \
        x = _mm256_broadcast_ss((a) + 3 * (as));                                                   \
        c30 = _mm256_fmadd_ps(x, b0, c30), c31 = _mm256_fmadd_ps(x, b1, c31);                      \
        x = _mm256_broadcast_ss((a) + 4 * (as));                                                   \
        c40 = _mm256_fmadd_ps(x, b0, c40), c41 = _mm256_fmadd_ps(x, b1, c41);                      \
        x = _mm256_broadcast_ss((a) + 5 * (as));                                                   \
        c50 = _mm256_fmadd_ps(x, b0, c50), c51 = _mm256_fmadd_ps(x, b1, c51);                      \
    } while (0)

/* 6 keys x 16 columns of acc, summed over the strip's mr rows. */
INLINE void tn_6x16(int full, const float *a, int R, int mr, const float *b, int64_t bs, float *acc,
                    int64_t lda, __m256i m0, __m256i m1) {
    ACC6_DECL;
    ACC6_LOAD(full, acc, lda);
    for (int r = 0; r < mr; r++) {
        const float *br = b + (int64_t)r * bs;
        __m256 b0 = LD0(br), b1 = LD1(br);
        ACC6_STEP(a + r, R);
    }
    ACC6_STORE(full, acc, lda);
}

/* 1 key x 16 columns (tiles whose key count is not a multiple of 6). One
 * FMA chain in row order, like tn_6x16: a key's sums must not depend on how
 * keys fall into blocks (see the backward driver). */
INLINE void tn_1x16(int full, const float *a, int mr, const float *b, int64_t bs, float *acc,
                    __m256i m0, __m256i m1) {
    __m256 c0 = LD0(acc), c1 = LD1(acc);
    for (int r = 0; r < mr; r++) {
        const float *br = b + (int64_t)r * bs;
        __m256 x = _mm256_broadcast_ss(a + r);
        c0 = _mm256_fmadd_ps(x, LD0(br), c0);
        c1 = _mm256_fmadd_ps(x, LD1(br), c1);
    }
    ST0(acc, c0);
    ST1(acc, c1);
}

static void acc_tn_avx2(const float *a, int R, int mr, int n, const float *b, int64_t bs, int N,
                        float *acc, int64_t lda) {
    __m256i m0, m1;
    tail_masks(N & 15, &m0, &m1);
    int j0 = 0;
    for (; j0 + 6 <= n; j0 += 6) {
        const float *aj = a + (size_t)j0 * R;
        float *accj = acc + (int64_t)j0 * lda;
        int c0 = 0;
        for (; c0 + 16 <= N; c0 += 16)
            tn_6x16(1, aj, R, mr, b + c0, bs, accj + c0, lda, m0, m1);
        if (c0 < N) tn_6x16(0, aj, R, mr, b + c0, bs, accj + c0, lda, m0, m1);
    }
    for (; j0 < n; j0++) {
        const float *aj = a + (size_t)j0 * R;
        float *accj = acc + (int64_t)j0 * lda;
        int c0 = 0;
        for (; c0 + 16 <= N; c0 += 16)
            tn_1x16(1, aj, mr, b + c0, bs, accj + c0, m0, m1);
        if (c0 < N) tn_1x16(0, aj, mr, b + c0, bs, accj + c0, m0, m1);
    }
}

/* 6 rows x 16 columns of o, accumulated over n keys. o is workspace with
 * ldo >= round16(N), so its whole vectors are loaded and stored; only b
 * (the caller's K) is masked on a tail. */
INLINE void nn_6x16(int full, const float *a, int R, int n, const float *b, int64_t bs, float *o,
                    int ldo, __m256i m0, __m256i m1) {
    ACC6_DECL;
    ACC6_LOAD(1, o, ldo);
    for (int j = 0; j < n; j++) {
        const float *bj = b + (int64_t)j * bs;
        __m256 b0 = LD0(bj), b1 = LD1(bj);
        ACC6_STEP(a + (size_t)j * R, 1);
    }
    ACC6_STORE(1, o, ldo);
}

static void acc_nn_avx2(const float *a, int R, int mr, int n, const float *b, int64_t bs, int N,
                        float *o, int ldo) {
    __m256i m0, m1;
    tail_masks(N & 15, &m0, &m1);
    for (int r0 = 0; r0 < mr; r0 += 6) {
        int c0 = 0;
        for (; c0 + 16 <= N; c0 += 16)
            nn_6x16(1, a + r0, R, n, b + c0, bs, o + (size_t)r0 * ldo + c0, ldo, m0, m1);
        if (c0 < N) nn_6x16(0, a + r0, R, n, b + c0, bs, o + (size_t)r0 * ldo + c0, ldo, m0, m1);
    }
}

const attn_bwd_kernels attn__bwd_kernels_avx2 = {
    .name = "avx2",
    .pack_t = pack_t_avx2,
    .dot_t = dot_t_avx2,
    .softmax_bwd = softmax_bwd_avx2,
    .acc_tn = acc_tn_avx2,
    .acc_nn = acc_nn_avx2,
};
