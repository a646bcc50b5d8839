/* A small transformer trained from scratch on associative recall, used by
 * `attn train --task recall` to show the attention layer learns.
 *
 * Task: a sequence k1 v1 k2 v2 ... kn vn q of n key/value token pairs (keys
 * distinct) and a query key q = some ki; the answer is vi. Keys are tokens
 * [0, n_keys), values [n_keys, n_keys + n_values); T = 2n + 1.
 *
 * Model (pre-LayerNorm transformer, bidirectional attention):
 *   x = tok_emb[id_t] + pos_emb[t] (+ prev_emb[id_{t-1}] with shift)
 *   layers: x += MHA(LN1(x));  x += W2 gelu(W1 LN2(x) + b1) + b2  (MLP optional)
 *   logits = Wr LNf(x[T-1]) + br  over the n_values answers; cross-entropy.
 *
 * The previous-token embedding ("token shift", the smeared keys of Olsson et
 * al., 2022) puts each key into the position of its value, so one attention
 * lookup (query key against shifted keys) solves the task. Without it the
 * model must first grow an induction head across two layers: with 4 pairs it
 * does so after ~1000 steps, with the default 8 pairs it was still on the
 * plateau after 4000 (PyTorch's nn.MultiheadAttention in the same model
 * behaves alike). Initialisation as PyTorch: embeddings N(0, 1). */
#ifndef ATTN_NN_RECALL_H
#define ATTN_NN_RECALL_H

#include "nn/nn.h"

typedef struct attn__recall_config {
    int n_keys, n_values, n_pairs;
    int E, H, layers, mlp; /* mlp: hidden width, 0 = attention-only blocks */
    int shift;             /* nonzero: add the previous-token embedding */
    int batch;
    uint64_t seed;
} attn__recall_config;

typedef struct attn__recall attn__recall;

attn_status attn__recall_create(attn_ctx *ctx, const attn__recall_config *cfg, attn__recall **out);
void attn__recall_free(attn__recall *r);

/* Every parameter of the model (borrowed array of *n). */
const attn_param *attn__recall_params(attn__recall *r, int *n);

/* A batch of `batch` random sequences from the stream `rng`: ids [batch, T],
 * answers [batch] in [0, n_values). */
void attn__recall_sample(const attn__recall_config *cfg, attn__rng *rng, int batch, int32_t *ids,
                         int32_t *answer);

/* Forward on a batch (batch <= cfg.batch): mean cross-entropy to *loss and
 * the number of correct argmax answers to *correct (either may be NULL).
 * train != 0 also runs the backward, leaving every parameter's gradient. */
attn_status attn__recall_step(attn_ctx *ctx, attn__recall *r, const int32_t *ids,
                              const int32_t *answer, int batch, int train, double *loss,
                              int *correct);

#endif /* ATTN_NN_RECALL_H */
