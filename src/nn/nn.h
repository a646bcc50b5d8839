/* Internal building blocks of learned layers (forward; backward beside each
 * forward as layers gain gradients). Row-major, element strides. */
#ifndef ATTN_NN_H
#define ATTN_NN_H

#include "core/internal.h"

/* C[M,N] = alpha * op(A) op(B) + beta * C, row-major, op = transpose when
 * trans_a / trans_b. The only GEMM call (oneDNN, src/nn/gemm.c), on
 * attn_ctx_threads(ctx) threads of the calling thread's OpenMP team. */
void attn__sgemm(attn_ctx *ctx, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                 float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc);

/* C[M,N] = A[M,K] B^T + beta C (beta 0 or 1) with B [N, K] (row stride
 * ldb) stored as bfloat16, widened to fp32 exactly and summed in fp32
 * by the nn kernel table's gemv_bf16 (M = 1) or gemm_bf16 (src/nn/gemm.c).
 * The result does not depend on the thread count (it may differ in the
 * last bits between M = 1 and M > 1, as attn__sgemm's). */
void attn__sgemm_bf16w(attn_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                       const uint16_t *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* PyTorch Linear: y[M,N] = x[M,K] * W[N,K]^T + bias[N] (bias may be NULL).
 * x rows have stride ldx, y rows stride ldy. Runs on the BLAS with the
 * context's thread count. */
void attn__linear_forward(attn_ctx *ctx, const float *x, int64_t ldx, int64_t M, int64_t K,
                          const float *W, const float *bias, int64_t N, float *y, int64_t ldy);

/* attn__linear_forward with the weight in fp32 (W) or bfloat16 (Wb, [N, K]
 * as attn__sgemm_bf16w): exactly one of them is set. The Linear layers of
 * a model whose weights may be either (a decoder loaded with bf16 weights). */
void attn__linear_forward_w(attn_ctx *ctx, const float *x, int64_t ldx, int64_t M, int64_t K,
                            const float *W, const uint16_t *Wb, const float *bias, int64_t N,
                            float *y, int64_t ldy);

/* LayerNorm over the last dim N of M rows:
 * y = (x - mean) * rstd * gamma + beta, rstd = 1/sqrt(var + eps) (biased var).
 * mean, rstd: optional [M] outputs saved for a backward. y may equal x. */
void attn__layernorm_forward(const float *x, int64_t ldx, int64_t M, int64_t N, const float *gamma,
                             const float *beta, float eps, float *y, int64_t ldy, float *mean,
                             float *rstd);

/* Backward of attn__linear_forward: dx[M,K] = dy W (skipped if dx is NULL),
 * dW[N,K] = dy^T x, db[N] = column sums of dy (skipped if NULL). acc_dx /
 * acc_dw add into dx / (dW, db) instead of overwriting. */
void attn__linear_backward(attn_ctx *ctx, const float *x, int64_t ldx, int64_t M, int64_t K,
                           const float *W, int64_t N, const float *dy, int64_t lddy, float *dx,
                           int64_t lddx, int acc_dx, float *dW, float *db, int acc_dw);

/* Backward of attn__layernorm_forward from its saved mean and rstd; dx is
 * overwritten, dgamma and dbeta (each optional) accumulated. */
void attn__layernorm_backward(const float *x, int64_t ldx, int64_t M, int64_t N, const float *gamma,
                              const float *mean, const float *rstd, const float *dy, int64_t lddy,
                              float *dx, int64_t lddx, float *dgamma, float *dbeta);

/* Exact GELU, x * 0.5 * (1 + erf(x / sqrt(2))), in place over n elements. */
void attn__gelu_forward(float *x, int64_t n);
/* Its backward: dx = dy * gelu'(x), x the forward's input; dx may be dy. */
void attn__gelu_backward(const float *x, const float *dy, float *dx, int64_t n);

/* GELU, tanh approximation (GPT-2's "gelu_new", PyTorch's
 * approximate='tanh'): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in
 * place over n elements. */
void attn__gelu_tanh_forward(float *x, int64_t n);
/* Its backward: dx = dy * gelu_tanh'(x), x the forward's input; dx may be dy. */
void attn__gelu_tanh_backward(const float *x, const float *dy, float *dx, int64_t n);

/* Deterministic random numbers for initialisation (splitmix64 stream). */
typedef struct attn__rng {
    uint64_t s;
} attn__rng;
uint64_t attn__rng_next(attn__rng *r);
/* Uniform in [lo, hi). */
float attn__rng_uniform(attn__rng *r, float lo, float hi);
/* w[0..n) = s * a standard normal (Box-Muller, two draws each); with
 * truncate, draws outside +-2 are redrawn (timm / transformers' ViT init). */
void attn__rng_normal(attn__rng *r, float *w, int64_t n, float s, int truncate);

#endif /* ATTN_NN_H */
