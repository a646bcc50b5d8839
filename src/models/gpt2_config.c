/* The configuration of a GPT-2 model directory: Hugging Face config.json
 * (model_type "gpt2"). What the keys mean is known here; io/json.c only
 * reads the file. */
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

static attn_status parse(attn_ctx *ctx, const char *path, json_t *j, attn_gpt_config *c) {
    attn_status st;
    if (!json_is_object(j))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: expected a JSON object", path);
    const char *type;
    if ((st = attn__json_get_str(ctx, path, j, "model_type", "", &type))) return st;
    if (strcmp(type, "gpt2"))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "%s: model_type \"%s\" is not a GPT-2 model (expected \"gpt2\")", path,
                             type);
    if ((st = attn__json_get_int(ctx, path, j, "vocab_size", 0, 0, 1, &c->vocab_size)) ||
        (st = attn__json_get_int(ctx, path, j, "n_positions", 0, 0, 1, &c->n_positions)) ||
        (st = attn__json_get_int(ctx, path, j, "n_embd", 0, 0, 1, &c->n_embd)) ||
        (st = attn__json_get_int(ctx, path, j, "n_layer", 0, 0, 1, &c->n_layer)) ||
        (st = attn__json_get_int(ctx, path, j, "n_head", 0, 0, 1, &c->n_head)) ||
        (st = get_opt_int(ctx, path, j, "n_inner", 4 * c->n_embd, 1, &c->n_inner)))
        return st;
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
    int64_t bos, eos;
    if ((st = get_opt_int(ctx, path, j, "bos_token_id", -1, 0, &bos)) ||
        (st = get_opt_int(ctx, path, j, "eos_token_id", -1, 0, &eos)))
        return st;
    if (eos >= c->vocab_size || bos >= c->vocab_size)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "%s: bos_token_id %lld / eos_token_id %lld outside vocab_size %lld",
                             path, (long long)bos, (long long)eos, (long long)c->vocab_size);
    c->bos_token_id = (int32_t)bos, c->eos_token_id = (int32_t)eos;
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
