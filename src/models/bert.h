/* Internal layout of a loaded BERT encoder (never installed). Tests build
 * models with synthetic weights through attn__bert_alloc. */
#ifndef ATTN_MODELS_BERT_H
#define ATTN_MODELS_BERT_H

#include "core/internal.h"

/* One encoder layer, PyTorch Linear layout (weight [out, in]). */
typedef struct attn__bert_layer {
    float *wqkv, *bqkv;   /* [3E, E], [3E]: query, key, value rows stacked, so
                           * one GEMM makes q, k, v side by side per token */
    float *wo, *bo;       /* [E, E], [E]   attention.output.dense */
    float *ln1_g, *ln1_b; /* [E]           attention.output.LayerNorm */
    float *wi, *bi;       /* [I, E], [I]   intermediate.dense */
    float *wf, *bf;       /* [E, I], [E]   output.dense */
    float *ln2_g, *ln2_b; /* [E]           output.LayerNorm */
} attn__bert_layer;

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

#endif /* ATTN_MODELS_BERT_H */
