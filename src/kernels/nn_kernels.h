/* Element-wise kernels of the nn layers (GELU and its erf), one table per
 * ISA family, held in the family's descriptor (kernels/arch.h) beside the
 * attention kernels, so ATTN_ARCH applies.
 *
 * erf in fp32, the same algorithm and explicit FMAs in every family:
 *   |x| < ERF_SPLIT:   erf(x) = x + x * A(x^2)
 *   |x| < ERF_ONE:     erf(x) = 1 - exp(-x^2 + B(|x| - ERF_MID)),
 *                      -x^2 carried as hi + lo (an FMA gives lo exactly)
 *   otherwise          erf(x) = +-1 (1 - erfc rounds to 1 in fp32 there)
 * A and B are weighted least-squares fits on Chebyshev nodes of erf(x)/x - 1
 * and log(erfc(x)) + x^2 (tests/fixtures/fit_erf.py). Max error over every
 * fp32 x in [2^-30, 4] against erf in double: 1.65 ulp of the rounded
 * true value (at x = 1.245, near the split), in both families; checked by
 * test_nn_kernels. */
#ifndef ATTN_NN_KERNELS_H
#define ATTN_NN_KERNELS_H

#include <stdint.h>

#define ATTN_ERF_SPLIT 1.25f
#define ATTN_ERF_ONE 3.925f
#define ATTN_ERF_MID 2.5875f
#define ATTN_ERF_A                                                                                 \
    {                                                                                              \
        1.283791661e-01f, -3.761263192e-01f, 1.128369048e-01f, -2.686075866e-02f,                  \
            5.209844559e-03f, -8.346656687e-04f, 1.042452568e-04f, -7.625748822e-06f               \
    }
#define ATTN_ERF_NA 8
#define ATTN_ERF_B                                                                                 \
    {                                                                                              \
        -1.587252378e+00f, -3.431058526e-01f, 5.335284397e-02f, -1.013128366e-02f,                 \
            1.989406301e-03f, -3.836142714e-04f, 6.903563917e-05f, -1.076304216e-05f,              \
            2.702339089e-06f, 2.213394197e-07f                                                     \
    }
#define ATTN_ERF_NB 10

typedef struct attn_nn_kernels {
    const char *name;
    /* y[i] = erf(x[i]); y may be x */
    void (*erf)(const float *x, float *y, int64_t n);
    /* x[i] = x[i] * Phi(x[i]) = 0.5 x (1 + erf(x / sqrt 2)), exact GELU */
    void (*gelu)(float *x, int64_t n);
    /* dx[i] = dy[i] * gelu'(x[i]), gelu' = Phi(x) + x phi(x); dx may be dy */
    void (*gelu_bwd)(const float *x, const float *dy, float *dx, int64_t n);
    /* GELU, tanh form, in place: 0.5 x (1 + tanh(u)), u = c (x + a x^3),
     * evaluated as x * s, s = 1 / (1 + exp(-2u)) (the same function; no
     * cancellation in 1 + tanh for negative x) */
    void (*gelu_tanh)(float *x, int64_t n);
    /* dx[i] = dy[i] * (s + 2 c x s (1 - s) (1 + 3 a x^2)), 1 - s formed as
     * s exp(-2u); dx may be dy */
    void (*gelu_tanh_bwd)(const float *x, const float *dy, float *dx, int64_t n);
    /* Matrix-vector product over n rows of W (row stride ldw):
     *   y[j] = sum_k W[j][k] x[k]  (+ y[j] when acc; y is not read otherwise)
     * The one-token step of a decoder (a Linear layer on one row) is bound
     * by reading W once; a GEMM library's M = 1 path streams it slower
     * (docs/PERFORMANCE.md). Each family's own summation order. */
    void (*gemv)(const float *W, int64_t ldw, int64_t n, int64_t K, const float *x, int acc,
                 float *y);
    /* The same product with W stored as bfloat16 (the top half of a float:
     * widened exactly by a 16-bit shift in registers, then fp32 FMAs with
     * the fp32 x): half the bytes of a decode step's weights. The sum is
     * that of gemv on the widened W, in each family's own order. */
    void (*gemv_bf16)(const uint16_t *W, int64_t ldw, int64_t n, int64_t K, const float *x, int acc,
                      float *y);
    /* gemv_bf16 for M rows of x at once (rows of stride ldx; y rows of
     * stride ldy): y[i][j] = sum_k W[j][k] x[i][k] (+ y[i][j] when acc),
     * reading the n rows of W from memory once for all M */
    void (*gemm_bf16)(const uint16_t *W, int64_t ldw, int64_t n, int64_t K, const float *x,
                      int64_t ldx, int64_t M, int acc, float *y, int64_t ldy);
} attn_nn_kernels;

/* GELU-tanh constants: c = sqrt(2/pi), a; -2c; 2c; 3a. */
#define ATTN_GELU_TANH_A 0.044715f
#define ATTN_GELU_TANH_M2C -1.5957691216057308f
#define ATTN_GELU_TANH_2C 1.5957691216057308f
#define ATTN_GELU_TANH_3A 0.134145f
/* exp arguments are clamped to [-EXP_MAX, EXP_MAX] (2^n stays normal) */
#define ATTN_NN_EXP_MAX 80.0f

/* One element, the scalar family's algorithm (for the GELU backward). */
float attn__erf1(float x);

#endif /* ATTN_NN_KERNELS_H */
