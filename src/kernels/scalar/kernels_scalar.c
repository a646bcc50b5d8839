/* Portable reference microkernels: always complete, any CPU. */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

static void pack_q_scalar(const float *q, int64_t qs, int mr, int D, float scale, float *qt) {
    for (int d = 0; d < D; d++)
        for (int r = 0; r < ATTN_MR; r++) qt[d * ATTN_MR + r] = r < mr ? scale * q[r * qs + d] : 0.0f;
}

static void qk_scalar(const float *qt, const float *k, int64_t ks, int n, int D, float *s) {
    for (int j = 0; j < n; j++) {
        const float *kj = k + (int64_t)j * ks;
        float acc[ATTN_MR] = {0};
        for (int d = 0; d < D; d++) {
            float b = kj[d];
            for (int r = 0; r < ATTN_MR; r++) acc[r] = fmaf(qt[d * ATTN_MR + r], b, acc[r]);
        }
        memcpy(s + (size_t)j * ATTN_MR, acc, sizeof acc);
    }
}

static void softmax_scalar(float *s, int n, float *m, float *l, float *alpha) {
    for (int r = 0; r < ATTN_MR; r++) {
        float mx = m[r];
        int nan = 0;
        for (int j = 0; j < n; j++) {
            float x = s[j * ATTN_MR + r];
            mx = x > mx ? x : mx;
            nan |= x != x;
        }
        if (nan) mx = NAN; /* a NaN score poisons its row */
        if (mx == -INFINITY) {
            for (int j = 0; j < n; j++) s[j * ATTN_MR + r] = 0.0f;
            alpha[r] = 1.0f;
            continue;
        }
        float sum = 0.0f;
        for (int j = 0; j < n; j++) {
            float e = expf(s[j * ATTN_MR + r] - mx);
            s[j * ATTN_MR + r] = e;
            sum += e;
        }
        alpha[r] = expf(m[r] - mx);
        l[r] = l[r] * alpha[r] + sum;
        m[r] = mx;
    }
}

static void pv_scalar(const float *p, int n, const float *v, int64_t vs, int Dv, const float *alpha,
                      float *ot) {
    for (int c = 0; c < Dv; c++) {
        float *o = ot + (size_t)c * ATTN_MR;
        float acc[ATTN_MR];
        for (int r = 0; r < ATTN_MR; r++) acc[r] = alpha[r] * o[r];
        for (int j = 0; j < n; j++) {
            float b = v[(int64_t)j * vs + c];
            for (int r = 0; r < ATTN_MR; r++) acc[r] = fmaf(p[j * ATTN_MR + r], b, acc[r]);
        }
        memcpy(o, acc, sizeof acc);
    }
}

/* 12 independent scalar chains x' = x*a + b (fmaf, as the scalar kernels use). */
static double peak_fma_scalar(int64_t iters, float *sink) {
    float x[12];
    for (int i = 0; i < 12; i++) x[i] = 1.0f + 0.01f * (float)i;
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < 12; i++) x[i] = fmaf(x[i], 0.999999f, 1e-3f);
    float t = 0.0f;
    for (int i = 0; i < 12; i++) t += x[i];
    *sink = t;
    return (double)iters * 12.0 * 2.0;
}

const attn_kernels attn__kernels_scalar = {
    .name = "scalar",
    .pack_q = pack_q_scalar,
    .qk = qk_scalar,
    .softmax = softmax_scalar,
    .pv = pv_scalar,
    .peak_fma = peak_fma_scalar,
};
