/* attn/efficient.h: attention past the quadratic wall. Approximations of
 * softmax attention (kernelized linear attention, Performer FAVOR+, Nystrom)
 * and token selection (top-k), as ops beside exact attention (sdpa.h).
 * Users include <attn/attn.h>, which includes this file.
 *
 * Every method takes the views of attn_sdpa_forward: q [B,H,T,D],
 * k [B,Hkv,S,D], v [B,Hkv,S,Dv] -> out [B,H,T,Dv], H % Hkv == 0 (GQA), any
 * strides with the last one 1. Nothing of size T x S is allocated: memory
 * is O((T + S) * (D + Dv + m)) for the feature methods, O((T + S) * L) for
 * Nystrom with L landmarks, O(T * k + chunk * S) for top-k. */
#ifndef ATTN_EFFICIENT_H
#define ATTN_EFFICIENT_H

#include "core.h"
#include "sdpa.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum attn_approx_method {
    ATTN_APPROX_NONE = 0, /* invalid: a zero-initialised args must name a method */
    /* Kernelized linear attention (Katharopoulos et al. 2020):
     *   phi(x) = elu(x) + 1 elementwise (dimension D; scale is not used)
     *   out_i = sum_j (phi(q_i).phi(k_j)) v_j / sum_j phi(q_i).phi(k_j) */
    ATTN_APPROX_LINEAR = 1,
    /* Performer FAVOR+ (Choromanski et al. 2021): the softmax kernel
     * exp(scale q.k) approximated by positive orthogonal random features,
     *   phi(x)_r = exp(w_r.x' - |x'|^2 / 2) / sqrt(m),  x' = sqrt(scale) x,
     * w_r the rows of attn_performer_draw(D, m, seed); then the formula of
     * LINEAR with this phi. Per-row (queries) and per-head (keys) shifts of
     * the exponent keep it finite; they cancel in the ratio. */
    ATTN_APPROX_PERFORMER = 2,
    /* Nystrom attention (Xiong et al. 2021), non-causal, forward only:
     * landmarks q~, k~ are the means of L contiguous segments of the queries
     * and of the keys (segment l of n rows is [l*n/L, (l+1)*n/L)),
     *   out = softmax(s q k~^T) pinv(softmax(s q~ k~^T)) softmax(s q~ k^T) v,
     * pinv by the Nystromformer's iteration Z <- Z/4 (13I - AZ(15I - AZ(7I - AZ)))
     * from Z0 = A^T / (max row sum * max column sum), pinv_iters times. */
    ATTN_APPROX_NYSTROM = 3,
    /* Top-k attention: query i keeps its k highest-scoring keys, score
     * s_ij = scale * q_i.k_j (ties: the lower key index wins), and takes the
     * exact softmax over them: out_i = sum_{j in top_k(i)} softmax(s)_j v_j.
     * Non-causal. The backward treats the selection as fixed (it is
     * piecewise constant). */
    ATTN_APPROX_TOPK = 4,
} attn_approx_method;

/* Arguments of every approximate method. Valid when zero-initialised apart
 * from q, k, v, out and the method; fields a method does not use must be
 * zero (non-zero is ATTN_E_ARG: an option silently ignored is a bug). */
typedef struct attn_approx_args {
    attn_tensor q;   /* F32 [B, H,   T, D ] */
    attn_tensor k;   /* F32 [B, Hkv, S, D ] */
    attn_tensor v;   /* F32 [B, Hkv, S, Dv] */
    attn_tensor out; /* F32 [B, H,   T, Dv] written; may not overlap an input */
    attn_approx_method method;
    float scale;        /* PERFORMER, NYSTROM, TOPK: 0 means 1/sqrt(D); LINEAR: must be 0 */
    int causal;         /* LINEAR, PERFORMER: query i sees keys j <= i (needs T == S) */
    int64_t features;   /* PERFORMER: m >= 1 random features */
    uint64_t seed;      /* PERFORMER: which features (redraw = another seed) */
    int64_t landmarks;  /* NYSTROM: L in [1, min(T, S)] */
    int64_t pinv_iters; /* NYSTROM: 0 means 6 (the paper's); at most 100 */
    int64_t topk;       /* TOPK: k in [1, S] */
    int64_t chunk;      /* rows per chunk of the causal prefix sums and of
                         * top-k's query blocks; 0 = a default (64 causal,
                         * 1024 non-causal, 32 top-k) */
    const float *omega; /* PERFORMER, optional: the features [m, D] to use instead
                         * of drawing them from seed (seed must then be 0), e.g.
                         * attn_performer_draw's, drawn once for many calls */
} attn_approx_args;

/* Forward. Views are borrowed. Deterministic: the same bits for any thread
 * count. A row whose normaliser underflows to 0 (PERFORMER with extreme
 * inputs) gives out = 0. LINEAR and PERFORMER keep their arrays in the
 * context's workspace (grown to the largest call, kept until
 * attn_ctx_free). Returns ATTN_OK, ATTN_E_ARG (method unknown, a count out
 * of range, an option the method does not take: each message names the
 * field), ATTN_E_SHAPE, ATTN_E_LAYOUT, ATTN_E_DTYPE, ATTN_E_NOMEM,
 * ATTN_E_BUSY (LINEAR, PERFORMER: the context in use by another thread). */
ATTN_NODISCARD attn_status attn_approx_forward(attn_ctx *ctx, const attn_approx_args *a);

/* Backward of LINEAR, PERFORMER and TOPK (NYSTROM: ATTN_E_UNSUPPORTED).
 * a: the forward's arguments with out as the forward wrote it. g->dout in;
 * g->dq, dk, dv overwritten (dk, dv summed over each GQA group); g->dmask
 * must be absent. Returns as attn_approx_forward. */
ATTN_NODISCARD attn_status attn_approx_backward(attn_ctx *ctx, const attn_approx_args *a,
                                                const attn_sdpa_grads *g);

/* The attention each key receives under the method, for ranking tokens
 * (token pruning): received [B, H, S] contiguous, overwritten,
 *   received[b, h, j] = sum_i P[b, h, i, j],  out_i = sum_j P_ij v_j,
 * P the method's own attention matrix, never formed:
 *   LINEAR, PERFORMER: P_ij = phi(q_i).phi(k_j) / z_i (j <= i when causal),
 *     so received_j = phi(k_j) . sum_i phi(q_i) / z_i (i >= j when causal),
 *     O((T + S) m D) per head, in float64 with the same features;
 *   NYSTROM: P = F Z B, the forward's three factors, so received =
 *     ((1^T F) Z) B, O((T + S) L D); Z is a pseudo-inverse, so entries of P
 *     and sums can be negative;
 *   TOPK: each query's softmax weights over its k kept keys, as the forward
 *     computes them (the same selection, the same bits), summed in float64.
 * a as for attn_approx_forward (out is checked, not written). Returns the
 * statuses of attn_approx_forward, ATTN_E_ARG (received NULL). */
ATTN_NODISCARD attn_status attn_approx_received(attn_ctx *ctx, const attn_approx_args *a,
                                                float *received);

/* Float64 references of each method's own formula, written plainly in the
 * quadratic form (out_i as an explicit sum over keys; the same random
 * features for PERFORMER). For tests; O(T * S) time. Same validation and
 * statuses as the fast path; results written as F32. */
ATTN_NODISCARD attn_status attn_approx_forward_ref(attn_ctx *ctx, const attn_approx_args *a);
ATTN_NODISCARD attn_status attn_approx_backward_ref(attn_ctx *ctx, const attn_approx_args *a,
                                                    const attn_sdpa_grads *g);

/* The Performer's random features: omega [m, D] row-major. Rows come in
 * blocks of D mutually orthogonal directions (Gram-Schmidt on a Gaussian
 * D x D matrix, one per block, the last block cut to m mod D rows), each
 * row scaled to the norm of an independent Gaussian D-vector. A pure
 * function of (D, m, seed). Returns ATTN_OK or ATTN_E_ARG (NULL omega,
 * D < 1, m < 1). */
ATTN_NODISCARD attn_status attn_performer_draw(attn_ctx *ctx, int64_t D, int64_t m, uint64_t seed,
                                               float *omega);

/* Floating-point operations the forward (backward = 0) or backward
 * (backward = 1) of a does, counting 2 per multiply-add of its matrix
 * products, as attn_sdpa_flops does for exact attention. Exponentials,
 * divisions and selection count 0 in every method, exact attention's
 * included: exact does one exponential per 4D FLOPs counted (D = Dv), the
 * Performer one per 2D + 2Dv + 2 per row and feature, linear attention one
 * per 2Dv + 2 (docs/PERFORMANCE.md). The causal feature methods count
 * their diagonal blocks whole (C x C, the work done, masked half
 * included). The backward is counted as 2.5 forwards. 0 for arguments the
 * op would reject. */
double attn_approx_flops(const attn_approx_args *a, int backward);

/* The method's name ("linear", "performer", "nystrom", "topk"), NULL if unknown. */
const char *attn_approx_name(attn_approx_method m);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_EFFICIENT_H */
