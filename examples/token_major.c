/* Attention straight on a transformer's token-major buffers, no copies:
 * q, k, v are [B, T, H, D] rows (as a projection GEMM writes them) seen as
 * [B, H, T, D] through strides, grouped-query heads (Hkv < H), and a float
 * padding bias [B, 1, 1, S] broadcast over heads and queries as PyTorch
 * broadcasts it. Checked against the float64 reference.
 * Build: cc token_major.c -lattn -lm */
#include <attn/attn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { B = 2, T = 6, S = 6, H = 4, HKV = 2, D = 8 };

/* [B, T, heads, D] memory as the view [B, heads, T, D] */
static attn_tensor token_major(float *x, int64_t heads, int64_t len) {
    attn_tensor t = attn_tensor_f32_4d(x, B, heads, len, D);
    t.stride[0] = len * heads * D; /* next batch */
    t.stride[1] = D;               /* next head: the next D floats of the row */
    t.stride[2] = heads * D;       /* next token: the next row */
    t.stride[3] = 1;
    return t;
}

int main(void) {
    static float q[B * T * H * D], k[B * S * HKV * D], v[B * S * HKV * D];
    static float out[B * T * H * D], ref[B * T * H * D];
    static float bias[B * S]; /* [B, 1, 1, S]: 0 = keep, -inf = padding */
    for (int i = 0; i < B * T * H * D; i++)
        q[i] = sinf(0.37f * (float)i);
    for (int i = 0; i < B * S * HKV * D; i++) {
        k[i] = cosf(0.21f * (float)i);
        v[i] = sinf(0.13f * (float)i + 1.0f);
    }
    bias[0] = -INFINITY;         /* batch 0: key 0 is padding (left padding) */
    bias[S + S - 1] = -INFINITY; /* batch 1: the last key */
    bias[S + 1] = -0.5f;         /* and a soft bias on key 1 */

    attn_ctx *ctx;
    if (attn_ctx_create(&ctx, 0) != ATTN_OK) return 1;
    attn_sdpa_args a = {0};
    a.q = token_major(q, H, T);
    a.k = token_major(k, HKV, S);
    a.v = token_major(v, HKV, S);
    a.out = token_major(out, H, T); /* written as [B, T, H, D]: ready for the output GEMM */
    a.mask = attn_tensor_make(bias, ATTN_F32, 4, (int64_t[]){B, 1, 1, S});
    if (attn_sdpa_forward(ctx, &a) != ATTN_OK) {
        fprintf(stderr, "attn: %s\n", attn_ctx_last_error(ctx));
        attn_ctx_free(ctx);
        return 1;
    }
    a.out = token_major(ref, H, T);
    if (attn_sdpa_forward_ref(ctx, &a) != ATTN_OK) return 1;
    double err = 0.0;
    for (int i = 0; i < B * T * H * D; i++)
        err = fmax(err, fabs((double)out[i] - ref[i]));
    printf("token-major GQA with a [B,1,1,S] bias: max error vs float64 %.2g\n", err);
    attn_ctx_free(ctx);
    return err < 1e-5 ? 0 : 1;
}
