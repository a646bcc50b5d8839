/* Internal layout of a loaded GPT-2 decoder (never installed). */
#ifndef ATTN_MODELS_GPT2_H
#define ATTN_MODELS_GPT2_H

#include "core/internal.h"

/* One decoder block, PyTorch Linear layout (weight [out, in]): GPT-2's
 * Conv1D weights ([in, out]) are transposed once at load. */
typedef struct attn__gpt_layer {
    float *ln1_g, *ln1_b; /* [E]            ln_1 */
    float *wqkv, *bqkv;   /* [3E, E], [3E]  attn.c_attn: q, k, v rows stacked */
    float *wo, *bo;       /* [E, E], [E]    attn.c_proj */
    float *ln2_g, *ln2_b; /* [E]            ln_2 */
    float *w1, *b1;       /* [I, E], [I]    mlp.c_fc */
    float *w2, *b2;       /* [E, I], [E]    mlp.c_proj */
} attn__gpt_layer;

struct attn_gpt {
    attn_gpt_config cfg;
    float *wte, *wpe;         /* [V, E], [P, E] */
    float *lnf_g, *lnf_b;     /* [E] ln_f */
    float *head;              /* [V, E]: wte when tied, else lm_head.weight */
    attn__gpt_layer *layers;  /* [n_layer] */
    float *arena;             /* every weight above lives here */
};

/* A model with cfg's sizes and uninitialised weights (validates cfg).
 * Returns ATTN_OK, ATTN_E_SHAPE, ATTN_E_NOMEM. */
attn_status attn__gpt_alloc(attn_ctx *ctx, const attn_gpt_config *cfg, attn_gpt **out);

#endif /* ATTN_MODELS_GPT2_H */
