/* attn/explain.h: what attention does inside a model. Raw attention of every
 * layer and head (rebuilt from the fast path's lse, attn_sdpa_probs: the
 * numbers the model used, not a second implementation), per-head statistics,
 * attention rollout and attention flow (Abnar and Zuidema, 2020), head
 * masking for head importance and pruning (Michel et al., 2019), and
 * deletion curves that measure how faithful an attribution is.
 *
 * Attention matrices are row-major [T, T] floats, row i the distribution of
 * query token i over the keys; a model's are [L, H, T, T] (layer-major).
 * Gradient-weighted relevance (Chefer et al., 2021) runs its own backward
 * through the encoder (attn_bert_relevance).
 * Users include <attn/attn.h>, which includes this file. */
#ifndef ATTN_EXPLAIN_H
#define ATTN_EXPLAIN_H

#include "core.h"
#include "models.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- one text through the encoder ---------------------------------------- */

/* One text (ids [len], as attn_bert_embed takes them) through the encoder
 * once. Every output is optional (NULL: not computed):
 *   probs      [L, H, len, len]  every layer's and head's probabilities
 *   embedding  [E]               the pooled (normalised) sentence embedding
 * head_gate: optional [L, H] factors applied to each head's output before the
 * attention's output projection (1 keeps a head, 0 masks it: Michel et al.'s
 * xi_h); NULL keeps all. With no gate, embedding equals attn_bert_embed's to
 * the last bit for a one-text batch.
 * Returns ATTN_OK, ATTN_E_ARG (NULL model, bad len or id, a non-finite gate),
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_bert_run_explained(attn_ctx *ctx, const attn_bert *m,
                                                   const int32_t *ids, int64_t len,
                                                   const float *head_gate, float *probs,
                                                   float *embedding);

/* ---- analyses of attention matrices (pure functions of their inputs) ----- */

/* Token classes for attn_attention_stats (a bit set per token). */
enum {
    ATTN_TOKEN_CLS = 1,   /* [CLS] */
    ATTN_TOKEN_SEP = 2,   /* [SEP] */
    ATTN_TOKEN_PUNCT = 4, /* a punctuation token */
};

/* Statistics of one head's attention p [T, T]. */
typedef struct attn_head_stats {
    double entropy;       /* mean over queries of -sum_j p_ij ln p_ij (nats) */
    double distance;      /* mean over queries of sum_j p_ij |i - j| (tokens) */
    double share_cls;     /* mean over queries of the mass on [CLS] tokens */
    double share_sep;     /* ... on [SEP] tokens */
    double share_punct;   /* ... on punctuation tokens */
    int64_t top_i, top_j; /* the strongest link apart from i == j ... */
    double top_p;         /* ... and its probability (T = 1: 0, 0, p_00) */
} attn_head_stats;

/* Statistics of p [T, T] (T >= 1) with token classes cls [T] (NULL: no
 * token is special); row_entropy: optional [T], each query's entropy.
 * Returns ATTN_OK, ATTN_E_ARG (T < 1, NULL p or out). */
ATTN_NODISCARD attn_status attn_attention_stats(attn_ctx *ctx, int64_t T, const float *p,
                                                const uint8_t *cls, attn_head_stats *out,
                                                float *row_entropy);

/* Attention rollout (Abnar and Zuidema, 2020) of probs [L, H, T, T]: per
 * layer A = mean over heads, the residual connection as A' = 0.5 A + 0.5 I
 * with rows renormalised, and rollout = A'_{L-1} ... A'_1 A'_0 (computed in
 * float64). out [T, T]: row i, how much each input token reaches output
 * token i. Returns ATTN_OK, ATTN_E_ARG (a size < 1, NULL pointers),
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_attention_rollout(attn_ctx *ctx, int64_t L, int64_t H, int64_t T,
                                                  const float *probs, float *out);

/* Attention flow (Abnar and Zuidema, 2020): the graph of (L + 1) x T nodes
 * whose edge from token j at layer l to token i at layer l + 1 has capacity
 * A'_l[i, j] (as in rollout); flow[i, j] = the maximum flow from input token
 * j to output token i (Edmonds-Karp in float64, as the paper's networkx
 * code), each row then divided by its sum. Computes rows
 * [i0, i0 + rows) into out [rows, T]. Cost grows as T^2 max-flows of
 * L * T^2 edges: for long texts ask for the rows you need (e.g. [CLS]).
 * Returns ATTN_OK, ATTN_E_ARG (sizes, rows out of range, NULL pointers),
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_attention_flow(attn_ctx *ctx, int64_t L, int64_t H, int64_t T,
                                               const float *probs, int64_t i0, int64_t rows,
                                               float *out);

/* Gradient-weighted attention relevance (Chefer, Gur and Wolf, 2021) of one
 * text for the output y = w . embedding (w [E]: the normalised embedding of
 * another text gives their cosine similarity for a normalising model, a unit
 * vector one embedding dimension):
 *   R = I;  for each layer l, first to last:  R += mean_h (dy/dA_lh * A_lh)^+ R
 * with A_lh the head's probabilities (from the fast path's lse) and dy/dA_lh
 * their gradient from a backward through pooling, LayerNorms, feed-forward
 * blocks and attention. relevance: [len, len]; y: optional, the output's
 * value. Memory O(L * (len * (E + I) + H * len^2)).
 * Returns ATTN_OK, ATTN_E_ARG (NULL model, w or relevance, bad len or id, a
 * non-finite w), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_bert_relevance(attn_ctx *ctx, const attn_bert *m,
                                               const int32_t *ids, int64_t len, const float *w,
                                               float *relevance, float *y);

/* ---- the model's output when heads or tokens are taken away -------------- */

/* Head importance (Michel et al., 2019), measured by masking: for each of
 * the L*H heads, the mean over the n texts of 1 - cos(e_masked, e), where
 * e is the text's embedding and e_masked the embedding with that one head's
 * output set to 0. importance: [L, H]. Runs n * (L*H + 1) forwards.
 * Returns the statuses of attn_bert_run_explained. */
ATTN_NODISCARD attn_status attn_bert_head_importance(attn_ctx *ctx, const attn_bert *m, int64_t n,
                                                     const int32_t *const *ids, const int64_t *len,
                                                     float *importance);

/* Pruning curve: with heads masked in order of increasing importance
 * ([L, H], as attn_bert_head_importance), curve[k] = the mean over the texts
 * of cos(e_k, e) with the k least important heads masked, k = 0 .. L*H
 * (curve [L*H + 1]; curve[0] = 1). order: optional [L*H], the flat head
 * indices least important first. Returns as attn_bert_head_importance. */
ATTN_NODISCARD attn_status attn_bert_prune_curve(attn_ctx *ctx, const attn_bert *m, int64_t n,
                                                 const int32_t *const *ids, const int64_t *len,
                                                 const float *importance, float *curve,
                                                 int64_t *order);

/* Deletion curve of an attribution (faithfulness, measured): the content
 * tokens 1 .. len-2 (all but the first, [CLS], and the last, [SEP]) are
 * removed from the text in order of decreasing score [len] (ties: earlier
 * first), in `steps` equal parts; curve[k], k = 0 .. steps, is the output
 * after the first round(k * C / steps) of the C content tokens are removed:
 * cos(e_k, e) with e the full text's embedding when w is NULL (curve[0] = 1
 * up to rounding), else w . e_k (w [E], the output attn_bert_relevance
 * explains). A faithful attribution makes the output fall fast: the area,
 * the mean of curve[1..steps], is small.
 * score NULL: the mean curve of `random` random orders from seed instead.
 * Returns ATTN_OK, ATTN_E_ARG (len < 2, steps < 1, random < 1 with NULL
 * score, and as attn_bert_run_explained), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_bert_deletion_curve(attn_ctx *ctx, const attn_bert *m,
                                                    const int32_t *ids, int64_t len,
                                                    const float *score, int64_t steps,
                                                    int64_t random, uint64_t seed, const float *w,
                                                    float *curve);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_EXPLAIN_H */
