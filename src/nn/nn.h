/* Internal building blocks of learned layers (forward; backward beside each
 * forward as layers gain gradients). Row-major, element strides. */
#ifndef ATTN_NN_H
#define ATTN_NN_H

#include "core/internal.h"

/* PyTorch Linear: y[M,N] = x[M,K] * W[N,K]^T + bias[N] (bias may be NULL).
 * x rows have stride ldx, y rows stride ldy. Runs on the BLAS with the
 * context's thread count. */
void attn__linear_forward(attn_ctx *ctx, const float *x, int64_t ldx, int64_t M, int64_t K,
                          const float *W, const float *bias, int64_t N, float *y, int64_t ldy);

/* LayerNorm over the last dim N of M rows:
 * y = (x - mean) * rstd * gamma + beta, rstd = 1/sqrt(var + eps) (biased var).
 * mean, rstd: optional [M] outputs saved for a backward. y may equal x. */
void attn__layernorm_forward(const float *x, int64_t ldx, int64_t M, int64_t N,
                             const float *gamma, const float *beta, float eps, float *y,
                             int64_t ldy, float *mean, float *rstd);

/* Exact GELU, x * 0.5 * (1 + erf(x / sqrt(2))), in place over n elements. */
void attn__gelu_forward(float *x, int64_t n);

#endif /* ATTN_NN_H */
