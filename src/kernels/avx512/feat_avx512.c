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
        if (i + 32 < n) /* rows come from memory once: ask for them ahead */
            for (int64_t d = 0; d < F; d += 16)
                _mm_prefetch((const char *)(xi + 32 * ldx + d), _MM_HINT_T0);
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

/* |x|^2 of a row, 16 lanes at a time, as one vector (its sum is the
 * caller's). */
ATTN_INLINE __m512 sumsq_v(const float *x, int64_t D) {
    __m512 s = _mm512_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= D; d += 16) {
        const __m512 v = _mm512_loadu_ps(x + d);
        s = _mm512_fmadd_ps(v, v, s);
    }
    if (d < D) {
        const __m512 v = _mm512_maskz_loadu_ps(tail16(D - d), x + d);
        s = _mm512_fmadd_ps(v, v, s);
    }
    return s;
}

/* One row's exponentials in place: u_r = exp(u_r - sub) * norm, added to
 * colsum (unless NULL). */
ATTN_INLINE void perf_exp_row(float *ui, int64_t F, __m512 sub, __m512 vn, float *colsum) {
    int64_t r = 0;
    for (; r + 16 <= F; r += 16) {
        const __m512 e = _mm512_mul_ps(exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(ui + r), sub)), vn);
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

/* h[i] = hs |x_i|^2 for n rows, and (rowshift) e[i] = max_r u_ir - h[i]:
 * each row's sums reduced in a loop of its own, so the rows' reductions
 * overlap instead of each waiting on the last. */
static void perf_rows_h(const float *x, int64_t ldx, int64_t D, float hs, const float *u, int64_t F,
                        int64_t n, float *h, float *e) {
    for (int64_t i = 0; i < n; i++)
        h[i] = hs * _mm512_reduce_add_ps(sumsq_v(x + i * ldx, D));
    if (e)
        for (int64_t i = 0; i < n; i++)
            e[i] = rowmax16(u + i * F, F) - h[i];
}

/* Rows in blocks of PEB: their h (and with rowshift each row's shift) first,
 * then the exponentials. Without rowshift the largest u_r - h over the n
 * rows is a vector of lanes (max_r u_r - h_i per lane) reduced once; h is
 * formed again in the second pass when n > PEB. */
#define PEB 256
static float perf_exp_avx512(float *u, int64_t n, int64_t F, const float *x, int64_t ldx,
                             int64_t D, float hs, int rowshift, float norm,
                             float *colsum) {
    float emax = -INFINITY, hb[PEB], eb[PEB];
    if (!rowshift) {
        __m512 vm = _mm512_set1_ps(-INFINITY);
        for (int64_t i0 = 0; i0 < n; i0 += PEB) {
            const int64_t nb = n - i0 < PEB ? n - i0 : PEB;
            perf_rows_h(x + i0 * ldx, ldx, D, hs, NULL, F, nb, hb, NULL);
            for (int64_t i = 0; i < nb; i++) {
                const __m512 h = _mm512_set1_ps(hb[i]);
                const float *ui = u + (i0 + i) * F;
                int64_t r = 0;
                for (; r + 16 <= F; r += 16)
                    vm = _mm512_max_ps(vm, _mm512_sub_ps(_mm512_loadu_ps(ui + r), h));
                if (r < F) {
                    const __mmask16 k = tail16(F - r);
                    vm = _mm512_mask_max_ps(vm, k, vm,
                                            _mm512_sub_ps(_mm512_maskz_loadu_ps(k, ui + r), h));
                }
            }
        }
        emax = _mm512_reduce_max_ps(vm);
    }
    const float c = isfinite(emax) ? emax : 0.0f;
    const __m512 vn = _mm512_set1_ps(norm);
    for (int64_t i0 = 0; i0 < n; i0 += PEB) {
        const int64_t nb = n - i0 < PEB ? n - i0 : PEB;
        if (rowshift || n > PEB)
            perf_rows_h(x + i0 * ldx, ldx, D, hs, u + i0 * F, F, nb, hb, rowshift ? eb : NULL);
        for (int64_t i = 0; i < nb; i++) {
            float ci = c;
            if (rowshift) {
                emax = fmaxf(emax, eb[i]);
                ci = isfinite(eb[i]) ? eb[i] : 0.0f;
            }
            perf_exp_row(u + (i0 + i) * F, F, _mm512_set1_ps(hb[i] + ci), vn, colsum);
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

static float dot16(const float *a, const float *b, int64_t n) {
    __m512 s = _mm512_setzero_ps();
    int64_t r = 0;
    for (; r + 16 <= n; r += 16)
        s = _mm512_fmadd_ps(_mm512_loadu_ps(a + r), _mm512_loadu_ps(b + r), s);
    if (r < n) {
        const __mmask16 m = tail16(n - r);
        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + r), _mm512_maskz_loadu_ps(m, b + r), s);
    }
    return _mm512_reduce_add_ps(s);
}

/* NR rows (1..4) times the state, columns [d0, d0 + 64) with masks m[4]:
 * 4 x NR accumulators, per feature 4 loads of the state row and NR
 * broadcasts for 4 NR FMAs; then scaled by inv[] and stored. */
ATTN_INLINE void apply_block(const float *phi, int64_t ldp, int64_t F, const float *S, int64_t lds,
                             int64_t d0, const __mmask16 m[4], int nr, const float *inv, float *o,
                             int64_t ldo) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            acc[i][c] = _mm512_setzero_ps();
    for (int64_t r = 0; r < F; r++) {
        const float *sr = S + r * lds + d0;
        __m512 s[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            s[c] = _mm512_maskz_loadu_ps(m[c], sr + 16 * c);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m512 b = _mm512_set1_ps(phi[i * ldp + r]);
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                acc[i][c] = _mm512_fmadd_ps(b, s[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
        const __m512 v = _mm512_set1_ps(inv[i]);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            _mm512_mask_storeu_ps(o + i * ldo + d0 + 16 * c, m[c], _mm512_mul_ps(acc[i][c], v));
    }
}

static void apply_avx512(const float *phi, int64_t n, int64_t F, const float *S, int64_t lds,
                         const float *z, int64_t Dv, float *o, int64_t ldo) {
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        const int nr = (int)(n - i0 < 4 ? n - i0 : 4);
        /* the output rows a few blocks ahead, for writing: their misses
         * overlap the products instead of stalling the stores */
        for (int64_t i = i0 + 8; i < i0 + 12 && i < n; i++)
            for (int64_t d = 0; d < Dv; d += 16)
                __builtin_prefetch(o + i * ldo + d, 1, 3);
        float inv[4];
        for (int i = 0; i < nr; i++) {
            const float den = dot16(phi + (i0 + i) * F, z, F);
            inv[i] = den != 0.0f ? 1.0f / den : 0.0f;
        }
        for (int64_t d0 = 0; d0 < Dv; d0 += 64) {
            __mmask16 m[4];
            for (int c = 0; c < 4; c++) {
                const int64_t left = Dv - d0 - 16 * c;
                m[c] = left <= 0 ? (__mmask16)0 : tail16(left);
            }
            if (nr == 4)
                apply_block(phi + i0 * F, F, F, S, lds, d0, m, 4, inv, o + i0 * ldo, ldo);
            else
                apply_block(phi + i0 * F, F, F, S, lds, d0, m, nr, inv, o + i0 * ldo, ldo);
        }
    }
}

static void proj_avx512(const float *x, int64_t ldx, int64_t n, int64_t D, const float *wt,
                        int64_t F, float s, float *u) {
    const float sc[4] = {s, s, s, s};
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        const int nr = (int)(n - i0 < 4 ? n - i0 : 4);
        for (int64_t r0 = 0; r0 < F; r0 += 64) {
            __mmask16 m[4];
            for (int c = 0; c < 4; c++) {
                const int64_t left = F - r0 - 16 * c;
                m[c] = left <= 0 ? (__mmask16)0 : tail16(left);
            }
            if (nr == 4)
                apply_block(x + i0 * ldx, ldx, D, wt, F, r0, m, 4, sc, u + i0 * F, F);
            else
                apply_block(x + i0 * ldx, ldx, D, wt, F, r0, m, nr, sc, u + i0 * F, F);
        }
    }
}

/* accfold's fold of a block of the state (NULL in accum: the block is
 * stored): acc += w st, P = (float)(pre + acc), rows of ld doubles. */
typedef struct fold_to {
    double w;
    double *acc;
    const double *pre;
    float *P;
    int64_t ld;
} fold_to;

/* Rows [r0, r0 + NR) of the state (NR <= 4), columns [d0, d0 + 64):
 * per key 4 loads of v_j and NR broadcasts of phi for 4 NR FMAs. pf: prefetch
 * v 32 rows ahead (the first sweep over the chunk, which reads it from
 * memory). Then stored to S (fo NULL) or folded (fo). */
ATTN_INLINE void accum_block(const float *phi, int64_t n, int64_t F, int64_t r0, const float *v,
                             int64_t ldv, int64_t d0, const __mmask16 m[4], int nr, int pf,
                             float *S, int64_t lds, const fold_to *fo) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            acc[i][c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j++) {
        const float *vj = v + j * ldv + d0;
        if (pf && j + 32 < n)
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                if (m[c]) _mm_prefetch((const char *)(vj + 32 * ldv + 16 * c), _MM_HINT_T0);
        __m512 x[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            x[c] = _mm512_maskz_loadu_ps(m[c], vj + 16 * c);
        const float *pj = phi + j * F + r0;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m512 b = _mm512_set1_ps(pj[i]);
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                acc[i][c] = _mm512_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
    if (!fo) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                _mm512_mask_storeu_ps(S + (r0 + i) * lds + d0 + 16 * c, m[c], acc[i][c]);
        }
        return;
    }
    const __m512d vw = _mm512_set1_pd(fo->w);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
        const int64_t o = (r0 + i) * fo->ld + d0;
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) { /* 8 lanes a half, as fold's */
                const __mmask8 k = (__mmask8)(m[c] >> (8 * h));
                const int64_t e = o + 16 * c + 8 * h;
                const __m256 xs =
                    h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[i][c]), 1))
                      : _mm512_castps512_ps256(acc[i][c]);
                const __m512d r =
                    _mm512_fmadd_pd(vw, _mm512_cvtps_pd(xs), _mm512_maskz_loadu_pd(k, fo->acc + e));
                _mm512_mask_storeu_pd(fo->acc + e, k, r);
                if (fo->P)
                    _mm256_mask_storeu_ps(
                        fo->P + e, k,
                        _mm512_cvtpd_ps(_mm512_add_pd(_mm512_maskz_loadu_pd(k, fo->pre + e), r)));
            }
    }
}

/* The state's blocks of 4 rows x 64 columns, stored to S (fo NULL) or
 * folded (fo): accum and accfold. */
ATTN_INLINE void accum_fold16(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv,
                              int64_t Dv, float *S, int64_t lds, const fold_to *fo) {
    for (int64_t d0 = 0; d0 < Dv; d0 += 64) {
        __mmask16 m[4];
        for (int c = 0; c < 4; c++) {
            const int64_t left = Dv - d0 - 16 * c;
            m[c] = left <= 0 ? (__mmask16)0 : tail16(left);
        }
        for (int64_t r0 = 0; r0 < F; r0 += 4) {
            const int nr = (int)(F - r0 < 4 ? F - r0 : 4), pf = r0 == 0;
            if (nr == 4)
                accum_block(phi, n, F, r0, v, ldv, d0, m, 4, pf, S, lds, fo);
            else
                accum_block(phi, n, F, r0, v, ldv, d0, m, nr, pf, S, lds, fo);
        }
    }
}

static void accum_avx512(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv,
                         int64_t Dv, float *S, int64_t lds) {
    accum_fold16(phi, n, F, v, ldv, Dv, S, lds, NULL);
}

/* accum and fold in one pass: the state's blocks are folded from the
 * registers (no round trip of st through memory), the column sums zs
 * (column Dv) one by one. */
static void accfold_avx512(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv,
                           int64_t Dv, const float *zs, double w, double *acc, const double *pre,
                           float *P, float *st) {
    (void)st;
    const int64_t Dv1 = Dv + 1;
    const fold_to fo = {w, acc, pre, P, Dv1};
    accum_fold16(phi, n, F, v, ldv, Dv, NULL, 0, &fo);
    for (int64_t r = 0; r < F; r++) {
        const int64_t e = r * Dv1 + Dv;
        acc[e] = fma(w, (double)zs[r], acc[e]);
        if (P) P[e] = (float)(pre[e] + acc[e]);
    }
}

/* The causal chunk (feat_kernels.h), 16 lanes. Scratch: z | kt = phik^T
 * [F][n16] (zero past n) | a = the masked block [n][n16]. */

/* Block rows [i0, i0 + NR) of a, column vectors [jg, jg + ncv) (ncv <= 4):
 * per feature ncv loads of kt and NR broadcasts of phiq; then e a masked to
 * j <= i (zeros above the diagonal, so the value pass may read them). */
ATTN_INLINE void causal_a_block(const float *phiq, int64_t F, const float *kt, int64_t n16,
                                int64_t i0, int nr, int64_t jg, int ncv, __m512 ve, float *a,
                                const char *const *pl, int npl) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            acc[i][c] = _mm512_setzero_ps();
    for (int64_t r = 0; r < F; r++) {
        if (!(r & 1) && r >> 1 < npl) /* a request every other feature */
            _mm_prefetch(pl[r >> 1], _MM_HINT_T0);
        const float *kr = kt + r * n16 + 16 * jg;
        __m512 x[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            x[c] = c < ncv ? _mm512_loadu_ps(kr + 16 * c) : _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m512 b = _mm512_set1_ps(phiq[(i0 + i) * F + r]);
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                if (c < ncv) acc[i][c] = _mm512_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
        const int64_t row = i0 + i;
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            if (c >= ncv) break;
            const int64_t jb = 16 * (jg + c), keep = row - jb + 1; /* lanes j <= row */
            const __mmask16 m = keep >= 16  ? (__mmask16)0xffff
                                : keep <= 0 ? (__mmask16)0
                                            : (__mmask16)((1u << keep) - 1u);
            _mm512_storeu_ps(a + row * n16 + jb, _mm512_maskz_mul_ps(m, acc[i][c], ve));
        }
    }
}

/* Rows [i0, i0 + NR) of the output, columns [d0, d0 + 64) with masks m[4]:
 * phiq times the prefix state, then the block's rows times the chunk's
 * values j < jmax (zeros above the diagonal), scaled by inv[] and stored. */
ATTN_INLINE void causal_o_block(const float *phiq, int64_t F, const float *P, int64_t lds,
                                const float *a, int64_t n16, const float *v, int64_t ldv,
                                int64_t i0, int nr, int64_t jmax, int64_t d0, const __mmask16 m[4],
                                const float *inv, float *o, int64_t ldo, const char *const *pl,
                                int npl) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            acc[i][c] = _mm512_setzero_ps();
    for (int64_t r = 0; r < F; r++) {
        const float *sr = P + r * lds + d0;
        __m512 x[4];
        if (!(r & 1) && r >> 1 < npl) /* a request every other feature (32 FMAs) */
            _mm_prefetch(pl[r >> 1], _MM_HINT_T0);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            x[c] = _mm512_maskz_loadu_ps(m[c], sr + 16 * c);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m512 b = _mm512_set1_ps(phiq[(i0 + i) * F + r]);
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                acc[i][c] = _mm512_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
    for (int64_t r = (F + 1) / 2; r < npl; r++)
        _mm_prefetch(pl[r], _MM_HINT_T0);
    for (int64_t j = 0; j < jmax; j++) {
        const float *vj = v + j * ldv + d0;
        __m512 x[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            x[c] = _mm512_maskz_loadu_ps(m[c], vj + 16 * c);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m512 b = _mm512_set1_ps(a[(i0 + i) * n16 + j]);
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                acc[i][c] = _mm512_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
        const __m512 w = _mm512_set1_ps(inv[i]);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            _mm512_mask_storeu_ps(o + (i0 + i) * ldo + d0 + 16 * c, m[c],
                                  _mm512_mul_ps(acc[i][c], w));
    }
}

/* kt[(r0 + b) * ldt + j0 + a] = x[(j0 + a) * F + r0 + b] for a < 16, b < 16:
 * one 16 x 16 block of phik transposed in registers (rows past nrow read
 * as zeros, columns past ncol neither read nor stored). */
static void transpose16(const float *x, int64_t F, int64_t nrow, int64_t ncol, float *kt,
                        int64_t ldt) {
    const __mmask16 cm = tail16(ncol);
    __m512 r[16], t[16];
#pragma GCC unroll 16
    for (int a = 0; a < 16; a++)
        r[a] = a < nrow ? _mm512_maskz_loadu_ps(cm, x + a * F) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int p = 0; p < 8; p++) { /* lanes: [r2p[4L+k], r2p+1[4L+k], ...] */
        t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) { /* r[4g + k]: rows 4g..4g+3 of column 4L + k */
        const __m512d lo0 = _mm512_castps_pd(t[4 * g]), lo1 = _mm512_castps_pd(t[4 * g + 2]);
        const __m512d hi0 = _mm512_castps_pd(t[4 * g + 1]), hi1 = _mm512_castps_pd(t[4 * g + 3]);
        r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo0, lo1));
        r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo0, lo1));
        r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi0, hi1));
        r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi0, hi1));
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        const __m512 vlo = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
        const __m512 vhi = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xdd);
        const __m512 wlo = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
        const __m512 whi = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xdd);
        const __m512 col[4] = {_mm512_shuffle_f32x4(vlo, wlo, 0x88),  /* column k */
                               _mm512_shuffle_f32x4(vhi, whi, 0x88),  /* 4 + k */
                               _mm512_shuffle_f32x4(vlo, wlo, 0xdd),  /* 8 + k */
                               _mm512_shuffle_f32x4(vhi, whi, 0xdd)}; /* 12 + k */
#pragma GCC unroll 4
        for (int l = 0; l < 4; l++)
            if (4 * l + k < ncol) _mm512_storeu_ps(kt + (4 * l + k) * ldt, col[l]);
    }
}

/* 1 / den of block rows [i0, i0 + nr) (0 where den = 0), den_i = phiq_i
 * . z plus the sum of row i of the masked block a (columns j <= i0 + i):
 * the 4 rows' sums in vectors, then reduced together. */
ATTN_INLINE void causal_inv4(const float *phiq, int64_t F, const float *z, const float *a,
                             int64_t n16, int64_t i0, int nr, float *inv) {
    __m512 s[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        s[i] = _mm512_setzero_ps();
    for (int64_t r = 0; r < F; r += 16) {
        const __mmask16 m = tail16(F - r);
        const __m512 zv = _mm512_maskz_loadu_ps(m, z + r);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            if (i < nr)
                s[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, phiq + i * F + r), zv, s[i]);
    }
    for (int64_t jb = 0; jb < i0 + nr; jb += 16)
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            if (i < nr && jb <= i0 + i)
                s[i] = _mm512_add_ps(s[i], _mm512_loadu_ps(a + i * n16 + jb));
    __m256 h[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        h[i] = _mm256_add_ps(_mm512_castps512_ps256(s[i]),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s[i]), 1)));
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
    const __m128 den = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    const __mmask8 nz = _mm_cmp_ps_mask(den, _mm_setzero_ps(), _CMP_NEQ_UQ);
    _mm_storeu_ps(inv, _mm_maskz_div_ps(nz, _mm_set1_ps(1.0f), den));
}

static void causal_avx512(const float *phiq, const float *phik, int64_t n, int64_t F, float e,
                          const float *P, int64_t lds, const float *v, int64_t ldv, int64_t Dv,
                          float *o, int64_t ldo, float *ws, const attn_feat_ahead *ahead) {
    const int64_t n16 = (n + 15) / 16 * 16;
    float *z = ws, *kt = ws + (F + 15) / 16 * 16, *a = kt + F * n16;
    for (int64_t r = 0; r < F; r++)
        z[r] = P[r * lds + Dv];
    for (int64_t j0 = 0; j0 < n16; j0 += 16) /* columns past n read as zeros */
        for (int64_t r0 = 0; r0 < F; r0 += 16)
            transpose16(phik + j0 * F + r0, F, n - j0, F - r0 < 16 ? F - r0 : 16,
                        kt + r0 * n16 + j0, n16);
    const __m512 ve = _mm512_set1_ps(e);
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        const int nr = (int)(n - i0 < 4 ? n - i0 : 4);
        const int64_t jmax = i0 + nr, nv = (jmax + 15) / 16;
        /* this block's share of the rows asked for ahead, one line every
         * other feature: half in the first score pass, the rest in the
         * first value pass (a faster rate waits on the miss buffers) */
        const char *pl[64];
        const int npl = attn__feat_ahead_lines(ahead, i0 / 4, (n + 3) / 4, pl, 64);
        const int ha = (int)((F + 1) / 2), na0 = npl < ha ? npl : ha;
        int na = na0; /* the first column group's pass only */
        for (int64_t jg = 0; jg < nv; jg += 4) {
            const int ncv = (int)(nv - jg < 4 ? nv - jg : 4);
            if (nr == 4) /* constant counts: the loops unrolled without tests */
                switch (ncv) {
                case 1:
                    causal_a_block(phiq, F, kt, n16, i0, 4, jg, 1, ve, a, pl, na);
                    break;
                case 2:
                    causal_a_block(phiq, F, kt, n16, i0, 4, jg, 2, ve, a, pl, na);
                    break;
                case 3:
                    causal_a_block(phiq, F, kt, n16, i0, 4, jg, 3, ve, a, pl, na);
                    break;
                default:
                    causal_a_block(phiq, F, kt, n16, i0, 4, jg, 4, ve, a, pl, na);
                    break;
                }
            else
                causal_a_block(phiq, F, kt, n16, i0, nr, jg, ncv, ve, a, pl, na);
            na = 0;
        }
        float inv[4];
        if (nr == 4)
            causal_inv4(phiq + i0 * F, F, z, a + i0 * n16, n16, i0, 4, inv);
        else
            causal_inv4(phiq + i0 * F, F, z, a + i0 * n16, n16, i0, nr, inv);
        for (int64_t d0 = 0; d0 < Dv; d0 += 64) {
            __mmask16 m[4];
            for (int c = 0; c < 4; c++) {
                const int64_t left = Dv - d0 - 16 * c;
                m[c] = left <= 0 ? (__mmask16)0 : tail16(left);
            }
            const int np = d0 ? 0 : npl - na0;
            if (nr == 4)
                causal_o_block(phiq, F, P, lds, a, n16, v, ldv, i0, 4, jmax, d0, m, inv, o, ldo,
                               pl + na0, np);
            else
                causal_o_block(phiq, F, P, lds, a, n16, v, ldv, i0, nr, jmax, d0, m, inv, o, ldo,
                               pl + na0, np);
        }
    }
}

static void fold_avx512(double *run, const float *st, double w, int64_t n, float *P) {
    const __m512d vw = _mm512_set1_pd(w);
    int64_t e = 0;
    for (; e < n; e += 8) {
        const __mmask8 m = n - e >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - e)) - 1u);
        const __m512d x = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, st + e));
        const __m512d r = _mm512_fmadd_pd(vw, x, _mm512_maskz_loadu_pd(m, run + e));
        _mm512_mask_storeu_pd(run + e, m, r);
        if (P) _mm256_mask_storeu_ps(P + e, m, _mm512_cvtpd_ps(r));
    }
}

/* Linear attention's chain rule, 16 features a vector. */
static void elu1_back_avx512(const float *x, int64_t ldx, int64_t n, int64_t F, const float *phi,
                             const float *dphi, float *dx, int64_t ldd) {
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < F; d += 16) {
            const __mmask16 m = tail16(F - d);
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + d);
            const __m512 g = _mm512_maskz_loadu_ps(m, dphi + i * F + d);
            const __m512 p = _mm512_maskz_loadu_ps(m, phi + i * F + d);
            const __mmask16 pos = _mm512_cmp_ps_mask(xv, zero, _CMP_GT_OQ);
            _mm512_mask_storeu_ps(dx + i * ldd + d, m,
                                  _mm512_mask_mov_ps(_mm512_mul_ps(g, p), pos, g));
        }
}

/* Transpose of the 8 x 8 doubles in r: unpack pairs, then 256-bit and
 * 128-bit lane shuffles (24 shuffles for 64 elements). */
static inline void t8x8_pd(__m512d r[8]) {
    __m512d t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm512_unpacklo_pd(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_pd(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) { /* t0,t2 / t1,t3 / t4,t6 / t5,t7 */
        u[4 * k + 0] = _mm512_shuffle_f64x2(t[4 * k], t[4 * k + 2], 0x88);
        u[4 * k + 1] = _mm512_shuffle_f64x2(t[4 * k], t[4 * k + 2], 0xdd);
        u[4 * k + 2] = _mm512_shuffle_f64x2(t[4 * k + 1], t[4 * k + 3], 0x88);
        u[4 * k + 3] = _mm512_shuffle_f64x2(t[4 * k + 1], t[4 * k + 3], 0xdd);
    }
    r[0] = _mm512_shuffle_f64x2(u[0], u[4], 0x88), r[4] = _mm512_shuffle_f64x2(u[0], u[4], 0xdd);
    r[2] = _mm512_shuffle_f64x2(u[1], u[5], 0x88), r[6] = _mm512_shuffle_f64x2(u[1], u[5], 0xdd);
    r[1] = _mm512_shuffle_f64x2(u[2], u[6], 0x88), r[5] = _mm512_shuffle_f64x2(u[2], u[6], 0xdd);
    r[3] = _mm512_shuffle_f64x2(u[3], u[7], 0x88), r[7] = _mm512_shuffle_f64x2(u[3], u[7], 0xdd);
}

/* The packing's transposes (kernels/feat_bwd.inc): blocks of FB_VW x FB_VW. */
#define FB_TRANSPOSE(r) t8x8_pd(r)
#define FB_LOAD_PS(p) _mm512_cvtps_pd(_mm256_loadu_ps(p))

/* The backward's float64 GEMMs (kernels/feat_bwd.inc): blocks of 8 rows x
 * 24 doubles, 24 zmm accumulators (3 loads and 8 broadcasts per 24 FMAs;
 * Dv + 1 = 65, padded to 72, is three whole blocks). */
typedef __m512d fb_vd;
#define FB_VW 8
#define FB_MR 8
#define FB_NV 3
#define FB_LOAD(p) _mm512_loadu_pd(p)
#define FB_STORE(p, v) _mm512_storeu_pd(p, v)
#define FB_SET1(x) _mm512_set1_pd(x)
#define FB_ZERO() _mm512_setzero_pd()
#define FB_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#include "kernels/feat_bwd.inc"

const attn_feat_kernels attn__feat_kernels_avx512 = {
    .elu1 = elu1_avx512,
    .perf_exp = perf_exp_avx512,
    .ratio = ratio_avx512,
    .apply = apply_avx512,
    .accum = accum_avx512,
    .proj = proj_avx512,
    .causal = causal_avx512,
    .fold = fold_avx512,
    .accfold = accfold_avx512,
    .proj64 = proj64,
    .bwd_query = bwd_query,
    .bwd_key = bwd_key,
    .elu1_back = elu1_back_avx512,
    .perf_back = perf_back,
};
