/* Nystrom attention (non-causal, forward): softmax(Q K^T) approximated
 * through L landmarks, the means of L contiguous segments of the queries
 * and of the keys:
 *   out = F Z W,  F = softmax(s Q K~^T) [T, L],  A = softmax(s Q~ K~^T) [L, L],
 *   Z ~ pinv(A) (the Nystromformer iteration),   W = softmax(s Q~ K^T) V [L, Dv].
 * Per head: the [L, S] landmark-to-key weights, the [L, L] matrices, then
 * the queries in chunks (parallel). Memory O(L * (S + L)); nothing T x S. */
#include "approx/approx.h"
#include "nn/nn.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* Row softmax in place over rows x [n, m] (row stride m). */
static void softmax_rows(float *x, int64_t n, int64_t m) {
    for (int64_t i = 0; i < n; i++) {
        float *r = x + i * m, mx = -INFINITY, sum = 0.0f;
        for (int64_t j = 0; j < m; j++)
            mx = fmaxf(mx, r[j]);
        for (int64_t j = 0; j < m; j++)
            sum += r[j] = expf(r[j] - mx);
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < m; j++)
            r[j] *= inv;
    }
}

/* Means of L segments of the n rows x (row stride ld) into lm [L, D]. */
static void segment_means(const float *x, int64_t ld, int64_t n, int64_t D, int64_t L, float *lm) {
    for (int64_t l = 0; l < L; l++) {
        const int64_t r0 = l * n / L, r1 = (l + 1) * n / L;
        float *o = lm + l * D;
        memset(o, 0, (size_t)D * sizeof(float));
        for (int64_t r = r0; r < r1; r++)
            for (int64_t d = 0; d < D; d++)
                o[d] += x[r * ld + d];
        const float inv = 1.0f / (float)(r1 - r0);
        for (int64_t d = 0; d < D; d++)
            o[d] *= inv;
    }
}

/* c[L, L] = alpha a b in float64 (i-k-j order: rows of b streamed). */
static void dmm(const double *a, const double *b, double alpha, double *c, int64_t L) {
    for (int64_t i = 0; i < L; i++) {
        double *ci = c + i * L;
        memset(ci, 0, (size_t)L * sizeof *ci);
        for (int64_t k = 0; k < L; k++) {
            const double t = alpha * a[i * L + k];
            const double *bk = b + k * L;
            for (int64_t j = 0; j < L; j++)
                ci[j] += t * bk[j];
        }
    }
}

/* A = softmax(scale ql kl^T) [L, L] and z (fp32 out) ~ pinv(A) by `iters`
 * steps of the Nystromformer iteration Z <- Z/4 (13I - AZ (15I - AZ (7I - AZ)))
 * from Z0 = A^T / (max row sum * max column sum), all in float64: near a
 * singular A (landmarks alike) the pseudo-inverse amplifies the rounding of
 * A and of every step (three products with AZ each) well past the fp32
 * error of the other products. O(L^2 D + L^3 iters) beside the
 * O(N L (D + Dv)) products. w: 5 L^2 doubles. */
static void pinv64(const float *ql, const float *kl, int64_t L, int64_t D, float scale,
                   int64_t iters, float *z32, double *w) {
    const int64_t LL = L * L;
    double *a = w, *z = a + LL, *az = z + LL, *t1 = az + LL, *t2 = t1 + LL;
    double rmax = 0.0, cmax = 0.0;
    for (int64_t i = 0; i < L; i++) {
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < L; j++) {
            double d = 0.0;
            for (int64_t t = 0; t < D; t++)
                d += (double)ql[i * D + t] * (double)kl[j * D + t];
            a[i * L + j] = (double)scale * d;
            mx = fmax(mx, a[i * L + j]);
        }
        for (int64_t j = 0; j < L; j++)
            sum += a[i * L + j] = exp(a[i * L + j] - mx);
        for (int64_t j = 0; j < L; j++)
            a[i * L + j] /= sum;
    }
    for (int64_t i = 0; i < L; i++) {
        double rs = 0.0, cs = 0.0;
        for (int64_t j = 0; j < L; j++)
            rs += fabs(a[i * L + j]), cs += fabs(a[j * L + i]);
        rmax = fmax(rmax, rs), cmax = fmax(cmax, cs);
    }
    const double z0 = 1.0 / (rmax * cmax);
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++)
            z[i * L + j] = a[j * L + i] * z0;
    for (int64_t it = 0; it < iters; it++) {
        dmm(a, z, 1.0, az, L);
        for (int64_t e = 0; e < LL; e++)
            t1[e] = -az[e];
        for (int64_t i = 0; i < L; i++)
            t1[i * L + i] += 7.0;
        dmm(az, t1, -1.0, t2, L);
        for (int64_t i = 0; i < L; i++)
            t2[i * L + i] += 15.0;
        dmm(az, t2, -1.0, t1, L);
        for (int64_t i = 0; i < L; i++)
            t1[i * L + i] += 13.0;
        dmm(z, t1, 0.25, t2, L);
        memcpy(z, t2, (size_t)LL * sizeof *z);
    }
    for (int64_t e = 0; e < LL; e++)
        z32[e] = (float)z[e];
}

/* The factors one (b, h) shares between the forward and the attention
 * received: the landmarks Q~ and K~ (segment means), Z ~ pinv(softmax(s Q~
 * K~^T)) and B = softmax(s Q~ K^T) [L, S]; all four sized once per call. */
typedef struct {
    float *ql, *kl, *z, *bm;
    double *pw; /* pinv64's float64 work, 5 L^2, then `extra` doubles */
} nys_factors;

static int nys_alloc(nys_factors *f, const attn__approx_plan *p, int64_t extra) {
    const int64_t L = p->L, D = p->D;
    f->ql = attn__malloc((size_t)(L * D) * sizeof(float));
    f->kl = attn__malloc((size_t)(L * D) * sizeof(float));
    f->z = attn__malloc((size_t)(L * L) * sizeof(float));
    f->pw = attn__malloc((size_t)(5 * L * L + extra) * sizeof(double));
    f->bm = attn__malloc((size_t)(L * p->S) * sizeof(float));
    return f->ql && f->kl && f->z && f->pw && f->bm;
}

static void nys_free(nys_factors *f) {
    attn__free(f->ql), attn__free(f->kl), attn__free(f->z), attn__free(f->pw), attn__free(f->bm);
}

static void nys_build(attn_ctx *one, const attn__approx_plan *p, int64_t b, int64_t h,
                      nys_factors *f) {
    const int64_t L = p->L, D = p->D, S = p->S;
    const float *qb = ATTN__ROW(p->q, p->qs, b, h, 0);
    const float *kb = ATTN__ROW(p->k, p->ks, b, h / p->group, 0);
    segment_means(qb, p->qs[2], p->T, D, L, f->ql);
    segment_means(kb, p->ks[2], S, D, L, f->kl);
    pinv64(f->ql, f->kl, L, D, p->scale, p->iters, f->z, f->pw);
    attn__sgemm(one, 0, 1, L, S, D, p->scale, f->ql, D, kb, p->ks[2], 0.0f, f->bm, S);
    softmax_rows(f->bm, L, S);
}

/* F for query rows i0 .. i0+n-1: softmax(s Q K~^T) into fc [n, L]. */
static void nys_queries(attn_ctx *one, const attn__approx_plan *p, const float *kl, int64_t b,
                        int64_t h, int64_t i0, int64_t n, float *fc) {
    attn__sgemm(one, 0, 1, n, p->L, p->D, p->scale, ATTN__ROW(p->q, p->qs, b, h, i0), p->qs[2], kl,
                p->D, 0.0f, fc, p->L);
    softmax_rows(fc, n, p->L);
}

static attn_ctx single_thread(const attn_ctx *ctx) {
    attn_ctx one;
    memset(&one, 0, sizeof one);
    one.nthreads = 1;
    one.arch = ctx->arch;
    return one;
}

attn_status attn__approx_nystrom_forward(attn_ctx *ctx, const attn__approx_plan *p) {
    const int64_t L = p->L, Dv = p->Dv, S = p->S, T = p->T, C = p->chunk ? p->chunk : 64;
    const int nth = attn_ctx_threads(ctx);
    attn_ctx one = single_thread(ctx);
    nys_factors fac;
    const int ok = nys_alloc(&fac, p, 0);
    float *w = attn__malloc((size_t)(L * Dv) * sizeof(float));
    float *m = attn__malloc((size_t)(L * Dv) * sizeof(float));
    float *fs = attn__malloc((size_t)(C * L * nth) * sizeof(float));
    attn_status st = ATTN_OK;
    if (!ok || !w || !m || !fs) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "nystrom attention: out of memory");
        goto done;
    }
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t h = 0; h < p->H; h++) {
            const float *vb = ATTN__ROW(p->v, p->vs, b, h / p->group, 0);
            nys_build(&one, p, b, h, &fac);
            attn__sgemm(&one, 0, 0, L, Dv, S, 1.0f, fac.bm, S, vb, p->vs[2], 0.0f, w, Dv);
            attn__sgemm(&one, 0, 0, L, Dv, L, 1.0f, fac.z, L, w, Dv, 0.0f, m, Dv);
            const int64_t nc = (T + C - 1) / C;
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1)
            for (int64_t c = 0; c < nc; c++) {
                float *f = fs + C * L * omp_get_thread_num();
                const int64_t i0 = c * C, n = ATTN_MIN(C, T - i0);
                nys_queries(&one, p, fac.kl, b, h, i0, n, f);
                attn__sgemm(&one, 0, 0, n, Dv, L, 1.0f, f, L, m, Dv, 0.0f,
                            ATTN__ROW(p->out, p->os, b, h, i0), p->os[2]);
            }
        }
done:
    nys_free(&fac);
    attn__free(w), attn__free(m), attn__free(fs);
    return st;
}

/* The attention each key receives, recv[(b H + h) S + j]: the column sums
 * of F Z B (B = softmax(s Q~ K^T), the forward's factors, built as the
 * forward builds them), 1^T F Z B = ((1^T F) Z) B: the column sums of F
 * over the query chunks in float64, then two vector products. Entries of
 * F Z B can be negative (Z is a pseudo-inverse), and so can a sum. */
attn_status attn__approx_nystrom_received(attn_ctx *ctx, const attn__approx_plan *p,
                                          double *recv) {
    const int64_t L = p->L, S = p->S, T = p->T, C = p->chunk ? p->chunk : 64;
    attn_ctx one = single_thread(ctx);
    nys_factors fac;
    const int ok = nys_alloc(&fac, p, 2 * L);
    float *f = attn__malloc((size_t)(C * L) * sizeof(float));
    attn_status st = ATTN_OK;
    if (!ok || !f) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "nystrom attention: out of memory");
        goto done;
    }
    double *cs = fac.pw + 5 * L * L, *u = cs + L; /* 1^T F, then (1^T F) Z */
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t h = 0; h < p->H; h++) {
            nys_build(&one, p, b, h, &fac);
            memset(cs, 0, (size_t)L * sizeof *cs);
            for (int64_t i0 = 0; i0 < T; i0 += C) {
                const int64_t n = ATTN_MIN(C, T - i0);
                nys_queries(&one, p, fac.kl, b, h, i0, n, f);
                for (int64_t i = 0; i < n; i++)
                    for (int64_t l = 0; l < L; l++)
                        cs[l] += (double)f[i * L + l];
            }
            for (int64_t l = 0; l < L; l++) {
                u[l] = 0.0;
                for (int64_t r = 0; r < L; r++)
                    u[l] += cs[r] * (double)fac.z[r * L + l];
            }
            double *rc = recv + (b * p->H + h) * S;
            for (int64_t j = 0; j < S; j++) {
                double a = 0.0;
                for (int64_t l = 0; l < L; l++)
                    a += u[l] * (double)fac.bm[l * S + j];
                rc[j] = a;
            }
        }
done:
    nys_free(&fac);
    attn__free(f);
    return st;
}
