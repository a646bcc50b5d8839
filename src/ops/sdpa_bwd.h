/* Gradient views of the attention backward, validated once and resolved
 * into pointers and strides shared by the fast backward and the oracle. */
#ifndef ATTN_SDPA_BWD_H
#define ATTN_SDPA_BWD_H

#include "ops/sdpa_plan.h"

typedef struct attn__sdpa_gplan {
    const float *dout;
    float *dq, *dk, *dv, *dmask;
    int64_t dos[4], dqs[4], dks[4], dvs[4];
    int64_t dmb, dmh, dmt; /* dmask strides, 0 on size-1 (summed) dims */
    int64_t dmB, dmH, dmT; /* dmask sizes of the B, H, T dims (1 or B, 1 or H, 1 or T) */
} attn__sdpa_gplan;

/* Validate g against the plan p (made with need_lse = 1). Writes nothing to
 * the tensors. Returns ATTN_OK or an error with a message on ctx. */
attn_status attn__sdpa_gplan_make(attn_ctx *ctx, const attn__sdpa_plan *p, const attn_sdpa_args *a,
                                  const attn_sdpa_grads *g, attn__sdpa_gplan *gp);

/* The common start of both backwards (fast and oracle): clear ctx's error,
 * then validate the call into p (attn__sdpa_plan_make with need_lse = 1) and
 * gp. ctx must not be NULL. Returns ATTN_OK or an error with a message. */
attn_status attn__sdpa_bwd_plan(attn_ctx *ctx, const attn_sdpa_args *a, const attn_sdpa_grads *g,
                                attn__sdpa_plan *p, attn__sdpa_gplan *gp);

/* Address of dmask element (b, h, i, j) (b, h already folded on summed
 * dims; i needs no folding: dmt is 0 when T is summed). */
static inline int64_t attn__dmask_off(const attn__sdpa_gplan *gp, int64_t b, int64_t h, int64_t i,
                                      int64_t j) {
    return b * gp->dmb + h * gp->dmh + i * gp->dmt + j;
}

/* The float64 oracle's score of (b,h,i,j) (src/ref/sdpa_ref.c), shared by the
 * forward and backward oracles; -inf if masked; dcap (may be NULL) gets
 * d(score)/d(scale*q.k). */
double attn__ref_score(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i, int64_t j,
                       double *dcap);

/* The oracle's RoPE: rotate x [D] (float64, in place) to position pos, by
 * the opposite angle when inverse, with libm's cos and sin of each angle. */
void attn__ref_rope(const attn__sdpa_plan *p, int64_t pos, double *x, int inverse);

/* sum over (b,h,i,c) of dout * out, with out computed in float64 the way the
 * oracle forward computes it: the scalar whose gradient the oracle backward
 * returns (tests check that by central finite differences). NaN if out of
 * memory. dos: dout's strides. */
double attn__sdpa_ref_loss(const attn__sdpa_plan *p, const float *dout, const int64_t *dos);

#endif /* ATTN_SDPA_BWD_H */
