/* Rotary position embedding of a block of rows, shared by every ISA family
 * (like pack.h: plain C, once per packed strip or key block, off the inner
 * loops). The drivers call it where they pack: a strip's queries before
 * pack_q / pack_t, a key block before qk / dot_t, so no rotated copy of Q
 * or K exists beyond the tile being packed.
 *
 * Angles are pos * f_i in float64. Along consecutive rows the angle advances
 * by f_i, so cos and sin are stepped by the angle-addition formulas in
 * float64 (two libm calls per frequency and block instead of two per element)
 * and re-synchronised from libm at every position that is a multiple of
 * ATTN__ROPE_SYNC, which keeps their error near 1e-15 (far below the float
 * rounding of the result) and makes a row's rotation a function of its
 * position alone. */
#ifndef ATTN_KERNELS_ROPE_H
#define ATTN_KERNELS_ROPE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define ATTN__ROPE_SYNC 64

typedef struct attn__rope_spec {
    int rot;          /* rotated dims, even, >= 2 */
    int interleaved;  /* pairs (2i, 2i+1), else (i, i + rot/2) */
    double theta;     /* f_i = theta^(-2i/rot) when freq is NULL */
    const float *freq; /* [rot/2] or NULL */
} attn__rope_spec;

static inline double attn__rope_freq(const attn__rope_spec *rs, int i) {
    return rs->freq ? (double)rs->freq[i] : pow(rs->theta, -2.0 * (double)i / (double)rs->rot);
}

/* Doubles of scratch attn__rope_rows needs: 4 per frequency. */
static inline size_t attn__rope_tmp_doubles(int rot) {
    return 2 * (size_t)rot;
}

/* y row r = x row r (r < n, D dims) rotated to position pos0 + r, by the
 * opposite angle when inverse (the transpose, for gradients). y may be x
 * (the same rows and stride: in place); otherwise dims >= rot are copied.
 * tmp: attn__rope_tmp_doubles(rot) doubles. */
static inline void attn__rope_rows(const attn__rope_spec *rs, const float *x, int64_t xs, float *y,
                                   int64_t ys, int n, int D, int64_t pos0, int inverse,
                                   double *tmp) {
    const int half = rs->rot / 2;
    double *c = tmp, *s = tmp + half, *cf = tmp + 2 * half, *sf = tmp + 3 * half;
    const double sg = inverse ? -1.0 : 1.0;
    for (int i = 0; i < half; i++) {
        double f = attn__rope_freq(rs, i);
        cf[i] = cos(f);
        sf[i] = sg * sin(f);
    }
    for (int r = 0; r < n; r++) {
        const float *xr = x + (int64_t)r * xs;
        float *yr = y + (int64_t)r * ys;
        const int64_t pos = pos0 + r;
        const int64_t off = ((pos % ATTN__ROPE_SYNC) + ATTN__ROPE_SYNC) % ATTN__ROPE_SYNC;
        if (r == 0 || off == 0) {
            /* from libm at the multiple of ATTN__ROPE_SYNC at or below pos, then
             * stepped to pos: a row's rotation depends on its position only, not
             * on where its block starts (the forward and attn_sdpa_probs agree
             * bitwise) */
            for (int i = 0; i < half; i++) {
                double a = (double)(pos - off) * attn__rope_freq(rs, i);
                c[i] = cos(a);
                s[i] = sg * sin(a);
            }
            for (int64_t k = 0; k < off; k++)
                for (int i = 0; i < half; i++) {
                    double cn = c[i] * cf[i] - s[i] * sf[i];
                    s[i] = s[i] * cf[i] + c[i] * sf[i];
                    c[i] = cn;
                }
        }
        if (rs->interleaved) {
            for (int i = 0; i < half; i++) {
                double xa = xr[2 * i], xb = xr[2 * i + 1];
                yr[2 * i] = (float)(xa * c[i] - xb * s[i]);
                yr[2 * i + 1] = (float)(xb * c[i] + xa * s[i]);
            }
        } else {
            for (int i = 0; i < half; i++) {
                double xa = xr[i], xb = xr[i + half];
                yr[i] = (float)(xa * c[i] - xb * s[i]);
                yr[i + half] = (float)(xb * c[i] + xa * s[i]);
            }
        }
        if (yr != xr && D > rs->rot) memcpy(yr + rs->rot, xr + rs->rot, (size_t)(D - rs->rot) * 4);
        for (int i = 0; i < half; i++) { /* advance one position */
            double cn = c[i] * cf[i] - s[i] * sf[i];
            s[i] = s[i] * cf[i] + c[i] * sf[i];
            c[i] = cn;
        }
    }
}

#endif /* ATTN_KERNELS_ROPE_H */
