/* Multi-head attention over token-major rows: head views, the KV cache, and
 * the self-attention block of transformer layers (see attention.h). */
#include "nn/attention.h"

#include <string.h>

static attn_tensor heads_view(float *data, const attn__rows *r, int64_t B, int64_t nh, int64_t n,
                              int64_t Dh) {
    attn_tensor t = attn_tensor_f32_4d(data, B, nh, n, Dh);
    const int64_t st[4] = {r->bs, Dh, r->ld, 1};
    memcpy(t.stride, st, sizeof st);
    return t;
}

void attn__attend_sdpa_args(const attn__heads *hd, const attn__attend_args *a, attn_sdpa_args *s) {
    memset(s, 0, sizeof *s);
    s->q = heads_view(a->q.data, &a->q, a->B, hd->H, a->T, hd->Dh);
    s->k = heads_view(a->k.data, &a->k, a->B, hd->Hkv, a->S, hd->Dh);
    s->v = heads_view(a->v.data, &a->v, a->B, hd->Hkv, a->S, hd->Dh);
    s->out = heads_view(a->o.data, &a->o, a->B, hd->H, a->T, hd->Dh);
    if (a->lse) s->lse = attn_tensor_make(a->lse, ATTN_F32, 3, (int64_t[]){a->B, hd->H, a->T});
    s->scale = hd->scale;
    s->softcap = hd->softcap;
    s->causal = hd->causal;
    s->align = hd->align;
    s->window = hd->window;
    s->window_left = hd->window_left;
    s->window_right = hd->window_right;
    s->rope = hd->rope;
    s->kv_len = a->kv_len;
    s->mask = a->mask;
    s->key_padding_mask = a->key_padding_mask;
    s->dropout_p = a->dropout_p;
    s->seed = a->seed;
}

attn_status attn__attend(attn_ctx *ctx, const attn__heads *hd, const attn__attend_args *a) {
    if (hd->method) return attn__attend_method(ctx, hd, a);
    attn_sdpa_args s;
    attn__attend_sdpa_args(hd, a, &s);
    attn_status st = attn_sdpa_forward(ctx, &s);
    if (st || !a->probs.data) return st;
    attn_tensor p = attn_tensor_make(a->probs.data, ATTN_F32, 2, (int64_t[]){a->T, a->S});
    return attn_sdpa_probs(ctx, &s, a->probs.b, a->probs.h, 0, p);
}

attn_status attn__attend_backward(attn_ctx *ctx, const attn__heads *hd, const attn__attend_args *a,
                                  const float *dout, float *dq, float *dk, float *dv) {
    attn_sdpa_args s;
    attn__attend_sdpa_args(hd, a, &s);
    attn_sdpa_grads g;
    memset(&g, 0, sizeof g);
    g.dout = s.out, g.dout.data = (float *)dout;
    g.dq = s.q, g.dq.data = dq;
    g.dk = s.k, g.dk.data = dk;
    g.dv = s.v, g.dv.data = dv;
    return attn_sdpa_backward(ctx, &s, &g);
}

attn_status attn__kv_cache_write(attn_ctx *ctx, attn__kv_cache *c, int64_t B, int64_t S, int64_t KV,
                                 attn__rows k, attn__rows v) {
    if (B != c->B || KV != c->KV)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "KV cache holds [B=%lld, KV=%lld] rows, got [B=%lld, KV=%lld]",
                             (long long)c->B, (long long)c->KV, (long long)B, (long long)KV);
    if (S < 0 || c->len < 0 || c->len + S > c->cap)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "KV cache full: %lld positions + %lld new exceed its %lld",
                             (long long)c->len, (long long)S, (long long)c->cap);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < S; t++) {
            const int64_t dst = (b * c->cap + c->len + t) * KV;
            memcpy(c->k + dst, k.data + b * k.bs + t * k.ld, (size_t)KV * sizeof(float));
            memcpy(c->v + dst, v.data + b * v.bs + t * v.ld, (size_t)KV * sizeof(float));
        }
    return ATTN_OK;
}

void attn__mha_block_attend_args(const attn__mha_block *m, const attn__mha_block_args *a,
                                 attn__attend_args *at) {
    const int64_t E = m->E, KV = m->KV, T = a->T;
    memset(at, 0, sizeof *at);
    at->B = a->B, at->T = T;
    if (a->x_kv) {
        const int64_t S = a->S;
        at->S = S;
        at->q = (attn__rows){a->qkv, T * E, E};
        at->k = (attn__rows){a->kv, S * 2 * KV, 2 * KV};
        at->v = (attn__rows){a->kv + KV, S * 2 * KV, 2 * KV};
    } else {
        const int64_t ld = E + 2 * KV;
        at->S = T;
        at->q = (attn__rows){a->qkv, T * ld, ld};
        at->k = (attn__rows){a->qkv + E, T * ld, ld};
        at->v = (attn__rows){a->qkv + E + KV, T * ld, ld};
    }
    at->o = (attn__rows){a->o, T * E, E};
    at->lse = a->lse;
    at->mask = a->mask;
    at->kv_len = a->kv_len;
    at->probs = a->probs;
    at->dropout_p = a->dropout_p;
    at->seed = a->seed;
}

/* Cross-attention: q from x, k | v from x_kv. */
static attn_status block_cross(attn_ctx *ctx, const attn__mha_block *m,
                               const attn__mha_block_args *a) {
    const int64_t E = m->E, KV = m->KV, B = a->B, T = a->T, S = a->S;
    const int64_t kd = m->kdim ? m->kdim : E;
    if (a->cache)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "cross-attention takes no KV cache (its keys do not change)");
    const float *bq = m->b_qkv, *bkv = m->b_qkv ? m->b_qkv + E : NULL;
    attn__linear_forward(ctx, a->x, E, B * T, E, m->w_qkv, bq, E, a->qkv, E);
    attn__linear_forward(ctx, a->x_kv, kd, B * S, kd, m->w_qkv + E * E, bkv, 2 * KV, a->kv, 2 * KV);
    attn__attend_args at;
    attn__mha_block_attend_args(m, a, &at);
    return attn__attend(ctx, &m->heads, &at);
}

attn_status attn__mha_block_attend(attn_ctx *ctx, const attn__mha_block *m,
                                   const attn__mha_block_args *a) {
    if (a->x_kv) return block_cross(ctx, m, a);
    const int64_t E = m->E, KV = m->KV, ld = E + 2 * KV, B = a->B, T = a->T;
    attn__linear_forward_w(ctx, a->x, E, B * T, E, m->w_qkv, m->w_qkv_bf, m->b_qkv, ld, a->qkv, ld);
    attn__attend_args at;
    attn__mha_block_attend_args(m, a, &at);
    attn__heads hd = m->heads;
    attn__kv_cache *c = a->cache;
    if (c) {
        attn_status st = attn__kv_cache_write(ctx, c, B, T, KV, at.k, at.v);
        if (st) return st;
        at.S = c->len + T;
        at.k = (attn__rows){c->k, c->cap * KV, KV};
        at.v = (attn__rows){c->v, c->cap * KV, KV};
        hd.align = ATTN_ALIGN_BOTTOM_RIGHT; /* query t is position len + t */
        hd.rope.q_pos += c->len; /* keys are cached unrotated, at their positions */
    }
    attn_status st = attn__attend(ctx, &hd, &at);
    if (!st && c) c->len += T;
    return st;
}

void attn__mha_block_out(attn_ctx *ctx, const attn__mha_block *m, int64_t N, const float *o,
                         float *y) {
    attn__linear_forward_w(ctx, o, m->E, N, m->E, m->w_out, m->w_out_bf, m->b_out, m->E, y, m->E);
}
