/* Decoders, forward with a KV cache. GPT-2: embeddings, pre-LN transformer
 * layers of nn/block.h with causal attention, final LayerNorm, LM head.
 * Llama: the same walk with RMSNorm, grouped-query attention with rotary
 * positions (an attention option: q and k are rotated inside the kernels,
 * keys are cached unrotated) and a SwiGLU MLP (llama_layer below).
 *
 * Rows are token-major: row b*T + t of every [N = B*T, ...] buffer is new
 * token t of sequence b, at position len + t. Per layer (attn__layer_forward,
 * pre-LN):
 *   qkv = LN1(x) Wqkv^T + bqkv; k, v appended to the layer's cache
 *   x  += attention(q, cache k, cache v; causal, bottom-right) Wo^T + bo
 *   x  += gelu_tanh(LN2(x) W1^T + b1) W2^T + b2
 * then logits = LNf(x) wte^T (the head is the token embedding). */
#include "models/gpt2.h"
#include "kernels/half.h"
#include "nn/block.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct attn_gpt_cache {
    attn_gpt_config cfg; /* the model's sizes (a cache serves models of these sizes) */
    int64_t B, cap, len;
    attn__kv_cache *kv; /* [n_layer], each [B, cap, E] keys and values */
    float *kmem, *vmem;
    /* forward scratch for up to `rows` token rows, grown on demand */
    int64_t rows;
    float *x, *qkv, *o, *h;
    const int32_t **ids; /* [B] */
};

static void scratch_free(attn_gpt_cache *c) {
    attn__free(c->x), attn__free(c->qkv), attn__free(c->o), attn__free(c->h);
    c->x = c->qkv = c->o = c->h = NULL;
    c->rows = 0;
}

void attn_gpt_cache_free(attn_gpt_cache *c) {
    if (!c) return;
    scratch_free(c);
    attn__free(c->kmem), attn__free(c->vmem);
    free(c->kv);
    free(c->ids);
    free(c);
}

attn_status attn_gpt_cache_create(attn_ctx *ctx, const attn_gpt *m, int64_t B, int64_t cap,
                                  attn_gpt_cache **out) {
    attn__ctx_clear(ctx);
    if (!m || !out) return attn_ctx_fail(ctx, ATTN_E_ARG, "model or out is NULL");
    *out = NULL;
    const attn_gpt_config *cf = &m->cfg;
    if (B < 1 || B > (1 << 20))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "cache batch %lld outside [1, 2^20]", (long long)B);
    if (cap < 1 || cap > cf->n_positions)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "cache capacity %lld outside [1, n_positions = %lld]",
                             (long long)cap, (long long)cf->n_positions);
    attn_gpt_cache *c = calloc(1, sizeof *c);
    const size_t L = (size_t)cf->n_layer;
    const size_t E = (size_t)(cf->n_kv_head * (cf->n_embd / cf->n_head)); /* KV width */
    const size_t per = (size_t)B * (size_t)cap * E, bytes = L * per * sizeof(float);
    if (c) {
        c->kv = calloc(L, sizeof *c->kv);
        c->ids = calloc((size_t)B, sizeof *c->ids);
        c->kmem = attn__malloc(bytes);
        c->vmem = attn__malloc(bytes);
    }
    if (!c || !c->kv || !c->ids || !c->kmem || !c->vmem) {
        attn_gpt_cache_free(c);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate a KV cache of 2 x %zu MB",
                             bytes >> 20);
    }
    c->cfg = *cf, c->B = B, c->cap = cap;
    for (size_t l = 0; l < L; l++)
        c->kv[l] = (attn__kv_cache){c->kmem + l * per, c->vmem + l * per, B, cap, (int64_t)E, 0};
    *out = c;
    return ATTN_OK;
}

int64_t attn_gpt_cache_len(const attn_gpt_cache *c) {
    return c ? c->len : 0;
}

void attn_gpt_cache_reset(attn_gpt_cache *c) {
    if (c) c->len = 0;
}

static attn_status scratch_grow(attn_ctx *ctx, attn_gpt_cache *c, int64_t rows) {
    if (rows <= c->rows) return ATTN_OK;
    scratch_free(c);
    const attn_gpt_config *cf = &c->cfg;
    const size_t N = (size_t)rows, E = (size_t)cf->n_embd;
    const size_t KV = (size_t)(cf->n_kv_head * (cf->n_embd / cf->n_head));
    const size_t I1 = (size_t)cf->n_inner * (cf->arch == ATTN_GPT_ARCH_LLAMA ? 2 : 1);
    c->x = attn__malloc(N * E * sizeof(float));
    c->qkv = attn__malloc(N * (E + 2 * KV) * sizeof(float));
    c->o = attn__malloc(N * E * sizeof(float));
    c->h = attn__malloc(N * I1 * sizeof(float));
    if (c->x && c->qkv && c->o && c->h) {
        c->rows = rows;
        return ATTN_OK;
    }
    scratch_free(c);
    return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate GPT-2 scratch for %lld tokens",
                         (long long)rows);
}

/* Layer l as an nn/ transformer layer over the model's weights (Llama uses
 * its attention part only). */
attn__layer attn__gpt_layer_view(const attn_gpt *m, int64_t l) {
    const attn_gpt_config *c = &m->cfg;
    const attn__gpt_layer *w = &m->layers[l];
    const int64_t E = c->n_embd, H = c->n_head, Dh = E / H;
    attn__layer L;
    memset(&L, 0, sizeof L);
    L.attn.heads.H = H, L.attn.heads.Hkv = c->n_kv_head, L.attn.heads.Dh = Dh;
    L.attn.heads.causal = 1;
    if (c->arch == ATTN_GPT_ARCH_LLAMA) {
        L.attn.heads.rope.rot_dim = Dh;
        L.attn.heads.rope.style = ATTN_ROPE_HALF;
        L.attn.heads.rope.inv_freq = m->inv_freq;
        L.attn.heads.rope.theta = c->rope_theta;
    }
    double scale = c->scale_attn_weights ? 1.0 / sqrt((double)Dh) : 1.0;
    if (c->scale_attn_by_inverse_layer_idx) scale /= (double)(l + 1);
    L.attn.heads.scale = (float)scale;
    L.attn.E = E, L.attn.KV = c->n_kv_head * Dh;
    L.attn.w_qkv = w->wqkv, L.attn.b_qkv = w->bqkv;
    L.attn.w_out = w->wo, L.attn.b_out = w->bo;
    L.attn.w_qkv_bf = w->wqkv_bf, L.attn.w_out_bf = w->wo_bf;
    L.ffn.E = E, L.ffn.I = c->n_inner;
    L.ffn.w1 = w->w1, L.ffn.b1 = w->b1, L.ffn.w2 = w->w2, L.ffn.b2 = w->b2;
    L.ffn.w1_bf = w->w1_bf, L.ffn.w2_bf = w->w2_bf;
    L.ffn.gelu_tanh = c->act == ATTN_GPT_GELU_TANH;
    L.ln1_g = w->ln1_g, L.ln1_b = w->ln1_b, L.ln2_g = w->ln2_g, L.ln2_b = w->ln2_b;
    L.eps = c->layer_norm_epsilon;
    L.pre_ln = 1;
    return L;
}

/* RMSNorm of each row as Hugging Face's LlamaRMSNorm: x * rsqrt(mean(x^2)
 * + eps), then times the gain (the mean of squares in double). */
static void rmsnorm_row(int64_t E, const float *x, const float *g, float eps, float *y) {
    double ss = 0.0;
    for (int64_t k = 0; k < E; k++)
        ss += (double)x[k] * x[k];
    const float rs = (float)(1.0 / sqrt(ss / (double)E + (double)eps));
    for (int64_t k = 0; k < E; k++)
        y[k] = g[k] * (x[k] * rs);
}

static void rmsnorm_rows(attn_ctx *ctx, int64_t N, int64_t E, const float *x, const float *g,
                         float eps, float *y) {
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) if (N > 1)
    for (int64_t r = 0; r < N; r++)
        rmsnorm_row(E, x + r * E, g, eps, y + r * E);
}

/* One Llama layer over x [N, E] in place:
 *   x += o_proj(attention(RMSNorm1(x)))     (GQA, RoPE, causal, cache)
 *   x += down(silu(gate h) * up h), h = RMSNorm2(x) */
static attn_status llama_layer(attn_ctx *ctx, const attn_gpt *m, int64_t l, attn_gpt_cache *c,
                               int64_t B, int64_t T) {
    const attn_gpt_config *cf = &m->cfg;
    const attn__gpt_layer *w = &m->layers[l];
    const attn__layer L = attn__gpt_layer_view(m, l);
    const int64_t E = cf->n_embd, N = B * T;
    float *y = c->qkv; /* q | k | v are spent after attention: the branch output */
    rmsnorm_rows(ctx, N, E, c->x, w->ln1_g, cf->layer_norm_epsilon, c->o);
    attn__mha_block_args a;
    memset(&a, 0, sizeof a);
    a.B = B, a.T = T, a.x = c->o, a.cache = &c->kv[l], a.qkv = c->qkv, a.o = c->o;
    attn_status st = attn__mha_block_attend(ctx, &L.attn, &a);
    if (st) return st;
    attn__mha_block_out(ctx, &L.attn, N, c->o, y);
    attn__residual_add(ctx, N, E, c->x, y);
    attn__gpt_norm_rows(ctx, m, l, 2, N, c->x, c->o);
    attn__gpt_mlp(ctx, m, l, N, c->o, c->h, y);
    attn__residual_add(ctx, N, E, c->x, y);
    return ATTN_OK;
}

void attn__gpt_norm_rows(attn_ctx *ctx, const attn_gpt *m, int64_t l, int which, int64_t N,
                         const float *x, float *y) {
    const attn_gpt_config *cf = &m->cfg;
    const int64_t E = cf->n_embd;
    const float *g = which == 0 ? m->lnf_g : which == 1 ? m->layers[l].ln1_g : m->layers[l].ln2_g;
    const float *b = which == 0 ? m->lnf_b : which == 1 ? m->layers[l].ln1_b : m->layers[l].ln2_b;
    if (cf->arch == ATTN_GPT_ARCH_LLAMA) {
        rmsnorm_rows(ctx, N, E, x, g, cf->layer_norm_epsilon, y);
        return;
    }
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) if (N > 1)
    for (int64_t r = 0; r < N; r++)
        attn__layernorm_forward(x + r * E, E, 1, E, g, b, cf->layer_norm_epsilon, y + r * E, E,
                                NULL, NULL);
}

void attn__gpt_mlp(attn_ctx *ctx, const attn_gpt *m, int64_t l, int64_t N, const float *in,
                   float *h, float *y) {
    const attn_gpt_config *cf = &m->cfg;
    const attn__gpt_layer *w = &m->layers[l];
    const int64_t E = cf->n_embd, I = cf->n_inner;
    if (cf->arch != ATTN_GPT_ARCH_LLAMA) {
        const attn__layer L = attn__gpt_layer_view(m, l);
        const attn__batch bt = {1, N, NULL};
        attn__ffn_forward(ctx, &L.ffn, &bt, in, h, y);
        return;
    }
    attn__linear_forward_w(ctx, in, E, N, E, w->w1, w->w1_bf, w->b1, 2 * I, h, 2 * I);
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) if (N > 1)
    for (int64_t r = 0; r < N; r++) {
        float *g = h + r * 2 * I; /* gate | up; silu(gate) * up over the gate half */
        for (int64_t i = 0; i < I; i++)
            g[i] = g[i] / (1.0f + expf(-g[i])) * g[I + i];
    }
    attn__linear_forward_w(ctx, h, 2 * I, N, I, w->w2, w->w2_bf, w->b2, E, y, E);
}

attn_status attn_gpt_forward(attn_ctx *ctx, const attn_gpt *m, attn_gpt_cache *c, int64_t T,
                             const int32_t *ids, int last_only, float *logits) {
    attn__ctx_clear(ctx);
    if (!m || !c || !ids) return attn_ctx_fail(ctx, ATTN_E_ARG, "model, cache or ids is NULL");
    const attn_gpt_config *cf = &m->cfg;
    if (c->cfg.n_embd != cf->n_embd || c->cfg.n_layer != cf->n_layer)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "the cache was made for another model's sizes");
    const int64_t B = c->B, E = cf->n_embd, V = cf->vocab_size;
    if (T < 1)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "T = %lld new tokens, need >= 1", (long long)T);
    if (T > c->cap - c->len)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "%lld new tokens after %lld exceed the cache's %lld positions "
                             "(n_positions = %lld)",
                             (long long)T, (long long)c->len, (long long)c->cap,
                             (long long)cf->n_positions);
    for (int64_t i = 0; i < B * T; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "sequence %lld, token %lld: id %d is outside [0, vocab_size = "
                                 "%lld)",
                                 (long long)(i / T), (long long)(i % T), ids[i], (long long)V);
    attn_status st = scratch_grow(ctx, c, B * T);
    if (st) return st;
    for (int64_t b = 0; b < B; b++)
        c->ids[b] = ids + b * T;
    const attn__batch bt = {B, T, NULL};
    if (m->wte_bf) { /* bf16 token rows, widened: x = tok + pos, as the fp32 path sums */
        for (int64_t r = 0; r < B * T; r++) {
            const uint16_t *we = m->wte_bf + (int64_t)ids[r] * E;
            const float *pe = m->wpe ? m->wpe + (c->len + r % T) * E : NULL;
            for (int64_t k = 0; k < E; k++)
                c->x[r * E + k] = pe ? attn__bf2f(we[k]) + pe[k] : attn__bf2f(we[k]);
        }
    } else {
        const attn__embedding emb = {E, m->wte, m->wpe, NULL, NULL, NULL, 0.0f};
        attn__embedding_forward(ctx, &emb, &bt, c->ids, c->len, c->x);
    }
    attn__layer_ws ws = {c->qkv, c->o, c->h};
    attn_tensor nomask;
    memset(&nomask, 0, sizeof nomask);
    const int llama = cf->arch == ATTN_GPT_ARCH_LLAMA;
    for (int64_t l = 0; l < cf->n_layer && !st; l++) {
        c->kv[l].len = c->len;
        if (llama) {
            st = llama_layer(ctx, m, l, c, B, T);
            continue;
        }
        const attn__layer L = attn__gpt_layer_view(m, l);
        st = attn__layer_forward(ctx, &L, &bt, c->x, nomask, &c->kv[l], &ws);
    }
    if (st) return st; /* c->len unchanged: the rows written are overwritten next time */
    c->len += T;
    if (!logits) return ATTN_OK;
    /* final LayerNorm of the rows whose logits are asked for, then the head */
    const int64_t rows = last_only ? B : B * T;
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t src = last_only ? r * T + T - 1 : r;
        if (llama)
            rmsnorm_row(E, c->x + src * E, m->lnf_g, cf->layer_norm_epsilon, c->o + r * E);
        else
            attn__layernorm_forward(c->x + src * E, E, 1, E, m->lnf_g, m->lnf_b,
                                    cf->layer_norm_epsilon, c->o + r * E, E, NULL, NULL);
    }
    attn__linear_forward_w(ctx, c->o, E, rows, E, m->head, m->head_bf, NULL, V, logits, V);
    return ATTN_OK;
}
