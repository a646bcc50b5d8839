/* Internal layout of a loaded BERT encoder (never installed). Tests build
 * models with synthetic weights through attn__bert_alloc. */
#ifndef ATTN_MODELS_BERT_H
#define ATTN_MODELS_BERT_H

#include "core/internal.h"
#include "nn/block.h"

/* One encoder layer, PyTorch Linear layout (weight [out, in]). */
/* one layer's weights: the encoder weight set of nn/block.h */
typedef attn__enc_weights attn__bert_layer;

struct attn_bert {
    attn_bert_config cfg;
    float *word, *pos, *type;   /* [V, E], [P, E], [types, E] */
    float *emb_ln_g, *emb_ln_b; /* [E] */
    attn__bert_layer *layers;   /* [num_layers] */
    float *arena;               /* every weight above lives here */
};

/* A model with cfg's sizes and uninitialised weights. Validates cfg.
 * Returns ATTN_OK, ATTN_E_SHAPE, ATTN_E_NOMEM. */
attn_status attn__bert_alloc(attn_ctx *ctx, const attn_bert_config *cfg, attn_bert **out);

/* Layer l of m as an nn/ transformer layer (block.h) over its weights; the
 * one place the model's layout becomes a layer (bert.c, explain.c). */
struct attn__layer;
struct attn__layer attn__bert_layer_view(const attn_bert *m, int64_t l);

/* Pool rows [0, n) of text b of x [B*T, E] into out [E] as the model's
 * configuration says (mean / CLS / max, then L2-normalised if asked). */
void attn__bert_pool(const attn_bert_config *c, const float *x, int64_t T, int64_t b, int64_t n,
                     float *out);

/* attn_bert_run_explained, and for tests qkv_trace: optional [L, len, 3E],
 * each layer's q | k | v rows (the attention's inputs). */
attn_status attn__bert_run_trace(attn_ctx *ctx, const attn_bert *m, const int32_t *ids, int64_t len,
                                 const float *gate, float *probs, float *embedding,
                                 float *qkv_trace);

/* attn_bert_relevance, and for tests: cams [L, len, len] each layer's
 * mean_h (dy/dA * A)^+, and dgate (optional [L, H]) dy/d(head gate) at 1. */
attn_status attn__bert_relevance(attn_ctx *ctx, const attn_bert *m, const int32_t *ids, int64_t len,
                                 const float *w, float *relevance, float *y, float *cams,
                                 double *dgate);

#endif /* ATTN_MODELS_BERT_H */
