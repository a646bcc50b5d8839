/* The configuration of a BERT-family model directory: Hugging Face
 * config.json (what a BERT's keys mean is known here, in models/; io/json.c
 * only reads the files), sentence-transformers' modules.json, pooling config
 * and sentence_bert_config.json. */
#include "io/json.h"

#include <stdio.h>
#include <string.h>

static attn_status parse_config(attn_ctx *ctx, const char *path, json_t *j, attn_bert_config *c) {
    attn_status st;
    if (!json_is_object(j))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: expected a JSON object", path);
    const char *type;
    if ((st = attn__json_get_str(ctx, path, j, "model_type", "bert", &type))) return st;
    if (strcmp(type, "bert"))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: model_type \"%s\" is not a BERT model (supported: bert)", path,
                             type);
    if ((st = attn__json_get_int(ctx, path, j, "vocab_size", 0, 0, 1, &c->vocab_size)) ||
        (st = attn__json_get_int(ctx, path, j, "hidden_size", 0, 0, 1, &c->hidden_size)) ||
        (st = attn__json_get_int(ctx, path, j, "num_hidden_layers", 0, 0, 1, &c->num_layers)) ||
        (st = attn__json_get_int(ctx, path, j, "num_attention_heads", 0, 0, 1, &c->num_heads)) ||
        (st = attn__json_get_int(ctx, path, j, "intermediate_size", 0, 0, 1,
                                 &c->intermediate_size)) ||
        (st = attn__json_get_int(ctx, path, j, "max_position_embeddings", 0, 0, 1,
                                 &c->max_position)) ||
        (st = attn__json_get_int(ctx, path, j, "type_vocab_size", 1, 2, 1, &c->type_vocab_size)))
        return st;
    if (c->hidden_size % c->num_heads)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "%s: hidden_size %lld is not a multiple of num_attention_heads %lld",
                             path, (long long)c->hidden_size, (long long)c->num_heads);
    c->layer_norm_eps = 1e-12f; /* BertConfig's default */
    json_t *v = json_object_get(j, "layer_norm_eps");
    if (v) {
        if (!json_is_number(v) || !(json_number_value(v) > 0.0))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: \"layer_norm_eps\" must be a positive number", path);
        c->layer_norm_eps = (float)json_number_value(v);
    }
    /* the encoder implements exact (erf) GELU only: a tanh approximation
     * would silently give other embeddings */
    v = json_object_get(j, "hidden_act");
    if (v && !json_is_string(v))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"hidden_act\" must be a string", path);
    if (v && strcmp(json_string_value(v), "gelu"))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: hidden_act \"%s\" is not supported (only \"gelu\", exact erf)",
                             path, json_string_value(v));
    v = json_object_get(j, "position_embedding_type");
    if (v && (!json_is_string(v) || strcmp(json_string_value(v), "absolute")))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: position_embedding_type must be \"absolute\"", path);
    return ATTN_OK;
}

/* sentence-transformers pooling: exactly one supported mode. */
static attn_status parse_pooling(attn_ctx *ctx, const char *path, json_t *j, attn_bert_config *c) {
    static const struct {
        const char *key;
        int mode; /* -1: unsupported */
    } modes[] = {
        {"pooling_mode_mean_tokens", ATTN_POOL_MEAN}, {"pooling_mode_cls_token", ATTN_POOL_CLS},
        {"pooling_mode_max_tokens", ATTN_POOL_MAX},   {"pooling_mode_mean_sqrt_len_tokens", -1},
        {"pooling_mode_weightedmean_tokens", -1},     {"pooling_mode_lasttoken", -1},
    };
    if (!json_is_object(j))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: expected a JSON object", path);
    int found = 0;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        json_t *v = json_object_get(j, modes[i].key);
        if (!v) continue;
        if (!json_is_boolean(v))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"%s\" must be true or false", path,
                                 modes[i].key);
        if (!json_is_true(v)) continue;
        if (modes[i].mode < 0 || found)
            return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                                 "%s: %s is not supported (one of mean, cls or max tokens)", path,
                                 found ? "combining pooling modes" : modes[i].key);
        c->pooling = (attn_pooling)modes[i].mode;
        found = 1;
    }
    if (!found)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "%s: no supported pooling mode is set", path);
    /* the width the pooling expects must be the encoder's */
    if (json_object_get(j, "word_embedding_dimension")) {
        int64_t w;
        attn_status st = attn__json_get_int(ctx, path, j, "word_embedding_dimension", 0, 0, 1, &w);
        if (st) return st;
        if (w != c->hidden_size)
            return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                                 "%s: word_embedding_dimension %lld is not the model's hidden_size "
                                 "%lld",
                                 path, (long long)w, (long long)c->hidden_size);
    }
    return ATTN_OK;
}

/* A module's path inside the model directory: relative, and no ".."
 * component (modules.json must not send the loader elsewhere). */
static int path_stays_inside(const char *p) {
    if (!*p || p[0] == '/') return 0;
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 2 && s[0] == '.' && s[1] == '.') return 0;
        s += n + (e != NULL);
    }
    return 1;
}

/* modules.json: where the Pooling module lives, whether Normalize follows. */
static attn_status parse_modules(attn_ctx *ctx, const char *dir, const char *path, json_t *j,
                                 attn_bert_config *c) {
    if (!json_is_array(j))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: expected a JSON array", path);
    size_t i;
    json_t *mod;
    json_array_foreach(j, i, mod) {
        json_t *type = json_object_get(mod, "type"), *sub = json_object_get(mod, "path");
        if (!json_is_string(type))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: module %zu has no \"type\" string", path,
                                 i);
        const char *t = json_string_value(type), *dot = strrchr(t, '.');
        const char *cls = dot ? dot + 1 : t;
        if (!strcmp(cls, "Normalize")) {
            c->normalize = 1;
        } else if (!strcmp(cls, "Pooling")) {
            if (!json_is_string(sub))
                return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: module %zu has no \"path\" string",
                                     path, i);
            if (!path_stays_inside(json_string_value(sub)))
                return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                     "%s: module %zu's path \"%s\" leaves the model directory",
                                     path, i, json_string_value(sub));
            char pp[ATTN__PATH_LEN];
            if (!attn__path_join(pp, dir, json_string_value(sub), "config.json"))
                return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: pooling path too long", path);
            json_t *pj;
            attn_status st = attn__json_load(ctx, pp, 0, &pj);
            if (st) return st;
            st = parse_pooling(ctx, pp, pj, c);
            json_decref(pj);
            if (st) return st;
        } else if (strcmp(cls, "Transformer")) {
            return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "%s: module type \"%s\" is not supported",
                                 path, t);
        }
    }
    return ATTN_OK;
}

attn_status attn_bert_config_load(attn_ctx *ctx, const char *dir, attn_bert_config *cfg) {
    attn__ctx_clear(ctx);
    if (!dir || !cfg) return attn_ctx_fail(ctx, ATTN_E_ARG, "model directory or config is NULL");
    attn_bert_config c;
    memset(&c, 0, sizeof c);
    char path[ATTN__PATH_LEN];
    json_t *j;
    attn_status st;

    /* the longest name first, so every join below fits */
    if (!attn__path_join(path, dir, "sentence_bert_config.json", NULL) ||
        !attn__path_join(path, dir, "config.json", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    if ((st = attn__json_load(ctx, path, 0, &j))) return st;
    st = parse_config(ctx, path, j, &c);
    json_decref(j);
    if (st) return st;

    c.pooling = ATTN_POOL_MEAN; /* sentence-transformers' default for a bare checkpoint */
    attn__path_join(path, dir, "modules.json", NULL);
    if ((st = attn__json_load(ctx, path, 1, &j))) return st;
    if (j) {
        st = parse_modules(ctx, dir, path, j, &c);
        json_decref(j);
        if (st) return st;
    }

    c.max_seq_length = c.max_position;
    attn__path_join(path, dir, "sentence_bert_config.json", NULL);
    if ((st = attn__json_load(ctx, path, 1, &j))) return st;
    if (j) {
        st = json_is_object(j) ? attn__json_get_int(ctx, path, j, "max_seq_length", 1,
                                                    c.max_position, 1, &c.max_seq_length)
                               : attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: expected an object", path);
        json_decref(j);
        if (st) return st;
        if (c.max_seq_length > c.max_position)
            return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                                 "%s: max_seq_length %lld exceeds max_position_embeddings %lld",
                                 path, (long long)c.max_seq_length, (long long)c.max_position);
    }
    *cfg = c;
    return ATTN_OK;
}
