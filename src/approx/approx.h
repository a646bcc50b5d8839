/* Approximate and token-selecting attention (include/attn/efficient.h): the
 * validated problem every driver and the float64 reference share. */
#ifndef ATTN_APPROX_H
#define ATTN_APPROX_H

#include "core/internal.h"

typedef struct attn__approx_plan {
    attn_approx_method method;
    int64_t B, H, Hkv, T, S, D, Dv, group; /* group = H / Hkv */
    float scale;                           /* resolved (1/sqrt(D) for 0) */
    int causal;
    int64_t F;     /* feature dimension: D (LINEAR), m (PERFORMER) */
    uint64_t seed; /* PERFORMER */
    const float *omega; /* PERFORMER: the caller's features [F, D], or NULL (draw from seed) */
    int64_t L, iters, topk, chunk;
    const float *q, *k, *v;
    float *out;
    int64_t qs[4], ks[4], vs[4], os[4];
    /* backward only */
    const float *dout;
    float *dq, *dk, *dv;
    int64_t dos[4], dqs[4], dks[4], dvs[4];
} attn__approx_plan;

/* Validate a (and g when not NULL: the backward) and fill p. Returns ATTN_OK
 * or an error with a message on ctx naming the argument. */
attn_status attn__approx_plan_make(attn_ctx *ctx, const attn_approx_args *a,
                                   const attn_sdpa_grads *g, attn__approx_plan *p);

/* The Performer's features [F, D] into om: the caller's (p->omega) or
 * attn_performer_draw(D, F, seed)'s. */
attn_status attn__approx_features(attn_ctx *ctx, const attn__approx_plan *p, float *om);

/* Row pointers of head views. */
#define ATTN__ROW(base, st, b, h, i) ((base) + (b) * (st)[0] + (h) * (st)[1] + (i) * (st)[2])

/* Drivers (src/approx/approx_*.c). omega: the Performer's features or NULL. */
attn_status attn__approx_feature_forward(attn_ctx *ctx, const attn__approx_plan *p,
                                         const float *omega);
attn_status attn__approx_feature_backward(attn_ctx *ctx, const attn__approx_plan *p,
                                          const float *omega);
attn_status attn__approx_nystrom_forward(attn_ctx *ctx, const attn__approx_plan *p);
attn_status attn__approx_topk_forward(attn_ctx *ctx, const attn__approx_plan *p);
attn_status attn__approx_topk_backward(attn_ctx *ctx, const attn__approx_plan *p);

/* The attention each key receives under the method (attn_approx_received):
 * recv [B, H, S] in float64, overwritten. omega: the Performer's features
 * or NULL. */
attn_status attn__approx_feature_received(attn_ctx *ctx, const attn__approx_plan *p,
                                          const float *omega, double *recv);
attn_status attn__approx_nystrom_received(attn_ctx *ctx, const attn__approx_plan *p,
                                          double *recv);
attn_status attn__approx_topk_received(attn_ctx *ctx, const attn__approx_plan *p, double *recv);

/* Top-k selection, the one home of its tie rule: idx[0..k) gets the indices
 * of the k largest s[0..n) (a tie goes to the lower index), in increasing
 * index order. ws: k floats of scratch. NaN scores rank lowest. */
void attn__topk_select(const float *s, int64_t n, int64_t k, float *ws, int32_t *idx);

/* The references (src/ref/approx_ref.c), outputs contiguous [B,H,T,Dv]
 * (forward) and [B,H,T,D], [B,Hkv,S,D], [B,Hkv,S,Dv] (backward): float64,
 * and the same formula in plain fp32 (the tolerance's yardstick; order 0 or
 * 1: two summation orders, two draws of its rounding). */
attn_status attn__approx_ref64(attn_ctx *ctx, const attn__approx_plan *p, double *out);
attn_status attn__approx_ref32(attn_ctx *ctx, const attn__approx_plan *p, int order, float *out);
attn_status attn__approx_ref64_bwd(attn_ctx *ctx, const attn__approx_plan *p, double *dq,
                                   double *dk, double *dv);
attn_status attn__approx_ref32_bwd(attn_ctx *ctx, const attn__approx_plan *p, int order, float *dq,
                                   float *dk, float *dv);

#endif /* ATTN_APPROX_H */
