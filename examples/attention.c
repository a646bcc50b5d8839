/* Attention on your own buffers: q, k, v in [B, H, T, D] order, a causal
 * mask and a key-padding mask (batch 1's first key is padding), checked
 * against the float64 reference. Build: cc attention.c -lattn -lm */
#include <attn/attn.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

enum { B = 2, H = 4, T = 8, S = 8, D = 16 };

int main(void) {
    static float q[B * H * T * D], k[B * H * S * D], v[B * H * S * D], out[B * H * T * D],
        ref[B * H * T * D];
    static bool pad[B * S] = {[S] = true}; /* true = padding (nn.MultiheadAttention's rule) */
    for (int i = 0; i < B * H * T * D; i++) {
        q[i] = (float)rand() / RAND_MAX - 0.5f;
        k[i] = (float)rand() / RAND_MAX - 0.5f;
        v[i] = (float)rand() / RAND_MAX - 0.5f;
    }
    attn_ctx *ctx;
    if (attn_ctx_create(&ctx, 0) != ATTN_OK) return 1; /* 0 = all cores */
    attn_sdpa_args a = {0};
    a.q = attn_tensor_f32_4d(q, B, H, T, D);
    a.k = attn_tensor_f32_4d(k, B, H, S, D);
    a.v = attn_tensor_f32_4d(v, B, H, S, D);
    a.out = attn_tensor_f32_4d(out, B, H, T, D);
    a.causal = 1;
    a.key_padding_mask = attn_tensor_make(pad, ATTN_BOOL, 2, (int64_t[]){B, S});
    if (attn_sdpa_forward(ctx, &a) != ATTN_OK) {
        fprintf(stderr, "attn: %s\n", attn_ctx_last_error(ctx));
        attn_ctx_free(ctx);
        return 1;
    }
    a.out = attn_tensor_f32_4d(ref, B, H, T, D);
    if (attn_sdpa_forward_ref(ctx, &a) != ATTN_OK) return 1;
    double err = 0.0;
    for (int i = 0; i < B * H * T * D; i++)
        err = fmax(err, fabs((double)out[i] - ref[i]));
    printf("out[0,0,0,:4] = %.5f %.5f %.5f %.5f; max error vs float64: %.2g\n", out[0], out[1],
           out[2], out[3], err);
    attn_ctx_free(ctx);
    return err < 1e-5 ? 0 : 1;
}
