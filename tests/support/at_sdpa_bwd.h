/* Test support for the attention backward (prefix at_, test code only):
 * the plain fp32 backward that sets the tolerance, owned gradient buffers,
 * and the backward check against the float64 oracle. */
#ifndef AT_SDPA_BWD_H
#define AT_SDPA_BWD_H

#include "attn_test.h"

/* Plain fp32 backward with the semantics of attn_sdpa_backward: a row of
 * probabilities materialised from its own fp32 scores (out and lse unused),
 * fp32 accumulation, D_i = rowsum(P ∘ dPz). Overwrites g's dq, dk, dv and
 * dmask. Returns the library's validation status. */
attn_status at_naive32_backward(attn_ctx *ctx, const attn_sdpa_args *a, const attn_sdpa_grads *g);
/* The same with its sums in another order (variant 0..3: keys forward or
 * reverse (bit 0); rows, and the dot products' dims, forward or reverse
 * (bit 1)): other plain fp32 implementations, other draws of the rounding.
 * at_sdpa_check_backward takes the largest error of AT_NAIVE_ORDERS of
 * them, as the forward's check does. */
attn_status at_naive32_backward_order(attn_ctx *ctx, const attn_sdpa_args *a,
                                      const attn_sdpa_grads *g, int variant);

/* Owned gradient views: dout (filled uniform in [-1, 1) from r), dq, dk, dv
 * in the given layout (sentinel-filled) and, with want_dmask, a dmask of the
 * mask's shape. */
typedef struct at_grads {
    at_buf dout, dq, dk, dv, dmask;
    attn_sdpa_grads g;
} at_grads;

int at_grads_alloc(at_grads *gr, const attn_sdpa_args *a, at_layout layout, int want_dmask,
                   at_rng *r);
void at_grads_free(at_grads *gr);

/* Run attn_sdpa_forward on a (filling its out and lse), then
 * attn_sdpa_backward into gr, the oracle and naive32 backward into private
 * contiguous buffers; check dq, dk, dv (and dmask) with the DESIGN.md rule
 * and that gr's padding is intact. Returns 1 on pass. */
int at_sdpa_check_backward(attn_ctx *ctx, const attn_sdpa_args *a, at_grads *gr, const char *label,
                           uint64_t seed);

/* Build c (fresh rng for case_id), allocate gradients in c's layout (with a
 * dmask when want_dmask and the mask is F32), run at_sdpa_check_backward. */
int at_sdpa_run_backward(attn_ctx *ctx, const at_case *c, int want_dmask, uint64_t case_id,
                         const char *label);

#endif /* AT_SDPA_BWD_H */
