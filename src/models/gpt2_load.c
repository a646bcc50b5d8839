/* Loading a GPT-2 directory: config (gpt2_config.c) and model.safetensors
 * with Hugging Face GPT2Model names, optionally under "transformer." (as
 * GPT2LMHeadModel saves them). GPT-2's Conv1D keeps weights as [in, out];
 * they are transposed here to the [out, in] of nn/'s Linear. */
#include "io/json.h"
#include "io/weights.h"
#include "models/gpt2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

attn_status attn__gpt_alloc(attn_ctx *ctx, const attn_gpt_config *cfg, attn_gpt **out) {
    *out = NULL;
    const attn_gpt_config *c = cfg;
    if (c->vocab_size < 1 || c->n_positions < 1 || c->n_embd < 1 || c->n_layer < 1 ||
        c->n_head < 1 || c->n_inner < 1 || c->n_embd % c->n_head || c->n_kv_head < 1 ||
        c->n_head % c->n_kv_head)
        return attn_ctx_fail(
            ctx, ATTN_E_SHAPE,
            "invalid decoder sizes (E=%lld, H=%lld, Hkv=%lld, I=%lld, layers=%lld, "
            "V=%lld, P=%lld)",
            (long long)c->n_embd, (long long)c->n_head, (long long)c->n_kv_head,
            (long long)c->n_inner, (long long)c->n_layer, (long long)c->vocab_size,
            (long long)c->n_positions);
    const int llama = c->arch == ATTN_GPT_ARCH_LLAMA;
    const size_t E = (size_t)c->n_embd, I = (size_t)c->n_inner, V = (size_t)c->vocab_size;
    const size_t Dh = E / (size_t)c->n_head, KV = (size_t)c->n_kv_head * Dh;
    const size_t I1 = llama ? 2 * I : I, QKV = E + 2 * KV;
    const size_t per_layer = 2 * E + QKV * E + QKV + E * E + E + 2 * E + I1 * E + I1 + E * I + E;
    const size_t total = (V + (llama ? 0 : (size_t)c->n_positions) + 2) * E + Dh +
                         (size_t)c->n_layer * per_layer + (c->tie_word_embeddings ? 0 : V * E);
    attn_gpt *m = calloc(1, sizeof *m);
    if (m) m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (m && m->layers) m->arena = attn__malloc_huge(total * sizeof(float));
    if (!m || !m->layers || !m->arena) {
        attn_gpt_free(m);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate %zu MB of decoder weights",
                             total * sizeof(float) >> 20);
    }
    m->cfg = *c;
    float *p = m->arena;
#define TAKE(ptr, n) (ptr = p, p += (n))
    TAKE(m->wte, V * E);
    if (!llama) TAKE(m->wpe, (size_t)c->n_positions * E);
    TAKE(m->lnf_g, E);
    TAKE(m->lnf_b, E);
    TAKE(m->inv_freq, Dh);
    if (c->tie_word_embeddings)
        m->head = m->wte;
    else
        TAKE(m->head, V * E);
    for (int64_t l = 0; l < c->n_layer; l++) {
        attn__gpt_layer *L = &m->layers[l];
        TAKE(L->ln1_g, E);
        TAKE(L->ln1_b, E);
        TAKE(L->wqkv, QKV * E);
        TAKE(L->bqkv, QKV);
        TAKE(L->wo, E * E);
        TAKE(L->bo, E);
        TAKE(L->ln2_g, E);
        TAKE(L->ln2_b, E);
        TAKE(L->w1, I1 * E);
        TAKE(L->b1, I1);
        TAKE(L->w2, E * I);
        TAKE(L->b2, E);
        if (llama) {
            L->ln1_b = L->ln2_b = NULL;
            if (!c->attention_bias) L->bqkv = L->bo = NULL;
            if (!c->mlp_bias) L->b1 = L->b2 = NULL;
        }
    }
#undef TAKE
    if (llama) m->lnf_b = NULL;
    *out = m;
    return ATTN_OK;
}

void attn_gpt_free(attn_gpt *m) {
    if (!m) return;
    attn__free(m->arena);
    attn__free(m->barena);
    free(m->layers);
    free(m);
}

const attn_gpt_config *attn_gpt_get_config(const attn_gpt *m) {
    return m ? &m->cfg : NULL;
}

typedef struct loader {
    attn_ctx *ctx;
    const attn_safetensors *st;
    const char *path;   /* for messages */
    const char *prefix; /* "" or "transformer." */
    float *tmp;         /* [largest Conv1D weight] */
} loader;

/* Tensor <prefix><name> of shape [d0] or [d0, d1] into dst as F32. */
static attn_status take(loader *L, const char *name, int ndim, int64_t d0, int64_t d1, float *dst) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    const int64_t want[2] = {d0, d1};
    return attn__weight_load(L->ctx, L->st, L->path, full, ndim, want, "but config.json implies",
                             dst);
}

/* A Conv1D weight [in, out] into dst as [out, in]. */
static attn_status take_conv(loader *L, const char *name, int64_t in, int64_t out, float *dst) {
    attn_status st = take(L, name, 2, in, out, L->tmp);
    if (st) return st;
    for (int64_t i = 0; i < in; i++)
        for (int64_t o = 0; o < out; o++)
            dst[o * in + i] = L->tmp[i * out + o];
    return ATTN_OK;
}

static attn_status load_layer(loader *L, const attn_gpt_config *c, int64_t l, attn__gpt_layer *w) {
    const int64_t E = c->n_embd, I = c->n_inner;
    char n[160];
    attn_status st;
#define NAME(part) (snprintf(n, sizeof n, "h.%lld.%s", (long long)l, part), n)
    if ((st = take(L, NAME("ln_1.weight"), 1, E, 0, w->ln1_g)) ||
        (st = take(L, NAME("ln_1.bias"), 1, E, 0, w->ln1_b)) ||
        (st = take_conv(L, NAME("attn.c_attn.weight"), E, 3 * E, w->wqkv)) ||
        (st = take(L, NAME("attn.c_attn.bias"), 1, 3 * E, 0, w->bqkv)) ||
        (st = take_conv(L, NAME("attn.c_proj.weight"), E, E, w->wo)) ||
        (st = take(L, NAME("attn.c_proj.bias"), 1, E, 0, w->bo)) ||
        (st = take(L, NAME("ln_2.weight"), 1, E, 0, w->ln2_g)) ||
        (st = take(L, NAME("ln_2.bias"), 1, E, 0, w->ln2_b)) ||
        (st = take_conv(L, NAME("mlp.c_fc.weight"), E, I, w->w1)) ||
        (st = take(L, NAME("mlp.c_fc.bias"), 1, I, 0, w->b1)) ||
        (st = take_conv(L, NAME("mlp.c_proj.weight"), I, E, w->w2)) ||
        (st = take(L, NAME("mlp.c_proj.bias"), 1, E, 0, w->b2)))
        return st;
#undef NAME
    return ATTN_OK;
}

/* Llama: model.layers.<l>.* with Linear weights as they are, q | k | v and
 * gate | up stacked so each pair is one GEMM. */
static attn_status load_llama_layer(loader *L, const attn_gpt_config *c, int64_t l,
                                    attn__gpt_layer *w) {
    const int64_t E = c->n_embd, I = c->n_inner, KV = c->n_kv_head * (E / c->n_head);
    char n[160];
    attn_status st;
#define NAME(part) (snprintf(n, sizeof n, "model.layers.%lld.%s", (long long)l, part), n)
    if ((st = take(L, NAME("input_layernorm.weight"), 1, E, 0, w->ln1_g)) ||
        (st = take(L, NAME("self_attn.q_proj.weight"), 2, E, E, w->wqkv)) ||
        (st = take(L, NAME("self_attn.k_proj.weight"), 2, KV, E, w->wqkv + E * E)) ||
        (st = take(L, NAME("self_attn.v_proj.weight"), 2, KV, E, w->wqkv + (E + KV) * E)) ||
        (st = take(L, NAME("self_attn.o_proj.weight"), 2, E, E, w->wo)) ||
        (st = take(L, NAME("post_attention_layernorm.weight"), 1, E, 0, w->ln2_g)) ||
        (st = take(L, NAME("mlp.gate_proj.weight"), 2, I, E, w->w1)) ||
        (st = take(L, NAME("mlp.up_proj.weight"), 2, I, E, w->w1 + I * E)) ||
        (st = take(L, NAME("mlp.down_proj.weight"), 2, E, I, w->w2)))
        return st;
    if (c->attention_bias &&
        ((st = take(L, NAME("self_attn.q_proj.bias"), 1, E, 0, w->bqkv)) ||
         (st = take(L, NAME("self_attn.k_proj.bias"), 1, KV, 0, w->bqkv + E)) ||
         (st = take(L, NAME("self_attn.v_proj.bias"), 1, KV, 0, w->bqkv + E + KV)) ||
         (st = take(L, NAME("self_attn.o_proj.bias"), 1, E, 0, w->bo))))
        return st;
    if (c->mlp_bias && ((st = take(L, NAME("mlp.gate_proj.bias"), 1, I, 0, w->b1)) ||
                        (st = take(L, NAME("mlp.up_proj.bias"), 1, I, 0, w->b1 + I)) ||
                        (st = take(L, NAME("mlp.down_proj.bias"), 1, E, 0, w->b2))))
        return st;
#undef NAME
    return ATTN_OK;
}

static attn_status load_llama(loader *L, const attn_gpt_config *c, attn_gpt *m) {
    attn_status st;
    const int64_t E = c->n_embd, Dh = E / c->n_head;
    if ((st = take(L, "model.embed_tokens.weight", 2, c->vocab_size, E, m->wte)) ||
        (st = take(L, "model.norm.weight", 1, E, 0, m->lnf_g)))
        return st;
    for (int64_t l = 0; l < c->n_layer; l++)
        if ((st = load_llama_layer(L, c, l, &m->layers[l]))) return st;
    if (!c->tie_word_embeddings && (st = take(L, "lm_head.weight", 2, c->vocab_size, E, m->head)))
        return st;
    char extra[96];
    snprintf(extra, sizeof extra, "model.layers.%lld.input_layernorm.weight",
             (long long)c->n_layer);
    if (attn_safetensors_find(L->st, extra) >= 0)
        return attn_ctx_fail(L->ctx, ATTN_E_SHAPE,
                             "%s: tensor '%s' exists, but config.json says num_hidden_layers = "
                             "%lld",
                             L->path, extra, (long long)c->n_layer);
    return attn_rope_inv_freq(L->ctx, Dh, c->rope_theta, &c->rope_scaling, m->inv_freq);
}

attn_status attn_gpt_load(attn_ctx *ctx, const char *dir, attn_gpt **out) {
    return attn_gpt_load_with(ctx, dir, NULL, out);
}

attn_status attn_gpt_load_with(attn_ctx *ctx, const char *dir, const attn_gpt_load_opts *opts,
                               attn_gpt **out) {
    attn__ctx_clear(ctx);
    if (!out) return attn_ctx_fail(ctx, ATTN_E_ARG, "out is NULL");
    *out = NULL;
    const attn_gpt_weights wt = opts ? opts->weights : ATTN_GPT_WEIGHTS_F32;
    if (wt != ATTN_GPT_WEIGHTS_F32 && wt != ATTN_GPT_WEIGHTS_BF16)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attn_gpt_load_with: weights = %d is not ATTN_GPT_WEIGHTS_F32 (0) or "
                             "ATTN_GPT_WEIGHTS_BF16 (1)",
                             (int)wt);
    attn_gpt_config c;
    attn_status st = attn_gpt_config_load(ctx, dir, &c);
    if (st) return st;
    char path[ATTN__PATH_LEN];
    if (!attn__path_join(path, dir, "model.safetensors", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    attn_safetensors *sf;
    if ((st = attn_safetensors_open(ctx, path, &sf))) return st;
    attn_gpt *m = NULL;
    const size_t E = (size_t)c.n_embd, I = (size_t)c.n_inner;
    float *tmp = attn__malloc((3 * E * E > I * E ? 3 * E * E : I * E) * sizeof(float));
    if (!tmp)
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate GPT-2 load scratch");
    else
        st = attn__gpt_alloc(ctx, &c, &m);
    loader L = {ctx, sf, path, "", tmp};
    if (!st && c.arch == ATTN_GPT_ARCH_LLAMA) {
        st = load_llama(&L, &c, m);
        goto done;
    }
    if (attn_safetensors_find(sf, "wte.weight") < 0 &&
        attn_safetensors_find(sf, "transformer.wte.weight") >= 0)
        L.prefix = "transformer.";
    const int64_t V = c.vocab_size;
    if (!st && !(st = take(&L, "wte.weight", 2, V, c.n_embd, m->wte)) &&
        !(st = take(&L, "wpe.weight", 2, c.n_positions, c.n_embd, m->wpe)) &&
        !(st = take(&L, "ln_f.weight", 1, c.n_embd, 0, m->lnf_g)) &&
        !(st = take(&L, "ln_f.bias", 1, c.n_embd, 0, m->lnf_b)))
        for (int64_t l = 0; l < c.n_layer && !st; l++)
            st = load_layer(&L, &c, l, &m->layers[l]);
    /* the untied head sits outside "transformer." */
    if (!st && !c.tie_word_embeddings) {
        const int64_t want[2] = {V, c.n_embd};
        st = attn__weight_load(ctx, sf, path, "lm_head.weight", 2, want, "but config.json implies",
                               m->head);
    }
    /* a checkpoint with more layers than config.json says is not this model */
    char extra[96];
    snprintf(extra, sizeof extra, "%sh.%lld.ln_1.weight", L.prefix, (long long)c.n_layer);
    if (!st && attn_safetensors_find(sf, extra) >= 0)
        st = attn_ctx_fail(ctx, ATTN_E_SHAPE,
                           "%s: tensor '%s' exists, but config.json says n_layer = %lld", path,
                           extra, (long long)c.n_layer);
done:
    attn__free(tmp);
    attn_safetensors_close(sf);
    if (!st && wt == ATTN_GPT_WEIGHTS_BF16) st = attn__gpt_to_bf16(ctx, m);
    if (st) {
        attn_gpt_free(m);
        return st;
    }
    *out = m;
    return ATTN_OK;
}
