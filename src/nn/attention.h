/* The one multi-head attention of the code base (internal). Layers and
 * models keep their activations token-major, row (b, t) of a [B, T, width]
 * buffer, and every head view over such rows is built here and nowhere else:
 * attn_mha, the transformer layer of block.h and through it BERT (and the
 * coming GPT decoder and ViT) all attend through attn__attend.
 *
 * Symbols: B batch, T query rows, S key rows, H query heads, Hkv key/value
 * heads, Dh head width, E = H*Dh, KV = Hkv*Dh. */
#ifndef ATTN_NN_ATTENTION_H
#define ATTN_NN_ATTENTION_H

#include "nn/nn.h"

/* Token-major rows: row (b, t) starts at data + b*bs + t*ld; head h of the
 * row is its columns [h*Dh, (h+1)*Dh). */
typedef struct attn__rows {
    float *data;
    int64_t bs, ld; /* batch stride, row stride (elements) */
} attn__rows;

/* Another way to compute the softmax attention of attn__attend, for
 * studying cheaper attention inside a trained model (docs/EFFICIENT.md);
 * models set attn__heads.method (NULL: exact attention, untouched). Self-
 * attention of a padded batch without a KV cache, forward only.
 *   EXACT   attn_sdpa_forward over the padded batch, as without a method
 *           (bitwise); it can also report the attention each key receives.
 *   LAYOUT  a block-sparse layout (attn_sdpa_layout_build of spec with
 *           blocks of `block` tokens, block 1 = token granularity) built
 *           for each sequence's own length n = kv_len[b], so random blocks
 *           and the last partial block are those of the text, not of the
 *           padding; each sequence runs alone on its n real rows.
 *   APPROX  attn_approx_forward (efficient.h) on each sequence's n real
 *           rows alone: the approximations take no padding mask, so padded
 *           keys are left out by never being in the call. landmarks and topk
 *           are clipped to n (k >= n is exact top-k; L = n is Nystrom on
 *           every token).
 * Padded query rows of o get 0 in the per-sequence methods. */
typedef enum attn__method_kind {
    ATTN__METHOD_EXACT = 0,
    ATTN__METHOD_LAYOUT = 1,
    ATTN__METHOD_APPROX = 2,
} attn__method_kind;

typedef struct attn__method {
    attn__method_kind kind;
    attn_sdpa_layout_spec spec; /* LAYOUT */
    int64_t block;              /* LAYOUT: tokens per block, >= 1 */
    attn_approx_method approx;  /* APPROX: the method and its counts */
    int64_t features, landmarks, topk;
    uint64_t seed;
    const uint64_t *head_seeds; /* optional [H]: head h's own random parts (LAYOUT: the
                                 * spec's seed, per-head layouts; APPROX PERFORMER: its
                                 * features, one call per head); NULL: spec.seed and seed
                                 * for every head */
    const float *omega;         /* optional, APPROX PERFORMER: the features [m, Dh]
                                 * (replacing seed and head_seeds), one set for
                                 * every head, or with omega_stride > 0 head h's at
                                 * omega + h * omega_stride (one call per head) */
    int64_t omega_stride;
    double *flops;              /* optional: attention FLOPs done (attn_sdpa_flops, the computed
                                 * blocks of a layout, attn_approx_flops), accumulated */
    float *received;            /* optional [B, T]: received[b, j] = sum over heads h and real
                                 * queries i < kv_len[b] of p[b, h, i, j], p the method's own
                                 * attention (EXACT, LAYOUT: the probabilities rebuilt from lse;
                                 * APPROX: attn_approx_received), the attention key j receives;
                                 * padded keys 0. Written */
} attn__method;

/* Head geometry and score options, passed to attn_sdpa_* unchanged. */
typedef struct attn__heads {
    int64_t H, Hkv, Dh; /* H % Hkv == 0 */
    float scale;        /* 0: 1/sqrt(Dh) */
    float softcap;
    int causal;
    attn_align align;
    int window;
    int64_t window_left, window_right;
    attn_rope rope;       /* rotary positions (rot_dim 0: none); with a KV cache the
                           * queries' positions start at the cache's length */
    attn__method *method; /* NULL: exact attention (see attn__method) */
} attn__heads;

/* A request for the attention probabilities of head (b, h), rebuilt from
 * lse by attn_sdpa_probs right after the forward (lse required): data NULL
 * means none; otherwise [T, S] floats, row-major. */
typedef struct attn__probs {
    float *data;
    int64_t b, h;
} attn__probs;

/* One attention over token-major projections. */
typedef struct attn__attend_args {
    int64_t B, T, S;
    attn__rows q;                 /* [B, T, E]  read */
    attn__rows k, v;              /* [B, S, KV] read */
    attn__rows o;                 /* [B, T, E]  written */
    float *lse;                   /* optional [B, H, T] contiguous, written (read by backward) */
    attn_tensor mask;             /* optional, as attn_sdpa_args.mask */
    attn_tensor key_padding_mask; /* optional, as attn_sdpa_args.key_padding_mask */
    const int32_t *kv_len;        /* optional [B] */
    float dropout_p;
    uint64_t seed;
    attn__probs probs; /* optional: one head's probabilities, see attn__probs */
} attn__attend_args;

/* The sdpa arguments of a: q[b,h,t,:] = q.data + b*q.bs + t*q.ld + h*Dh, k and
 * v likewise over Hkv heads, out likewise over o. */
void attn__attend_sdpa_args(const attn__heads *hd, const attn__attend_args *a, attn_sdpa_args *s);

/* o = softmax(scale q k^T + masks) v per head, then the probabilities
 * a->probs asks for. Returns what attn_sdpa_forward and attn_sdpa_probs
 * return. */
attn_status attn__attend(attn_ctx *ctx, const attn__heads *hd, const attn__attend_args *a);

/* attn__attend with hd->method set (nn/attention_method.c): self-attention
 * only (T == S), no dropout, probs or cache. Returns ATTN_E_UNSUPPORTED for
 * what a method cannot do (APPROX with
 * causal, window, softcap or RoPE, which it would ignore), and what
 * attn_sdpa_forward, attn_sdpa_probs, attn_sdpa_layout_build and
 * attn_approx_forward return. */
attn_status attn__attend_method(attn_ctx *ctx, const attn__heads *hd, const attn__attend_args *a);

/* Backward of attn__attend (a as in the forward, its lse required): dq, dk, dv
 * overwritten, in the layouts of q, k, v (same strides, other data); dout in
 * the layout of o. Returns what attn_sdpa_backward returns. */
attn_status attn__attend_backward(attn_ctx *ctx, const attn__heads *hd, const attn__attend_args *a,
                                  const float *dout, float *dq, float *dk, float *dv);

/* A KV cache: keys and values of the positions seen so far, so a decoder
 * attends to them without recomputing them. Caller-owned memory; the cache
 * holds no pointer of its own beyond these views. */
typedef struct attn__kv_cache {
    float *k, *v; /* [B, cap, KV] each, contiguous */
    int64_t B, cap, KV;
    int64_t len; /* positions filled: rows [0, len) of every batch */
} attn__kv_cache;

/* Copy S new key and value rows ([B, S, KV] each) into the cache at offset
 * c->len (not advancing it). Returns ATTN_OK, ATTN_E_SHAPE (B or KV differ
 * from the cache's), ATTN_E_ARG (len + S > cap: the cache is full). */
attn_status attn__kv_cache_write(attn_ctx *ctx, attn__kv_cache *c, int64_t B, int64_t S, int64_t KV,
                                 attn__rows k, attn__rows v);

/* Multi-head attention with its weights (PyTorch Linear layout, borrowed):
 * self-attention of x [N = B*T, E], or cross-attention of x to x_kv
 * [B*S, E] (a decoder reading an encoder's states), into o [N, E]. */
typedef struct attn__mha_block {
    attn__heads heads;
    int64_t E, KV;
    const float *w_qkv, *b_qkv; /* [E + 2KV, E], [E + 2KV] (NULL: no bias): Wq, Wk, Wv stacked;
                                 * cross-attention with kdim != E: Wq [E, E] then
                                 * [Wk; Wv] [2KV, kdim] back to back */
    const float *w_out, *b_out; /* [E, E], [E] (NULL: no bias) */
    int64_t kdim;               /* cross-attention only: width of x_kv rows (0: E) */
    /* self-attention: w_qkv / w_out stored as bfloat16 instead (the fp32
     * pointer NULL; attn__linear_forward_w), a decoder's bf16 weights */
    const uint16_t *w_qkv_bf, *w_out_bf;
} attn__mha_block;

/* Inputs of one attention of a padded batch. */
typedef struct attn__mha_block_args {
    int64_t B, T;
    const float *x;        /* [B*T, E] token-major: the queries' input (and, for
                            * self-attention, the keys' and values') */
    const float *x_kv;     /* optional [B*S, kdim]: cross-attention keys and values */
    int64_t S;             /* rows per batch of x_kv */
    const int32_t *kv_len; /* optional [B]: keys s >= kv_len[b] (padding) are masked */
    attn_tensor mask;      /* optional, as attn_sdpa_args.mask */
    attn__kv_cache *cache; /* optional, self-attention only: see below */
    float *qkv;            /* scratch [B*T, E + 2KV] (self) or [B*T, E] (cross):
                            * q | k | v, or q, per row; left for the caller */
    float *kv;             /* cross only: scratch [B*S, 2KV], k | v per row */
    float *o;              /* [B*T, E] attention output, written */
    float *lse;            /* optional [B, H, T], written */
    attn__probs probs;     /* optional: one head's probabilities (needs lse) */
    float dropout_p;       /* training: dropout on the attention probabilities, as
                            * attn_sdpa_args (0: none), seeded by seed; the backward
                            * (same args) regenerates the mask */
    uint64_t seed;
} attn__mha_block_args;

/* Self-attention: q | k | v = x Wqkv^T + bqkv (one GEMM), then
 * o = attention(q, k, v). With a cache, the new k and v rows are written
 * into it at offset cache->len, the queries attend to cache rows
 * [0, len + T) aligned bottom-right (query t is position len + t), and
 * cache->len advances by T; kv_len then counts cache rows.
 * Cross-attention (x_kv set): q = x Wq^T + bq, k | v = x_kv [Wk; Wv]^T +
 * [bk; bv] (one GEMM), o = attention(q, k, v); a cache is ATTN_E_ARG (cache
 * the encoder's k | v instead: they do not change while decoding).
 * Returns ATTN_OK, ATTN_E_ARG, and what attn__attend and
 * attn__kv_cache_write return. */
attn_status attn__mha_block_attend(attn_ctx *ctx, const attn__mha_block *m,
                                   const attn__mha_block_args *a);

/* The attention of a (no cache): q, k, v views over a->qkv (self) or
 * a->qkv and a->kv (cross), o, lse, masks from a. The forward and the
 * backward (nn/block_bwd.c) build their views here. */
void attn__mha_block_attend_args(const attn__mha_block *m, const attn__mha_block_args *a,
                                 attn__attend_args *at);

/* y = o Wout^T + bout over N rows. */
void attn__mha_block_out(attn_ctx *ctx, const attn__mha_block *m, int64_t N, const float *o,
                         float *y);

#endif /* ATTN_NN_ATTENTION_H */
