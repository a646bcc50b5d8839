/* Internal layout of a loaded decoder, GPT-2 or Llama (never installed). */
#ifndef ATTN_MODELS_GPT2_H
#define ATTN_MODELS_GPT2_H

#include "core/internal.h"

/* One decoder block, PyTorch Linear layout (weight [out, in]): GPT-2's
 * Conv1D weights ([in, out]) are transposed once at load. KV = n_kv_head *
 * Dh; I1 = I (GPT-2) or 2I (Llama: gate rows, then up rows, one GEMM). A
 * bias or LayerNorm shift the architecture lacks is NULL. */
typedef struct attn__gpt_layer {
    float *ln1_g, *ln1_b; /* [E]                 ln_1 / input_layernorm */
    float *wqkv, *bqkv;   /* [E+2KV, E], [E+2KV] q, k, v rows stacked */
    float *wo, *bo;       /* [E, E], [E]         attn.c_proj / o_proj */
    float *ln2_g, *ln2_b; /* [E]                 ln_2 / post_attention_layernorm */
    float *w1, *b1;       /* [I1, E], [I1]       mlp.c_fc / gate_proj + up_proj */
    float *w2, *b2;       /* [E, I], [E]         mlp.c_proj / down_proj */
    /* bf16 weights (ATTN_GPT_WEIGHTS_BF16): the four matrices above in
     * bfloat16, their fp32 pointers NULL; else NULL */
    uint16_t *wqkv_bf, *wo_bf, *w1_bf, *w2_bf;
} attn__gpt_layer;

struct attn_gpt {
    attn_gpt_config cfg;
    float *wte, *wpe;        /* [V, E], [P, E] (Llama: wpe NULL) */
    float *lnf_g, *lnf_b;    /* [E] ln_f / norm (Llama: lnf_b NULL) */
    float *inv_freq;         /* Llama: [Dh/2] RoPE frequencies, scaled */
    float *head;             /* [V, E]: wte when tied, else lm_head.weight */
    attn__gpt_layer *layers; /* [n_layer] */
    float *arena;            /* every weight above lives here */
    /* ATTN_GPT_WEIGHTS_BF16: wte and head (and the layers' matrices) in
     * bfloat16, in barena; wte and head NULL; the rest stays fp32 */
    attn_gpt_weights weights;
    uint16_t *wte_bf, *head_bf;
    uint16_t *barena;
};

/* Store m's matrices (embeddings, head, projections) as bfloat16, rounded
 * to nearest even, and keep the rest (positions, norms, biases) in a
 * smaller fp32 arena. Returns ATTN_OK or ATTN_E_NOMEM (m unchanged). */
attn_status attn__gpt_to_bf16(attn_ctx *ctx, attn_gpt *m);

/* A model with cfg's sizes and uninitialised weights (validates cfg).
 * Returns ATTN_OK, ATTN_E_SHAPE, ATTN_E_NOMEM. */
attn_status attn__gpt_alloc(attn_ctx *ctx, const attn_gpt_config *cfg, attn_gpt **out);

/* Layer l as an nn/ transformer layer (attention heads with their scale
 * and rope, the GPT-2 feed-forward block, LayerNorms). */
struct attn__layer;
struct attn__layer attn__gpt_layer_view(const attn_gpt *m, int64_t l);

/* The architecture's norm (LayerNorm or RMSNorm) of N rows [N, E]: which 1
 * and 2 are layer l's first and second, 0 the final one. y != x. */
void attn__gpt_norm_rows(attn_ctx *ctx, const attn_gpt *m, int64_t l, int which, int64_t N,
                         const float *x, float *y);

/* Layer l's MLP on N rows: y [N, E] from in [N, E], h scratch [N, I1]. */
void attn__gpt_mlp(attn_ctx *ctx, const attn_gpt *m, int64_t l, int64_t N, const float *in,
                   float *h, float *y);

/* What is wrong with generation parameters p, or NULL (generate.c). */
const char *attn__gen_bad_params(const attn_gen_params *p);

#endif /* ATTN_MODELS_GPT2_H */
