/* AVX-512 backward microkernels (this folder alone is built with
 * -mavx512f). Layout in kernels/kernels_bwd.h: a strip is R query rows, here
 * a multiple of 48 (arch_avx512.c picks R), its height mr any (the scores
 * are computed for mr rounded up to 16); score-shaped tiles are
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
    int g = 0;
    for (; mr - g > 64 || (mr - g > 32 && mr - g <= 48); g += 48)
        dot48_avx512(xt + g, R, y, ys, n, D, s + g);
    for (; g < mr; g += 32) /* the last 64 rows or fewer as 32 + 32 (or 16) */
        if (mr - g > 16)
            dot_short_avx512(2, xt + g, R, y, ys, n, D, s + g);
        else
            dot_short_avx512(1, xt + g, R, y, ys, n, D, s + g);
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

/* The 6 x 64 register block (24 accumulators) of both accumulation
 * kernels, written out with named registers: GCC keeps an array of vectors
 * on the stack and stores it every step. */
#define ACC_DECL(u) __m512 c##u##0, c##u##1, c##u##2, c##u##3
#define ACC_LOAD(u, p)                                                                             \
    c##u##0 = _mm512_maskz_loadu_ps(k[0], (p)), c##u##1 = _mm512_maskz_loadu_ps(k[1], (p) + 16),   \
    c##u##2 = _mm512_maskz_loadu_ps(k[2], (p) + 32),                                               \
    c##u##3 = _mm512_maskz_loadu_ps(k[3], (p) + 48)
#define ACC_STORE(u, p)                                                                            \
    _mm512_mask_storeu_ps((p), k[0], c##u##0), _mm512_mask_storeu_ps((p) + 16, k[1], c##u##1),     \
        _mm512_mask_storeu_ps((p) + 32, k[2], c##u##2),                                            \
        _mm512_mask_storeu_ps((p) + 48, k[3], c##u##3)
#define ACC_STEP(u, xv)                                                                            \
    do {                                                                                           \
        __m512 x_ = (xv);                                                                          \
        c##u##0 = _mm512_fmadd_ps(x_, b0, c##u##0), c##u##1 = _mm512_fmadd_ps(x_, b1, c##u##1);    \
        c##u##2 = _mm512_fmadd_ps(x_, b2, c##u##2), c##u##3 = _mm512_fmadd_ps(x_, b3, c##u##3);    \
    } while (0)
#define B_LOAD(p)                                                                                  \
    __m512 b0 = _mm512_maskz_loadu_ps(k[0], (p)), b1 = _mm512_maskz_loadu_ps(k[1], (p) + 16),      \
           b2 = _mm512_maskz_loadu_ps(k[2], (p) + 32), b3 = _mm512_maskz_loadu_ps(k[3], (p) + 48)

/* 6 keys x 64 columns of acc, summed over the strip's mr rows:
 * acc[u*lda + c] += sum_r a[u*R + r] * b[r*bs + c], in increasing r. */
static inline __attribute__((always_inline)) void tn_6x64(const float *a, int R, int mr,
                                                          const float *b, int64_t bs, float *acc,
                                                          int64_t lda, const __mmask16 *k) {
    ACC_DECL(0);
    ACC_DECL(1);
    ACC_DECL(2);
    ACC_DECL(3);
    ACC_DECL(4);
    ACC_DECL(5);
    ACC_LOAD(0, acc), ACC_LOAD(1, acc + lda), ACC_LOAD(2, acc + 2 * lda);
    ACC_LOAD(3, acc + 3 * lda), ACC_LOAD(4, acc + 4 * lda), ACC_LOAD(5, acc + 5 * lda);
    for (int r = 0; r < mr; r++) {
        B_LOAD(b + (int64_t)r * bs);
        const float *ar = a + r;
        ACC_STEP(0, _mm512_set1_ps(ar[0]));
        ACC_STEP(1, _mm512_set1_ps(ar[R]));
        ACC_STEP(2, _mm512_set1_ps(ar[2 * R]));
        ACC_STEP(3, _mm512_set1_ps(ar[3 * R]));
        ACC_STEP(4, _mm512_set1_ps(ar[4 * R]));
        ACC_STEP(5, _mm512_set1_ps(ar[5 * R]));
    }
    ACC_STORE(0, acc), ACC_STORE(1, acc + lda), ACC_STORE(2, acc + 2 * lda);
    ACC_STORE(3, acc + 3 * lda), ACC_STORE(4, acc + 4 * lda), ACC_STORE(5, acc + 5 * lda);
}

/* 1 key x 64 columns: the same chains for keys past the last full 6. */
static inline __attribute__((always_inline)) void
tn_1x64(const float *a, int mr, const float *b, int64_t bs, float *acc, const __mmask16 *k) {
    ACC_DECL(0);
    ACC_LOAD(0, acc);
    for (int r = 0; r < mr; r++) {
        B_LOAD(b + (int64_t)r * bs);
        ACC_STEP(0, _mm512_set1_ps(a[r]));
    }
    ACC_STORE(0, acc);
}

static void acc_tn_avx512(const float *a, int R, int mr, int n, const float *b, int64_t bs, int N,
                          float *acc, int64_t lda) {
    for (int c0 = 0; c0 < N; c0 += 64) {
        __mmask16 k[4];
        col_masks(c0, N, k);
        int j = 0;
        for (; j + 6 <= n; j += 6)
            tn_6x64(a + (size_t)j * R, R, mr, b + c0, bs, acc + (int64_t)j * lda + c0, lda, k);
        for (; j < n; j++)
            tn_1x64(a + (size_t)j * R, mr, b + c0, bs, acc + (int64_t)j * lda + c0, k);
    }
}

/* 6 rows x 64 columns of o, accumulated over n keys:
 * o[u*ldo + c] += sum_j a[j*R + u] * b[j*bs + c], in increasing j. */
static inline __attribute__((always_inline)) void nn_6x64(const float *a, int R, int n,
                                                          const float *b, int64_t bs, float *o,
                                                          int ldo, const __mmask16 *k) {
    ACC_DECL(0);
    ACC_DECL(1);
    ACC_DECL(2);
    ACC_DECL(3);
    ACC_DECL(4);
    ACC_DECL(5);
    ACC_LOAD(0, o), ACC_LOAD(1, o + ldo), ACC_LOAD(2, o + 2 * ldo);
    ACC_LOAD(3, o + 3 * ldo), ACC_LOAD(4, o + 4 * ldo), ACC_LOAD(5, o + 5 * ldo);
    for (int j = 0; j < n; j++) {
        B_LOAD(b + (int64_t)j * bs);
        const float *aj = a + (size_t)j * R;
        ACC_STEP(0, _mm512_set1_ps(aj[0]));
        ACC_STEP(1, _mm512_set1_ps(aj[1]));
        ACC_STEP(2, _mm512_set1_ps(aj[2]));
        ACC_STEP(3, _mm512_set1_ps(aj[3]));
        ACC_STEP(4, _mm512_set1_ps(aj[4]));
        ACC_STEP(5, _mm512_set1_ps(aj[5]));
    }
    ACC_STORE(0, o), ACC_STORE(1, o + ldo), ACC_STORE(2, o + 2 * ldo);
    ACC_STORE(3, o + 3 * ldo), ACC_STORE(4, o + 4 * ldo), ACC_STORE(5, o + 5 * ldo);
}

static inline __attribute__((always_inline)) void
nn_1x64(const float *a, int R, int n, const float *b, int64_t bs, float *o, const __mmask16 *k) {
    ACC_DECL(0);
    ACC_LOAD(0, o);
    for (int j = 0; j < n; j++) {
        B_LOAD(b + (int64_t)j * bs);
        ACC_STEP(0, _mm512_set1_ps(a[(size_t)j * R]));
    }
    ACC_STORE(0, o);
}

static void acc_nn_avx512(const float *a, int R, int mr, int n, const float *b, int64_t bs, int N,
                          float *o, int ldo) {
    for (int c0 = 0; c0 < N; c0 += 64) {
        __mmask16 k[4];
        col_masks(c0, N, k);
        int r = 0;
        for (; r + 6 <= mr; r += 6)
            nn_6x64(a + r, R, n, b + c0, bs, o + (size_t)r * ldo + c0, ldo, k);
        for (; r < mr; r++)
            nn_1x64(a + r, R, n, b + c0, bs, o + (size_t)r * ldo + c0, k);
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
