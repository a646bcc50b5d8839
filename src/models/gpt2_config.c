/* The configuration of a decoder directory: Hugging Face config.json
 * (model_type "gpt2" or "llama"). What the keys mean is known here;
 * io/json.c only reads the file. */
#include "io/json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* An integer key that may be absent or null (then def). */
static attn_status get_opt_int(attn_ctx *ctx, const char *path, json_t *j, const char *key,
                               int64_t def, int64_t lo, int64_t *out) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return ATTN_OK;
    }
    return attn__json_get_int(ctx, path, j, key, 0, 0, lo, out);
}

/* A boolean key (def when absent). */
static attn_status get_bool(attn_ctx *ctx, const char *path, json_t *j, const char *key, int def,
                            int *out) {
    json_t *v = json_object_get(j, key);
    if (!v) {
        *out = def;
        return ATTN_OK;
    }
    if (!json_is_boolean(v))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"%s\" must be true or false", path, key);
    *out = json_is_true(v);
    return ATTN_OK;
}

/* bos_token_id / eos_token_id: absent or null -1; a list (Llama 3.1's
 * several EOS ids): the first. */
static attn_status get_token_id(attn_ctx *ctx, const char *path, json_t *j, const char *key,
                                int64_t V, int32_t *out) {
    json_t *v = json_object_get(j, key);
    int64_t id = -1;
    attn_status st = ATTN_OK;
    if (json_is_array(v) && json_array_size(v) > 0) {
        json_t *o = json_object();
        json_object_set(o, key, json_array_get(v, 0));
        st = attn__json_get_int(ctx, path, o, key, 0, 0, 0, &id);
        json_decref(o);
    } else if (v && !json_is_null(v)) {
        st = attn__json_get_int(ctx, path, j, key, 0, 0, 0, &id);
    }
    if (st) return st;
    if (id >= V)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: %s %lld is outside vocab_size %lld", path, key,
                             (long long)id, (long long)V);
    *out = (int32_t)id;
    return ATTN_OK;
}

static attn_status get_pos_double(attn_ctx *ctx, const char *path, json_t *j, const char *key,
                                  double def, double *out) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return ATTN_OK;
    }
    if (!json_is_number(v) || !(json_number_value(v) > 0.0) || !isfinite(json_number_value(v)))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"%s\" must be a positive number", path, key);
    *out = json_number_value(v);
    return ATTN_OK;
}

/* Llama's rope: rope_parameters (transformers 5) or rope_theta + rope_scaling. */
static attn_status parse_rope(attn_ctx *ctx, const char *path, json_t *j, attn_gpt_config *c) {
    json_t *rp = json_object_get(j, "rope_parameters");
    json_t *sc = rp ? rp : json_object_get(j, "rope_scaling");
    if (sc && !json_is_null(sc) && !json_is_object(sc))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"%s\" must be an object", path,
                             rp ? "rope_parameters" : "rope_scaling");
    attn_status st = get_pos_double(ctx, path, j, "rope_theta", 10000.0, &c->rope_theta);
    if (!st && rp && json_object_get(rp, "rope_theta"))
        st = get_pos_double(ctx, path, rp, "rope_theta", 10000.0, &c->rope_theta);
    if (st) return st;
    memset(&c->rope_scaling, 0, sizeof c->rope_scaling);
    if (!sc || json_is_null(sc)) return ATTN_OK;
    const char *type = "default";
    json_t *t = json_object_get(sc, "rope_type");
    if (!t) t = json_object_get(sc, "type");
    if (t && !json_is_string(t))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: rope_type must be a string", path);
    if (t) type = json_string_value(t);
    attn_rope_scaling *r = &c->rope_scaling;
    if (!strcmp(type, "default")) return ATTN_OK;
    if (!strcmp(type, "linear")) {
        r->type = ATTN_ROPE_SCALING_LINEAR;
        return get_pos_double(ctx, path, sc, "factor", 1.0, &r->factor);
    }
    if (!strcmp(type, "llama3")) {
        r->type = ATTN_ROPE_SCALING_LLAMA3;
        if ((st = get_pos_double(ctx, path, sc, "factor", 8.0, &r->factor)) ||
            (st = get_pos_double(ctx, path, sc, "low_freq_factor", 1.0, &r->low_freq_factor)) ||
            (st = get_pos_double(ctx, path, sc, "high_freq_factor", 4.0, &r->high_freq_factor)) ||
            (st = get_pos_double(ctx, path, sc, "original_max_position_embeddings", 8192.0,
                                 &r->original_max_position_embeddings)))
            return st;
        if (!(r->high_freq_factor > r->low_freq_factor))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: rope high_freq_factor must exceed low_freq_factor", path);
        return ATTN_OK;
    }
    return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                         "%s: rope_type \"%s\" is not supported (default, linear or llama3)", path,
                         type);
}

static attn_status parse_llama(attn_ctx *ctx, const char *path, json_t *j, attn_gpt_config *c) {
    attn_status st;
    c->arch = ATTN_GPT_ARCH_LLAMA;
    if ((st = attn__json_get_int(ctx, path, j, "vocab_size", 0, 0, 1, &c->vocab_size)) ||
        (st = attn__json_get_int(ctx, path, j, "max_position_embeddings", 0, 0, 1,
                                 &c->n_positions)) ||
        (st = attn__json_get_int(ctx, path, j, "hidden_size", 0, 0, 1, &c->n_embd)) ||
        (st = attn__json_get_int(ctx, path, j, "num_hidden_layers", 0, 0, 1, &c->n_layer)) ||
        (st = attn__json_get_int(ctx, path, j, "num_attention_heads", 0, 0, 1, &c->n_head)) ||
        (st = get_opt_int(ctx, path, j, "num_key_value_heads", c->n_head, 1, &c->n_kv_head)) ||
        (st = attn__json_get_int(ctx, path, j, "intermediate_size", 0, 0, 1, &c->n_inner)))
        return st;
    if (c->n_embd % c->n_head || c->n_head % c->n_kv_head)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "%s: hidden_size %lld, num_attention_heads %lld, num_key_value_heads "
                             "%lld: heads must divide hidden_size and key/value heads the heads",
                             path, (long long)c->n_embd, (long long)c->n_head,
                             (long long)c->n_kv_head);
    int64_t hd;
    if ((st = get_opt_int(ctx, path, j, "head_dim", c->n_embd / c->n_head, 1, &hd))) return st;
    if (hd * c->n_head != c->n_embd)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: head_dim %lld x %lld heads != hidden_size %lld is not supported",
                             path, (long long)hd, (long long)c->n_head, (long long)c->n_embd);
    double eps;
    if ((st = get_pos_double(ctx, path, j, "rms_norm_eps", 1e-6, &eps))) return st;
    c->layer_norm_epsilon = (float)eps;
    const char *act;
    if ((st = attn__json_get_str(ctx, path, j, "hidden_act", "silu", &act))) return st;
    if (strcmp(act, "silu"))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: hidden_act \"%s\" is not supported (silu)", path, act);
    c->act = ATTN_GPT_SILU;
    c->scale_attn_weights = 1;
    if ((st = get_bool(ctx, path, j, "attention_bias", 0, &c->attention_bias)) ||
        (st = get_bool(ctx, path, j, "mlp_bias", 0, &c->mlp_bias)) ||
        (st = get_bool(ctx, path, j, "tie_word_embeddings", 0, &c->tie_word_embeddings)) ||
        (st = parse_rope(ctx, path, j, c)) ||
        (st = get_token_id(ctx, path, j, "bos_token_id", c->vocab_size, &c->bos_token_id)) ||
        (st = get_token_id(ctx, path, j, "eos_token_id", c->vocab_size, &c->eos_token_id)))
        return st;
    return ATTN_OK;
}

static attn_status parse(attn_ctx *ctx, const char *path, json_t *j, attn_gpt_config *c) {
    attn_status st;
    if (!json_is_object(j))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: expected a JSON object", path);
    const char *type;
    if ((st = attn__json_get_str(ctx, path, j, "model_type", "", &type))) return st;
    c->bos_token_id = c->eos_token_id = -1;
    if (!strcmp(type, "llama")) return parse_llama(ctx, path, j, c);
    if (strcmp(type, "gpt2"))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: model_type \"%s\" is not a decoder this build runs (gpt2, llama)",
                             path, type);
    c->arch = ATTN_GPT_ARCH_GPT2;
    c->attention_bias = c->mlp_bias = 1;
    if ((st = attn__json_get_int(ctx, path, j, "vocab_size", 0, 0, 1, &c->vocab_size)) ||
        (st = attn__json_get_int(ctx, path, j, "n_positions", 0, 0, 1, &c->n_positions)) ||
        (st = attn__json_get_int(ctx, path, j, "n_embd", 0, 0, 1, &c->n_embd)) ||
        (st = attn__json_get_int(ctx, path, j, "n_layer", 0, 0, 1, &c->n_layer)) ||
        (st = attn__json_get_int(ctx, path, j, "n_head", 0, 0, 1, &c->n_head)) ||
        (st = get_opt_int(ctx, path, j, "n_inner", 4 * c->n_embd, 1, &c->n_inner)))
        return st;
    c->n_kv_head = c->n_head;
    if (c->n_embd % c->n_head)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: n_embd %lld is not a multiple of n_head %lld",
                             path, (long long)c->n_embd, (long long)c->n_head);
    c->layer_norm_epsilon = 1e-5f; /* GPT2Config's default */
    json_t *v = json_object_get(j, "layer_norm_epsilon");
    if (v) {
        if (!json_is_number(v) || !(json_number_value(v) > 0.0) || !isfinite(json_number_value(v)))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: \"layer_norm_epsilon\" must be a positive number", path);
        c->layer_norm_epsilon = (float)json_number_value(v);
    }
    const char *pd[3] = {"attn_pdrop", "resid_pdrop", "embd_pdrop"};
    float *pv[3] = {&c->attn_pdrop, &c->resid_pdrop, &c->embd_pdrop};
    for (int i = 0; i < 3; i++) { /* GPT2Config's default 0.1 */
        json_t *d = json_object_get(j, pd[i]);
        *pv[i] = 0.1f;
        if (!d) continue;
        if (!json_is_number(d) || !(json_number_value(d) >= 0.0 && json_number_value(d) < 1.0))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"%s\" must be a number in [0, 1)",
                                 path, pd[i]);
        *pv[i] = (float)json_number_value(d);
    }
    const char *act;
    if ((st = attn__json_get_str(ctx, path, j, "activation_function", "gelu_new", &act))) return st;
    if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh"))
        c->act = ATTN_GPT_GELU_TANH;
    else if (!strcmp(act, "gelu"))
        c->act = ATTN_GPT_GELU;
    else
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: activation_function \"%s\" is not supported (gelu_new, "
                             "gelu_pytorch_tanh or gelu)",
                             path, act);
    int cross;
    if ((st = get_bool(ctx, path, j, "scale_attn_weights", 1, &c->scale_attn_weights)) ||
        (st = get_bool(ctx, path, j, "scale_attn_by_inverse_layer_idx", 0,
                       &c->scale_attn_by_inverse_layer_idx)) ||
        (st = get_bool(ctx, path, j, "tie_word_embeddings", 1, &c->tie_word_embeddings)) ||
        (st = get_bool(ctx, path, j, "add_cross_attention", 0, &cross)))
        return st;
    if (cross)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: add_cross_attention is not supported (a decoder-only model)",
                             path);
    if ((st = get_token_id(ctx, path, j, "bos_token_id", c->vocab_size, &c->bos_token_id)) ||
        (st = get_token_id(ctx, path, j, "eos_token_id", c->vocab_size, &c->eos_token_id)))
        return st;
    return ATTN_OK;
}

attn_status attn_gpt_config_load(attn_ctx *ctx, const char *dir, attn_gpt_config *cfg) {
    attn__ctx_clear(ctx);
    if (!dir || !cfg) return attn_ctx_fail(ctx, ATTN_E_ARG, "model directory or config is NULL");
    char path[ATTN__PATH_LEN];
    if (!attn__path_join(path, dir, "config.json", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    json_t *j;
    attn_status st = attn__json_load(ctx, path, 0, &j);
    if (st) return st;
    attn_gpt_config c;
    memset(&c, 0, sizeof c);
    st = parse(ctx, path, j, &c);
    json_decref(j);
    if (!st) *cfg = c;
    return st;
}
