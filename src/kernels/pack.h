/* Packing of a strip of rows, transposed and pre-scaled, shared by the
 * forward (ATTN_MR rows) and backward (ATTN_BMR rows) kernels of every ISA:
 * plain C, once per strip, off the hot path. */
#ifndef ATTN_KERNELS_PACK_H
#define ATTN_KERNELS_PACK_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* xt[d*rows + r] = scale * x[r*xs + d] for r < mr, 0 for mr <= r < rows.
 * The padding rows (most of the strip when T is small) are filled by
 * contiguous runs along xt's rows, not element by element down its
 * columns: on a tiny problem (T = 16, D = 64) packing was a third of the
 * forward call, 0.9 us a strip, now 0.35. */
static inline void attn__pack_strip(const float *x, int64_t xs, int mr, int rows, int D,
                                    float scale, float *xt) {
    for (int r = 0; r < mr; r++) {
        const float *xr = x + (int64_t)r * xs;
        for (int d = 0; d < D; d++)
            xt[d * rows + r] = scale * xr[d];
    }
    if (mr < rows)
        for (int d = 0; d < D; d++)
            for (int r = mr; r < rows; r++)
                xt[d * rows + r] = 0.0f;
}

/* s[j*ld + r] = dot(xt[:, r], y_j) for j < n, r < mr, where xt is a packed
 * strip [D][ld] (see attn__pack_strip) and y_j = y + j*ys. Portable: the
 * scalar kernels' Q K^T (forward) and their backward's dot products share it;
 * one fmaf chain per output, in d order. */
static inline void attn__dot_strip(const float *xt, int ld, const float *y, int64_t ys, int n,
                                   int D, int mr, float *s) {
    for (int j = 0; j < n; j++) {
        const float *yj = y + (int64_t)j * ys;
        float *sj = s + (size_t)j * ld;
        for (int r = 0; r < mr; r++)
            sj[r] = 0.0f;
        for (int d = 0; d < D; d++) {
            float b = yj[d];
            for (int r = 0; r < mr; r++)
                sj[r] = fmaf(xt[d * ld + r], b, sj[r]);
        }
    }
}

#endif
