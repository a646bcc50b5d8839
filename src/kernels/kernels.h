/* Microkernel signatures: one per job, shared by every ISA, selected once
 * through attn__kernels(). Kernels know nothing of masks, heads or threads;
 * they trust their arguments (validated at the API boundary).
 *
 * Tile geometry shared by all ISAs: a strip of ATTN_MR query rows is packed
 * transposed once ([D][MR], pre-scaled), so a score tile is laid out
 * s[j*MR + r] (key j, query row r): the softmax then runs down columns with
 * no horizontal reductions, and keys are read straight from the caller's K
 * and V with no packing. Rows r >= mr of a strip are padding: their scores
 * are computed on zero queries and never written out. */
#ifndef ATTN_KERNELS_H
#define ATTN_KERNELS_H

#include <stdint.h>

#define ATTN_MR 24 /* query rows per strip (3 AVX2 vectors) */

typedef struct attn_kernels {
    const char *name;

    /* qt[d*MR + r] = scale * q[r*qs + d] for r < mr, 0 for mr <= r < MR. */
    void (*pack_q)(const float *q, int64_t qs, int mr, int D, float scale, float *qt);

    /* s[j*MR + r] = dot(qt[:, r], k_j) for j < n, r < MR.
     * k: n rows of D floats, row stride ks. */
    void (*qk)(const float *qt, const float *k, int64_t ks, int n, int D, float *s);

    /* Online-softmax step over a tile of n keys, column by column (r < MR):
     *   m' = max(m, max_j s[j][r]);  alpha[r] = exp(m - m')
     *   s[j][r] = exp(s[j][r] - m');  l' = l*alpha + sum_j s[j][r]
     * A column with m' == -inf stays empty: s = 0, alpha = 1, m, l unchanged.
     * NaN scores propagate into l. */
    void (*softmax)(float *s, int n, float *m, float *l, float *alpha);

    /* The output accumulator is kept transposed, ot[c*MR + r] (value column c,
     * query row r), so the online-softmax rescale is a vector multiply:
     *   ot[c*MR + r] = alpha[r]*ot[c*MR + r] + sum_{j<n} p[j*MR + r]*v[j*vs + c]
     * for c < Dv and every r < MR (padding rows included, never read back).
     * v: n rows of Dv floats, row stride vs. alpha == 1 leaves ot exact. */
    void (*pv)(const float *p, int n, const float *v, int64_t vs, int Dv, const float *alpha,
               float *ot);

    /* FMA peak probe for `attn bench`: `iters` rounds of independent
     * multiply-add chains held in registers (enough chains to cover the FMA
     * latency times its throughput), with this family's instructions (fused
     * where the family has FMA, a multiply and an add where it does not).
     * Returns the floating-point operations done (2 per lane per multiply-add);
     * *sink gets a value that depends on every chain so no work is elided. */
    double (*peak_fma)(int64_t iters, float *sink);
} attn_kernels;

/* The kernel family selected for this process (see attn_arch_name). */
const attn_kernels *attn__kernels(void);

extern const attn_kernels attn__kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const attn_kernels attn__kernels_avx2;
#define ATTN_HAVE_AVX2_BUILD 1
#endif

#endif /* ATTN_KERNELS_H */
