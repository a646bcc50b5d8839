/* Scalar feature maps (kernels/feat_kernels.h): libm's expf, as the scalar
 * softmax kernels use. The reference twin of feat_avx2.c / feat_avx512.c. */
#include "kernels/feat_kernels.h"

#include <math.h>

static void elu1_scalar(const float *x, int64_t ldx, int64_t n, int64_t F, float *y,
                        float *colsum) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < F; d++) {
            const float v = x[i * ldx + d];
            y[i * F + d] = v > 0.0f ? v + 1.0f : expf(v);
            if (colsum) colsum[d] += y[i * F + d];
        }
}

static float perf_exp_scalar(float *u, int64_t n, int64_t F, const float *x, int64_t ldx,
                             int64_t D, float hs, int rowshift, float norm, float *colsum) {
    float emax = -INFINITY;
    /* pass 1: e_i into the caller's row (its max), h_i kept per row below */
    for (int64_t i = 0; i < n; i++) {
        float m = -INFINITY;
        for (int64_t r = 0; r < F; r++)
            m = fmaxf(m, u[i * F + r]);
        float s = 0.0f;
        for (int64_t d = 0; d < D; d++)
            s = fmaf(x[i * ldx + d], x[i * ldx + d], s);
        emax = fmaxf(emax, m - hs * s);
    }
    float c = emax;
    if (!isfinite(c)) c = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float *ui = u + i * F;
        float s = 0.0f;
        for (int64_t d = 0; d < D; d++)
            s = fmaf(x[i * ldx + d], x[i * ldx + d], s);
        const float h = hs * s;
        if (rowshift) {
            float m = -INFINITY;
            for (int64_t r = 0; r < F; r++)
                m = fmaxf(m, ui[r]);
            c = m - h;
            if (!isfinite(c)) c = 0.0f;
        }
        const float sub = h + c;
        for (int64_t r = 0; r < F; r++) {
            ui[r] = expf(ui[r] - sub) * norm;
            if (colsum) colsum[r] += ui[r];
        }
    }
    return emax;
}

static void ratio_scalar(float *o, int64_t ldo, int64_t n, int64_t Dv, const float *phi, int64_t F,
                         const float *z) {
    for (int64_t i = 0; i < n; i++) {
        float den = 0.0f;
        for (int64_t r = 0; r < F; r++)
            den = fmaf(phi[i * F + r], z[r], den);
        const float inv = den != 0.0f ? 1.0f / den : 0.0f;
        for (int64_t d = 0; d < Dv; d++)
            o[i * ldo + d] *= inv;
    }
}

static void apply_scalar(const float *phi, int64_t n, int64_t F, const float *S, int64_t lds,
                         const float *z, int64_t Dv, float *o, int64_t ldo) {
    for (int64_t i = 0; i < n; i++) {
        const float *pi = phi + i * F;
        float *oi = o + i * ldo;
        float den = 0.0f;
        for (int64_t r = 0; r < F; r++)
            den = fmaf(pi[r], z[r], den);
        const float inv = den != 0.0f ? 1.0f / den : 0.0f;
        for (int64_t d = 0; d < Dv; d++) {
            float a = 0.0f;
            for (int64_t r = 0; r < F; r++)
                a = fmaf(pi[r], S[r * lds + d], a);
            oi[d] = a * inv;
        }
    }
}

static void accum_scalar(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv,
                         int64_t Dv, float *S, int64_t lds) {
    for (int64_t r = 0; r < F; r++)
        for (int64_t d = 0; d < Dv; d++) {
            float a = 0.0f;
            for (int64_t j = 0; j < n; j++)
                a = fmaf(phi[j * F + r], v[j * ldv + d], a);
            S[r * lds + d] = a;
        }
}

static void proj_scalar(const float *x, int64_t ldx, int64_t n, int64_t D, const float *wt,
                        int64_t F, float s, float *u) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = 0; r < F; r++) {
            float a = 0.0f;
            for (int64_t d = 0; d < D; d++)
                a = fmaf(x[i * ldx + d], wt[d * F + r], a);
            u[i * F + r] = s * a;
        }
}

static void causal_scalar(const float *phiq, const float *phik, int64_t n, int64_t F, float e,
                          const float *P, int64_t lds, const float *v, int64_t ldv, int64_t Dv,
                          float *o, int64_t ldo, float *ws, const attn_feat_ahead *ahead) {
    float *a = ws; /* the masked block, row i holding j <= i */
    for (int64_t i = 0; i < n; i++) {
        const float *qi = phiq + i * F;
        float den = 0.0f;
        { /* this row's share of the rows asked for ahead */
            const char *pl[64];
            const int npl = attn__feat_ahead_lines(ahead, i, n, pl, 64);
            for (int k = 0; k < npl; k++)
                __builtin_prefetch(pl[k], 0, 2);
        }
        for (int64_t r = 0; r < F; r++)
            den = fmaf(qi[r], P[r * lds + Dv], den);
        for (int64_t j = 0; j <= i; j++) {
            float t = 0.0f;
            for (int64_t r = 0; r < F; r++)
                t = fmaf(qi[r], phik[j * F + r], t);
            a[j] = e * t;
            den += a[j];
        }
        const float inv = den != 0.0f ? 1.0f / den : 0.0f;
        for (int64_t d = 0; d < Dv; d++) {
            float t = 0.0f;
            for (int64_t r = 0; r < F; r++)
                t = fmaf(qi[r], P[r * lds + d], t);
            for (int64_t j = 0; j <= i; j++)
                t = fmaf(a[j], v[j * ldv + d], t);
            o[i * ldo + d] = t * inv;
        }
    }
}

static void fold_scalar(double *run, const float *st, double w, int64_t n, float *P) {
    for (int64_t e = 0; e < n; e++) {
        run[e] += w * (double)st[e];
        if (P) P[e] = (float)run[e];
    }
}

static void elu1_back_scalar(const float *x, int64_t ldx, int64_t n, int64_t F, const float *phi,
                             const float *dphi, float *dx, int64_t ldd) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < F; d++) {
            const float g = dphi[i * F + d];
            dx[i * ldd + d] = x[i * ldx + d] > 0.0f ? g : g * phi[i * F + d];
        }
}

/* The backward's float64 GEMMs (kernels/feat_bwd.inc) in plain doubles:
 * blocks of 4 rows x 4 columns. */
typedef double fb_vd;
#define FB_VW 1
#define FB_MR 4
#define FB_NV 4
#define FB_LOAD(p) (*(p))
#define FB_STORE(p, v) (*(p) = (v))
#define FB_SET1(x) (x)
#define FB_ZERO() 0.0
#define FB_FMA(a, b, c) ((a) * (b) + (c))
#include "kernels/feat_bwd.inc"

extern const attn_feat_kernels attn__feat_kernels_scalar;

static void accfold_scalar(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv,
                           int64_t Dv, const float *zs, double w, double *acc, const double *pre,
                           float *P, float *st) {
    attn__feat_accfold_plain(&attn__feat_kernels_scalar, phi, n, F, v, ldv, Dv, zs, w, acc, pre, P,
                             st);
}

const attn_feat_kernels attn__feat_kernels_scalar = {
    .elu1 = elu1_scalar,
    .perf_exp = perf_exp_scalar,
    .ratio = ratio_scalar,
    .apply = apply_scalar,
    .accum = accum_scalar,
    .proj = proj_scalar,
    .causal = causal_scalar,
    .fold = fold_scalar,
    .accfold = accfold_scalar,
    .proj64 = proj64,
    .bwd_query = bwd_query,
    .bwd_key = bwd_key,
    .elu1_back = elu1_back_scalar,
    .perf_back = perf_back,
};
