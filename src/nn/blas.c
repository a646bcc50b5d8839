/* The one door to the BLAS: every GEMM of nn/ and models/ goes through
 * attn__sgemm, so the process-wide OpenBLAS thread count is set in one
 * place, from the calling context, right before each GEMM. */
#include "nn/nn.h"

#include <cblas.h>

void openblas_set_num_threads(int num_threads);

void attn__sgemm(attn_ctx *ctx, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                 float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc) {
    /* OpenBLAS keeps one thread count for the whole process: set it to this
     * context's count for this GEMM (see attn_ctx_create in core.h) */
    openblas_set_num_threads(attn_ctx_threads(ctx));
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
                (int)ldb, beta, C, (int)ldc);
}
