/* Attention probabilities of a multi-head attention forward (need_weights).
 * The fast forward never forms probabilities; they are rebuilt here from the
 * saved projections and lse, one (batch, head) at a time, as
 *   p[i,j] = exp(s[i,j] - lse[i])  (times the dropout factor when training)
 * with s the score as attn_sdpa_forward defines it, so only one T x S score
 * block is held besides the caller's output. */
#include "nn/mha.h"
#include "ops/sdpa_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

attn_status attn__mha_weights(attn_ctx *ctx, attn_mha *m, const attn_mha_args *a) {
    attn_sdpa_args sa;
    attn__mha_sdpa_args(m, a, &sa);
    attn__sdpa_plan p;
    attn_status st = attn__sdpa_plan_make(ctx, &sa, 1, &p);
    if (st) return st;
    const attn_tensor *w = &a->attn_weights;
    int avg = w->ndim == 3;
    int64_t T = p.T, S = p.S, Dh = p.D;
    float *s = malloc((size_t)(T * S) * sizeof *s);
    if (!s) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "mha: out of memory for one head's scores");
    float inv_h = 1.0f / (float)p.H;
    for (int64_t b = 0; b < p.B; b++) {
        if (avg)
            for (int64_t i = 0; i < T; i++)
                memset((float *)w->data + b * w->stride[0] + i * w->stride[1], 0,
                       (size_t)S * sizeof(float));
        for (int64_t h = 0; h < p.H; h++) {
            const float *q = p.q + b * p.qs[0] + h * p.qs[1];
            const float *k = p.k + b * p.ks[0] + (h / p.group) * p.ks[1];
            /* s = scale * q k^T, the scale folded into the GEMM */
            attn__sgemm(ctx, 0, 1, T, S, Dh, p.scale, q, p.qs[2], k, p.ks[2], 0.0f, s, S);
            for (int64_t i = 0; i < T; i++) {
                float *out =
                    avg ? (float *)w->data + b * w->stride[0] + i * w->stride[1]
                        : (float *)w->data + b * w->stride[0] + h * w->stride[1] + i * w->stride[2];
                float lse = p.lse[b * p.ls[0] + h * p.ls[1] + i * p.ls[2]];
                int64_t lo, hi;
                attn__row_range(&p, b, i, &lo, &hi);
                const float *sr = s + i * S;
                for (int64_t j = 0; j < S; j++) {
                    float pr = 0.0f;
                    int vis = j >= lo && j < hi && lse != -INFINITY;
                    if (vis && p.mask_kind == ATTN__MASK_BOOL)
                        vis = ((const uint8_t *)p.mask)[attn__mask_off(&p, b, h, i, j)] != 0;
                    if (vis) {
                        float x = sr[j];
                        if (p.softcap > 0.0f) x = p.softcap * tanhf(x / p.softcap);
                        if (p.mask_kind == ATTN__MASK_FLOAT)
                            x += ((const float *)p.mask)[attn__mask_off(&p, b, h, i, j)];
                        pr = expf(x - lse);
                        if (p.dropout_p > 0.0f) pr *= attn__dropout_factor(&p, b, h, i, j);
                    }
                    if (avg)
                        out[j] += pr * inv_h;
                    else
                        out[j] = pr;
                }
            }
        }
    }
    free(s);
    return ATTN_OK;
}
