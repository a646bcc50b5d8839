/* The float64 references of the approximate attention methods
 * (include/attn/efficient.h) and their plain fp32 twins, both from one
 * text (approx_ref.inc). Tests and `--ref` only. */
#include "approx/approx.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define R double
#define FN(x) x##_64
#define ATTN_APPROX_REF_QUADRATIC_ONLY
#include "approx_ref.inc"
#undef ATTN_APPROX_REF_QUADRATIC_ONLY
#undef R
#undef FN
#define R float
#define FN(x) x##_32
#include "approx_ref.inc"
#undef R
#undef FN

attn_status attn__approx_ref64(attn_ctx *ctx, const attn__approx_plan *p, double *out) {
    if (p->method == ATTN_APPROX_NYSTROM) return nystrom_64(ctx, p, 0, out);
    return run_64(ctx, p, out, NULL, NULL, NULL);
}
/* The fp32 twin: the linear-time form for the feature methods (see
 * factored in approx_ref.inc), the reference's own text for the others. */
static int feature_method(const attn__approx_plan *p) {
    return p->method == ATTN_APPROX_LINEAR || p->method == ATTN_APPROX_PERFORMER;
}
attn_status attn__approx_ref32(attn_ctx *ctx, const attn__approx_plan *p, int order, float *out) {
    if (p->method == ATTN_APPROX_NYSTROM) return nystrom_32(ctx, p, order, out);
    if (feature_method(p)) return factored_32(ctx, p, order, out, NULL, NULL, NULL);
    return run_32(ctx, p, out, NULL, NULL, NULL);
}
attn_status attn__approx_ref64_bwd(attn_ctx *ctx, const attn__approx_plan *p, double *dq,
                                   double *dk, double *dv) {
    double *out = malloc((size_t)(p->B * p->H * p->T * p->Dv + 1) * sizeof *out);
    if (!out) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory in the reference");
    attn_status st = run_64(ctx, p, out, dq, dk, dv);
    free(out);
    return st;
}
attn_status attn__approx_ref32_bwd(attn_ctx *ctx, const attn__approx_plan *p, int order, float *dq,
                                   float *dk, float *dv) {
    float *out = malloc((size_t)(p->B * p->H * p->T * p->Dv + 1) * sizeof *out);
    if (!out) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory in the reference");
    attn_status st = feature_method(p) ? factored_32(ctx, p, order, out, dq, dk, dv)
                                       : run_32(ctx, p, out, dq, dk, dv);
    free(out);
    return st;
}

/* Write a contiguous float64 [d0, d1, d2, d3] into view t as F32. */
static void put(const attn_tensor *t, const double *x) {
    float *base = t->data;
    int64_t n = 0;
    for (int64_t a = 0; a < t->shape[0]; a++)
        for (int64_t b = 0; b < t->shape[1]; b++)
            for (int64_t c = 0; c < t->shape[2]; c++)
                for (int64_t d = 0; d < t->shape[3]; d++)
                    base[a * t->stride[0] + b * t->stride[1] + c * t->stride[2] + d] =
                        (float)x[n++];
}

attn_status attn_approx_forward_ref(attn_ctx *ctx, const attn_approx_args *a) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    attn__approx_plan p;
    attn_status st = attn__approx_plan_make(ctx, a, NULL, &p);
    if (st) return st;
    double *out = malloc((size_t)(p.B * p.H * p.T * p.Dv + 1) * sizeof *out);
    if (!out) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory in the reference");
    st = attn__approx_ref64(ctx, &p, out);
    if (!st) put(&a->out, out);
    free(out);
    return st;
}

attn_status attn_approx_backward_ref(attn_ctx *ctx, const attn_approx_args *a,
                                     const attn_sdpa_grads *g) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!g) return attn_ctx_fail(ctx, ATTN_E_ARG, "grads: NULL");
    attn__approx_plan p;
    attn_status st = attn__approx_plan_make(ctx, a, g, &p);
    if (st) return st;
    double *dq = malloc((size_t)(p.B * p.H * p.T * p.D + 1) * sizeof *dq);
    double *dk = malloc((size_t)(p.B * p.Hkv * p.S * p.D + 1) * sizeof *dk);
    double *dv = malloc((size_t)(p.B * p.Hkv * p.S * p.Dv + 1) * sizeof *dv);
    if (!dq || !dk || !dv) st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory in the reference");
    if (!st) st = attn__approx_ref64_bwd(ctx, &p, dq, dk, dv);
    if (!st) put(&g->dq, dq), put(&g->dk, dk), put(&g->dv, dv);
    free(dq), free(dk), free(dv);
    return st;
}
