/* Forward microkernel signatures: one per job, shared by every ISA family,
 * held in the family's descriptor (kernels/arch.h). Kernels know nothing of
 * masks, heads or threads; they trust their arguments (validated at the API
 * boundary).
 *
 * Tile geometry: a strip of R query rows (R = the family's arch.mr, or a
 * multiple of its arch.mrq below that for a shorter strip) is
 * packed transposed once ([D][R], pre-scaled), so a score tile is laid out
 * s[j*R + r] (key j, query row r): the softmax then runs down columns with
 * no horizontal reductions, and keys are read straight from the caller's K
 * and V with no packing. Rows r >= mr of a strip are padding: their scores
 * are computed on zero queries and never written out. Every kernel takes R;
 * a SIMD family's kernels accept only their own heights (the descriptor
 * pairs them), the scalar ones any R, so a family can start from the scalar
 * descriptor and override kernels one by one. */
#ifndef ATTN_KERNELS_H
#define ATTN_KERNELS_H

#include <stdint.h>

typedef struct attn_kernels {
    const char *name;

    /* qt[d*R + r] = scale * q[r*qs + d] for r < mr, 0 for mr <= r < R. */
    void (*pack_q)(const float *q, int64_t qs, int mr, int R, int D, float scale, float *qt);

    /* s[j*R + r] = dot(qt[:, r], k_j) for j < n, r < R.
     * k: n rows of D floats, row stride ks. */
    void (*qk)(const float *qt, int R, const float *k, int64_t ks, int n, int D, float *s);

    /* Online-softmax step over a tile of n keys, column by column (r < R):
     *   m' = max(m, max_j s[j][r]);  alpha[r] = exp(m - m')
     *   s[j][r] = exp(s[j][r] - m');  l' = l*alpha + sum_j s[j][r]
     * A column with m' == -inf stays empty: s = 0, alpha = 1, m, l unchanged.
     * NaN scores propagate into l. s is [n][R]; m, l, alpha are [R]. */
    void (*softmax)(float *s, int R, int n, float *m, float *l, float *alpha);

    /* The output accumulator is kept transposed, ot[c*R + r] (value column c,
     * query row r), so the online-softmax rescale is a vector multiply:
     *   ot[c*R + r] = alpha[r]*ot[c*R + r] + sum_{j<n} p[j*R + r]*v[j*vs + c]
     * for c < Dv and every r < R (padding rows included, never read back).
     * v: n rows of Dv floats, row stride vs. alpha == 1 leaves ot exact. */
    void (*pv)(const float *p, int R, int n, const float *v, int64_t vs, int Dv, const float *alpha,
               float *ot);

    /* The accumulator back to rows: o[r*os + c] = ot[c*R + r] * inv[r] for
     * r < mr, c < Dv (the strip's output rows, out = O / l). */
    void (*unpack_o)(const float *ot, int R, int mr, int Dv, const float *inv, float *o,
                     int64_t os);
} attn_kernels;

#endif /* ATTN_KERNELS_H */
