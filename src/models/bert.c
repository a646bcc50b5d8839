/* BERT encoder, forward, for sentence embeddings: embeddings and post-LN
 * transformer layers of nn/block.h over a padded batch.
 *
 * Texts of one batch are padded to the longest, T, and stored token-major:
 * row b*T + t of every [N = B*T, ...] buffer is token t of text b. Per layer
 * (attn__layer_forward, post-LN)
 *   qkv = x Wqkv^T + bqkv                      [N, 3E]  (q | k | v per row)
 *   a   = attention(q, k, v, kv_len = len[b])  [N, E]
 *   x   = LN(x + a Wo^T + bo)
 *   x   = LN(x + gelu(x Wi^T + bi) Wf^T + bf)
 * Keys beyond a text's length are never seen; padded query rows go through
 * the GEMMs and attention (rows of the same calls), skip the row-wise
 * LayerNorm and GELU, and are ignored by pooling. Nothing T x T is
 * allocated. */
#include "models/bert.h"
#include "nn/block.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_TEXTS 32 /* texts per batch in attn_bert_embed, as sentence-transformers */

attn_status attn__bert_alloc(attn_ctx *ctx, const attn_bert_config *cfg, attn_bert **out) {
    *out = NULL;
    const attn_bert_config *c = cfg;
    if (c->vocab_size < 1 || c->hidden_size < 1 || c->num_layers < 1 || c->num_heads < 1 ||
        c->intermediate_size < 1 || c->max_position < 1 || c->type_vocab_size < 1 ||
        c->hidden_size % c->num_heads || c->max_seq_length < 1 ||
        c->max_seq_length > c->max_position)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "invalid BERT sizes (E=%lld, H=%lld, I=%lld, layers=%lld, "
                             "V=%lld, P=%lld, max_seq_length=%lld)",
                             (long long)c->hidden_size, (long long)c->num_heads,
                             (long long)c->intermediate_size, (long long)c->num_layers,
                             (long long)c->vocab_size, (long long)c->max_position,
                             (long long)c->max_seq_length);
    const size_t E = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    const size_t per_layer = attn__enc_weights_floats((int64_t)E, (int64_t)I);
    const size_t total =
        ((size_t)c->vocab_size + (size_t)c->max_position + (size_t)c->type_vocab_size + 2) * E +
        (size_t)c->num_layers * per_layer;
    attn_bert *m = calloc(1, sizeof *m);
    if (m) m->layers = calloc((size_t)c->num_layers, sizeof *m->layers);
    if (m && m->layers) m->arena = attn__malloc(total * sizeof(float));
    if (!m || !m->layers || !m->arena) {
        attn_bert_free(m);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate %zu MB of BERT weights",
                             total * sizeof(float) >> 20);
    }
    m->cfg = *c;
    float *p = m->arena;
#define TAKE(ptr, n) (ptr = p, p += (n))
    TAKE(m->word, (size_t)c->vocab_size * E);
    TAKE(m->pos, (size_t)c->max_position * E);
    TAKE(m->type, (size_t)c->type_vocab_size * E);
    TAKE(m->emb_ln_g, E);
    TAKE(m->emb_ln_b, E);
    for (int64_t l = 0; l < c->num_layers; l++)
        p = attn__enc_weights_take(&m->layers[l], p, (int64_t)E, (int64_t)I);
#undef TAKE
    *out = m;
    return ATTN_OK;
}

void attn_bert_free(attn_bert *m) {
    if (!m) return;
    attn__free(m->arena);
    free(m->layers);
    free(m);
}

const attn_bert_config *attn_bert_get_config(const attn_bert *m) {
    return m ? &m->cfg : NULL;
}

/* Scratch for one batch of up to `rows` = B*T token rows. */
typedef struct bert_ws {
    float *x;   /* [N, E]  hidden states */
    float *qkv; /* [N, 3E] q | k | v; after attention, the branches' outputs */
    float *a;   /* [N, E]  attention output, [B,T,H,Dh] */
    float *h;   /* [N, I]  feed-forward activations */
    int32_t *kvl;
    const int32_t **ids; /* [B] the batch's texts */
} bert_ws;

static void ws_free(bert_ws *w) {
    attn__free(w->x);
    attn__free(w->qkv);
    attn__free(w->a);
    attn__free(w->h);
    free(w->kvl);
    free(w->ids);
}

static attn_status ws_alloc(attn_ctx *ctx, const attn_bert_config *c, int64_t B, int64_t T,
                            bert_ws *w) {
    const size_t N = (size_t)(B * T), E = (size_t)c->hidden_size;
    w->x = attn__malloc(N * E * sizeof(float));
    w->qkv = attn__malloc(N * 3 * E * sizeof(float));
    w->a = attn__malloc(N * E * sizeof(float));
    w->h = attn__malloc(N * (size_t)c->intermediate_size * sizeof(float));
    w->kvl = malloc((size_t)B * sizeof(int32_t));
    w->ids = malloc((size_t)B * sizeof *w->ids);
    if (w->x && w->qkv && w->a && w->h && w->kvl && w->ids) return ATTN_OK;
    ws_free(w);
    memset(w, 0, sizeof *w);
    return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate BERT scratch for %lld x %lld tokens",
                         (long long)B, (long long)T);
}

/* Layer l as an nn/ transformer layer over the model's weights. */
attn__layer attn__bert_layer_view(const attn_bert *m, int64_t l) {
    const attn_bert_config *c = &m->cfg;
    return attn__enc_layer(&m->layers[l], c->hidden_size, c->num_heads, c->intermediate_size,
                           c->layer_norm_eps, 0, 1);
}

/* attn_bert_embed_with's options for run_batch (NULL: none). */
typedef struct bert_run {
    attn__method method; /* every layer's attention (method.received: pruning) */
    int64_t prune_after; /* 0: none */
    double keep;
    attn_bert_draws draws; /* SHARED: method.seed and spec.seed as given */
    uint64_t seed, layout_seed;
    uint64_t *head_seeds; /* [num_heads] (draws HEAD) */
    float *omegas;        /* PERFORMER: every layer's (head's) features, drawn once:
                           * [1 or layers][1 or heads][m, Dh] by draws */
    float *recv;          /* [rows] scratch: the attention each token receives */
    double flops;         /* accumulated (method.flops points here) */
    int64_t token_layers;
} bert_run;

/* Token pruning of a batch after a layer (attn_bert_options): text b keeps
 * its k = ceil(keep n) tokens receiving the most attention, its first and
 * last always, in order; x is compacted in place into rows b*T' + t' (T' the
 * new longest, into *Tout; a row only moves to a lower index, so reading
 * forward is safe) and kvl[b] becomes k. Returns ATTN_OK or ATTN_E_NOMEM. */
static attn_status prune_tokens(attn_ctx *ctx, const attn_bert_config *c, int64_t B, int64_t T,
                                int32_t *kvl, const float *recv, double keep, float *x,
                                int64_t *Tout) {
    const int64_t E = c->hidden_size;
    int64_t Tn = 0;
    int32_t *nk = malloc((size_t)B * sizeof *nk);
    uint8_t *sel = malloc((size_t)(B * T));
    if (!nk || !sel) {
        free(nk), free(sel);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate the pruning of %lld x %lld tokens",
                             (long long)B, (long long)T);
    }
    memset(sel, 0, (size_t)(B * T));
    for (int64_t b = 0; b < B; b++) {
        const int64_t n = kvl[b];
        int64_t k = (int64_t)ceil(keep * (double)n - 1e-9);
        k = ATTN_MAX(k, ATTN_MIN(n, (int64_t)2));
        k = ATTN_MIN(k, n);
        uint8_t *sb = sel + b * T;
        const float *rb = recv + b * T;
        sb[0] = 1, sb[n - 1] = 1;
        for (int64_t got = n > 1 ? 2 : 1; got < k; got++) {
            int64_t best = -1; /* the most attended token not yet kept (ties: earlier) */
            for (int64_t j = 1; j < n - 1; j++)
                if (!sb[j] && (best < 0 || rb[j] > rb[best])) best = j;
            sb[best] = 1;
        }
        nk[b] = (int32_t)k;
        Tn = ATTN_MAX(Tn, k);
    }
    if (Tn == T) {
        int all = 1;
        for (int64_t b = 0; b < B; b++)
            all &= nk[b] == kvl[b];
        if (all) { /* nothing pruned: the batch is untouched */
            free(nk), free(sel);
            *Tout = T;
            return ATTN_OK;
        }
    }
    for (int64_t b = 0; b < B; b++) {
        int64_t t2 = 0;
        for (int64_t t = 0; t < kvl[b]; t++)
            if (sel[b * T + t]) {
                if (b * Tn + t2 != b * T + t)
                    memmove(x + (b * Tn + t2) * E, x + (b * T + t) * E, (size_t)E * sizeof(float));
                t2++;
            }
        kvl[b] = nk[b];
    }
    for (int64_t b = 0; b < B; b++) /* padding rows: zeros, finite for the GEMMs */
        memset(x + (b * Tn + kvl[b]) * E, 0, (size_t)((Tn - kvl[b]) * E) * sizeof(float));
    free(nk), free(sel);
    *Tout = Tn;
    return ATTN_OK;
}

/* One padded batch: text `sel[b]` (or b when sel is NULL) is row b.
 * Runs every layer, leaving the last hidden states in w->x (rows b*T' + t,
 * T' in *Tout, text b's real rows w->kvl[b]: fewer than its length after
 * pruning); or, when stop_layer >= 0, stops inside that layer after
 * attention, writing its log-sum-exp [B,H,T] into lse and head `head`'s
 * probabilities of text 0 [T, T] into probs (attn_sdpa_probs: the
 * forward's own numbers). r: attn_bert_embed_with's options, or NULL. */
static attn_status run_batch(attn_ctx *ctx, const attn_bert *m, int64_t B, int64_t T,
                             const int32_t *const *ids, const int64_t *len, const int64_t *sel,
                             bert_ws *w, int64_t stop_layer, int64_t head, float *lse, float *probs,
                             bert_run *r, int64_t *Tout) {
    const attn_bert_config *c = &m->cfg;
    for (int64_t b = 0; b < B; b++) {
        w->kvl[b] = (int32_t)len[sel ? sel[b] : b];
        w->ids[b] = ids[sel ? sel[b] : b];
    }
    attn__batch bt = {B, T, w->kvl};
    if (Tout) *Tout = T;
    /* embeddings: word + position + token type 0, then LayerNorm */
    const attn__embedding emb = {c->hidden_size, m->word,     m->pos,           m->type,
                                 m->emb_ln_g,    m->emb_ln_b, c->layer_norm_eps};
    attn__embedding_forward(ctx, &emb, &bt, w->ids, 0, w->x);

    attn__layer_ws lws = {w->qkv, w->a, w->h};
    attn_tensor nomask;
    memset(&nomask, 0, sizeof nomask);
    for (int64_t l = 0; l < c->num_layers; l++) {
        attn__layer L = attn__bert_layer_view(m, l);
        if (r) {
            const int prune = r->prune_after == l + 1;
            r->method.received = prune ? r->recv : NULL;
            if (r->omegas) { /* the Performer's features, drawn up front */
                const int64_t per = r->method.features * (c->hidden_size / c->num_heads);
                const int64_t nh = r->draws == ATTN_BERT_DRAWS_HEAD ? c->num_heads : 1;
                r->method.omega =
                    r->omegas + (r->draws == ATTN_BERT_DRAWS_SHARED ? 0 : l) * nh * per;
                r->method.omega_stride = nh > 1 ? per : 0;
            } else if (r->draws == ATTN_BERT_DRAWS_LAYER) {
                r->method.seed = attn_bert_draw_seed(r->seed, l, -1);
                r->method.spec.seed = attn_bert_draw_seed(r->layout_seed, l, -1);
            } else if (r->draws == ATTN_BERT_DRAWS_HEAD) {
                /* one seed per head, for the Performer's features or the
                 * layout's random blocks (only one of them is in use) */
                const uint64_t base =
                    r->method.kind == ATTN__METHOD_LAYOUT ? r->layout_seed : r->seed;
                for (int64_t h = 0; h < c->num_heads; h++)
                    r->head_seeds[h] = attn_bert_draw_seed(base, l, h);
                r->method.head_seeds = r->head_seeds;
            }
            L.attn.heads.method = &r->method;
            const double E = (double)c->hidden_size, I = (double)c->intermediate_size;
            r->flops += 2.0 * (double)(bt.B * bt.T) * (4.0 * E * E + 2.0 * E * I);
            for (int64_t b = 0; b < B; b++)
                r->token_layers += w->kvl[b];
            attn_status st = attn__layer_forward(ctx, &L, &bt, w->x, nomask, NULL, &lws);
            if (st) return st;
            if (prune) {
                if ((st = prune_tokens(ctx, c, B, bt.T, w->kvl, r->recv, r->keep, w->x, Tout)))
                    return st;
                bt.T = *Tout;
            }
            continue;
        }
        if (l == stop_layer) {
            attn__mha_block_args a;
            memset(&a, 0, sizeof a);
            a.B = B, a.T = T, a.x = w->x, a.kv_len = w->kvl;
            a.qkv = w->qkv, a.o = w->a, a.lse = lse;
            a.probs = (attn__probs){probs, 0, head};
            return attn__mha_block_attend(ctx, &L.attn, &a);
        }
        attn_status st = attn__layer_forward(ctx, &L, &bt, w->x, nomask, NULL, &lws);
        if (st) return st;
    }
    return ATTN_OK;
}

static attn_status check_inputs(attn_ctx *ctx, const attn_bert *m, int64_t n,
                                const int32_t *const *ids, const int64_t *len, const void *out) {
    if (!m) return attn_ctx_fail(ctx, ATTN_E_ARG, "model is NULL");
    if (n < 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "number of texts %lld is negative", (long long)n);
    if (n > 0 && (!ids || !len || !out))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "ids, len or the output is NULL");
    for (int64_t i = 0; i < n; i++) {
        if (len[i] < 1 || len[i] > m->cfg.max_position)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "text %lld: %lld tokens, must be in [1, max_position = %lld]",
                                 (long long)i, (long long)len[i], (long long)m->cfg.max_position);
        if (!ids[i]) return attn_ctx_fail(ctx, ATTN_E_ARG, "text %lld: ids is NULL", (long long)i);
        for (int64_t t = 0; t < len[i]; t++)
            if (ids[i][t] < 0 || ids[i][t] >= m->cfg.vocab_size)
                return attn_ctx_fail(
                    ctx, ATTN_E_ARG,
                    "text %lld, token %lld: id %d is outside [0, vocab_size = %lld)", (long long)i,
                    (long long)t, ids[i][t], (long long)m->cfg.vocab_size);
    }
    return ATTN_OK;
}

uint64_t attn_bert_draw_seed(uint64_t seed, int64_t layer, int64_t head) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (uint64_t)(layer + 1);
    if (head >= 0) z += 0xd1b54a32d192ed03ull * (uint64_t)(head + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull; /* splitmix64's finaliser */
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Pool text b's real tokens (x rows b*T .. b*T + n - 1), in double, then
 * L2-normalise as torch.nn.functional.normalize (eps 1e-12) if asked. */
void attn__bert_pool(const attn_bert_config *c, const float *x, int64_t T, int64_t b, int64_t n,
                     float *out) {
    const int64_t E = c->hidden_size;
    const float *xb = x + b * T * E;
    double norm = 0.0;
    for (int64_t k = 0; k < E; k++) {
        double v;
        if (c->pooling == ATTN_POOL_CLS) {
            v = xb[k];
        } else if (c->pooling == ATTN_POOL_MAX) {
            v = xb[k];
            for (int64_t t = 1; t < n; t++)
                v = fmax(v, (double)xb[t * E + k]);
        } else {
            v = 0.0;
            for (int64_t t = 0; t < n; t++)
                v += xb[t * E + k];
            v /= (double)n;
        }
        out[k] = (float)v;
        norm += v * v;
    }
    if (c->normalize) {
        double s = 1.0 / fmax(sqrt(norm), 1e-12);
        for (int64_t k = 0; k < E; k++)
            out[k] = (float)(out[k] * s);
    }
}

typedef struct by_len {
    int64_t len, i;
} by_len;

static int by_len_cmp(const void *x, const void *y) {
    const by_len *a = x, *b = y;
    if (a->len != b->len) return a->len > b->len ? -1 : 1; /* longest first */
    return a->i < b->i ? -1 : (a->i > b->i);
}

/* attn_bert_embed, and with r attn_bert_embed_with (inputs checked). */
static attn_status embed(attn_ctx *ctx, const attn_bert *m, int64_t n, const int32_t *const *ids,
                         const int64_t *len, float *out, bert_run *r) {
    attn_status st = ATTN_OK;
    /* sort by length so each batch pads little, as sentence-transformers */
    by_len *o = malloc((size_t)n * sizeof *o);
    int64_t *sel = malloc((size_t)n * sizeof *sel);
    if (!o || !sel) {
        free(o), free(sel);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate the order of %lld texts",
                             (long long)n);
    }
    for (int64_t i = 0; i < n; i++)
        o[i].len = len[i], o[i].i = i;
    qsort(o, (size_t)n, sizeof *o, by_len_cmp);
    for (int64_t i = 0; i < n; i++)
        sel[i] = o[i].i;
    bert_ws w;
    memset(&w, 0, sizeof w);
    const int64_t B0 = ATTN_MIN(n, (int64_t)BATCH_TEXTS);
    st = ws_alloc(ctx, &m->cfg, B0, o[0].len, &w);
    if (!st && r && r->prune_after > 0 &&
        !(r->recv = malloc((size_t)(B0 * o[0].len) * sizeof(float))))
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate the attention received");
    for (int64_t b0 = 0; !st && b0 < n; b0 += BATCH_TEXTS) {
        const int64_t B = ATTN_MIN((int64_t)BATCH_TEXTS, n - b0);
        int64_t T = o[b0].len;
        st = run_batch(ctx, m, B, T, ids, len, sel + b0, &w, -1, 0, NULL, NULL, r, &T);
        for (int64_t b = 0; !st && b < B; b++) /* w.kvl: the tokens left (pruning) */
            attn__bert_pool(&m->cfg, w.x, T, b, w.kvl[b], out + sel[b0 + b] * m->cfg.hidden_size);
    }
    if (r) free(r->recv), r->recv = NULL;
    ws_free(&w);
    free(o), free(sel);
    return st;
}

attn_status attn_bert_embed(attn_ctx *ctx, const attn_bert *m, int64_t n, const int32_t *const *ids,
                            const int64_t *len, float *out) {
    attn__ctx_clear(ctx);
    attn_status st = check_inputs(ctx, m, n, ids, len, out);
    if (st || n == 0) return st;
    return embed(ctx, m, n, ids, len, out, NULL);
}

/* The options' rules (attn_bert_options), each message naming the field. */
static attn_status check_options(attn_ctx *ctx, const attn_bert *m, const attn_bert_options *o) {
    const attn_bert_config *c = &m->cfg;
    const int layout = o->attention == ATTN_BERT_LAYOUT, approx = o->attention == ATTN_BERT_APPROX;
    if (o->attention != ATTN_BERT_EXACT && !layout && !approx)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attention %d: not an attn_bert_attention",
                             (int)o->attention);
    if (layout && (o->block < 1 || o->block > c->max_position))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "block %lld: must be in [1, max_position = %lld]",
                             (long long)o->block, (long long)c->max_position);
    if (!layout && o->block)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "block %lld: only a LAYOUT takes a block size",
                             (long long)o->block);
    if (layout && o->layout.causal)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "layout.causal: the encoder is not causal");
    const attn_approx_method a = o->approx;
    if (approx && a != ATTN_APPROX_LINEAR && a != ATTN_APPROX_PERFORMER &&
        a != ATTN_APPROX_NYSTROM && a != ATTN_APPROX_TOPK)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "approx %d: not an attn_approx_method", (int)a);
    if (!approx && a)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "approx: only attention APPROX takes a method");
    const struct {
        const char *name;
        int64_t v;
        int used;
    } counts[3] = {{"features", o->features, approx && a == ATTN_APPROX_PERFORMER},
                   {"landmarks", o->landmarks, approx && a == ATTN_APPROX_NYSTROM},
                   {"topk", o->topk, approx && a == ATTN_APPROX_TOPK}};
    for (int i = 0; i < 3; i++) {
        if (counts[i].used && counts[i].v < 1)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "%s %lld: must be >= 1", counts[i].name,
                                 (long long)counts[i].v);
        if (!counts[i].used && counts[i].v)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "%s %lld: not an option of this method",
                                 counts[i].name, (long long)counts[i].v);
    }
    if (o->prune_after < 0 || o->prune_after >= c->num_layers)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "prune_after %lld: must be in [1, num_layers - 1 = %lld] (0: none)",
                             (long long)o->prune_after, (long long)(c->num_layers - 1));
    if (o->prune_after && !(o->keep > 0.0 && o->keep <= 1.0))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "keep %g: the fraction must be in (0, 1]", o->keep);
    if (!o->prune_after && o->keep != 0.0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "keep %g: goes with prune_after", o->keep);
    if (o->draws != ATTN_BERT_DRAWS_SHARED && o->draws != ATTN_BERT_DRAWS_LAYER &&
        o->draws != ATTN_BERT_DRAWS_HEAD)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "draws %d: not an attn_bert_draws", (int)o->draws);
    if (o->draws != ATTN_BERT_DRAWS_SHARED && !(approx && a == ATTN_APPROX_PERFORMER) &&
        !(layout && o->layout.random > 0))
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "draws %d: per-layer or per-head draws need a method with random "
                             "parts (the Performer, or a layout with random blocks)",
                             (int)o->draws);
    return ATTN_OK;
}

/* The Performer's features for every layer (and head) the draws ask for,
 * drawn once instead of in every call (the same numbers: the same seeds). */
static attn_status draw_features(attn_ctx *ctx, const attn_bert_config *c,
                                 const attn_bert_options *o, float **out) {
    const int64_t Dh = c->hidden_size / c->num_heads, per = o->features * Dh;
    const int64_t nl = o->draws == ATTN_BERT_DRAWS_SHARED ? 1 : c->num_layers;
    const int64_t nh = o->draws == ATTN_BERT_DRAWS_HEAD ? c->num_heads : 1;
    float *w = attn__malloc((size_t)(nl * nh * per) * sizeof(float));
    if (!w)
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate %lld x %lld Performer features",
                             (long long)(nl * nh), (long long)per);
    attn_status st = ATTN_OK;
    for (int64_t l = 0; !st && l < nl; l++)
        for (int64_t h = 0; !st && h < nh; h++) {
            const uint64_t seed =
                o->draws == ATTN_BERT_DRAWS_SHARED
                    ? o->seed
                    : attn_bert_draw_seed(o->seed, l, o->draws == ATTN_BERT_DRAWS_HEAD ? h : -1);
            st = attn_performer_draw(ctx, Dh, o->features, seed, w + (l * nh + h) * per);
        }
    if (st) {
        attn__free(w);
        w = NULL;
    }
    *out = w;
    return st;
}

attn_status attn_bert_embed_with(attn_ctx *ctx, const attn_bert *m, const attn_bert_options *opt,
                                 int64_t n, const int32_t *const *ids, const int64_t *len,
                                 float *out, attn_bert_stats *stats) {
    attn__ctx_clear(ctx);
    attn_status st = check_inputs(ctx, m, n, ids, len, out);
    attn_bert_options none;
    memset(&none, 0, sizeof none);
    const attn_bert_options *o = opt ? opt : &none;
    if (!st) st = check_options(ctx, m, o);
    if (stats) memset(stats, 0, sizeof *stats);
    if (st || n == 0) return st;
    bert_run r;
    memset(&r, 0, sizeof r);
    r.method.kind = o->attention == ATTN_BERT_LAYOUT   ? ATTN__METHOD_LAYOUT
                    : o->attention == ATTN_BERT_APPROX ? ATTN__METHOD_APPROX
                                                       : ATTN__METHOD_EXACT;
    r.method.spec = o->layout, r.method.block = o->block;
    r.method.approx = o->approx, r.method.features = o->features;
    r.method.landmarks = o->landmarks, r.method.topk = o->topk, r.method.seed = o->seed;
    r.method.flops = &r.flops;
    r.prune_after = o->prune_after, r.keep = o->keep;
    r.draws = o->draws, r.seed = o->seed, r.layout_seed = o->layout.seed;
    if (r.draws == ATTN_BERT_DRAWS_HEAD &&
        !(r.head_seeds = malloc((size_t)m->cfg.num_heads * sizeof *r.head_seeds)))
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate the heads' seeds");
    if (o->attention == ATTN_BERT_APPROX && o->approx == ATTN_APPROX_PERFORMER)
        st = draw_features(ctx, &m->cfg, o, &r.omegas);
    if (!st) st = embed(ctx, m, n, ids, len, out, &r);
    free(r.head_seeds);
    attn__free(r.omegas);
    if (!st && stats) stats->flops = r.flops, stats->token_layers = r.token_layers;
    return st;
}

attn_status attn_bert_encode(attn_ctx *ctx, const attn_bert *m, int64_t n,
                             const int32_t *const *ids, const int64_t *len, float *hidden) {
    attn__ctx_clear(ctx);
    attn_status st = check_inputs(ctx, m, n, ids, len, hidden);
    if (st || n == 0) return st;
    int64_t T = 0;
    for (int64_t i = 0; i < n; i++)
        T = ATTN_MAX(T, len[i]);
    bert_ws w;
    memset(&w, 0, sizeof w);
    if ((st = ws_alloc(ctx, &m->cfg, n, T, &w))) return st;
    st = run_batch(ctx, m, n, T, ids, len, NULL, &w, -1, 0, NULL, NULL, NULL, NULL);
    if (!st) {
        const int64_t E = m->cfg.hidden_size;
        for (int64_t b = 0; b < n; b++)
            for (int64_t t = 0; t < T; t++) {
                float *dst = hidden + (b * T + t) * E;
                if (t < len[b])
                    memcpy(dst, w.x + (b * T + t) * E, (size_t)E * sizeof(float));
                else
                    memset(dst, 0, (size_t)E * sizeof(float));
            }
    }
    ws_free(&w);
    return st;
}

attn_status attn_bert_explain(attn_ctx *ctx, const attn_bert *m, const int32_t *ids, int64_t len,
                              int64_t layer, int64_t head, float *probs) {
    attn__ctx_clear(ctx);
    attn_status st = check_inputs(ctx, m, 1, &ids, &len, probs);
    if (st) return st;
    const attn_bert_config *c = &m->cfg;
    if (layer < 0 || layer >= c->num_layers || head < 0 || head >= c->num_heads)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "layer %lld / head %lld out of range (the model has %lld layers "
                             "of %lld heads, counted from 0)",
                             (long long)layer, (long long)head, (long long)c->num_layers,
                             (long long)c->num_heads);
    const int64_t T = len;
    bert_ws w;
    memset(&w, 0, sizeof w);
    float *lse = malloc((size_t)(c->num_heads * T) * sizeof(float));
    st = lse ? ws_alloc(ctx, c, 1, T, &w)
             : attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate the attention's lse");
    if (!st)
        st = run_batch(ctx, m, 1, T, &ids, &len, NULL, &w, layer, head, lse, probs, NULL, NULL);
    ws_free(&w);
    free(lse);
    return st;
}

attn_status attn_bert_layer_qkv(attn_ctx *ctx, const attn_bert *m, const int32_t *ids, int64_t len,
                                int64_t layer, float *qkv) {
    attn__ctx_clear(ctx);
    attn_status st = check_inputs(ctx, m, 1, &ids, &len, qkv);
    if (st) return st;
    const attn_bert_config *c = &m->cfg;
    if (layer < 0 || layer >= c->num_layers)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "layer %lld out of range (the model has %lld, from 0)",
                             (long long)layer, (long long)c->num_layers);
    const size_t per = (size_t)(len * 3 * c->hidden_size);
    float *trace = attn__malloc((size_t)c->num_layers * per * sizeof(float));
    if (!trace)
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate %lld layers of q, k, v",
                             (long long)c->num_layers);
    st = attn__bert_run_trace(ctx, m, ids, len, NULL, NULL, NULL, trace);
    if (!st) memcpy(qkv, trace + (size_t)layer * per, per * sizeof(float));
    attn__free(trace);
    return st;
}
