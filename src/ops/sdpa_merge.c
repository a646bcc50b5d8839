/* Merge of partial attention results over disjoint key sets (split-KV
 * decoding, ring attention): with part k's softmax normaliser lse_k,
 *   lse = log sum_k exp(lse_k),   out = sum_k exp(lse_k - lse) out_k
 * which is exact: out_k is part k's softmax-weighted sum divided by its
 * own sum exp(lse_k). Evaluated per row in float64 from the largest lse
 * down (m = max_k lse_k; w_k = exp(lse_k - m)), parts in index order, so
 * the result does not depend on threads. */
#include "core/internal.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static attn_status check(attn_ctx *ctx, const char *what, int k, const attn_tensor *t, int ndim,
                         const int64_t *shape) {
    char name[32];
    if (k >= 0)
        snprintf(name, sizeof name, "%s[%d]", what, k);
    else
        snprintf(name, sizeof name, "%s", what);
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    if (!t->data && n > 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: missing (data is NULL)", name);
    if (t->dtype != ATTN_F32)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE, "%s: dtype must be F32", name);
    if (t->ndim != ndim)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: expected %d dims, got %d", name, ndim,
                             t->ndim);
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d])
            return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: dim %d is %lld, expected %lld", name, d,
                                 (long long)t->shape[d], (long long)shape[d]);
    if (ndim == 4 && t->stride[3] != 1 && shape[3] > 1)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "%s: last stride must be 1", name);
    return ATTN_OK;
}

static inline float *at4(const attn_tensor *t, int64_t b, int64_t h, int64_t i) {
    return (float *)t->data + b * t->stride[0] + h * t->stride[1] + i * t->stride[2];
}

void attn__merge_row(int n, const float *lses, const float *const *outs, int64_t Dv, double *w,
                     double *acc, float *o, float *l) {
    double m = -INFINITY;
    for (int k = 0; k < n; k++) {
        w[k] = (double)lses[k];
        if (w[k] > m || w[k] != w[k]) m = w[k];
    }
    if (m == -INFINITY) { /* no part saw a key */
        memset(o, 0, (size_t)Dv * sizeof(float));
        *l = -INFINITY;
        return;
    }
    double sum = 0.0;
    for (int k = 0; k < n; k++) {
        w[k] = exp(w[k] - m); /* 0 for a part with lse = -inf */
        sum += w[k];
    }
    for (int64_t c = 0; c < Dv; c++)
        acc[c] = 0.0;
    for (int k = 0; k < n; k++) {
        if (w[k] == 0.0) continue; /* its out is 0 by contract; skip NaN*0 */
        const float *ok = outs[k];
        double f = w[k] / sum;
        for (int64_t c = 0; c < Dv; c++)
            acc[c] += f * (double)ok[c];
    }
    /* written after every part's row is read: out may be one of the parts */
    for (int64_t c = 0; c < Dv; c++)
        o[c] = (float)acc[c];
    *l = (float)(m + log(sum));
}

attn_status attn_sdpa_merge(attn_ctx *ctx, int n, const attn_tensor *outs, const attn_tensor *lses,
                            attn_tensor out, attn_tensor lse) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (n < 1 || !outs || !lses)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "merge: need n >= 1 parts (got %d) and their views",
                             n);
    if (out.ndim != 4)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "out: expected [B,H,T,Dv], got %d dims", out.ndim);
    const int64_t B = out.shape[0], H = out.shape[1], T = out.shape[2], Dv = out.shape[3];
    const int64_t s4[4] = {B, H, T, Dv}, s3[3] = {B, H, T};
    attn_status st;
    if (B < 0 || H < 0 || T < 0 || Dv < 0)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "out: negative size");
    if ((st = check(ctx, "out", -1, &out, 4, s4)) || (st = check(ctx, "lse", -1, &lse, 3, s3)))
        return st;
    for (int k = 0; k < n; k++)
        if ((st = check(ctx, "outs", k, &outs[k], 4, s4)) ||
            (st = check(ctx, "lses", k, &lses[k], 3, s3)))
            return st;
    const int64_t rows = B * H * T;
    if (rows == 0) return ATTN_OK;
    /* per thread: n weights, n lse values and n row pointers (3 doubles' room each) */
    double *w = malloc((size_t)n * 3 * sizeof *w * (size_t)ATTN_MAX(1, ctx->nthreads));
    double *acc =
        malloc((size_t)ATTN_MAX(Dv, 1) * sizeof *acc * (size_t)ATTN_MAX(1, ctx->nthreads));
    if (!w || !acc) {
        free(w);
        free(acc);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "merge: out of memory");
    }
    const int nth = (int)ATTN_MAX(1, ATTN_MIN((int64_t)ctx->nthreads, rows / 64 + 1));
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        const int t = omp_get_thread_num();
        double *wt = w + (size_t)t * 3 * n, *at = acc + (size_t)t * Dv;
        const int64_t b = row / (H * T), h = row / T % H, i = row % T;
        float *lv = (float *)(wt + n); /* the parts' lse, then their rows */
        const float **ov = (const float **)(wt + 2 * n);
        for (int k = 0; k < n; k++)
            lv[k] = *at4(&lses[k], b, h, i), ov[k] = at4(&outs[k], b, h, i);
        attn__merge_row(n, lv, ov, Dv, wt, at, at4(&out, b, h, i), at4(&lse, b, h, i));
    }
    free(w);
    free(acc);
    return ATTN_OK;
}
