/* Reusable transformer pieces (internal), forward: embeddings, the
 * feed-forward block, residual + LayerNorm, and the transformer layer that
 * puts multi-head attention (attention.h) and the feed-forward block together
 * as post-LN (BERT) or pre-LN (GPT-2, ViT).
 *
 * Activations are token-major [N = B*T, width] buffers of a padded batch:
 * row b*T + t is token t of sequence b, real when t < len[b]. Padded rows go
 * through the GEMMs and attention (rows of the same calls) but the row-wise
 * steps skip them: attention never reads keys beyond len[b], so no real row
 * depends on them. */
#ifndef ATTN_NN_BLOCK_H
#define ATTN_NN_BLOCK_H

#include "nn/attention.h"

/* A padded batch: B sequences of T rows, sequence b's first len[b] real
 * (len NULL: every row real). */
typedef struct attn__batch {
    int64_t B, T;
    const int32_t *len;
} attn__batch;

/* Is row r of the batch padding? */
static inline int attn__batch_padded(const attn__batch *bt, int64_t r) {
    return bt->len && r % bt->T >= bt->len[r / bt->T];
}

/* Token embeddings: x[r] = tok[id] + pos[pos0 + t] (+ type, one row: token
 * type 0), then LayerNorm when ln_g is set. The sums are formed in that
 * order, as Hugging Face does. */
typedef struct attn__embedding {
    int64_t E;
    const float *tok;         /* [V, E] */
    const float *pos;         /* [P, E], or NULL: no position embedding */
    const float *type;        /* [E], or NULL */
    const float *ln_g, *ln_b; /* [E] each, or ln_g NULL: no LayerNorm */
    float eps;
} attn__embedding;

/* x [B*T, E] from ids[b][t] (t < len[b]; padded rows embed id 0) at
 * positions pos0 + t (pos0 > 0: after a KV cache's rows). The caller has
 * checked every id and position. */
void attn__embedding_forward(attn_ctx *ctx, const attn__embedding *e, const attn__batch *bt,
                             const int32_t *const *ids, int64_t pos0, float *x);

/* Feed-forward block, PyTorch Linear layout: y = W2 gelu(W1 x + b1) + b2,
 * exact (erf) GELU, or its tanh form (GPT-2) when gelu_tanh is set. */
typedef struct attn__ffn {
    int64_t E, I;
    const float *w1, *b1; /* [I, E], [I] */
    const float *w2, *b2; /* [E, I], [E] */
    int gelu_tanh;
} attn__ffn;

/* The block's activation in place over n elements, and its backward
 * (dx = dy * act'(u), u the pre-activation; dx may be dy). */
static inline void attn__ffn_activate(const attn__ffn *f, float *x, int64_t n) {
    if (f->gelu_tanh)
        attn__gelu_tanh_forward(x, n);
    else
        attn__gelu_forward(x, n);
}
static inline void attn__ffn_activate_backward(const attn__ffn *f, const float *u, const float *dy,
                                               float *dx, int64_t n) {
    if (f->gelu_tanh)
        attn__gelu_tanh_backward(u, dy, dx, n);
    else
        attn__gelu_backward(u, dy, dx, n);
}

/* h: scratch [N, I]; x [N, E] -> y [N, E] (y != x). */
void attn__ffn_forward(attn_ctx *ctx, const attn__ffn *f, const attn__batch *bt, const float *x,
                       float *h, float *y);

/* Post-LN residual: x = LayerNorm(x + y), row by row over real rows (y is
 * used as scratch). */
void attn__residual_layernorm(attn_ctx *ctx, const attn__batch *bt, int64_t E, float *x, float *y,
                              const float *g, const float *b, float eps);

/* Pre-LN residual: x += y over every row. */
void attn__residual_add(attn_ctx *ctx, int64_t N, int64_t E, float *x, const float *y);

/* A transformer layer.
 *   post-LN (BERT):        x = LN1(x + attn(x));     x = LN2(x + ffn(x))
 *   pre-LN (GPT-2, ViT):   x = x + attn(LN1(x));     x = x + ffn(LN2(x))
 * ffn.w1 NULL: attention only (no second half). */
typedef struct attn__layer {
    attn__mha_block attn;
    attn__ffn ffn;
    const float *ln1_g, *ln1_b, *ln2_g, *ln2_b; /* [E] each */
    float eps;
    int pre_ln;
} attn__layer;

/* Scratch of attn__layer_forward for N rows. */
typedef struct attn__layer_ws {
    float *qkv; /* [N, E + 2KV]; after attention reused as the [N, E] branch output */
    float *o;   /* [N, E] attention output (pre-LN: also the LayerNorm output) */
    float *h;   /* [N, I] */
} attn__layer_ws;

/* One layer over x [B*T, E] in place. cache and mask: as attn__self_args.
 * Returns what attn__mha_block_attend returns. */
attn_status attn__layer_forward(attn_ctx *ctx, const attn__layer *L, const attn__batch *bt,
                                float *x, attn_tensor mask, attn__kv_cache *cache,
                                attn__layer_ws *ws);

#endif /* ATTN_NN_BLOCK_H */
