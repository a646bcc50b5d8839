/* Downstream use of an installed attn: one attention call through the
 * public header only, checked against the softmax written out by hand. */
#include <attn/attn.h>

#include <math.h>
#include <stdio.h>

int main(void) {
    /* B=1, H=1, T=2, S=3, D=2, Dv=2 */
    float q[2][2] = {{1.0f, 0.0f}, {0.5f, -1.0f}};
    float k[3][2] = {{1.0f, 1.0f}, {0.0f, 2.0f}, {-1.0f, 0.5f}};
    float v[3][2] = {{1.0f, 2.0f}, {3.0f, -1.0f}, {0.0f, 4.0f}};
    float out[2][2], lse[2];
    attn_ctx *ctx;
    if (attn_ctx_create(&ctx, 1) != ATTN_OK) return 1;
    attn_sdpa_args a = {0};
    a.q = attn_tensor_f32_4d(&q[0][0], 1, 1, 2, 2);
    a.k = attn_tensor_f32_4d(&k[0][0], 1, 1, 3, 2);
    a.v = attn_tensor_f32_4d(&v[0][0], 1, 1, 3, 2);
    a.out = attn_tensor_f32_4d(&out[0][0], 1, 1, 2, 2);
    int64_t lsh[3] = {1, 1, 2};
    a.lse = attn_tensor_make(lse, ATTN_F32, 3, lsh);
    attn_status st = attn_sdpa_forward(ctx, &a);
    if (st != ATTN_OK) {
        fprintf(stderr, "consumer: %s: %s\n", attn_status_str(st), attn_ctx_last_error(ctx));
        attn_ctx_free(ctx);
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < 2; i++) {
        double s[3], m = -INFINITY, l = 0.0, o[2] = {0.0, 0.0};
        for (int j = 0; j < 3; j++) {
            s[j] = (q[i][0] * k[j][0] + q[i][1] * k[j][1]) / sqrt(2.0);
            m = s[j] > m ? s[j] : m;
        }
        for (int j = 0; j < 3; j++) {
            double e = exp(s[j] - m);
            l += e;
            o[0] += e * v[j][0];
            o[1] += e * v[j][1];
        }
        for (int c = 0; c < 2; c++)
            if (fabs(out[i][c] - o[c] / l) > 1e-5) bad = 1;
        if (fabs(lse[i] - (m + log(l))) > 1e-5) bad = 1;
        printf("row %d: out (%.6f, %.6f) expected (%.6f, %.6f); lse %.6f expected %.6f\n", i,
               out[i][0], out[i][1], o[0] / l, o[1] / l, lse[i], m + log(l));
    }
    printf("attn %s, kernels %s: %s\n", ATTN_VERSION_STRING, attn_arch_name(),
           bad ? "WRONG" : "ok");
    attn_ctx_free(ctx);
    return bad;
}
