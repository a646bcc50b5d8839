/* Decode microkernel: a few query rows (the heads of one GQA group times
 * the new tokens, R <= ATTN__DEC_MAXR) against a run of keys read straight
 * from a KV cache block in its storage type (F32, F16, BF16), converted to
 * float32 in registers. Held in the family's descriptor (kernels/arch.h);
 * the scalar one is the reference, a SIMD family overrides it.
 *
 * Online softmax over the run, row r seeing keys j < lim[r]:
 *   s_j = dot(q_r, k_j);  m' = max(m, max_j s_j);  alpha = exp(m - m')
 *   p_j = exp(s_j - m');  l' = l*alpha + sum_j p_j
 *   acc_r' = acc_r*alpha + sum_j p_j v_j
 * A row seeing no key of the run (lim[r] = 0, or all scores -inf) is left
 * unchanged. m = -inf, l = 0, acc = 0 is the empty state. */
#ifndef ATTN_KERNELS_DECODE_H
#define ATTN_KERNELS_DECODE_H

#include <stdint.h>

#define ATTN__DEC_MAXR 16 /* query rows per call at most */
/* Floats of score scratch a call on n keys needs: R and n rounded up to
 * multiples of 4 (the SIMD kernels' 4-row, 4-key tiles). */
#define ATTN__DEC_SCRATCH(R, n) ((((R) + 3) / 4 * 4) * (((n) + 3) / 4 * 4))

enum { ATTN__KV_F32 = 0, ATTN__KV_F16 = 1, ATTN__KV_BF16 = 2 };

typedef struct attn_decode_kernels {
    const char *name;
    /* q: [R][D] float32 (pre-scaled), row stride D. k: n rows of D elements
     * of type dt, row stride ks elements; v: n rows of Dv, stride vs.
     * m, l: [R]; acc: [R][Dv] (row stride Dv); s: scratch of
     * ATTN__DEC_SCRATCH(R, n) floats (a run's scores). */
    void (*attend)(const float *q, int R, int D, const void *k, int64_t ks, const void *v,
                   int64_t vs, int Dv, int dt, int n, const int *lim, float *m, float *l,
                   float *acc, float *s);
} attn_decode_kernels;

#endif /* ATTN_KERNELS_DECODE_H */
