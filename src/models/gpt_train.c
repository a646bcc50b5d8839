/* Training a GPT-2 decoder from scratch (attn/gpt.h), and saving a GPT-2
 * model as a Hugging Face directory.
 *
 * One step over B windows of T input tokens (N = B*T rows):
 *   x = wte[ids] + wpe[t]                      attn__embedding_forward
 *   x = layer_l(x), l = 0..L-1                 attn__layer_forward_train (causal, pre-LN)
 *   h = LN_f(x)                                attn__layernorm_rows_train
 *   loss = CE(h wte^T, next ids), mean         attn__lm_head_ce (tied head, fused)
 * and back in reverse: the head (its share of d wte), LN_f, the layers, then
 * the embedding (scatter-add into the same d wte, and d wpe). */
#include "io/json.h"
#include "models/gpt2.h"
#include "nn/block.h"
#include "nn/nn.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_LAYERS 64
#define MAX_PARAMS (4 + 12 * MAX_LAYERS)

struct attn_gpt_trainer {
    attn_gpt *m, *g; /* the model, and its gradients in the same layout */
    int64_t max_batch;
    attn_param params[MAX_PARAMS];
    char names[MAX_PARAMS][64];
    int nparams;
    int64_t act_per; /* floats of one layer's activations at (max_batch, n_positions) */
    float *act_mem, *bwd, *x, *dx, *h, *mean, *rstd, *ce;
    int32_t *in, *tgt;
    const int32_t **rows;
    attn__layer_act *act;
    uint64_t drop_seed; /* from the trainer's seed */
    uint64_t steps;     /* train steps done: each step's masks come from (drop_seed, steps) */
};

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Layer l as the trainer runs it: with dropout (drop) its probabilities and
 * the step's seed for that layer, else none. */
static attn__layer train_layer(const attn_gpt_trainer *t, int64_t l, int drop) {
    attn__layer L = attn__gpt_layer_view(t->m, l);
    if (drop) {
        const attn_gpt_config *c = &t->m->cfg;
        L.attn_pdrop = c->attn_pdrop, L.resid_pdrop = c->resid_pdrop;
        L.drop_seed = mix64(mix64(t->drop_seed + t->steps) + (uint64_t)(l + 1));
    }
    return L;
}

void attn_gpt_trainer_free(attn_gpt_trainer *t) {
    if (!t) return;
    attn_gpt_free(t->m);
    attn_gpt_free(t->g);
    attn__free(t->act_mem), attn__free(t->bwd), attn__free(t->x), attn__free(t->dx);
    attn__free(t->h), attn__free(t->mean), attn__free(t->rstd), attn__free(t->ce);
    free(t->in), free(t->tgt), free(t->rows), free(t->act);
    free(t);
}

static void fill(float *w, int64_t n, float v) {
    for (int64_t i = 0; i < n; i++)
        w[i] = v;
}

static void add_param(attn_gpt_trainer *t, const char *name, float *v, float *g, int ndim,
                      int64_t d0, int64_t d1) {
    const int i = t->nparams++;
    snprintf(t->names[i], sizeof t->names[i], "%s", name);
    const int64_t shape[2] = {d0, d1};
    t->params[i].name = t->names[i];
    t->params[i].value = attn_tensor_make(v, ATTN_F32, ndim, shape);
    t->params[i].grad = attn_tensor_make(g, ATTN_F32, ndim, shape);
}

/* The parameter list under GPT-2's names, in the model's [out, in] layout
 * (value from m, grad from g). */
static void list_params(attn_gpt_trainer *t) {
    const attn_gpt *m = t->m, *g = t->g;
    const attn_gpt_config *c = &m->cfg;
    const int64_t E = c->n_embd, I = c->n_inner;
    char n[64];
    t->nparams = 0;
    add_param(t, "wte.weight", m->wte, g->wte, 2, c->vocab_size, E);
    add_param(t, "wpe.weight", m->wpe, g->wpe, 2, c->n_positions, E);
    for (int64_t l = 0; l < c->n_layer; l++) {
        const attn__gpt_layer *a = &m->layers[l], *b = &g->layers[l];
#define P(suffix, field, ndim, r, k)                                                               \
    snprintf(n, sizeof n, "h.%lld.%s", (long long)l, suffix),                                      \
        add_param(t, n, a->field, b->field, ndim, r, k)
        P("ln_1.weight", ln1_g, 1, E, 0);
        P("ln_1.bias", ln1_b, 1, E, 0);
        P("attn.c_attn.weight", wqkv, 2, 3 * E, E);
        P("attn.c_attn.bias", bqkv, 1, 3 * E, 0);
        P("attn.c_proj.weight", wo, 2, E, E);
        P("attn.c_proj.bias", bo, 1, E, 0);
        P("ln_2.weight", ln2_g, 1, E, 0);
        P("ln_2.bias", ln2_b, 1, E, 0);
        P("mlp.c_fc.weight", w1, 2, I, E);
        P("mlp.c_fc.bias", b1, 1, I, 0);
        P("mlp.c_proj.weight", w2, 2, E, I);
        P("mlp.c_proj.bias", b2, 1, E, 0);
#undef P
    }
    add_param(t, "ln_f.weight", m->lnf_g, g->lnf_g, 1, E, 0);
    add_param(t, "ln_f.bias", m->lnf_b, g->lnf_b, 1, E, 0);
}

static const char *not_trainable(const attn_gpt_config *c) {
    if (c->arch != ATTN_GPT_ARCH_GPT2) return "only GPT-2 decoders are trained";
    if (!c->tie_word_embeddings) return "the LM head must be tied to wte";
    if (c->n_kv_head != c->n_head) return "GPT-2 has n_kv_head = n_head";
    if (c->act != ATTN_GPT_GELU_TANH) return "the activation must be GELU-tanh";
    if (c->n_layer > MAX_LAYERS) return "more than 64 layers";
    return NULL;
}

attn_status attn_gpt_trainer_create(attn_ctx *ctx, const attn_gpt_config *cfg, int64_t max_batch,
                                    uint64_t seed, attn_gpt_trainer **out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!cfg || !out) return attn_ctx_fail(ctx, ATTN_E_ARG, "NULL argument");
    *out = NULL;
    const char *why = not_trainable(cfg);
    if (why) return attn_ctx_fail(ctx, ATTN_E_ARG, "GPT trainer: %s", why);
    if (max_batch < 1 || max_batch > (1 << 20))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "GPT trainer: batch %lld outside [1, 2^20]",
                             (long long)max_batch);
    const float pdrop[3] = {cfg->attn_pdrop, cfg->resid_pdrop, cfg->embd_pdrop};
    const char *pname[3] = {"attn_pdrop", "resid_pdrop", "embd_pdrop"};
    for (int i = 0; i < 3; i++)
        if (!(pdrop[i] >= 0.0f && pdrop[i] < 1.0f))
            return attn_ctx_fail(ctx, ATTN_E_ARG, "GPT trainer: %s %g outside [0, 1)", pname[i],
                                 (double)pdrop[i]);
    attn_gpt_trainer *t = calloc(1, sizeof *t);
    if (!t) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "GPT trainer: out of memory");
    attn_status st = attn__gpt_alloc(ctx, cfg, &t->m);
    if (!st) st = attn__gpt_alloc(ctx, cfg, &t->g);
    if (st) {
        attn_gpt_trainer_free(t);
        return st;
    }
    attn_gpt *m = t->m;
    const attn_gpt_config *c = &m->cfg;
    const int64_t E = c->n_embd, I = c->n_inner, V = c->vocab_size, P = c->n_positions;
    const int64_t B = max_batch, N = B * P;
    t->max_batch = max_batch;
    t->drop_seed = mix64(seed ^ 0x64726f706f7574ull);
    const attn__layer L0 = attn__gpt_layer_view(m, 0);
    t->act_per = attn__layer_act_floats(&L0, B, P);
    t->act_mem = attn__malloc((size_t)(t->act_per * c->n_layer) * sizeof(float));
    t->act = calloc((size_t)c->n_layer, sizeof *t->act);
    t->bwd = attn__malloc((size_t)attn__layer_bwd_floats(&L0, B, P) * sizeof(float));
    t->x = attn__malloc((size_t)(N * E) * sizeof(float));
    t->dx = attn__malloc((size_t)(N * E) * sizeof(float));
    t->h = attn__malloc((size_t)(N * E) * sizeof(float));
    t->mean = attn__malloc((size_t)N * sizeof(float));
    t->rstd = attn__malloc((size_t)N * sizeof(float));
    t->ce = attn__malloc((size_t)attn__lm_head_ce_floats(V) * sizeof(float));
    t->in = malloc((size_t)N * sizeof *t->in);
    t->tgt = malloc((size_t)N * sizeof *t->tgt);
    t->rows = malloc((size_t)B * sizeof *t->rows);
    if (!t->act_mem || !t->act || !t->bwd || !t->x || !t->dx || !t->h || !t->mean || !t->rstd ||
        !t->ce || !t->in || !t->tgt || !t->rows) {
        attn_gpt_trainer_free(t);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM,
                             "GPT trainer: out of memory for batch %lld x %lld positions",
                             (long long)max_batch, (long long)P);
    }
    /* initialisation as transformers' GPT2PreTrainedModel._init_weights */
    attn__rng r = {seed * 0x9e3779b97f4a7c15ull + 0x6a7};
    const float s = 0.02f, sp = (float)(0.02 / sqrt(2.0 * (double)c->n_layer));
    attn__rng_normal(&r, m->wte, V * E, s, 0);
    attn__rng_normal(&r, m->wpe, P * E, s, 0);
    for (int64_t l = 0; l < c->n_layer; l++) {
        attn__gpt_layer *w = &m->layers[l];
        attn__rng_normal(&r, w->wqkv, 3 * E * E, s, 0);
        attn__rng_normal(&r, w->wo, E * E, sp, 0);
        attn__rng_normal(&r, w->w1, I * E, s, 0);
        attn__rng_normal(&r, w->w2, E * I, sp, 0);
        fill(w->bqkv, 3 * E, 0), fill(w->bo, E, 0), fill(w->b1, I, 0), fill(w->b2, E, 0);
        fill(w->ln1_g, E, 1), fill(w->ln1_b, E, 0), fill(w->ln2_g, E, 1), fill(w->ln2_b, E, 0);
    }
    fill(m->lnf_g, E, 1), fill(m->lnf_b, E, 0);
    list_params(t);
    *out = t;
    return ATTN_OK;
}

const attn_param *attn_gpt_trainer_params(attn_gpt_trainer *t, int *n) {
    if (n) *n = t ? t->nparams : 0;
    return t ? t->params : NULL;
}

const attn_gpt *attn_gpt_trainer_model(const attn_gpt_trainer *t) {
    return t ? t->m : NULL;
}

attn_status attn_gpt_trainer_step(attn_ctx *ctx, attn_gpt_trainer *t, int64_t B, int64_t T,
                                  const int32_t *ids, int train, double *loss_sum) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!t || !ids) return attn_ctx_fail(ctx, ATTN_E_ARG, "NULL argument");
    if (train < 0 || train > 2)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "train %d: must be 0, 1 or 2", train);
    const int drop = train != 0, backward = train == 1;
    const attn_gpt *m = t->m;
    attn_gpt *g = t->g;
    const attn_gpt_config *c = &m->cfg;
    const int64_t E = c->n_embd, V = c->vocab_size, N = B * T;
    if (B < 1 || B > t->max_batch)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "batch %lld outside [1, %lld]", (long long)B,
                             (long long)t->max_batch);
    if (T < 1 || T > c->n_positions)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "window of %lld tokens outside [1, n_positions = %lld]", (long long)T,
                             (long long)c->n_positions);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i <= T; i++) {
            const int32_t id = ids[b * (T + 1) + i];
            if (id < 0 || id >= V)
                return attn_ctx_fail(ctx, ATTN_E_ARG,
                                     "token id %d (window %lld, position %lld) "
                                     "outside [0, vocab_size = %lld)",
                                     id, (long long)b, (long long)i, (long long)V);
            if (i < T) t->in[b * T + i] = id;
            if (i > 0) t->tgt[b * T + i - 1] = id;
        }
    for (int64_t b = 0; b < B; b++)
        t->rows[b] = t->in + b * T;
    const attn__batch bt = {B, T, NULL};
    attn_tensor nomask;
    memset(&nomask, 0, sizeof nomask);
    const attn__embedding emb = {E, m->wte, m->wpe, NULL, NULL, NULL, 0.0f};
    attn__embedding_forward(ctx, &emb, &bt, t->rows, 0, t->x);
    /* x = dropout(x) (embd_pdrop) */
    const uint64_t emb_seed = mix64(mix64(t->drop_seed + t->steps));
    if (drop) attn__dropout_rows(ctx, N * E, c->embd_pdrop, emb_seed, t->x);
    attn_status st = ATTN_OK;
    for (int64_t l = 0; l < c->n_layer && !st; l++) {
        const attn__layer L = train_layer(t, l, drop);
        attn__layer_act_bind(&L, B, T, t->act_mem + l * t->act_per, &t->act[l]);
        st = attn__layer_forward_train(ctx, &L, &bt, t->x, nomask, &t->act[l]);
    }
    if (st) return st;
    attn__layernorm_rows_train(ctx, N, E, t->x, m->lnf_g, m->lnf_b, c->layer_norm_epsilon, t->h,
                               t->mean, t->rstd);
    if (backward)
        for (int i = 0; i < t->nparams; i++)
            memset(t->params[i].grad.data, 0,
                   (size_t)attn_tensor_numel(&t->params[i].grad) * sizeof(float));
    const double sum = attn__lm_head_ce(ctx, t->h, N, E, m->wte, V, t->tgt, -1, 1.0f / (float)N,
                                        backward ? t->dx : NULL, backward ? g->wte : NULL,
                                        t->ce);
    if (loss_sum) *loss_sum = sum;
    if (!backward) return ATTN_OK;
    attn__layernorm_rows_backward(ctx, N, E, t->x, m->lnf_g, t->mean, t->rstd, t->dx, t->dx,
                                  g->lnf_g, g->lnf_b);
    for (int64_t l = c->n_layer - 1; l >= 0 && !st; l--) {
        const attn__layer L = train_layer(t, l, drop);
        attn__gpt_layer *gl = &g->layers[l];
        attn__layer_grad lg;
        memset(&lg, 0, sizeof lg);
        lg.attn.w_qkv = gl->wqkv, lg.attn.b_qkv = gl->bqkv;
        lg.attn.w_out = gl->wo, lg.attn.b_out = gl->bo;
        lg.ffn.w1 = gl->w1, lg.ffn.b1 = gl->b1, lg.ffn.w2 = gl->w2, lg.ffn.b2 = gl->b2;
        lg.ln1_g = gl->ln1_g, lg.ln1_b = gl->ln1_b, lg.ln2_g = gl->ln2_g, lg.ln2_b = gl->ln2_b;
        st = attn__layer_backward(ctx, &L, &bt, nomask, &t->act[l], t->dx, &lg, t->bwd);
    }
    if (st) return st;
    /* x = dropout(x): the same mask on dx */
    attn__dropout_rows(ctx, N * E, c->embd_pdrop, emb_seed, t->dx);
    attn__embedding_backward(ctx, &emb, &bt, t->rows, 0, t->dx, g->wte, g->wpe, NULL);
    t->steps++;
    return ATTN_OK;
}

/* ---- saving --------------------------------------------------------------- */

attn_status attn_gpt_save(attn_ctx *ctx, const attn_gpt *m, const char *dir, int byte_tokenizer) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!m || !dir) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_gpt_save: NULL argument");
    const attn_gpt_config *c = &m->cfg;
    const char *why = not_trainable(c);
    if (why) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_gpt_save: %s", why);
    if (m->weights != ATTN_GPT_WEIGHTS_F32)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attn_gpt_save: the model holds bf16 weights (load it with fp32 "
                             "weights to save it)");
    if (byte_tokenizer && c->vocab_size < 256)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attn_gpt_save: a byte tokenizer needs vocab_size >= 256 (have %lld)",
                             (long long)c->vocab_size);
    const int64_t E = c->n_embd, I = c->n_inner;
    /* the trainer's parameter list over this model's arrays; Conv1D weights
     * transposed to [in, out] into one buffer */
    attn_gpt_trainer *t = calloc(1, sizeof *t);
    float *tr =
        attn__malloc((size_t)(c->n_layer * (3 * E * E + E * E + 2 * I * E)) * sizeof(float));
    if (!t || !tr) {
        free(t), attn__free(tr);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "attn_gpt_save: out of memory");
    }
    t->m = t->g = (attn_gpt *)m;
    list_params(t);
    const char *np[MAX_PARAMS];
    attn_tensor ts[MAX_PARAMS];
    float *p = tr;
    for (int i = 0; i < t->nparams; i++) {
        char full[64];
        snprintf(full, sizeof full, "transformer.%s", t->names[i]);
        memcpy(t->names[i], full, sizeof full);
        np[i] = t->names[i];
        ts[i] = t->params[i].value;
        if (ts[i].ndim == 2 && strncmp(full, "transformer.h.", 14) == 0) {
            const int64_t R = ts[i].shape[0], K = ts[i].shape[1];
            const float *w = ts[i].data;
            for (int64_t r = 0; r < R; r++)
                for (int64_t k = 0; k < K; k++)
                    p[k * R + r] = w[r * K + k];
            const int64_t shape[2] = {K, R};
            ts[i] = attn_tensor_make(p, ATTN_F32, 2, shape);
            p += R * K;
        }
    }
    attn_status st = ATTN_OK;
    char path[ATTN__PATH_LEN];
    if (mkdir(dir, 0777) && errno != EEXIST)
        st = attn_ctx_fail(ctx, ATTN_E_IO, "%s: cannot create the directory", dir);
    else if (!attn__path_join(path, dir, "model.safetensors", NULL))
        st = attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    else
        st = attn_safetensors_write(ctx, path, t->nparams, np, ts);
    free(t);
    attn__free(tr);
    if (st) return st;
    json_t *j = json_pack(
        "{s:[s], s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:f, s:f, s:f, s:f, s:b, s:n, s:n, "
        "s:f, s:b, s:b}",
        "architectures", "GPT2LMHeadModel", "model_type", "gpt2", "vocab_size",
        (json_int_t)c->vocab_size, "n_positions", (json_int_t)c->n_positions, "n_ctx",
        (json_int_t)c->n_positions, "n_embd", (json_int_t)E, "n_layer", (json_int_t)c->n_layer,
        "n_head", (json_int_t)c->n_head, "n_inner", (json_int_t)I, "activation_function",
        "gelu_new", "layer_norm_epsilon", (double)c->layer_norm_epsilon, "resid_pdrop",
        (double)c->resid_pdrop, "embd_pdrop", (double)c->embd_pdrop, "attn_pdrop",
        (double)c->attn_pdrop, "tie_word_embeddings", 1, "bos_token_id",
        "eos_token_id", "initializer_range", 0.02, "scale_attn_weights", c->scale_attn_weights,
        "scale_attn_by_inverse_layer_idx", c->scale_attn_by_inverse_layer_idx);
    if (!attn__path_join(path, dir, "config.json", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    if ((st = attn__write_json(ctx, path, j))) return st;
    if (!byte_tokenizer) return ATTN_OK;
    /* the byte tokenizer is a byte-level BPE with no merges, written by the
     * one tokenizer writer (text/bpe_train.c) */
    attn_bpe *bytes = NULL;
    if ((st = attn_bpe_train(ctx, "", 0, 256, &bytes))) return st;
    st = attn_bpe_save(ctx, bytes, dir);
    attn_bpe_free(bytes);
    return st;
}
