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
        if (rowshift || n > PEB)
            perf_rows_h8(x + i0 * ldx, ldx, D, hs, u + i0 * F, F, nb, hb, eb);
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
             const __m256i m[3], int nr, const float *inv, float *o, int64_t ldo) {
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
            s[c] = _mm256_maskload_ps(sr + 8 * c, m[c]);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m256 b = _mm256_broadcast_ss(phi + i * ldp + r);
#pragma GCC unroll 3
            for (int c = 0; c < 3; c++)
                acc[i][c] = _mm256_fmadd_ps(b, s[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
        const __m256 v = _mm256_set1_ps(inv[i]);
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            _mm256_maskstore_ps(o + i * ldo + d0 + 8 * c, m[c], _mm256_mul_ps(acc[i][c], v));
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
        for (int64_t d0 = 0; d0 < Dv; d0 += 24) {
            __m256i m[3];
            for (int c = 0; c < 3; c++) {
                const int64_t left = Dv - d0 - 8 * c;
                m[c] = left <= 0 ? _mm256_setzero_si256() : tail8(left);
            }
            if (nr == 4)
                apply_block8(phi + i0 * F, F, F, S, lds, d0, m, 4, inv, o + i0 * ldo, ldo);
            else
                apply_block8(phi + i0 * F, F, F, S, lds, d0, m, nr, inv, o + i0 * ldo, ldo);
        }
    }
}

/* Rows [r0, r0 + NR) of the state (NR <= 4), columns [d0, d0 + 24). */
static inline __attribute__((always_inline)) void
accum_block8(const float *phi, int64_t n, int64_t F, int64_t r0, const float *v, int64_t ldv,
             int64_t d0, const __m256i m[3], int nr, int pf, float *S, int64_t lds) {
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
            x[c] = _mm256_maskload_ps(vj + 8 * c, m[c]);
        const float *pj = phi + j * F + r0;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m256 b = _mm256_broadcast_ss(pj + i);
#pragma GCC unroll 3
            for (int c = 0; c < 3; c++)
                acc[i][c] = _mm256_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            _mm256_maskstore_ps(S + (r0 + i) * lds + d0 + 8 * c, m[c], acc[i][c]);
    }
}

static void accum_avx2(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv,
                       int64_t Dv, float *S, int64_t lds) {
    for (int64_t d0 = 0; d0 < Dv; d0 += 24) {
        __m256i m[3];
        for (int c = 0; c < 3; c++) {
            const int64_t left = Dv - d0 - 8 * c;
            m[c] = left <= 0 ? _mm256_setzero_si256() : tail8(left);
        }
        for (int64_t r0 = 0; r0 < F; r0 += 4) {
            const int nr = (int)(F - r0 < 4 ? F - r0 : 4), pf = r0 == 0;
            if (nr == 4)
                accum_block8(phi, n, F, r0, v, ldv, d0, m, 4, pf, S, lds);
            else
                accum_block8(phi, n, F, r0, v, ldv, d0, m, nr, pf, S, lds);
        }
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
                int64_t d0, const __m256i m[3], const float *inv, float *o, int64_t ldo,
                const char *const *pl, int npl) {
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
            x[c] = _mm256_maskload_ps(sr + 8 * c, m[c]);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m256 b = _mm256_broadcast_ss(phiq + (i0 + i) * F + r);
#pragma GCC unroll 3
            for (int c = 0; c < 3; c++)
                acc[i][c] = _mm256_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
    for (int64_t r = (F + 1) / 2; r < npl; r++)
        _mm_prefetch(pl[r], _MM_HINT_T0);
    for (int64_t j = 0; j < jmax; j++) {
        const float *vj = v + j * ldv + d0;
        __m256 x[3];
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            x[c] = _mm256_maskload_ps(vj + 8 * c, m[c]);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            if (i >= nr) break;
            const __m256 b = _mm256_broadcast_ss(a + (i0 + i) * n16 + j);
#pragma GCC unroll 3
            for (int c = 0; c < 3; c++)
                acc[i][c] = _mm256_fmadd_ps(b, x[c], acc[i][c]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i >= nr) break;
        const __m256 w = _mm256_set1_ps(inv[i]);
#pragma GCC unroll 3
        for (int c = 0; c < 3; c++)
            _mm256_maskstore_ps(o + (i0 + i) * ldo + d0 + 8 * c, m[c], _mm256_mul_ps(acc[i][c], w));
    }
}

static void proj_avx2(const float *x, int64_t ldx, int64_t n, int64_t D, const float *wt,
                      int64_t F, float s, float *u) {
    const float sc[4] = {s, s, s, s};
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        const int nr = (int)(n - i0 < 4 ? n - i0 : 4);
        for (int64_t r0 = 0; r0 < F; r0 += 24) {
            __m256i m[3];
            for (int c = 0; c < 3; c++) {
                const int64_t left = F - r0 - 8 * c;
                m[c] = left <= 0 ? _mm256_setzero_si256() : tail8(left);
            }
            if (nr == 4)
                apply_block8(x + i0 * ldx, ldx, D, wt, F, r0, m, 4, sc, u + i0 * F, F);
            else
                apply_block8(x + i0 * ldx, ldx, D, wt, F, r0, m, nr, sc, u + i0 * F, F);
        }
    }
}

static void causal_avx2(const float *phiq, const float *phik, int64_t n, int64_t F, float e,
                        const float *P, int64_t lds, const float *v, int64_t ldv, int64_t Dv,
                        float *o, int64_t ldo, float *ws, const attn_feat_ahead *ahead) {
    const int64_t n16 = (n + 15) / 16 * 16;
    float *z = ws, *kt = ws + (F + 15) / 16 * 16, *a = kt + F * n16;
    for (int64_t r = 0; r < F; r++)
        z[r] = P[r * lds + Dv];
    for (int64_t r = 0; r < F; r++)
        for (int64_t j = n; j < n16; j++)
            kt[r * n16 + j] = 0.0f;
    for (int64_t j = 0; j < n; j++)
        for (int64_t r = 0; r < F; r++)
            kt[r * n16 + j] = phik[j * F + r];
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
        for (int i = 0; i < nr; i++) {
            const int64_t row = i0 + i;
            __m256 t = _mm256_setzero_ps();
            for (int64_t jb = 0; jb <= row; jb += 8)
                t = _mm256_add_ps(t, _mm256_loadu_ps(a + row * n16 + jb));
            const float den = dot8(phiq + row * F, z, F) + hsum8(t);
            inv[i] = den != 0.0f ? 1.0f / den : 0.0f;
        }
        for (int64_t d0 = 0; d0 < Dv; d0 += 24) {
            __m256i m[3];
            for (int c = 0; c < 3; c++) {
                const int64_t left = Dv - d0 - 8 * c;
                m[c] = left <= 0 ? _mm256_setzero_si256() : tail8(left);
            }
            const int np = d0 ? 0 : npl - na0;
            if (nr == 4)
                causal_o_block8(phiq, F, P, lds, a, n16, v, ldv, i0, 4, jmax, d0, m, inv, o, ldo,
                                pl + na0, np);
            else
                causal_o_block8(phiq, F, P, lds, a, n16, v, ldv, i0, nr, jmax, d0, m, inv, o, ldo,
                                pl + na0, np);
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

static void perf_back_avx2(const float *x, int64_t ldx, int64_t n, int64_t D, const float *phi,
                           const float *dphi, int64_t F, const float *omega, double s, float *dx,
                           int64_t ldd) {
    const __m256d vs = _mm256_set1_pd(s);
    const __m128i idx = _mm_setr_epi32(0, 1, 2, 3);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t d0 = 0; d0 < D; d0 += 32) {
            __m128i m[8];
            int nc = 0;
            __m256d xs[8], acc[8];
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                const int64_t left = D - d0 - 4 * c;
                m[c] = _mm_cmpgt_epi32(_mm_set1_epi32((int)(left < 0 ? 0 : left > 4 ? 4 : left)),
                                       idx);
                if (left > 0) nc = c + 1;
                xs[c] = _mm256_mul_pd(
                    vs, _mm256_cvtps_pd(_mm_maskload_ps(x + i * ldx + d0 + 4 * c, m[c])));
                acc[c] = _mm256_setzero_pd();
            }
            for (int64_t r = 0; r < F; r++) {
                const __m256d t =
                    _mm256_set1_pd((double)dphi[i * F + r] * (double)phi[i * F + r]);
                const float *w = omega + r * D + d0;
#pragma GCC unroll 8
                for (int c = 0; c < 8; c++) {
                    if (c >= nc) break;
                    const __m256d wd = _mm256_cvtps_pd(_mm_maskload_ps(w + 4 * c, m[c]));
                    acc[c] = _mm256_fmadd_pd(t, _mm256_sub_pd(wd, xs[c]), acc[c]);
                }
            }
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                if (c >= nc) break;
                _mm_maskstore_ps(dx + i * ldd + d0 + 4 * c, m[c],
                                 _mm256_cvtpd_ps(_mm256_mul_pd(vs, acc[c])));
            }
        }
    }
}

#include "kernels/feat_bwd.inc"

extern const attn_feat_kernels attn__feat_kernels_avx2;

static void accfold_avx2(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv,
                        int64_t Dv, const float *zs, double w, double *acc, const double *pre,
                        float *P, float *st) {
    attn__feat_accfold_plain(&attn__feat_kernels_avx2, phi, n, F, v, ldv, Dv, zs, w, acc, pre, P, st);
}

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
    .perf_back = perf_back_avx2,
};
