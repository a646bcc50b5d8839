/* Loading a BERT-family checkpoint directory: config (model_dir.c) and
 * model.safetensors with Hugging Face BertModel tensor names. */
#include "io/weights.h"
#include "models/bert.h"

#include <stdio.h>
#include <string.h>

typedef struct loader {
    attn_ctx *ctx;
    const attn_safetensors *st;
    const char *path;   /* for messages */
    const char *prefix; /* "" or "bert." */
} loader;

/* Copy tensor <prefix><name> (or, for old checkpoints, its LayerNorm
 * gamma/beta spelling `alt`) of shape [d0] or [d0, d1] into dst as F32. */
static attn_status take(loader *L, const char *name, const char *alt, int ndim, int64_t d0,
                        int64_t d1, float *dst) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    if (alt && attn_safetensors_find(L->st, full) < 0) {
        char old[256];
        snprintf(old, sizeof old, "%s%s", L->prefix, alt);
        if (attn_safetensors_find(L->st, old) >= 0) snprintf(full, sizeof full, "%s", old);
    }
    const int64_t want[2] = {d0, d1};
    return attn__weight_load(L->ctx, L->st, L->path, full, ndim, want, "but config.json implies",
                             dst);
}

static attn_status load_layer(loader *L, const attn_bert_config *c, int64_t l,
                              attn__bert_layer *w) {
    const int64_t E = c->hidden_size, I = c->intermediate_size;
    const char *qkv[3] = {"query", "key", "value"};
    char n1[160], n2[160];
    attn_status st;
#define NAME(buf, fmt, ...)                                                                        \
    snprintf(buf, sizeof buf, "encoder.layer.%lld." fmt, (long long)l, __VA_ARGS__)
    for (int i = 0; i < 3; i++) {
        NAME(n1, "attention.self.%s.weight", qkv[i]);
        NAME(n2, "attention.self.%s.bias", qkv[i]);
        if ((st = take(L, n1, NULL, 2, E, E, w->wqkv + i * E * E)) ||
            (st = take(L, n2, NULL, 1, E, 0, w->bqkv + i * E)))
            return st;
    }
    static const struct {
        const char *name;
        int ln;
    } parts[3] = {{"attention.output", 1}, {"intermediate", 0}, {"output", 1}};
    float *W[3] = {w->wo, w->wi, w->wf}, *b[3] = {w->bo, w->bi, w->bf};
    float *g[3] = {w->ln1_g, NULL, w->ln2_g}, *be[3] = {w->ln1_b, NULL, w->ln2_b};
    const int64_t rows[3] = {E, I, E}, cols[3] = {E, E, I};
    for (int p = 0; p < 3; p++) {
        NAME(n1, "%s.dense.weight", parts[p].name);
        NAME(n2, "%s.dense.bias", parts[p].name);
        if ((st = take(L, n1, NULL, 2, rows[p], cols[p], W[p])) ||
            (st = take(L, n2, NULL, 1, rows[p], 0, b[p])))
            return st;
        if (!parts[p].ln) continue;
        char a1[160], a2[160];
        NAME(n1, "%s.LayerNorm.weight", parts[p].name);
        NAME(a1, "%s.LayerNorm.gamma", parts[p].name);
        NAME(n2, "%s.LayerNorm.bias", parts[p].name);
        NAME(a2, "%s.LayerNorm.beta", parts[p].name);
        if ((st = take(L, n1, a1, 1, E, 0, g[p])) || (st = take(L, n2, a2, 1, E, 0, be[p])))
            return st;
    }
#undef NAME
    return ATTN_OK;
}

attn_status attn_bert_load(attn_ctx *ctx, const char *dir, attn_bert **out) {
    attn__ctx_clear(ctx);
    if (!out) return attn_ctx_fail(ctx, ATTN_E_ARG, "out is NULL");
    *out = NULL;
    attn_bert_config c;
    attn_status st = attn_bert_config_load(ctx, dir, &c);
    if (st) return st;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/model.safetensors", dir) >= (int)sizeof path)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    attn_safetensors *sf;
    if ((st = attn_safetensors_open(ctx, path, &sf))) return st;
    attn_bert *m = NULL;
    if ((st = attn__bert_alloc(ctx, &c, &m))) {
        attn_safetensors_close(sf);
        return st;
    }
    loader L = {ctx, sf, path, ""};
    /* a checkpoint saved from BertForMaskedLM & co. nests the encoder in "bert." */
    if (attn_safetensors_find(sf, "embeddings.word_embeddings.weight") < 0 &&
        attn_safetensors_find(sf, "bert.embeddings.word_embeddings.weight") >= 0)
        L.prefix = "bert.";
    const int64_t E = c.hidden_size;
    if (!(st = take(&L, "embeddings.word_embeddings.weight", NULL, 2, c.vocab_size, E, m->word)) &&
        !(st = take(&L, "embeddings.position_embeddings.weight", NULL, 2, c.max_position, E,
                    m->pos)) &&
        !(st = take(&L, "embeddings.token_type_embeddings.weight", NULL, 2, c.type_vocab_size, E,
                    m->type)) &&
        !(st = take(&L, "embeddings.LayerNorm.weight", "embeddings.LayerNorm.gamma", 1, E, 0,
                    m->emb_ln_g)) &&
        !(st = take(&L, "embeddings.LayerNorm.bias", "embeddings.LayerNorm.beta", 1, E, 0,
                    m->emb_ln_b)))
        for (int64_t l = 0; l < c.num_layers && !st; l++)
            st = load_layer(&L, &c, l, &m->layers[l]);
    /* a checkpoint with more layers than config.json says is not this model */
    char extra[96];
    snprintf(extra, sizeof extra, "%sencoder.layer.%lld.attention.self.query.weight", L.prefix,
             (long long)c.num_layers);
    if (!st && attn_safetensors_find(sf, extra) >= 0)
        st = attn_ctx_fail(ctx, ATTN_E_SHAPE,
                           "%s: tensor '%s' exists, but config.json says num_hidden_layers = %lld",
                           path, extra, (long long)c.num_layers);
    attn_safetensors_close(sf);
    if (st) {
        attn_bert_free(m);
        return st;
    }
    *out = m;
    return ATTN_OK;
}
