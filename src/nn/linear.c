/* Linear layer on the BLAS. */
#include "nn/nn.h"

#include <cblas.h>
#include <string.h>

void openblas_set_num_threads(int num_threads);

void attn__linear_forward(attn_ctx *ctx, const float *x, int64_t ldx, int64_t M, int64_t K,
                          const float *W, const float *bias, int64_t N, float *y, int64_t ldy) {
    openblas_set_num_threads(attn_ctx_threads(ctx));
    float beta = 0.0f;
    if (bias) {
        for (int64_t i = 0; i < M; i++) memcpy(y + i * ldy, bias, (size_t)N * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x,
                (int)ldx, W, (int)K, beta, y, (int)ldy);
}
