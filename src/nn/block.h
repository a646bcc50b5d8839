/* Reusable transformer pieces (internal), forward: embeddings, the
 * feed-forward block, residual + LayerNorm, and the transformer layer that
 * puts multi-head attention (attention.h) and the feed-forward block together
 * as post-LN (BERT) or pre-LN (GPT-2, ViT).
 *
 * Activations are token-major [N = B*T, width] buffers of a padded batch:
 * row b*T + t is token t of sequence b, real when t < len[b]. Padded rows go
 * through the GEMMs and attention (rows of the same calls) but the row-wise
 * steps skip them: attention never reads keys beyond len[b], so no real row
 * depends on them. The row-wise steps of a single row (a decoder's step) run
 * on the calling thread: a team for one row only waits for itself. */
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
    const uint16_t *w1_bf, *w2_bf; /* w1, w2 as bfloat16 instead (w1, w2 NULL) */
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
 * ffn.w1 and ffn.w1_bf NULL: attention only (no second half). */
typedef struct attn__layer {
    attn__mha_block attn;
    attn__ffn ffn;
    const float *ln1_g, *ln1_b, *ln2_g, *ln2_b; /* [E] each */
    float eps;
    int pre_ln;
    /* training only (attn__layer_forward_train and its backward), pre-LN
     * layers only: GPT-2's attn_pdrop (dropout on the attention
     * probabilities) and resid_pdrop (on each branch's output before the
     * residual add), every mask a pure function of drop_seed (the backward
     * regenerates them). 0: none. */
    float attn_pdrop, resid_pdrop;
    uint64_t drop_seed;
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

/* ======================================================================
 * Training (nn/block_bwd.c): a forward that keeps what the backward needs,
 * and the backward, for the layer above, a pre-LN decoder layer with
 * cross-attention, embeddings, the tied LM head and the loss.
 *
 * Conventions. Gradients of parameters are ACCUMULATED (+=) into a struct
 * mirroring the weights (zero them before a step; a NULL member is skipped:
 * use it for a parameter the layer does not have, such as a missing bias).
 * The gradient of the activations flows in place: dx holds dL/d(output) on
 * entry and dL/d(input) on return, as the forward updates x in place.
 * Saved activations are views into one caller-owned float block whose size
 * the *_act_floats functions give and which *_act_bind carves; backward
 * scratch likewise (*_bwd_floats). No KV cache in training; dropout on
 * pre-LN layers (attn__layer.attn_pdrop, resid_pdrop) and on rows
 * (attn__dropout_rows: embeddings).
 * Padded rows (bt->len) get zero gradient: the backward zeroes their dx on
 * entry, and no real row reads them.
 * ====================================================================== */

/* Gradients of an attention block's weights (layout of attn__mha_block). */
typedef struct attn__mha_block_grad {
    float *w_qkv, *b_qkv, *w_out, *b_out;
} attn__mha_block_grad;

/* Gradients of a feed-forward block's weights. */
typedef struct attn__ffn_grad {
    float *w1, *b1, *w2, *b2;
} attn__ffn_grad;

/* Gradients of a layer's weights. */
typedef struct attn__layer_grad {
    attn__mha_block_grad attn;
    attn__ffn_grad ffn;
    float *ln1_g, *ln1_b, *ln2_g, *ln2_b;
} attn__layer_grad;

/* What one attention sub-block keeps for its backward. N = B*T rows.
 *   x      [N, E]   input of the projections (pre-LN: LN(stream); post-LN: the stream)
 *   ln_in  [N, E]   input of its LayerNorm (pre-LN: the stream; post-LN: stream + attn)
 *   mean, rstd [N]  of that LayerNorm
 *   qkv    [N, E+2KV] (self) or [N, E] (cross: q only)
 *   kv     [B*S, 2KV] (cross only; NULL for self)
 *   o      [N, E]   attention output,  lse [B, H, T] */
typedef struct attn__attn_act {
    float *x, *ln_in, *mean, *rstd, *qkv, *kv, *o, *lse;
} attn__attn_act;

/* What one feed-forward sub-block keeps: x, ln_in, mean, rstd as above;
 * u [N, I] the pre-activation W1 x + b1, a [N, I] = gelu(u). */
typedef struct attn__ffn_act {
    float *x, *ln_in, *mean, *rstd, *u, *a;
} attn__ffn_act;

/* A layer's saved activations. */
typedef struct attn__layer_act {
    attn__attn_act attn;
    attn__ffn_act ffn;
    float *y; /* [N, E] the forward's scratch (a branch's output) */
} attn__layer_act;

/* Floats of a layer's saved activations for B x T rows, and the carving of
 * a block of that many floats (mem) into act. */
int64_t attn__layer_act_floats(const attn__layer *L, int64_t B, int64_t T);
void attn__layer_act_bind(const attn__layer *L, int64_t B, int64_t T, float *mem,
                          attn__layer_act *act);
/* Floats of attn__layer_backward's scratch for B x T rows. */
int64_t attn__layer_bwd_floats(const attn__layer *L, int64_t B, int64_t T);

/* Inverted dropout of n floats x in place: x[i] = 0 where a pure function
 * of (seed, i) falls below p, else x[i] / (1 - p) (p in [0, 1); 0: no-op).
 * The backward of the same call is the same call on the gradient. */
void attn__dropout_rows(attn_ctx *ctx, int64_t n, float p, uint64_t seed, float *x);

/* attn__layer_forward (no cache) that fills act. x [B*T, E] in place; mask
 * as attn__mha_block_args. Without dropout the outputs are bitwise those of
 * attn__layer_forward. Returns what attn__mha_block_attend returns, and
 * ATTN_E_UNSUPPORTED for dropout on a post-LN layer. */
attn_status attn__layer_forward_train(attn_ctx *ctx, const attn__layer *L, const attn__batch *bt,
                                      float *x, attn_tensor mask, const attn__layer_act *act);

/* Backward of attn__layer_forward_train (same L, bt, mask, the act it
 * filled). dx [B*T, E]: dL/d(layer output) in, dL/d(layer input) out.
 * g: parameter gradients, accumulated. scratch: attn__layer_bwd_floats
 * floats. Returns what attn__attend_backward returns. */
attn_status attn__layer_backward(attn_ctx *ctx, const attn__layer *L, const attn__batch *bt,
                                 attn_tensor mask, const attn__layer_act *act, float *dx,
                                 const attn__layer_grad *g, float *scratch);

/* A pre-LN decoder layer that reads an encoder (an image captioner's text
 * side; GPT-2 with add_cross_attention has this order):
 *   x = x + self(LN1(x))          causal (self.heads.causal) self-attention
 *   x = x + cross(LNc(x), enc)    queries from x, keys/values from enc
 *                                 [B*S, cross.kdim] (kdim 0: E)
 *   x = x + ffn(LN2(x))
 * cross.heads should not be causal (the encoder's rows are not positions
 * of the text). */
typedef struct attn__dec_layer {
    attn__mha_block self, cross;
    attn__ffn ffn;
    const float *ln1_g, *ln1_b, *lnc_g, *lnc_b, *ln2_g, *ln2_b; /* [E] each */
    float eps;
} attn__dec_layer;

typedef struct attn__dec_layer_grad {
    attn__mha_block_grad self, cross;
    attn__ffn_grad ffn;
    float *ln1_g, *ln1_b, *lnc_g, *lnc_b, *ln2_g, *ln2_b;
} attn__dec_layer_grad;

typedef struct attn__dec_layer_act {
    attn__attn_act self, cross;
    attn__ffn_act ffn;
    float *y; /* [N, E] the forward's scratch */
} attn__dec_layer_act;

/* The encoder side of a decoder layer: enc [B*S, kdim] token-major, rows
 * s >= enc_len[b] padding (enc_len NULL: all real). */
typedef struct attn__enc_states {
    const float *x;
    int64_t S;
    const int32_t *len;
} attn__enc_states;

int64_t attn__dec_layer_act_floats(const attn__dec_layer *D, int64_t B, int64_t T, int64_t S);
void attn__dec_layer_act_bind(const attn__dec_layer *D, int64_t B, int64_t T, int64_t S, float *mem,
                              attn__dec_layer_act *act);
int64_t attn__dec_layer_bwd_floats(const attn__dec_layer *D, int64_t B, int64_t T, int64_t S);

/* Forward over x [B*T, E] in place (act filled; also the inference
 * forward: no cache, so a decoding loop reruns the prefix). */
attn_status attn__dec_layer_forward(attn_ctx *ctx, const attn__dec_layer *D, const attn__batch *bt,
                                    float *x, const attn__enc_states *enc,
                                    const attn__dec_layer_act *act);

/* Backward: dx as attn__layer_backward; denc [B*S, kdim] ACCUMULATES
 * dL/d(enc) (NULL: not wanted); g accumulated; scratch:
 * attn__dec_layer_bwd_floats floats. */
attn_status attn__dec_layer_backward(attn_ctx *ctx, const attn__dec_layer *D, const attn__batch *bt,
                                     const attn__enc_states *enc, const attn__dec_layer_act *act,
                                     float *dx, float *denc, const attn__dec_layer_grad *g,
                                     float *scratch);

/* Backward of attn__embedding_forward without its LayerNorm (e->ln_g
 * NULL): scatter-adds dx [B*T, E] (padded rows skipped) into g_tok [V, E]
 * at each id, g_pos [P, E] at pos0 + t, g_type [E] (each optional). */
void attn__embedding_backward(attn_ctx *ctx, const attn__embedding *e, const attn__batch *bt,
                              const int32_t *const *ids, int64_t pos0, const float *dx,
                              float *g_tok, float *g_pos, float *g_type);

/* LayerNorm over N rows of width E with every row's mean and rstd [N]
 * saved (a final LayerNorm), and its backward: dx [N, E] overwritten,
 * dg / db [E] accumulated (each optional). dx may be dy. */
void attn__layernorm_rows_train(attn_ctx *ctx, int64_t N, int64_t E, const float *x, const float *g,
                                const float *b, float eps, float *y, float *mean, float *rstd);
void attn__layernorm_rows_backward(attn_ctx *ctx, int64_t N, int64_t E, const float *x,
                                   const float *g, const float *mean, const float *rstd,
                                   const float *dy, float *dx, float *dg, float *db);

/* Softmax cross-entropy over rows of logits [N, V] (row stride ld) with
 * targets [N]; a row whose target is ignore_index adds no loss and gets a
 * zero gradient. Returns the summed loss (float64, each row's
 * logsumexp - logit[target] formed in double); writes dlogits = grad_scale *
 * (softmax - onehot) (row stride ld; may be logits; NULL: loss only).
 * Mean reduction as PyTorch: grad_scale = 1 / attn__ce_count(). Targets
 * outside [0, V) other than ignore_index must be checked by the caller. */
double attn__softmax_ce(attn_ctx *ctx, const float *logits, int64_t ld, int64_t N, int64_t V,
                        const int32_t *targets, int32_t ignore_index, float grad_scale,
                        float *dlogits);
/* Rows of targets that are not ignore_index. */
int64_t attn__ce_count(const int32_t *targets, int64_t N, int32_t ignore_index);

/* Tied LM head, loss and gradient in one pass over row chunks (the
 * [N, V] logits are never whole in memory): for rows of h [N, E],
 * logits = h Wte^T (Wte [V, E], the token embedding), loss as
 * attn__softmax_ce with grad_scale; dh [N, E] overwritten with dL/dh, g_wte
 * [V, E] accumulated with dL/dWte (the head's share of the tied weight;
 * the embedding's share adds through attn__embedding_backward); dh and
 * g_wte may be NULL (loss only). scratch: attn__lm_head_ce_floats(V)
 * floats. Returns the summed loss. */
int64_t attn__lm_head_ce_floats(int64_t V);
double attn__lm_head_ce(attn_ctx *ctx, const float *h, int64_t N, int64_t E, const float *wte,
                        int64_t V, const int32_t *targets, int32_t ignore_index, float grad_scale,
                        float *dh, float *g_wte, float *scratch);

/* The weights of one encoder layer as Hugging Face's BERT and ViT store
 * them (one struct for both models: the same tensors, only the LayerNorm
 * placement differs, which attn__enc_layer takes as pre_ln). */
typedef struct attn__enc_weights {
    float *wqkv, *bqkv;   /* [3E, E], [3E]: query, key, value rows stacked */
    float *wo, *bo;       /* [E, E], [E]   attention output */
    float *ln1_g, *ln1_b; /* [E]           first LayerNorm */
    float *wi, *bi;       /* [I, E], [I]   intermediate */
    float *wf, *bf;       /* [E, I], [E]   output */
    float *ln2_g, *ln2_b; /* [E]           second LayerNorm */
} attn__enc_weights;

/* Floats of one layer's weights. */
size_t attn__enc_weights_floats(int64_t E, int64_t I);
/* Point w's tensors into p, in the order above; returns p past them. */
float *attn__enc_weights_take(attn__enc_weights *w, float *p, int64_t E, int64_t I);
/* The layer as an nn/ transformer layer (MHA: Hkv = H); with qkv_bias 0
 * the q/k/v projections have no bias. */
attn__layer attn__enc_layer(const attn__enc_weights *w, int64_t E, int64_t H, int64_t I, float eps,
                            int pre_ln, int qkv_bias);

#endif /* ATTN_NN_BLOCK_H */
