/* Linear layer on the BLAS. */
#include "nn/nn.h"

#include <string.h>

void attn__linear_forward(attn_ctx *ctx, const float *x, int64_t ldx, int64_t M, int64_t K,
                          const float *W, const float *bias, int64_t N, float *y, int64_t ldy) {
    float beta = 0.0f;
    if (bias) {
        for (int64_t i = 0; i < M; i++)
            memcpy(y + i * ldy, bias, (size_t)N * sizeof(float));
        beta = 1.0f;
    }
    attn__sgemm(ctx, 0, 1, M, N, K, 1.0f, x, ldx, W, K, beta, y, ldy);
}

void attn__linear_forward_w(attn_ctx *ctx, const float *x, int64_t ldx, int64_t M, int64_t K,
                            const float *W, const uint16_t *Wb, const float *bias, int64_t N,
                            float *y, int64_t ldy) {
    if (!Wb) {
        attn__linear_forward(ctx, x, ldx, M, K, W, bias, N, y, ldy);
        return;
    }
    if (bias)
        for (int64_t i = 0; i < M; i++)
            memcpy(y + i * ldy, bias, (size_t)N * sizeof(float));
    attn__sgemm_bf16w(ctx, M, N, K, x, ldx, Wb, K, bias ? 1.0f : 0.0f, y, ldy);
}

/* Backward of y = x W^T + b:
 *   dx[M,K] = dy[M,N] W[N,K]      (dx == NULL: not wanted)
 *   dW[N,K] = dy^T x              db[N] = sum over rows of dy
 * acc_dx / acc_dw: add into dx / (dW, db) instead of overwriting, so a caller
 * can sum several paths (self-attention) or loop over non-uniform batches. */
void attn__linear_backward(attn_ctx *ctx, const float *x, int64_t ldx, int64_t M, int64_t K,
                           const float *W, int64_t N, const float *dy, int64_t lddy, float *dx,
                           int64_t lddx, int acc_dx, float *dW, float *db, int acc_dw) {
    if (dx) {
        if (M > 0 && K > 0 && N == 0 && !acc_dx)
            for (int64_t i = 0; i < M; i++)
                memset(dx + i * lddx, 0, (size_t)K * sizeof(float));
        else if (M > 0 && K > 0 && N > 0)
            attn__sgemm(ctx, 0, 0, M, K, N, 1.0f, dy, lddy, W, K, acc_dx ? 1.0f : 0.0f, dx, lddx);
    }
    if (dW) {
        if (M == 0 && !acc_dw)
            memset(dW, 0, (size_t)(N * K) * sizeof(float));
        else if (M > 0 && N > 0 && K > 0)
            attn__sgemm(ctx, 1, 0, N, K, M, 1.0f, dy, lddy, x, ldx, acc_dw ? 1.0f : 0.0f, dW, K);
    }
    if (db) {
        /* column sums in double, 64 columns at a time: a bias gradient sums
         * all M rows, and a plain fp32 running sum's error grows with M;
         * threads own column blocks, so the bits do not depend on them */
        const int64_t nblk = (N + 63) / 64;
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) if (M * N > 65536)
        for (int64_t blk = 0; blk < nblk; blk++) {
            const int64_t c0 = blk * 64, nc = N - c0 < 64 ? N - c0 : 64;
            double acc[64];
            for (int64_t c = 0; c < nc; c++)
                acc[c] = acc_dw ? (double)db[c0 + c] : 0.0;
            for (int64_t i = 0; i < M; i++) {
                const float *r = dy + i * lddy + c0;
#pragma omp simd
                for (int64_t c = 0; c < nc; c++)
                    acc[c] += (double)r[c];
            }
            for (int64_t c = 0; c < nc; c++)
                db[c0 + c] = (float)acc[c];
        }
    }
}
