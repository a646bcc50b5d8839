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

/* A column vector of a block: plain when the block's nc vectors are whole
 * (full, a constant at the call), masked otherwise. */
#define LOAD8(p, m, full) ((full) ? _mm256_loadu_ps(p) : _mm256_maskload_ps((p), (m)))
#define STORE8(p, m, x, full)                                                                      \
    ((full) ? _mm256_storeu_ps((p), (x)) : _mm256_maskstore_ps((p), (m), (x)))

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
        if (i + 32 < n) /* rows come from memory once: ask for them ahead */
            for (int64_t d = 0; d < F; d += 16)
                _mm_prefetch((const char *)(xi + 32 * ldx + d), _MM_HINT_T0);
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

/* h[i] = hs |x_i|^2 and e[i] = max_r u_ir - h[i] for n rows, each in a
 * loop of its own so the rows' reductions overlap (as the AVX-512 kernel). */
static void perf_rows_h8(const float *x, int64_t ldx, int64_t D, float hs, const float *u,
                         int64_t F, int64_t n, float *h, float *e) {
    for (int64_t i = 0; i < n; i++)
        h[i] = hs * sumsq8(x + i * ldx, D);
    for (int64_t i = 0; i < n; i++)
        e[i] = rowmax8(u + i * F, F) - h[i];
}

#define PEB 256
static float perf_exp_avx2(float *u, int64_t n, int64_t F, const float *x, int64_t ldx, int64_t D,
                           float hs, int rowshift, float norm, float *colsum) {
    float emax = -INFINITY, hb[PEB], eb[PEB];
    if (!rowshift)
        for (int64_t i0 = 0; i0 < n; i0 += PEB) {
            const int64_t nb = n - i0 < PEB ? n - i0 : PEB;
            perf_rows_h8(x + i0 * ldx, ldx, D, hs, u + i0 * F, F, nb, hb, eb);
            for (int64_t i = 0; i < nb; i++)
                emax = fmaxf(emax, eb[i]);
        }
    const float c0 = isfinite(emax) ? emax : 0.0f;
    const __m256 vn = _mm256_set1_ps(norm);
    for (int64_t i0 = 0; i0 < n; i0 += PEB) {
        const int64_t nb = n - i0 < PEB ? n - i0 : PEB;
        if (rowshift || n > PEB) perf_rows_h8(x + i0 * ldx, ldx, D, hs, u + i0 * F, F, nb, hb, eb);
        for (int64_t i = 0; i < nb; i++) {
            float *ui = u + (i0 + i) * F, c = c0;
            if (rowshift) {
                emax = fmaxf(emax, eb[i]);
                c = isfinite(eb[i]) ? eb[i] : 0.0f;
            }
            const __m256 sub = _mm256_set1_ps(hb[i] + c);
            int64_t r = 0;
            for (; r + 8 <= F; r += 8) {
                const __m256 e =
                    _mm256_mul_ps(exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(ui + r), sub)), vn);
                _mm256_storeu_ps(ui + r, e);
                if (colsum)
                    _mm256_storeu_ps(colsum + r, _mm256_add_ps(_mm256_loadu_ps(colsum + r), e));
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

static float dot8(const float *a, const float *b, int64_t n) {
    __m256 s = _mm256_setzero_ps();
    int64_t r = 0;
    for (; r + 8 <= n; r += 8)
        s = _mm256_fmadd_ps(_mm256_loadu_ps(a + r), _mm256_loadu_ps(b + r), s);
    if (r < n) {
        const __m256i m = tail8(n - r);
        s = _mm256_fmadd_ps(_mm256_maskload_ps(a + r, m), _mm256_maskload_ps(b + r, m), s);
    }
    return hsum8(s);
}

/* NR rows (1..4) times the state, columns [d0, d0 + 24) with masks m[3]:
 * 12 accumulators of the 16 ymm registers, per feature 3 loads of the
 * state row and NR broadcasts. */
static inline __attribute__((always_inline)) void
apply_block8(const float *phi, int64_t ldp, int64_t F, const float *S, int64_t lds, int64_t d0,
             const __m256i m[3], int nr, int nc, int full, const float *inv, float *o,
             int64_t ldo) {
    __m256 acc[4][3];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            acc[i][c] = _mm256_setzero_ps();
    for (int64_t r = 0; r < F; r++) {
        const float *sr = S + r * lds + d0;
        __m256 s[3];
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            s[c] = c >= nc ? _mm256_setzero_ps() : LOAD8(sr + 8 * c, m[c], full);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m256 b = _mm256_broadcast_ss(phi + i * ldp + r);
#pragma GCC unroll 3
            for (int c = 0; c < 3; c++)
                if (c < nc) acc[i][c] = _mm256_fmadd_ps(b, s[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
        const __m256 v = _mm256_set1_ps(inv[i]);
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            if (c < nc) STORE8(o + i * ldo + d0 + 8 * c, m[c], _mm256_mul_ps(acc[i][c], v), full);
    }
}

/* NR rows (phi, row stride ldp, K terms) times all W columns of S (row
 * stride lds) in blocks of 24 columns, scaled by inv[] into o: apply and
 * the projection. Whole blocks load and store plainly, a block of 2
 * column vectors computes 2. */
static inline __attribute__((always_inline)) void
apply_cols8(const float *phi, int64_t ldp, int64_t K, const float *S, int64_t lds, int64_t W,
            int nr, const float *inv, float *o, int64_t ldo) {
    for (int64_t d0 = 0; d0 < W; d0 += 24) {
        __m256i m[3];
        for (int c = 0; c < 3; c++) {
            const int64_t left = W - d0 - 8 * c;
            m[c] = left <= 0 ? _mm256_setzero_si256() : tail8(left);
        }
        const int nc = (int)((W - d0 + 7) / 8 < 3 ? (W - d0 + 7) / 8 : 3);
        const int whole = W - d0 >= 8 * nc;
        if (nr == 4 && nc == 3 && whole)
            apply_block8(phi, ldp, K, S, lds, d0, m, 4, 3, 1, inv, o, ldo);
        else if (nr == 4 && nc == 2 && whole)
            apply_block8(phi, ldp, K, S, lds, d0, m, 4, 2, 1, inv, o, ldo);
        else
            apply_block8(phi, ldp, K, S, lds, d0, m, nr, nc, 0, inv, o, ldo);
    }
}

static void apply_avx2(const float *phi, int64_t n, int64_t F, const float *S, int64_t lds,
                       const float *z, int64_t Dv, float *o, int64_t ldo) {
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        const int nr = (int)(n - i0 < 4 ? n - i0 : 4);
        float inv[4];
        for (int i = 0; i < nr; i++) {
            const float den = dot8(phi + (i0 + i) * F, z, F);
            inv[i] = den != 0.0f ? 1.0f / den : 0.0f;
        }
        apply_cols8(phi + i0 * F, F, F, S, lds, Dv, nr, inv, o + i0 * ldo, ldo);
    }
}

/* accfold's fold of a block of the state (NULL in accum: the block is
 * stored): acc += w st, P = (float)(pre + acc), rows of ld doubles, w
 * columns of state (Dv). */
typedef struct fold_to8 {
    __m256d vw;
    double wd;
    double *acc;
    const double *pre;
    float *P;
    int64_t ld, w;
} fold_to8;

/* Rows [r0, r0 + NR) of the state (NR <= 4), columns [d0, d0 + 24). */
static inline __attribute__((always_inline)) void
accum_block8(const float *phi, int64_t n, int64_t F, int64_t r0, const float *v, int64_t ldv,
             int64_t d0, const __m256i m[3], int nr, int nc, int full, int pf, float *S,
             int64_t lds, const fold_to8 *fo) {
    __m256 acc[4][3];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            acc[i][c] = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; j++) {
        const float *vj = v + j * ldv + d0;
        if (pf && j + 32 < n) _mm_prefetch((const char *)(vj + 32 * ldv), _MM_HINT_T0);
        __m256 x[3];
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            x[c] = c >= nc ? _mm256_setzero_ps() : LOAD8(vj + 8 * c, m[c], full);
        const float *pj = phi + j * F + r0;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m256 b = _mm256_broadcast_ss(pj + i);
#pragma GCC unroll 3
            for (int c = 0; c < 3; c++)
                if (c < nc) acc[i][c] = _mm256_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            if (c < nc) {
                if (!fo) {
                    STORE8(S + (r0 + i) * lds + d0 + 8 * c, m[c], acc[i][c], full);
                    continue;
                }
                /* accfold: acc += w st and P = (float)(pre + acc), 4 lanes a
                 * half, as fold_avx2 (whole halves; a ragged edge by lane) */
                const int64_t e0 = (r0 + i) * fo->ld + d0 + 8 * c;
                const int64_t left = fo->w - d0 - 8 * c;
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    const __m128 xs =
                        h ? _mm256_extractf128_ps(acc[i][c], 1) : _mm256_castps256_ps128(acc[i][c]);
                    const int64_t e = e0 + 4 * h;
                    if (full || left - 4 * h >= 4) {
                        const __m256d r = _mm256_fmadd_pd(fo->vw, _mm256_cvtps_pd(xs),
                                                          _mm256_loadu_pd(fo->acc + e));
                        _mm256_storeu_pd(fo->acc + e, r);
                        if (fo->P)
                            _mm_storeu_ps(fo->P + e, _mm256_cvtpd_ps(_mm256_add_pd(
                                                         _mm256_loadu_pd(fo->pre + e), r)));
                    } else {
                        float xv[4];
                        _mm_storeu_ps(xv, xs);
                        for (int64_t l = 0; l < left - 4 * h; l++) {
                            fo->acc[e + l] = fma(fo->wd, (double)xv[l], fo->acc[e + l]);
                            if (fo->P) fo->P[e + l] = (float)(fo->pre[e + l] + fo->acc[e + l]);
                        }
                    }
                }
            }
    }
}

static inline __attribute__((always_inline)) void accum_fold8(const float *phi, int64_t n,
                                                              int64_t F, const float *v,
                                                              int64_t ldv, int64_t Dv, float *S,
                                                              int64_t lds, const fold_to8 *fo) {
    for (int64_t d0 = 0; d0 < Dv; d0 += 24) {
        __m256i m[3];
        for (int c = 0; c < 3; c++) {
            const int64_t left = Dv - d0 - 8 * c;
            m[c] = left <= 0 ? _mm256_setzero_si256() : tail8(left);
        }
        for (int64_t r0 = 0; r0 < F; r0 += 4) {
            const int nr = (int)(F - r0 < 4 ? F - r0 : 4), pf = r0 == 0;
            const int nc = (int)((Dv - d0 + 7) / 8 < 3 ? (Dv - d0 + 7) / 8 : 3);
            const int whole = Dv - d0 >= 8 * nc;
            if (nr == 4 && nc == 3 && whole)
                accum_block8(phi, n, F, r0, v, ldv, d0, m, 4, 3, 1, pf, S, lds, fo);
            else if (nr == 4 && nc == 2 && whole)
                accum_block8(phi, n, F, r0, v, ldv, d0, m, 4, 2, 1, pf, S, lds, fo);
            else
                accum_block8(phi, n, F, r0, v, ldv, d0, m, nr, nc, 0, pf, S, lds, fo);
        }
    }
}

static void accum_avx2(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv,
                       int64_t Dv, float *S, int64_t lds) {
    accum_fold8(phi, n, F, v, ldv, Dv, S, lds, NULL);
}

/* accum and fold in one pass (the state folded from the registers), the
 * column sums zs (column Dv) one by one. */
static void accfold_avx2(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv,
                         int64_t Dv, const float *zs, double w, double *acc, const double *pre,
                         float *P, float *st) {
    (void)st;
    const int64_t Dv1 = Dv + 1;
    const fold_to8 fo = {_mm256_set1_pd(w), w, acc, pre, P, Dv1, Dv};
    accum_fold8(phi, n, F, v, ldv, Dv, NULL, 0, &fo);
    for (int64_t r = 0; r < F; r++) {
        const int64_t e = r * Dv1 + Dv;
        acc[e] = fma(w, (double)zs[r], acc[e]);
        if (P) P[e] = (float)(pre[e] + acc[e]);
    }
}

/* 4 doubles a vector: columns [d0, d0 + 32) of one row in 8 ymm
 * accumulators; omega's row converted to double as it is loaded. */
/* The causal chunk (feat_kernels.h), 8 lanes. Scratch: z | kt = phik^T
 * [F][n16] (zero past n) | a = the masked block [n][n16]. */

/* Block rows [i0, i0 + NR) of a, column vectors [jg, jg + ncv) (ncv <= 3),
 * times e, masked to j <= i (zeros above the diagonal). */
static inline __attribute__((always_inline)) void
causal_a_block8(const float *phiq, int64_t F, const float *kt, int64_t n16, int64_t i0, int nr,
                int64_t jg, int ncv, __m256 ve, float *a, const char *const *pl, int npl) {
    __m256 acc[4][3];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            acc[i][c] = _mm256_setzero_ps();
    for (int64_t r = 0; r < F; r++) {
        if (!(r & 1) && r >> 1 < npl) /* a request every other feature */
            _mm_prefetch(pl[r >> 1], _MM_HINT_T0);
        const float *kr = kt + r * n16 + 8 * jg;
        __m256 x[3];
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            x[c] = c < ncv ? _mm256_loadu_ps(kr + 8 * c) : _mm256_setzero_ps();
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m256 b = _mm256_broadcast_ss(phiq + (i0 + i) * F + r);
#pragma GCC unroll 3
            for (int c = 0; c < 3; c++)
                if (c < ncv) acc[i][c] = _mm256_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
        const int64_t row = i0 + i;
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++) {
            if (c >= ncv) break;
            const int64_t jb = 8 * (jg + c), keep = row - jb + 1; /* lanes j <= row */
            const __m256i m = _mm256_cmpgt_epi32(
                _mm256_set1_epi32((int)(keep > 8 ? 8 : keep < 0 ? 0 : keep)), idx);
            _mm256_storeu_ps(a + row * n16 + jb,
                             _mm256_and_ps(_mm256_castsi256_ps(m), _mm256_mul_ps(acc[i][c], ve)));
        }
    }
}

/* Output rows [i0, i0 + NR), columns [d0, d0 + 24) with masks m[3]: phiq
 * times the prefix state, then the block's rows times the values j < jmax. */
static inline __attribute__((always_inline)) void
causal_o_block8(const float *phiq, int64_t F, const float *P, int64_t lds, const float *a,
                int64_t n16, const float *v, int64_t ldv, int64_t i0, int nr, int64_t jmax,
                int64_t d0, const __m256i m[3], int nc, int full, const float *inv, float *o,
                int64_t ldo, const char *const *pl, int npl) {
    __m256 acc[4][3];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            acc[i][c] = _mm256_setzero_ps();
    for (int64_t r = 0; r < F; r++) {
        const float *sr = P + r * lds + d0;
        __m256 x[3];
        if (!(r & 1) && r >> 1 < npl) _mm_prefetch(pl[r >> 1], _MM_HINT_T0);
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            x[c] = c >= nc ? _mm256_setzero_ps() : LOAD8(sr + 8 * c, m[c], full);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m256 b = _mm256_broadcast_ss(phiq + (i0 + i) * F + r);
#pragma GCC unroll 3
            for (int c = 0; c < 3; c++)
                if (c < nc) acc[i][c] = _mm256_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
    for (int64_t r = (F + 1) / 2; r < npl; r++)
        _mm_prefetch(pl[r], _MM_HINT_T0);
    for (int64_t j = 0; j < jmax; j++) {
        const float *vj = v + j * ldv + d0;
        __m256 x[3];
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            x[c] = c >= nc ? _mm256_setzero_ps() : LOAD8(vj + 8 * c, m[c], full);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m256 b = _mm256_broadcast_ss(a + (i0 + i) * n16 + j);
#pragma GCC unroll 3
            for (int c = 0; c < 3; c++)
                if (c < nc) acc[i][c] = _mm256_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
        const __m256 w = _mm256_set1_ps(inv[i]);
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            if (c < nc)
                STORE8(o + (i0 + i) * ldo + d0 + 8 * c, m[c], _mm256_mul_ps(acc[i][c], w), full);
    }
}

static void proj_avx2(const float *x, int64_t ldx, int64_t n, int64_t D, const float *wt,
                      int64_t F, float s, float *u) {
    const float sc[4] = {s, s, s, s};
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        const int nr = (int)(n - i0 < 4 ? n - i0 : 4);
        apply_cols8(x + i0 * ldx, ldx, D, wt, F, F, nr, sc, u + i0 * F, F);
    }
}

/* kt[(r0 + b) * ldt + j0 + a] = x[(j0 + a) * F + r0 + b] for a < 8, b < 8:
 * one 8 x 8 block of phik transposed in registers (rows past nrow read as
 * zeros, columns past ncol neither read nor stored). */
static void transpose8(const float *x, int64_t F, int64_t nrow, int64_t ncol, float *kt,
                       int64_t ldt) {
    const __m256i cm = tail8(ncol);
    __m256 r[8], t[8];
#pragma GCC unroll 8
    for (int a = 0; a < 8; a++)
        r[a] = a < nrow ? _mm256_maskload_ps(x + a * F, cm) : _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) { /* [r2p[0], r2p+1[0], r2p[1], r2p+1[1] | same for 4..5] */
        t[2 * p] = _mm256_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm256_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++) { /* columns k, k + 4 of rows 4g..4g+3 in each lane half */
        r[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        r[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
        r[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        r[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        const __m256 lo = _mm256_permute2f128_ps(r[k], r[4 + k], 0x20); /* column k */
        const __m256 hi = _mm256_permute2f128_ps(r[k], r[4 + k], 0x31); /* column 4 + k */
        if (k < ncol) _mm256_storeu_ps(kt + k * ldt, lo);
        if (4 + k < ncol) _mm256_storeu_ps(kt + (4 + k) * ldt, hi);
    }
}

/* 1 / den of block rows [i0, i0 + nr) (0 where den = 0): phiq_i . z plus
 * the sum of row i of the masked block (columns j <= i0 + i), the 4 rows'
 * sums in vectors reduced together (as the AVX-512 kernel). */
static inline __attribute__((always_inline)) void causal_inv4_8(const float *phiq, int64_t F,
                                                                const float *z, const float *a,
                                                                int64_t n16, int64_t i0, int nr,
                                                                float *inv) {
    __m256 s[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        s[i] = _mm256_setzero_ps();
    for (int64_t r = 0; r < F; r += 8) {
        const __m256i m = tail8(F - r);
        const __m256 zv = _mm256_maskload_ps(z + r, m);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            if (i < nr) s[i] = _mm256_fmadd_ps(_mm256_maskload_ps(phiq + i * F + r, m), zv, s[i]);
    }
    for (int64_t jb = 0; jb < i0 + nr; jb += 8)
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            if (i < nr && jb <= i0 + i)
                s[i] = _mm256_add_ps(s[i], _mm256_loadu_ps(a + i * n16 + jb));
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
    const __m128 den = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    const __m128 nz = _mm_cmpneq_ps(den, _mm_setzero_ps());
    _mm_storeu_ps(inv, _mm_and_ps(nz, _mm_div_ps(_mm_set1_ps(1.0f), den)));
}

static void causal_avx2(const float *phiq, const float *phik, int64_t n, int64_t F, float e,
                        const float *P, int64_t lds, const float *v, int64_t ldv, int64_t Dv,
                        float *o, int64_t ldo, float *ws, const attn_feat_ahead *ahead) {
    const int64_t n16 = (n + 15) / 16 * 16;
    float *z = ws, *kt = ws + (F + 15) / 16 * 16, *a = kt + F * n16;
    for (int64_t r = 0; r < F; r++)
        z[r] = P[r * lds + Dv];
    for (int64_t j0 = 0; j0 < n16; j0 += 8) /* columns past n read as zeros */
        for (int64_t r0 = 0; r0 < F; r0 += 8)
            transpose8(phik + j0 * F + r0, F, n - j0, F - r0 < 8 ? F - r0 : 8, kt + r0 * n16 + j0,
                       n16);
    const __m256 ve = _mm256_set1_ps(e);
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        const int nr = (int)(n - i0 < 4 ? n - i0 : 4);
        const int64_t jmax = i0 + nr, nv = (jmax + 7) / 8;
        /* this block's share of the rows asked for ahead, one line every
         * other feature: half in the first score pass, the rest in the
         * first value pass (as the AVX-512 kernel) */
        const char *pl[64];
        const int npl = attn__feat_ahead_lines(ahead, i0 / 4, (n + 3) / 4, pl, 64);
        const int ha = (int)((F + 1) / 2), na0 = npl < ha ? npl : ha;
        int na = na0;
        for (int64_t jg = 0; jg < nv; jg += 3) {
            const int ncv = (int)(nv - jg < 3 ? nv - jg : 3);
            if (nr == 4)
                causal_a_block8(phiq, F, kt, n16, i0, 4, jg, ncv, ve, a, pl, na);
            else
                causal_a_block8(phiq, F, kt, n16, i0, nr, jg, ncv, ve, a, pl, na);
            na = 0;
        }
        float inv[4];
        if (nr == 4)
            causal_inv4_8(phiq + i0 * F, F, z, a + i0 * n16, n16, i0, 4, inv);
        else
            causal_inv4_8(phiq + i0 * F, F, z, a + i0 * n16, n16, i0, nr, inv);
        for (int64_t d0 = 0; d0 < Dv; d0 += 24) {
            __m256i m[3];
            for (int c = 0; c < 3; c++) {
                const int64_t left = Dv - d0 - 8 * c;
                m[c] = left <= 0 ? _mm256_setzero_si256() : tail8(left);
            }
            const int np = d0 ? 0 : npl - na0,
                      nc = (int)((Dv - d0 + 7) / 8 < 3 ? (Dv - d0 + 7) / 8 : 3);
            const int whole = Dv - d0 >= 8 * nc;
            if (nr == 4 && nc == 3 && whole)
                causal_o_block8(phiq, F, P, lds, a, n16, v, ldv, i0, 4, jmax, d0, m, 3, 1, inv, o,
                                ldo, pl + na0, np);
            else if (nr == 4 && nc == 2 && whole)
                causal_o_block8(phiq, F, P, lds, a, n16, v, ldv, i0, 4, jmax, d0, m, 2, 1, inv, o,
                                ldo, pl + na0, np);
            else
                causal_o_block8(phiq, F, P, lds, a, n16, v, ldv, i0, nr, jmax, d0, m, nc, 0, inv, o,
                                ldo, pl + na0, np);
        }
    }
}

static void fold_avx2(double *run, const float *st, double w, int64_t n, float *P) {
    const __m256d vw = _mm256_set1_pd(w);
    int64_t e = 0;
    for (; e + 4 <= n; e += 4) {
        const __m256d r =
            _mm256_fmadd_pd(vw, _mm256_cvtps_pd(_mm_loadu_ps(st + e)), _mm256_loadu_pd(run + e));
        _mm256_storeu_pd(run + e, r);
        if (P) _mm_storeu_ps(P + e, _mm256_cvtpd_ps(r));
    }
    for (; e < n; e++) {
        run[e] = fma(w, (double)st[e], run[e]);
        if (P) P[e] = (float)run[e];
    }
}

/* Linear attention's chain rule, 8 features a vector. */
static void elu1_back_avx2(const float *x, int64_t ldx, int64_t n, int64_t F, const float *phi,
                           const float *dphi, float *dx, int64_t ldd) {
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < F; d += 8) {
            const __m256i m = tail8(F - d);
            const __m256 xv = _mm256_maskload_ps(x + i * ldx + d, m);
            const __m256 g = _mm256_maskload_ps(dphi + i * F + d, m);
            const __m256 p = _mm256_maskload_ps(phi + i * F + d, m);
            const __m256 pos = _mm256_cmp_ps(xv, zero, _CMP_GT_OQ);
            _mm256_maskstore_ps(dx + i * ldd + d, m, _mm256_blendv_ps(_mm256_mul_ps(g, p), g, pos));
        }
}

/* Transpose of the 4 x 4 doubles in r. */
static inline void t4x4_pd(__m256d r[4]) {
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20), r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20), r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

/* The packing's transposes (kernels/feat_bwd.inc): blocks of FB_VW x FB_VW. */
#define FB_TRANSPOSE(r) t4x4_pd(r)
#define FB_LOAD_PS(p) _mm256_cvtps_pd(_mm_loadu_ps(p))

/* The backward's float64 GEMMs (kernels/feat_bwd.inc): blocks of 4 rows x
 * 12 doubles, 12 ymm accumulators. */
typedef __m256d fb_vd;
#define FB_VW 4
#define FB_MR 4
#define FB_NV 3
#define FB_LOAD(p) _mm256_loadu_pd(p)
#define FB_STORE(p, v) _mm256_storeu_pd(p, v)
#define FB_SET1(x) _mm256_set1_pd(x)
#define FB_ZERO() _mm256_setzero_pd()
#define FB_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#include "kernels/feat_bwd.inc"

const attn_feat_kernels attn__feat_kernels_avx2 = {
    .elu1 = elu1_avx2,
    .perf_exp = perf_exp_avx2,
    .ratio = ratio_avx2,
    .apply = apply_avx2,
    .accum = accum_avx2,
    .proj = proj_avx2,
    .causal = causal_avx2,
    .fold = fold_avx2,
    .accfold = accfold_avx2,
    .proj64 = proj64,
    .bwd_query = bwd_query,
    .bwd_key = bwd_key,
    .elu1_back = elu1_back_avx2,
    .perf_back = perf_back,
};
