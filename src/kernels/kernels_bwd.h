/* Microkernels of the attention backward: one signature per job, shared by
 * every ISA family, held in the family's descriptor (kernels/arch.h) beside
 * the forward's, as a table of its own so the two can be tuned
 * independently.
 *
 * Tile geometry: a strip of R query rows (R = the family's arch.bmr) is
 * packed transposed ([D][R]), so score-shaped tiles (S, dP, P, dS) are laid
 * out x[j*R + r]
 * (key j, query row r), exactly as in the forward. From such tiles
 *   dV += (P∘Z)^T dO,  dK += dS^T Q   are acc_tn (sum over the strip's rows),
 *   dQ += dS K                          is acc_nn (sum over the tile's keys).
 * Rows r >= mr of a strip are padding: zero queries; kernels skip whole
 * row blocks of padding, and acc_tn / acc_nn never read past their block. */
#ifndef ATTN_KERNELS_BWD_H
#define ATTN_KERNELS_BWD_H

#include <stdint.h>

typedef struct attn_bwd_kernels {
    const char *name;

    /* xt[d*R + r] = scale * x[r*xs + d] for r < mr, 0 for mr <= r < R. */
    void (*pack_t)(const float *x, int64_t xs, int mr, int R, int D, float scale, float *xt);

    /* s[j*R + r] = dot(xt[:, r], y_j) for j < n, r < mr; y: n rows of D
     * floats, row stride ys. Used for S = Q K^T and dP = dO V^T. Rows from
     * mr up to the kernel's row block (at most R) may be computed too (on
     * the zero padding); rows beyond are left alone. */
    void (*dot_t)(const float *xt, int R, const float *y, int64_t ys, int n, int D, int mr,
                  float *s);

    /* Softmax backward on a tile of n keys, element by element (r < mr, with
     * the same row blocks as dot_t):
     *   p = exp(s - lse[r]);  s <- p;  dp <- p * (dp - di[r])
     * lse[r] = +inf marks a dead row (p = 0, dS = 0); s = -inf gives p = 0. */
    void (*softmax_bwd)(float *s, float *dp, int R, int n, int mr, const float *lse,
                        const float *di);

    /* acc[j*lda + c] += sum_{r < mr} a[j*R + r] * b[r*bs + c] for j < n,
     * c < N. Writes exactly those elements (acc may be the caller's dK/dV).
     * Each element is one chain of fused multiply-adds in increasing r, so
     * it does not depend on n or on where the tile starts. */
    void (*acc_tn)(const float *a, int R, int mr, int n, const float *b, int64_t bs, int N,
                   float *acc, int64_t lda);

    /* o[r*ldo + c] += sum_{j < n} a[j*R + r] * b[j*bs + c] for r < mr,
     * c < N (rows beyond mr up to the kernel's row block may be written: o
     * holds R rows of ldo >= N floats). One fused multiply-add chain per
     * element in increasing j, continuing from o, so splitting the keys
     * into tiles differently gives the same bits. dot_t likewise sums in
     * increasing d whatever n is. */
    void (*acc_nn)(const float *a, int R, int mr, int n, const float *b, int64_t bs, int N,
                   float *o, int ldo);
} attn_bwd_kernels;

#endif /* ATTN_KERNELS_BWD_H */
