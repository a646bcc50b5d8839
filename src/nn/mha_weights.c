/* Attention probabilities of a multi-head attention forward (need_weights):
 * attn_sdpa_probs rebuilds them from the saved projections and lse, one
 * (batch, head) at a time, with the forward's own kernels and score rules
 * (times the dropout factor when training, as PyTorch returns them). Per
 * head they are written straight into the caller's [B,H,T,S] output; the
 * head average [B,T,S] sums heads in order through one T x S buffer. */
#include "nn/mha.h"

#include <stdlib.h>
#include <string.h>

attn_status attn__mha_weights(attn_ctx *ctx, attn_mha *m, const attn_mha_args *a) {
    attn_sdpa_args sa;
    attn__mha_sdpa_args(m, a, &sa);
    const attn_tensor *w = &a->attn_weights;
    const int avg = w->ndim == 3;
    const int64_t B = sa.q.shape[0], H = sa.q.shape[1], T = sa.q.shape[2], S = sa.k.shape[2];
    float *tmp = NULL;
    if (avg && T * S > 0 && !(tmp = malloc((size_t)(T * S) * sizeof *tmp)))
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "mha: out of memory for one head's weights");
    const float inv_h = 1.0f / (float)H;
    attn_status st = ATTN_OK;
    for (int64_t b = 0; b < B && !st; b++) {
        if (avg)
            for (int64_t i = 0; i < T; i++)
                memset((float *)w->data + b * w->stride[0] + i * w->stride[1], 0,
                       (size_t)S * sizeof(float));
        for (int64_t h = 0; h < H && !st; h++) {
            attn_tensor pv = {.dtype = ATTN_F32, .ndim = 2, .shape = {T, S}, .stride = {S, 1}};
            pv.data = tmp;
            if (!avg) {
                pv.data = (float *)w->data + b * w->stride[0] + h * w->stride[1];
                pv.stride[0] = w->stride[2];
            }
            st = attn_sdpa_probs(ctx, &sa, b, h, 0, pv);
            if (st || !avg) continue;
            for (int64_t i = 0; i < T; i++) {
                float *out = (float *)w->data + b * w->stride[0] + i * w->stride[1];
                const float *pr = tmp + i * S;
                for (int64_t j = 0; j < S; j++)
                    out[j] += pr[j] * inv_h;
            }
        }
    }
    free(tmp);
    return st;
}
