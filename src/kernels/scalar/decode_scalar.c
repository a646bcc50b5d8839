/* The reference decode kernel (kernels/decode.h): plain C, keys and values
 * converted one element at a time with kernels/half.h. */
#include "kernels/arch.h"
#include "kernels/half.h"

#include <math.h>

static inline float ld(const void *p, int64_t i, int dt) {
    if (dt == ATTN__KV_F16) return attn__h2f(((const uint16_t *)p)[i]);
    if (dt == ATTN__KV_BF16) return attn__bf2f(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

static void attend_scalar(const float *q, int R, int D, const void *k, int64_t ks, const void *v,
                          int64_t vs, int Dv, int dt, int n, const int *lim, float *m, float *l,
                          float *acc, float *s) {
    for (int r = 0; r < R; r++) {
        float *sr = s + (int64_t)r * n, mx = -INFINITY;
        for (int j = 0; j < lim[r]; j++) {
            float x = 0.0f;
            for (int d = 0; d < D; d++)
                x = fmaf(q[(int64_t)r * D + d], ld(k, (int64_t)j * ks + d, dt), x);
            sr[j] = x;
            if (x > mx || x != x) mx = x;
        }
        if (mx == -INFINITY) continue;
        float mn = m[r] > mx ? m[r] : mx;
        float alpha = m[r] == -INFINITY ? 0.0f : expf(m[r] - mn), sum = 0.0f;
        for (int j = 0; j < lim[r]; j++)
            sum += sr[j] = expf(sr[j] - mn);
        m[r] = mn;
        l[r] = l[r] * alpha + sum;
        float *ar = acc + (int64_t)r * Dv;
        for (int c = 0; c < Dv; c++)
            ar[c] *= alpha;
        for (int j = 0; j < lim[r]; j++)
            for (int c = 0; c < Dv; c++)
                ar[c] = fmaf(sr[j], ld(v, (int64_t)j * vs + c, dt), ar[c]);
    }
}

void attn__decode_init_scalar(attn_decode_kernels *k) {
    k->name = "scalar";
    k->attend = attend_scalar;
}
