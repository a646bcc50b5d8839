/* Top-k attention: each query keeps its k highest-scoring keys and takes
 * the exact softmax over them. Queries run in chunks of C rows: the scores
 * of a chunk against every key ([C, S], one GEMM), a selection per row
 * (a k-heap for the k-th largest value, then an index-ordered sweep: the
 * tie rule, lower index first), then a softmax over the k kept keys.
 * Memory: [C, S] per thread and, in the backward, [T, k] indices and
 * weights of one head; nothing T x S. */
#include "approx/approx.h"
#include "nn/nn.h"

#include <math.h>
#include <omp.h>
#include <string.h>

static inline float rank_val(float x) {
    return isnan(x) ? -INFINITY : x;
}

/* The k-th largest of s[0..n) (k in [1, n], NaN ranking lowest): a min-heap
 * of the k largest seen so far in w[0..k). Past the first rows almost every
 * score is below the heap's root and costs one comparison. */
static float kth_largest(const float *s, int64_t n, int64_t k, float *w) {
    for (int64_t j = 0; j < k; j++) { /* build: sift up */
        float x = rank_val(s[j]);
        int64_t c = j;
        while (c > 0 && w[(c - 1) / 2] > x) {
            w[c] = w[(c - 1) / 2];
            c = (c - 1) / 2;
        }
        w[c] = x;
    }
    for (int64_t j = k; j < n; j++) {
        const float x = rank_val(s[j]);
        if (!(x > w[0])) continue;
        int64_t c = 0; /* replace the root, sift down */
        for (;;) {
            int64_t l = 2 * c + 1, m = c;
            float mv = x;
            if (l < k && w[l] < mv) m = l, mv = w[l];
            if (l + 1 < k && w[l + 1] < mv) m = l + 1;
            if (m == c) break;
            w[c] = w[m];
            c = m;
        }
        w[c] = x;
    }
    return w[0];
}

void attn__topk_select(const float *s, int64_t n, int64_t k, float *ws, int32_t *idx) {
    const float tau = kth_largest(s, n, k, ws);
    int64_t above = 0;
    for (int64_t j = 0; j < n; j++)
        above += rank_val(s[j]) > tau;
    int64_t ties = k - above, m = 0; /* keys equal to tau that fit, lowest index first */
    for (int64_t j = 0; j < n && m < k; j++) {
        const float x = rank_val(s[j]);
        if (x > tau || (x == tau && ties-- > 0)) idx[m++] = (int32_t)j;
    }
}

typedef struct topk {
    const attn__approx_plan *p;
    attn_ctx one;
    int64_t C, nc;
    int nth;
    float *scr; /* per thread: scores [C*S] | select scratch [S] | weights [C*k] */
    int64_t scr_len;
    int32_t *sel;   /* per thread [C*k] (forward); the head's [T*k] (backward) */
    float *pw;  /* backward: the head's softmax weights [T*k] */
    double *ds; /* backward: its score gradients [T*k], in float64: ds = p (dp - p.dp)
                 * cancels where dp is near its mean, and dk sums them over
                 * every query of the group */
    double *acc;    /* backward: dk, dv of one kv head [S, D + Dv], summed in float64 */
} topk;

static attn_status topk_init(attn_ctx *ctx, topk *t, const attn__approx_plan *p, int backward) {
    memset(t, 0, sizeof *t);
    t->p = p;
    t->one.nthreads = 1;
    t->one.arch = ctx->arch;
    t->C = p->chunk ? p->chunk : 32;
    t->nc = (p->T + t->C - 1) / t->C;
    t->nth = attn_ctx_threads(ctx);
    t->scr_len = (int64_t)attn__round16((size_t)(t->C * p->S + p->S + t->C * p->topk));
    t->scr = attn__malloc((size_t)(t->scr_len * t->nth) * sizeof(float));
    const int64_t nsel = backward ? p->T * p->topk : t->C * p->topk * t->nth;
    t->sel = attn__malloc((size_t)(nsel + 1) * sizeof(int32_t));
    int ok = t->scr && t->sel;
    if (backward) {
        t->pw = attn__malloc((size_t)(p->T * p->topk + 1) * sizeof(float));
        t->ds = attn__malloc((size_t)(p->T * p->topk + 1) * sizeof(double));
        t->acc = attn__malloc((size_t)(p->S * (p->D + p->Dv) + 1) * sizeof(double));
        ok = ok && t->pw && t->ds && t->acc;
    }
    return ok ? ATTN_OK : attn_ctx_fail(ctx, ATTN_E_NOMEM, "topk attention: out of memory");
}

static void topk_free(topk *t) {
    attn__free(t->scr), attn__free(t->sel), attn__free(t->pw), attn__free(t->ds);
    attn__free(t->acc);
}

/* Scores of query chunk c of head (b, h), the selection of each row into
 * sel [n, k] and its softmax weights into pw [n, k]. Returns n. */
static int64_t select_chunk(topk *t, int64_t b, int64_t h, int64_t c, float *w, int32_t *sel,
                            float *pw) {
    const attn__approx_plan *p = t->p;
    const int64_t S = p->S, k = p->topk, i0 = c * t->C, n = ATTN_MIN(t->C, p->T - i0);
    float *s = w, *ws = w + t->C * S;
    attn__sgemm(&t->one, 0, 1, n, S, p->D, p->scale, ATTN__ROW(p->q, p->qs, b, h, i0), p->qs[2],
                ATTN__ROW(p->k, p->ks, b, h / p->group, 0), p->ks[2], 0.0f, s, S);
    for (int64_t i = 0; i < n; i++) {
        const float *si = s + i * S;
        int32_t *ix = sel + i * k;
        float *pi = pw + i * k;
        attn__topk_select(si, S, k, ws, ix);
        float mx = -INFINITY;
        for (int64_t r = 0; r < k; r++)
            mx = fmaxf(mx, si[ix[r]]);
        float sum = 0.0f;
        for (int64_t r = 0; r < k; r++)
            sum += pi[r] = expf(si[ix[r]] - mx);
        const float inv = 1.0f / sum;
        for (int64_t r = 0; r < k; r++)
            pi[r] *= inv;
    }
    return n;
}

attn_status attn__approx_topk_forward(attn_ctx *ctx, const attn__approx_plan *p) {
    topk t;
    attn_status st = topk_init(ctx, &t, p, 0);
    if (st) {
        topk_free(&t);
        return st;
    }
    const int64_t k = p->topk, ntask = p->B * p->H * t.nc;
#pragma omp parallel for num_threads(t.nth) schedule(dynamic, 1)
    for (int64_t task = 0; task < ntask; task++) {
        const int th = omp_get_thread_num();
        const int64_t c = task % t.nc, bh = task / t.nc, b = bh / p->H, h = bh % p->H;
        float *w = t.scr + t.scr_len * th, *pw = w + t.C * p->S + p->S;
        int32_t *sel = t.sel + t.C * k * th;
        const int64_t n = select_chunk(&t, b, h, c, w, sel, pw), i0 = c * t.C;
        const float *vb = ATTN__ROW(p->v, p->vs, b, h / p->group, 0);
        for (int64_t i = 0; i < n; i++) {
            float *o = ATTN__ROW(p->out, p->os, b, h, i0 + i);
            memset(o, 0, (size_t)p->Dv * sizeof(float));
            for (int64_t r = 0; r < k; r++) {
                const float wr = pw[i * k + r], *vj = vb + sel[i * k + r] * p->vs[2];
                for (int64_t d = 0; d < p->Dv; d++)
                    o[d] += wr * vj[d];
            }
        }
    }
    topk_free(&t);
    return ATTN_OK;
}

/* Backward with the selection fixed: p = softmax over the kept keys,
 *   dp_r = dout_i . v_j(r),  ds_r = p_r (dp_r - sum_r p_r dp_r)
 *   dq_i = scale sum_r ds_r k_j(r),  dk_j += scale ds_r q_i,  dv_j += p_r dout_i.
 * dq rows are written by the parallel loop over query chunks; dk and dv
 * gather from every query, so they are summed afterwards in query order, in
 * float64 (one kv head at a time, the same bits for any thread count). */
attn_status attn__approx_topk_backward(attn_ctx *ctx, const attn__approx_plan *p) {
    topk t;
    attn_status st = topk_init(ctx, &t, p, 1);
    if (st) {
        topk_free(&t);
        return st;
    }
    const int64_t k = p->topk, D = p->D, Dv = p->Dv;
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t g = 0; g < p->Hkv; g++) {
            const float *kb = ATTN__ROW(p->k, p->ks, b, g, 0),
                        *vb = ATTN__ROW(p->v, p->vs, b, g, 0);
            const int64_t W = D + Dv;
            memset(t.acc, 0, (size_t)(p->S * W) * sizeof(double));
            for (int64_t h = g * p->group; h < (g + 1) * p->group; h++) {
#pragma omp parallel for num_threads(t.nth) schedule(dynamic, 1)
                for (int64_t c = 0; c < t.nc; c++) {
                    float *w = t.scr + t.scr_len * omp_get_thread_num();
                    const int64_t i0 = c * t.C;
                    int32_t *sel = t.sel + i0 * k;
                    float *pw = t.pw + i0 * k;
                    double *ds = t.ds + i0 * k;
                    const int64_t n = select_chunk(&t, b, h, c, w, sel, pw);
                    for (int64_t i = 0; i < n; i++) {
                        const float *go = ATTN__ROW(p->dout, p->dos, b, h, i0 + i);
                        double dot = 0.0;
                        for (int64_t r = 0; r < k; r++) {
                            const float *vj = vb + sel[i * k + r] * p->vs[2];
                            double dp = 0.0;
                            for (int64_t d = 0; d < Dv; d++)
                                dp += (double)go[d] * vj[d];
                            ds[i * k + r] = dp;
                            dot += pw[i * k + r] * dp;
                        }
                        float *dq = ATTN__ROW(p->dq, p->dqs, b, h, i0 + i);
                        memset(dq, 0, (size_t)D * sizeof(float));
                        for (int64_t r = 0; r < k; r++) {
                            const double dsr = pw[i * k + r] * (ds[i * k + r] - dot);
                            ds[i * k + r] = dsr;
                            const float c = (float)((double)p->scale * dsr);
                            const float *kj = kb + sel[i * k + r] * p->ks[2];
                            for (int64_t d = 0; d < D; d++)
                                dq[d] += c * kj[d];
                        }
                    }
                }
                for (int64_t i = 0; i < p->T; i++) {
                    const float *qi = ATTN__ROW(p->q, p->qs, b, h, i);
                    const float *go = ATTN__ROW(p->dout, p->dos, b, h, i);
                    for (int64_t r = 0; r < k; r++) {
                        const int64_t j = t.sel[i * k + r];
                        double *dk = t.acc + j * W, *dv = dk + D;
                        const double cs = (double)p->scale * t.ds[i * k + r],
                                     cp = (double)t.pw[i * k + r];
                        for (int64_t d = 0; d < D; d++)
                            dk[d] += cs * (double)qi[d];
                        for (int64_t d = 0; d < Dv; d++)
                            dv[d] += cp * (double)go[d];
                    }
                }
            }
            for (int64_t j = 0; j < p->S; j++) {
                float *dk = ATTN__ROW(p->dk, p->dks, b, g, j),
                      *dv = ATTN__ROW(p->dv, p->dvs, b, g, j);
                for (int64_t d = 0; d < D; d++)
                    dk[d] = (float)t.acc[j * W + d];
                for (int64_t d = 0; d < Dv; d++)
                    dv[d] = (float)t.acc[j * W + D + d];
            }
        }
    topk_free(&t);
    return ATTN_OK;
}

/* The attention each key receives, recv[(b H + h) S + j] (zeroed here):
 * the softmax weights select_chunk gives the forward, summed over queries
 * in query order in float64. Chunks run one after another on thread 0's
 * scratch (the sum's order fixed). */
attn_status attn__approx_topk_received(attn_ctx *ctx, const attn__approx_plan *p, double *recv) {
    topk t;
    attn_status st = topk_init(ctx, &t, p, 0);
    if (st) {
        topk_free(&t);
        return st;
    }
    const int64_t k = p->topk, S = p->S;
    float *w = t.scr, *pw = w + t.C * S + S;
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t h = 0; h < p->H; h++) {
            double *r = recv + (b * p->H + h) * S;
            memset(r, 0, (size_t)S * sizeof *r);
            for (int64_t c = 0; c < t.nc; c++) {
                const int64_t n = select_chunk(&t, b, h, c, w, t.sel, pw);
                for (int64_t e = 0; e < n * k; e++)
                    r[t.sel[e]] += (double)pw[e];
            }
        }
    topk_free(&t);
    return ATTN_OK;
}
