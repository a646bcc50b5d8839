/* Portable reference microkernels: always complete, any CPU. */
#include "kernels/kernels.h"

#include "kernels/pack.h"

#include <math.h>
#include <string.h>

static void pack_q_scalar(const float *q, int64_t qs, int mr, int R, int D, float scale,
                          float *qt) {
    attn__pack_strip(q, qs, mr, R, D, scale, qt);
}

static void qk_scalar(const float *qt, int R, const float *k, int64_t ks, int n, int D, float *s) {
    attn__dot_strip(qt, R, k, ks, n, D, R, s);
}

static void softmax_scalar(float *s, int R, int n, float *m, float *l, float *alpha) {
    for (int r = 0; r < R; r++) {
        float mx = m[r];
        int nan = 0;
        for (int j = 0; j < n; j++) {
            float x = s[(size_t)j * R + r];
            mx = x > mx ? x : mx;
            nan |= x != x;
        }
        if (nan) mx = NAN; /* a NaN score poisons its row */
        if (mx == -INFINITY) {
            for (int j = 0; j < n; j++)
                s[(size_t)j * R + r] = 0.0f;
            alpha[r] = 1.0f;
            continue;
        }
        float sum = 0.0f;
        for (int j = 0; j < n; j++) {
            float e = expf(s[(size_t)j * R + r] - mx);
            s[(size_t)j * R + r] = e;
            sum += e;
        }
        alpha[r] = expf(m[r] - mx);
        l[r] = l[r] * alpha[r] + sum;
        m[r] = mx;
    }
}

/* Column by column, in place: o[r] starts as alpha[r]*o[r] and takes one
 * fmaf per key, in key order. */
static void pv_scalar(const float *p, int R, int n, const float *v, int64_t vs, int Dv,
                      const float *alpha, float *ot) {
    for (int c = 0; c < Dv; c++) {
        float *o = ot + (size_t)c * R;
        for (int r = 0; r < R; r++)
            o[r] = alpha[r] * o[r];
        for (int j = 0; j < n; j++) {
            float b = v[(int64_t)j * vs + c];
            const float *pj = p + (size_t)j * R;
            for (int r = 0; r < R; r++)
                o[r] = fmaf(pj[r], b, o[r]);
        }
    }
}

static void unpack_o_scalar(const float *ot, int R, int mr, int Dv, const float *inv, float *o,
                            int64_t os) {
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < Dv; c++)
            o[r * os + c] = ot[(size_t)c * R + r] * inv[r];
}

const attn_kernels attn__kernels_scalar = {
    .name = "scalar",
    .pack_q = pack_q_scalar,
    .qk = qk_scalar,
    .softmax = softmax_scalar,
    .pv = pv_scalar,
    .unpack_o = unpack_o_scalar,
};
