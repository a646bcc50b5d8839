/* Portable backward microkernels (always complete, any CPU). */
#include "kernels/kernels_bwd.h"
#include "kernels/pack.h"

#include <math.h>

static void pack_t_scalar(const float *x, int64_t xs, int mr, int R, int D, float scale,
                          float *xt) {
    attn__pack_strip(x, xs, mr, R, D, scale, xt);
}

static void dot_t_scalar(const float *xt, int R, const float *y, int64_t ys, int n, int D, int mr,
                         float *s) {
    attn__dot_strip(xt, R, y, ys, n, D, mr, s);
}

static void softmax_bwd_scalar(float *s, float *dp, int R, int n, int mr, const float *lse,
                               const float *di) {
    for (int j = 0; j < n; j++)
        for (int r = 0; r < mr; r++) {
            size_t e = (size_t)j * R + r;
            float p = expf(s[e] - lse[r]);
            s[e] = p;
            dp[e] = p * (dp[e] - di[r]);
        }
}

static void acc_tn_scalar(const float *a, int R, int mr, int n, const float *b, int64_t bs, int N,
                          float *acc, int64_t lda) {
    for (int j = 0; j < n; j++) {
        float *row = acc + (int64_t)j * lda;
        for (int r = 0; r < mr; r++) {
            float x = a[(size_t)j * R + r];
            const float *br = b + (int64_t)r * bs;
            for (int c = 0; c < N; c++)
                row[c] = fmaf(x, br[c], row[c]);
        }
    }
}

static void acc_nn_scalar(const float *a, int R, int mr, int n, const float *b, int64_t bs, int N,
                          float *o, int ldo) {
    for (int r = 0; r < mr; r++) {
        float *row = o + (size_t)r * ldo;
        for (int j = 0; j < n; j++) {
            float x = a[(size_t)j * R + r];
            const float *bj = b + (int64_t)j * bs;
            for (int c = 0; c < N; c++)
                row[c] = fmaf(x, bj[c], row[c]);
        }
    }
}

const attn_bwd_kernels attn__bwd_kernels_scalar = {
    .name = "scalar",
    .pack_t = pack_t_scalar,
    .dot_t = dot_t_scalar,
    .softmax_bwd = softmax_bwd_scalar,
    .acc_tn = acc_tn_scalar,
    .acc_nn = acc_nn_scalar,
};
