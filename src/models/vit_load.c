/* Loading a Hugging Face ViT directory: config.json (what a ViT's keys mean
 * is known here; io/json.c only reads the file), preprocessor_config.json
 * (image/), and model.safetensors with ViTModel / ViTForImageClassification
 * tensor names. */
#include "io/json.h"
#include "io/weights.h"
#include "models/vit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static attn_status parse_config(attn_ctx *ctx, const char *path, json_t *j, attn_vit_config *c) {
    attn_status st;
    if (!json_is_object(j))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: expected a JSON object", path);
    const char *type;
    if ((st = attn__json_get_str(ctx, path, j, "model_type", "", &type))) return st;
    if (strcmp(type, "vit"))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: model_type \"%s\" is not a ViT (expected \"vit\")", path, type);
    if ((st = attn__json_get_int(ctx, path, j, "hidden_size", 1, 768, 1, &c->hidden_size)) ||
        (st = attn__json_get_int(ctx, path, j, "num_hidden_layers", 1, 12, 1, &c->num_layers)) ||
        (st = attn__json_get_int(ctx, path, j, "num_attention_heads", 1, 12, 1, &c->num_heads)) ||
        (st = attn__json_get_int(ctx, path, j, "intermediate_size", 1, 3072, 1,
                                 &c->intermediate_size)) ||
        (st = attn__json_get_int(ctx, path, j, "image_size", 1, 224, 1, &c->image_size)) ||
        (st = attn__json_get_int(ctx, path, j, "patch_size", 1, 16, 1, &c->patch_size)) ||
        (st = attn__json_get_int(ctx, path, j, "num_channels", 1, 3, 1, &c->num_channels)))
        return st;
    if (c->hidden_size % c->num_heads)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "%s: hidden_size %lld is not a multiple of num_attention_heads %lld",
                             path, (long long)c->hidden_size, (long long)c->num_heads);
    if (c->num_channels != 3)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: num_channels %lld is not supported (RGB images: 3)", path,
                             (long long)c->num_channels);
    if (c->patch_size > c->image_size || c->image_size > ATTN_IMAGE_MAX_SIDE)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: patch_size %lld / image_size %lld invalid",
                             path, (long long)c->patch_size, (long long)c->image_size);
    c->layer_norm_eps = 1e-12f; /* ViTConfig's default */
    json_t *v = json_object_get(j, "layer_norm_eps");
    if (v) {
        if (!json_is_number(v) || !(json_number_value(v) > 0.0))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: \"layer_norm_eps\" must be a positive number", path);
        c->layer_norm_eps = (float)json_number_value(v);
    }
    c->qkv_bias = 1;
    v = json_object_get(j, "qkv_bias");
    if (v) {
        if (!json_is_boolean(v))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"qkv_bias\" must be true or false", path);
        c->qkv_bias = json_is_true(v);
    }
    v = json_object_get(j, "pooler_act");
    if (v && (!json_is_string(v) || strcmp(json_string_value(v), "tanh")))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "%s: pooler_act must be \"tanh\"", path);
    int64_t pool_out;
    if ((st = attn__json_get_int(ctx, path, j, "pooler_output_size", 1, c->hidden_size, 1,
                                 &pool_out)))
        return st;
    if (pool_out != c->hidden_size)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: pooler_output_size %lld differs from hidden_size %lld", path,
                             (long long)pool_out, (long long)c->hidden_size);
    v = json_object_get(j, "hidden_act");
    if (v && !json_is_string(v))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"hidden_act\" must be a string", path);
    if (v && strcmp(json_string_value(v), "gelu"))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: hidden_act \"%s\" is not supported (only \"gelu\", exact erf)",
                             path, json_string_value(v));
    return ATTN_OK;
}

/* id2label {"0": "tench", ...} into labels[n] (each index 0..n-1 present). */
static attn_status parse_labels(attn_ctx *ctx, const char *path, json_t *j, int64_t n,
                                char **labels) {
    json_t *map = json_object_get(j, "id2label");
    if (map && !json_is_object(map))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"id2label\" must be an object", path);
    const int64_t have = map ? (int64_t)json_object_size(map) : 0;
    if (map && have < n)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "%s: id2label has %lld labels but the classifier has %lld outputs",
                             path, (long long)have, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        char key[32], def[48];
        snprintf(key, sizeof key, "%lld", (long long)i);
        snprintf(def, sizeof def, "LABEL_%lld", (long long)i);
        const char *s = def;
        if (map) {
            json_t *e = json_object_get(map, key);
            if (!e)
                return attn_ctx_fail(ctx, ATTN_E_NOTFOUND, "%s: id2label has no label \"%s\"",
                                     path, key);
            if (!json_is_string(e))
                return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: id2label \"%s\" is not a string",
                                     path, key);
            s = json_string_value(e);
        }
        if (!(labels[i] = strdup(s)))
            return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory", path);
    }
    return ATTN_OK;
}

typedef struct loader {
    attn_ctx *ctx;
    const attn_safetensors *st;
    const char *path;
    const char *prefix; /* "" or "vit." */
} loader;

static attn_status take(loader *L, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                        int64_t d3, float *dst) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    const int64_t want[4] = {d0, d1, d2, d3};
    return attn__weight_load(L->ctx, L->st, L->path, full, ndim, want, "but config.json implies",
                             dst);
}

static attn_status load_layer(loader *L, const attn_vit_config *c, int64_t l, attn__vit_layer *w) {
    const int64_t E = c->hidden_size, I = c->intermediate_size;
    const char *qkv[3] = {"query", "key", "value"};
    char n1[160], n2[160];
    attn_status st;
#define NAME(buf, fmt, ...) snprintf(buf, sizeof buf, "encoder.layer.%lld." fmt, (long long)l, __VA_ARGS__)
    for (int i = 0; i < 3; i++) {
        NAME(n1, "attention.attention.%s.weight", qkv[i]);
        NAME(n2, "attention.attention.%s.bias", qkv[i]);
        if ((st = take(L, n1, 2, E, E, 0, 0, w->wqkv + i * E * E))) return st;
        if (c->qkv_bias && (st = take(L, n2, 1, E, 0, 0, 0, w->bqkv + i * E))) return st;
    }
    static const char *dense[3] = {"attention.output.dense", "intermediate.dense", "output.dense"};
    float *W[3] = {w->wo, w->wi, w->wf}, *b[3] = {w->bo, w->bi, w->bf};
    const int64_t rows[3] = {E, I, E}, cols[3] = {E, E, I};
    for (int p = 0; p < 3; p++) {
        NAME(n1, "%s.weight", dense[p]);
        NAME(n2, "%s.bias", dense[p]);
        if ((st = take(L, n1, 2, rows[p], cols[p], 0, 0, W[p])) ||
            (st = take(L, n2, 1, rows[p], 0, 0, 0, b[p])))
            return st;
    }
    static const char *lns[2] = {"layernorm_before", "layernorm_after"};
    float *g[2] = {w->ln1_g, w->ln2_g}, *be[2] = {w->ln1_b, w->ln2_b};
    for (int p = 0; p < 2; p++) {
        NAME(n1, "%s.weight", lns[p]);
        NAME(n2, "%s.bias", lns[p]);
        if ((st = take(L, n1, 1, E, 0, 0, 0, g[p])) || (st = take(L, n2, 1, E, 0, 0, 0, be[p])))
            return st;
    }
#undef NAME
    return ATTN_OK;
}

attn_status attn_vit_load(attn_ctx *ctx, const char *dir, attn_vit **out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!out || !dir) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_vit_load: NULL argument");
    *out = NULL;
    char cpath[ATTN__PATH_LEN], wpath[ATTN__PATH_LEN];
    if (!attn__path_join(cpath, dir, "config.json", NULL) ||
        !attn__path_join(wpath, dir, "model.safetensors", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    json_t *j = NULL;
    attn_status st = attn__json_load(ctx, cpath, 0, &j);
    if (st) return st;
    attn_vit_config c;
    memset(&c, 0, sizeof c);
    attn_safetensors *sf = NULL;
    attn_vit *m = NULL;
    if ((st = parse_config(ctx, cpath, j, &c))) goto done;
    if ((st = attn_safetensors_open(ctx, wpath, &sf))) goto done;
    loader L = {ctx, sf, wpath, ""};
    /* ViTForImageClassification nests the encoder in "vit." */
    if (attn_safetensors_find(sf, "embeddings.cls_token") < 0 &&
        attn_safetensors_find(sf, "vit.embeddings.cls_token") >= 0)
        L.prefix = "vit.";
    /* the heads are what the weights hold: the classifier's rows are its
     * labels (then checked against id2label), the pooler is optional */
    if (attn_safetensors_find(sf, "classifier.weight") >= 0) {
        attn_tensor t;
        if ((st = attn_safetensors_get(ctx, sf, "classifier.weight", &t))) goto done;
        if (t.ndim != 2 || t.shape[0] < 1 || t.shape[0] > (1 << 24)) {
            st = attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: tensor 'classifier.weight' must be "
                                                  "[num_labels, hidden_size]", wpath);
            goto done;
        }
        c.num_labels = t.shape[0];
    }
    char pool[64];
    snprintf(pool, sizeof pool, "%spooler.dense.weight", L.prefix);
    c.has_pooler = attn_safetensors_find(sf, pool) >= 0;
    if ((st = attn__vit_alloc(ctx, &c, &m))) goto done;
    if (c.num_labels) {
        m->labels = calloc((size_t)c.num_labels, sizeof *m->labels);
        if (!m->labels) {
            st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory", cpath);
            goto done;
        }
        if ((st = parse_labels(ctx, cpath, j, c.num_labels, m->labels))) goto done;
        m->cfg.id2label = m->labels;
    }
    const int64_t E = c.hidden_size, P = c.patch_size, g = m->grid;
    if ((st = take(&L, "embeddings.cls_token", 3, 1, 1, E, 0, m->cls)) ||
        (st = take(&L, "embeddings.position_embeddings", 3, 1, 1 + g * g, E, 0, m->pos)) ||
        (st = take(&L, "embeddings.patch_embeddings.projection.weight", 4, E, c.num_channels, P, P,
                   m->patch_w)) ||
        (st = take(&L, "embeddings.patch_embeddings.projection.bias", 1, E, 0, 0, 0, m->patch_b)) ||
        (st = take(&L, "layernorm.weight", 1, E, 0, 0, 0, m->ln_g)) ||
        (st = take(&L, "layernorm.bias", 1, E, 0, 0, 0, m->ln_b)))
        goto done;
    for (int64_t l = 0; l < c.num_layers && !st; l++)
        st = load_layer(&L, &c, l, &m->layers[l]);
    if (st) goto done;
    if (c.has_pooler && ((st = take(&L, "pooler.dense.weight", 2, E, E, 0, 0, m->pool_w)) ||
                         (st = take(&L, "pooler.dense.bias", 1, E, 0, 0, 0, m->pool_b))))
        goto done;
    const char *prefix = L.prefix;
    if (c.num_labels) {
        L.prefix = "";
        if ((st = take(&L, "classifier.weight", 2, c.num_labels, E, 0, 0, m->head_w)) ||
            (st = take(&L, "classifier.bias", 1, c.num_labels, 0, 0, 0, m->head_b)))
            goto done;
    }
    /* a checkpoint with more layers than config.json says is not this model */
    char extra[128];
    snprintf(extra, sizeof extra, "%sencoder.layer.%lld.attention.attention.query.weight",
             prefix, (long long)c.num_layers);
    if (attn_safetensors_find(sf, extra) >= 0) {
        st = attn_ctx_fail(ctx, ATTN_E_SHAPE,
                           "%s: tensor '%s' exists, but config.json says num_hidden_layers = %lld",
                           wpath, extra, (long long)c.num_layers);
        goto done;
    }
    st = attn_image_preproc_load(ctx, dir, c.image_size, &m->pre);
done:
    json_decref(j);
    attn_safetensors_close(sf);
    if (st) {
        attn_vit_free(m);
        return st;
    }
    *out = m;
    return ATTN_OK;
}
