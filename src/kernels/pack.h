/* Packing of a strip of rows, transposed and pre-scaled, shared by the
 * forward (ATTN_MR rows) and backward (ATTN_BMR rows) kernels of every ISA:
 * plain C, once per strip, off the hot path. */
#ifndef ATTN_KERNELS_PACK_H
#define ATTN_KERNELS_PACK_H

#include <stdint.h>

/* xt[d*rows + r] = scale * x[r*xs + d] for r < mr, 0 for mr <= r < rows. */
static inline void attn__pack_strip(const float *x, int64_t xs, int mr, int rows, int D,
                                    float scale, float *xt) {
    for (int r = 0; r < rows; r++) {
        if (r < mr) {
            const float *xr = x + (int64_t)r * xs;
            for (int d = 0; d < D; d++)
                xt[d * rows + r] = scale * xr[d];
        } else {
            for (int d = 0; d < D; d++)
                xt[d * rows + r] = 0.0f;
        }
    }
}

#endif
