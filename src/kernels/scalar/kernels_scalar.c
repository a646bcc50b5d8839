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

static void pv_scalar(const float *p, int mr, int n, const float *v, int64_t vs, int Dv, float *o,
                      int ldo) {
    for (int r = 0; r < mr; r++) {
        float *orow = o + (size_t)r * ldo;
        for (int j = 0; j < n; j++) {
            float a = p[j * ATTN_MR + r];
            const float *vj = v + (int64_t)j * vs;
            for (int c = 0; c < Dv; c++) orow[c] = fmaf(a, vj[c], orow[c]);
        }
    }
}

static void rescale_scalar(float *o, int ldo, int mr, int Dv, const float *alpha) {
    for (int r = 0; r < mr; r++) {
        if (alpha[r] == 1.0f) continue;
        for (int c = 0; c < Dv; c++) o[(size_t)r * ldo + c] *= alpha[r];
    }
}

const attn_kernels attn__kernels_scalar = {
    .name = "scalar",
    .pack_q = pack_q_scalar,
    .qk = qk_scalar,
    .softmax = softmax_scalar,
    .pv = pv_scalar,
    .rescale = rescale_scalar,
};
