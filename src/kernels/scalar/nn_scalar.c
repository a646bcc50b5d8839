/* Scalar nn element-wise kernels: the reference twin of nn_avx2.c, same
 * steps and the same explicit FMAs. */
#include "kernels/half.h"
#include "kernels/nn_kernels.h"

#include <math.h>
#include <string.h>

static const float erf_a[ATTN_ERF_NA] = ATTN_ERF_A;
static const float erf_b[ATTN_ERF_NB] = ATTN_ERF_B;

/* exp(y) for y in about [-20, 0]: y = n ln2 + r, |r| <= ln2/2, degree-7
 * Taylor in r (truncation < 6e-9 relative), times 2^n through the exponent. */
static float exp_neg(float y) {
    float n = rintf(y * 1.44269504f);
    float r = fmaf(n, -0.693145752f, y); /* ln2 split: hi has 16 bits */
    r = fmaf(n, -1.42860677e-06f, r);
    float p = 1.98412698e-04f;
    p = fmaf(p, r, 1.38888889e-03f);
    p = fmaf(p, r, 8.33333333e-03f);
    p = fmaf(p, r, 4.16666667e-02f);
    p = fmaf(p, r, 1.66666667e-01f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    int32_t bits = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

float attn__erf1(float x) {
    float ax = fabsf(x), r;
    if (ax < ATTN_ERF_SPLIT) {
        float t = ax * ax, q = erf_a[ATTN_ERF_NA - 1];
        for (int i = ATTN_ERF_NA - 2; i >= 0; i--)
            q = fmaf(q, t, erf_a[i]);
        r = fmaf(ax, q, ax);
    } else if (ax < ATTN_ERF_ONE) {
        float u = ax - ATTN_ERF_MID, g = erf_b[ATTN_ERF_NB - 1];
        for (int i = ATTN_ERF_NB - 2; i >= 0; i--)
            g = fmaf(g, u, erf_b[i]);
        float hi = ax * ax, lo = fmaf(ax, ax, -hi);
        r = 1.0f - exp_neg((g - lo) - hi);
    } else if (ax == ax) {
        r = 1.0f;
    } else {
        return x; /* NaN */
    }
    return copysignf(r, x);
}

static void erf_scalar(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = attn__erf1(x[i]);
}

static void gelu_scalar(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + attn__erf1(x[i] * 0.70710678118654752f));
}

/* exp(y) for any y, clamped to [-EXP_MAX, EXP_MAX] first */
static float exp_clamped(float y) {
    y = y < -ATTN_NN_EXP_MAX ? -ATTN_NN_EXP_MAX : y > ATTN_NN_EXP_MAX ? ATTN_NN_EXP_MAX : y;
    return exp_neg(y);
}

static void gelu_bwd_scalar(const float *x, const float *dy, float *dx, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float cdf = 0.5f * (1.0f + attn__erf1(x[i] * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * exp_clamped(-0.5f * (x[i] * x[i]));
        dx[i] = dy[i] * fmaf(x[i], pdf, cdf);
    }
}

/* s = 1 / (1 + e), e = exp(-2u), u = c (x + a x^3); 1 - s = e s (formed
 * so: 1 - s itself loses every digit where s rounds near 1) */
static float gelu_tanh_s(float x, float x2, float *e) {
    float inner = fmaf(ATTN_GELU_TANH_A * x2, x, x);
    *e = exp_clamped(inner * ATTN_GELU_TANH_M2C);
    return 1.0f / (1.0f + *e);
}

static void gelu_tanh_scalar(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float e;
        x[i] = x[i] * gelu_tanh_s(x[i], x[i] * x[i], &e);
    }
}

static void gelu_tanh_bwd_scalar(const float *x, const float *dy, float *dx, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float e, x2 = x[i] * x[i], s = gelu_tanh_s(x[i], x2, &e);
        float k = fmaf(ATTN_GELU_TANH_3A, x2, 1.0f);
        float d = fmaf(x[i] * (s * (e * s)), ATTN_GELU_TANH_2C * k, s);
        dx[i] = dy[i] * d;
    }
}

static void gemv_scalar(const float *W, int64_t ldw, int64_t n, int64_t K, const float *x, int acc,
                        float *y) {
    for (int64_t j = 0; j < n; j++) {
        const float *w = W + j * ldw;
        float s = 0.0f;
        for (int64_t k = 0; k < K; k++)
            s = fmaf(w[k], x[k], s);
        y[j] = acc ? y[j] + s : s;
    }
}

static void gemv_bf16_scalar(const uint16_t *W, int64_t ldw, int64_t n, int64_t K, const float *x,
                             int acc, float *y) {
    for (int64_t j = 0; j < n; j++) {
        const uint16_t *w = W + j * ldw;
        float s = 0.0f;
        for (int64_t k = 0; k < K; k++)
            s = fmaf(attn__bf2f(w[k]), x[k], s);
        y[j] = acc ? y[j] + s : s;
    }
}

/* One row of x at a time: the n rows of W (a task's 64) stay in L2 after
 * the first. */
static void gemm_bf16_scalar(const uint16_t *W, int64_t ldw, int64_t n, int64_t K, const float *x,
                             int64_t ldx, int64_t M, int acc, float *y, int64_t ldy) {
    for (int64_t i = 0; i < M; i++)
        gemv_bf16_scalar(W, ldw, n, K, x + i * ldx, acc, y + i * ldy);
}

const attn_nn_kernels attn__nn_kernels_scalar = {
    .name = "scalar",
    .erf = erf_scalar,
    .gelu = gelu_scalar,
    .gelu_bwd = gelu_bwd_scalar,
    .gelu_tanh = gelu_tanh_scalar,
    .gelu_tanh_bwd = gelu_tanh_bwd_scalar,
    .gemv = gemv_scalar,
    .gemv_bf16 = gemv_bf16_scalar,
    .gemm_bf16 = gemm_bf16_scalar,
};
