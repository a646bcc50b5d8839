/* Scaled dot-product attention, backward (not implemented yet). */
#include "ops/sdpa_plan.h"

attn_status attn_sdpa_backward(attn_ctx *ctx, const attn_sdpa_args *a, const attn_sdpa_grads *g) {
    (void)a, (void)g;
    if (!ctx) return ATTN_E_ARG;
    return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "attn_sdpa_backward: not implemented yet");
}

attn_status attn_sdpa_backward_ref(attn_ctx *ctx, const attn_sdpa_args *a, const attn_sdpa_grads *g) {
    (void)a, (void)g;
    if (!ctx) return ATTN_E_ARG;
    return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "attn_sdpa_backward_ref: not implemented yet");
}
