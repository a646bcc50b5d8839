/* Training a ViT image classifier from scratch (attn/vit.h), and saving any
 * ViT classifier as a Hugging Face directory.
 *
 * One step over B images of T = 1 + n_patches tokens:
 *   x = embed(pixels)                          attn__vit_embed (patch GEMM)
 *   x = layer_l(x), l = 0..L-1                 attn__layer_forward_train
 *   c = LN(x[:, 0])                            the [CLS] rows only
 *   logits = c Wc^T + bc;  loss = CE(logits, labels), mean
 * and back: classifier, final LayerNorm, the [CLS] rows' gradient into an
 * otherwise zero dx, the layers in reverse (attn__layer_backward), then the
 * embedding: d[CLS] and d(position) are sums of rows, the patch projection's
 * gradient one GEMM per image over the unfolded patches. */
#include "io/json.h"
#include "models/vit.h"
#include "nn/block.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_PARAMS (8 + 16 * 64)

struct attn_vit_trainer {
    attn_vit *m, *g; /* the model, and its gradients in the same layout */
    int max_batch;
    int64_t T;
    attn_param params[MAX_PARAMS];
    char names[MAX_PARAMS][160];
    int nparams;
    float *act_mem, *bwd, *x, *dx, *patches, *cls, *cls_ln, *mean, *rstd, *logits, *dcls;
    attn__layer_act *act;
};

void attn_vit_trainer_free(attn_vit_trainer *t) {
    if (!t) return;
    attn_vit_free(t->m);
    attn_vit_free(t->g);
    attn__free(t->act_mem), attn__free(t->bwd), attn__free(t->x), attn__free(t->dx);
    attn__free(t->patches), attn__free(t->cls), attn__free(t->cls_ln), attn__free(t->mean);
    attn__free(t->rstd), attn__free(t->logits), attn__free(t->dcls);
    free(t->act);
    free(t);
}

static void fill(float *w, int64_t n, float v) {
    for (int64_t i = 0; i < n; i++)
        w[i] = v;
}

static void add_param(attn_vit_trainer *t, const char *name, float *v, float *g, int ndim,
                      int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    const int i = t->nparams++;
    snprintf(t->names[i], sizeof t->names[i], "%s", name);
    const int64_t shape[4] = {d0, d1, d2, d3};
    t->params[i].name = t->names[i];
    t->params[i].value = attn_tensor_make(v, ATTN_F32, ndim, shape);
    t->params[i].grad = attn_tensor_make(g, ATTN_F32, ndim, shape);
}

/* The parameter list under Hugging Face names (value from m, grad from g). */
static void list_params(attn_vit_trainer *t) {
    const attn_vit *m = t->m, *g = t->g;
    const attn_vit_config *c = &m->cfg;
    const int64_t E = c->hidden_size, I = c->intermediate_size, P = c->patch_size;
    const int64_t NL = c->num_labels, G = m->grid;
    char n[160];
    t->nparams = 0;
    add_param(t, "vit.embeddings.cls_token", m->cls, g->cls, 3, 1, 1, E, 0);
    add_param(t, "vit.embeddings.position_embeddings", m->pos, g->pos, 3, 1, 1 + G * G, E, 0);
    add_param(t, "vit.embeddings.patch_embeddings.projection.weight", m->patch_w, g->patch_w, 4, E,
              c->num_channels, P, P);
    add_param(t, "vit.embeddings.patch_embeddings.projection.bias", m->patch_b, g->patch_b, 1, E,
              0, 0, 0);
    static const char *qkv[3] = {"query", "key", "value"};
    for (int64_t l = 0; l < c->num_layers; l++) {
        const attn__vit_layer *a = &m->layers[l], *b = &g->layers[l];
#define P2(suffix, va, vb, r, k)                                                                   \
    snprintf(n, sizeof n, "vit.encoder.layer.%lld.%s", (long long)l, suffix),                      \
        add_param(t, n, va, vb, 2, r, k, 0, 0)
#define P1(suffix, va, vb, r)                                                                      \
    snprintf(n, sizeof n, "vit.encoder.layer.%lld.%s", (long long)l, suffix),                      \
        add_param(t, n, va, vb, 1, r, 0, 0, 0)
        for (int q = 0; q < 3; q++) {
            char s1[64], s2[64];
            snprintf(s1, sizeof s1, "attention.attention.%s.weight", qkv[q]);
            snprintf(s2, sizeof s2, "attention.attention.%s.bias", qkv[q]);
            P2(s1, a->wqkv + q * E * E, b->wqkv + q * E * E, E, E);
            P1(s2, a->bqkv + q * E, b->bqkv + q * E, E);
        }
        P2("attention.output.dense.weight", a->wo, b->wo, E, E);
        P1("attention.output.dense.bias", a->bo, b->bo, E);
        P2("intermediate.dense.weight", a->wi, b->wi, I, E);
        P1("intermediate.dense.bias", a->bi, b->bi, I);
        P2("output.dense.weight", a->wf, b->wf, E, I);
        P1("output.dense.bias", a->bf, b->bf, E);
        P1("layernorm_before.weight", a->ln1_g, b->ln1_g, E);
        P1("layernorm_before.bias", a->ln1_b, b->ln1_b, E);
        P1("layernorm_after.weight", a->ln2_g, b->ln2_g, E);
        P1("layernorm_after.bias", a->ln2_b, b->ln2_b, E);
#undef P1
#undef P2
    }
    add_param(t, "vit.layernorm.weight", m->ln_g, g->ln_g, 1, E, 0, 0, 0);
    add_param(t, "vit.layernorm.bias", m->ln_b, g->ln_b, 1, E, 0, 0, 0);
    add_param(t, "classifier.weight", m->head_w, g->head_w, 2, NL, E, 0, 0);
    add_param(t, "classifier.bias", m->head_b, g->head_b, 1, NL, 0, 0, 0);
}

attn_status attn_vit_trainer_create(attn_ctx *ctx, const attn_vit_config *cfg,
                                    const attn_image_preproc *pre, int max_batch, uint64_t seed,
                                    attn_vit_trainer **out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!cfg || !pre || !out) return attn_ctx_fail(ctx, ATTN_E_ARG, "NULL argument");
    *out = NULL;
    if (max_batch < 1 || cfg->num_labels < 2 || cfg->num_channels != 3 || !cfg->qkv_bias ||
        cfg->has_pooler || cfg->num_layers > 64)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "ViT trainer: batch %d, %lld labels, %lld channels (need batch >= 1, "
                             ">= 2 labels, 3 channels, qkv biases, no pooler, <= 64 layers)",
                             max_batch, (long long)cfg->num_labels, (long long)cfg->num_channels);
    attn_vit_trainer *t = calloc(1, sizeof *t);
    if (!t) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "ViT trainer: out of memory");
    attn_status st = attn__vit_alloc(ctx, cfg, &t->m);
    if (!st) st = attn__vit_alloc(ctx, cfg, &t->g);
    if (st) {
        attn_vit_trainer_free(t);
        return st;
    }
    attn_vit *m = t->m;
    m->pre = *pre;
    const attn_vit_config *c = &m->cfg;
    const int64_t NL = c->num_labels;
    m->labels = calloc((size_t)NL, sizeof *m->labels);
    int ok = m->labels != NULL;
    for (int64_t i = 0; ok && i < NL; i++) {
        char def[32];
        snprintf(def, sizeof def, "LABEL_%lld", (long long)i);
        ok = (m->labels[i] = strdup(cfg->id2label ? cfg->id2label[i] : def)) != NULL;
    }
    m->cfg.id2label = m->labels;
    const int64_t E = c->hidden_size, I = c->intermediate_size, B = max_batch;
    const int64_t G = m->grid, T = 1 + G * G, N = B * T;
    const int64_t K = c->num_channels * c->patch_size * c->patch_size;
    t->max_batch = max_batch, t->T = T;
    const attn__layer L0 = attn__vit_layer_view(m, 0);
    const int64_t per = attn__layer_act_floats(&L0, B, T);
    t->act_mem = ok ? attn__malloc((size_t)(per * c->num_layers) * sizeof(float)) : NULL;
    t->act = calloc((size_t)c->num_layers, sizeof *t->act);
    t->bwd = attn__malloc((size_t)attn__layer_bwd_floats(&L0, B, T) * sizeof(float));
    t->x = attn__malloc((size_t)(N * E) * sizeof(float));
    t->dx = attn__malloc((size_t)(N * E) * sizeof(float));
    t->patches = attn__malloc((size_t)(N * K) * sizeof(float));
    t->cls = attn__malloc((size_t)(B * E) * sizeof(float));
    t->cls_ln = attn__malloc((size_t)(B * E) * sizeof(float));
    t->dcls = attn__malloc((size_t)(B * E) * sizeof(float));
    t->mean = attn__malloc((size_t)B * sizeof(float));
    t->rstd = attn__malloc((size_t)B * sizeof(float));
    t->logits = attn__malloc((size_t)(B * NL) * sizeof(float));
    if (!ok || !t->act_mem || !t->act || !t->bwd || !t->x || !t->dx || !t->patches || !t->cls ||
        !t->cls_ln || !t->dcls || !t->mean || !t->rstd || !t->logits) {
        attn_vit_trainer_free(t);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "ViT trainer: out of memory for batch %d",
                             max_batch);
    }
    for (int64_t l = 0; l < c->num_layers; l++) {
        const attn__layer L = attn__vit_layer_view(m, l);
        attn__layer_act_bind(&L, B, T, t->act_mem + l * per, &t->act[l]);
    }
    /* initialisation as transformers' ViTPreTrainedModel._init_weights */
    attn__rng r = {seed * 0x9e3779b97f4a7c15ull + 0x5eed};
    const float s = 0.02f;
    attn__rng_normal(&r, m->cls, E, s, 1);
    attn__rng_normal(&r, m->pos, T * E, s, 1);
    attn__rng_normal(&r, m->patch_w, E * K, s, 1);
    fill(m->patch_b, E, 0.0f);
    for (int64_t l = 0; l < c->num_layers; l++) {
        attn__vit_layer *w = &m->layers[l];
        attn__rng_normal(&r, w->wqkv, 3 * E * E, s, 1);
        attn__rng_normal(&r, w->wo, E * E, s, 1);
        attn__rng_normal(&r, w->wi, I * E, s, 1);
        attn__rng_normal(&r, w->wf, E * I, s, 1);
        fill(w->bqkv, 3 * E, 0), fill(w->bo, E, 0), fill(w->bi, I, 0), fill(w->bf, E, 0);
        fill(w->ln1_g, E, 1), fill(w->ln1_b, E, 0), fill(w->ln2_g, E, 1), fill(w->ln2_b, E, 0);
    }
    fill(m->ln_g, E, 1), fill(m->ln_b, E, 0);
    attn__rng_normal(&r, m->head_w, NL * E, s, 1);
    fill(m->head_b, NL, 0);
    list_params(t);
    *out = t;
    return ATTN_OK;
}

const attn_param *attn_vit_trainer_params(attn_vit_trainer *t, int *n) {
    if (n) *n = t ? t->nparams : 0;
    return t ? t->params : NULL;
}

const attn_vit *attn_vit_trainer_model(const attn_vit_trainer *t) {
    return t ? t->m : NULL;
}

/* The encoder part of a step, shared with the captioner (caption.c):
 * x [B*T, E] = the layers' output (before the final LayerNorm) of B images,
 * activations kept for attn__vit_trainer_encode_backward. */
attn_status attn__vit_trainer_encode(attn_ctx *ctx, attn_vit_trainer *t, int64_t B,
                                     const float *pixels) {
    const attn_vit *m = t->m;
    const attn_vit_config *c = &m->cfg;
    const int64_t T = t->T, G = m->grid, S = c->image_size;
    const attn__batch bt = {B, T, NULL};
    attn_tensor nomask;
    memset(&nomask, 0, sizeof nomask);
    attn__vit_embed(ctx, m, B, S, S, G, G, pixels, m->pos, t->patches, t->x);
    attn_status st = ATTN_OK;
    for (int64_t l = 0; l < c->num_layers && !st; l++) {
        const attn__layer L = attn__vit_layer_view(m, l);
        st = attn__layer_forward_train(ctx, &L, &bt, t->x, nomask, &t->act[l]);
    }
    return st;
}

/* Backward of attn__vit_trainer_encode from dL/dx in the dx buffer
 * (attn__vit_trainer_bufs): the layers in reverse, then the embedding;
 * gradients accumulate into the trainer's gradient model. */
attn_status attn__vit_trainer_encode_backward(attn_ctx *ctx, attn_vit_trainer *t, int64_t B) {
    const attn_vit *m = t->m;
    attn_vit *g = t->g;
    const attn_vit_config *c = &m->cfg;
    const int64_t E = c->hidden_size, T = t->T, G = m->grid;
    const int64_t P = c->patch_size, K = 3 * P * P, Np = G * G;
    const attn__batch bt = {B, T, NULL};
    attn_tensor nomask;
    memset(&nomask, 0, sizeof nomask);
    attn_status st = ATTN_OK;
    for (int64_t l = c->num_layers - 1; l >= 0 && !st; l--) {
        const attn__layer L = attn__vit_layer_view(m, l);
        attn__vit_layer *gl = &g->layers[l];
        attn__layer_grad lg;
        memset(&lg, 0, sizeof lg);
        lg.attn.w_qkv = gl->wqkv, lg.attn.b_qkv = gl->bqkv;
        lg.attn.w_out = gl->wo, lg.attn.b_out = gl->bo;
        lg.ffn.w1 = gl->wi, lg.ffn.b1 = gl->bi, lg.ffn.w2 = gl->wf, lg.ffn.b2 = gl->bf;
        lg.ln1_g = gl->ln1_g, lg.ln1_b = gl->ln1_b, lg.ln2_g = gl->ln2_g, lg.ln2_b = gl->ln2_b;
        st = attn__layer_backward(ctx, &L, &bt, nomask, &t->act[l], t->dx, &lg, t->bwd);
    }
    if (st) return st;
    /* the embedding: [CLS] and positions are sums over the batch */
    for (int64_t b = 0; b < B; b++)
        for (int64_t tt = 0; tt < T; tt++) {
            const float *d = t->dx + (b * T + tt) * E;
            float *gp = g->pos + tt * E;
            for (int64_t e = 0; e < E; e++)
                gp[e] += d[e];
            if (tt == 0)
                for (int64_t e = 0; e < E; e++)
                    g->cls[e] += d[e];
        }
    for (int64_t b = 0; b < B; b++)
        attn__linear_backward(ctx, t->patches + b * Np * K, K, Np, K, m->patch_w, E,
                              t->dx + (b * T + 1) * E, E, NULL, 0, 0, g->patch_w, g->patch_b, 1);
    return ATTN_OK;
}

void attn__vit_trainer_bufs(attn_vit_trainer *t, float **x, float **dx, attn_vit **grad) {
    *x = t->x, *dx = t->dx, *grad = t->g;
}

attn_status attn_vit_trainer_step(attn_ctx *ctx, attn_vit_trainer *t, int64_t B,
                                  const float *pixels, const int32_t *labels, int train,
                                  double *loss, int *correct) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!t || !pixels || !labels) return attn_ctx_fail(ctx, ATTN_E_ARG, "NULL argument");
    if (B < 1 || B > t->max_batch)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "batch %lld outside [1, %d]", (long long)B,
                             t->max_batch);
    const attn_vit *m = t->m;
    attn_vit *g = t->g;
    const attn_vit_config *c = &m->cfg;
    const int64_t NL = c->num_labels, E = c->hidden_size, T = t->T;
    for (int64_t b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= NL)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "label %d of image %lld outside [0, %lld)",
                                 labels[b], (long long)b, (long long)NL);
    attn_status st = attn__vit_trainer_encode(ctx, t, B, pixels);
    if (st) return st;
    for (int64_t b = 0; b < B; b++)
        memcpy(t->cls + b * E, t->x + b * T * E, (size_t)E * sizeof(float));
    attn__layernorm_rows_train(ctx, B, E, t->cls, m->ln_g, m->ln_b, c->layer_norm_eps, t->cls_ln,
                               t->mean, t->rstd);
    attn__linear_forward(ctx, t->cls_ln, E, B, E, m->head_w, m->head_b, NL, t->logits, NL);
    if (correct) {
        int right = 0;
        for (int64_t b = 0; b < B; b++) {
            int64_t best = 0;
            for (int64_t k = 1; k < NL; k++)
                if (t->logits[b * NL + k] > t->logits[b * NL + best]) best = k;
            right += best == labels[b];
        }
        *correct = right;
    }
    const double sum = attn__softmax_ce(ctx, t->logits, NL, B, NL, labels, -1, 1.0f / (float)B,
                                        train ? t->logits : NULL);
    if (loss) *loss = sum / (double)B;
    if (!train) return ATTN_OK;
    /* backward; every gradient starts from zero */
    for (int i = 0; i < t->nparams; i++)
        memset(t->params[i].grad.data, 0,
               (size_t)attn_tensor_numel(&t->params[i].grad) * sizeof(float));
    attn__linear_backward(ctx, t->cls_ln, E, B, E, m->head_w, NL, t->logits, NL, t->dcls, E, 0,
                          g->head_w, g->head_b, 1);
    attn__layernorm_rows_backward(ctx, B, E, t->cls, m->ln_g, t->mean, t->rstd, t->dcls, t->dcls,
                                  g->ln_g, g->ln_b);
    memset(t->dx, 0, (size_t)(B * T * E) * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        memcpy(t->dx + b * T * E, t->dcls + b * E, (size_t)E * sizeof(float));
    return attn__vit_trainer_encode_backward(ctx, t, B);
}

/* ---- saving --------------------------------------------------------------- */

attn_status attn_vit_save(attn_ctx *ctx, const attn_vit *m, const char *dir) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!m || !dir) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_vit_save: NULL argument");
    const attn_vit_config *c = &m->cfg;
    if (!m->head_w || m->pool_w || !c->qkv_bias)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_vit_save: only classifiers with qkv biases "
                                              "and no pooler are saved");
    if (mkdir(dir, 0777) && errno != EEXIST)
        return attn_ctx_fail(ctx, ATTN_E_IO, "%s: cannot create the directory", dir);
    char path[ATTN__PATH_LEN];
    /* weights: the trainer's parameter list, over this model's arrays */
    attn_vit_trainer t;
    memset(&t, 0, sizeof t);
    t.m = (attn_vit *)m, t.g = (attn_vit *)m;
    list_params(&t);
    const char *names[MAX_PARAMS];
    attn_tensor ts[MAX_PARAMS];
    for (int i = 0; i < t.nparams; i++)
        names[i] = t.names[i], ts[i] = t.params[i].value;
    if (!attn__path_join(path, dir, "model.safetensors", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    attn_status st = attn_safetensors_write(ctx, path, t.nparams, names, ts);
    if (st) return st;
    json_t *labels = json_object(), *ids = json_object();
    for (int64_t i = 0; i < c->num_labels; i++) {
        char k[32];
        snprintf(k, sizeof k, "%lld", (long long)i);
        json_object_set_new(labels, k, json_string(c->id2label[i]));
        json_object_set_new(ids, c->id2label[i], json_integer(i));
    }
    json_t *j = json_pack(
        "{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:s, s:b, s:f, s:f, s:f, s:o, s:o}",
        "architectures", "ViTForImageClassification", "model_type", "vit", "hidden_size",
        (int)c->hidden_size, "num_hidden_layers", (int)c->num_layers, "num_attention_heads",
        (int)c->num_heads, "intermediate_size", (int)c->intermediate_size, "image_size",
        (int)c->image_size, "patch_size", (int)c->patch_size, "num_channels", (int)c->num_channels,
        "layer_norm_eps", (double)c->layer_norm_eps, "hidden_act", "gelu", "qkv_bias", 1,
        "hidden_dropout_prob", 0.0, "attention_probs_dropout_prob", 0.0, "initializer_range", 0.02,
        "id2label", labels, "label2id", ids);
    if (!attn__path_join(path, dir, "config.json", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    if ((st = attn__write_json(ctx, path, j))) return st;
    return attn__vit_write_preproc(ctx, &m->pre, dir);
}

/* dir/preprocessor_config.json of p (ViTImageProcessor keys). */
attn_status attn__vit_write_preproc(attn_ctx *ctx, const attn_image_preproc *p, const char *dir) {
    char path[ATTN__PATH_LEN];
    json_t *pj = json_pack(
        "{s:s, s:b, s:{s:i, s:i}, s:i, s:b, s:f, s:b, s:[f,f,f], s:[f,f,f]}", "image_processor_type",
        "ViTImageProcessor", "do_resize", p->do_resize, "size", "height", (int)p->height, "width",
        (int)p->width, "resample", (int)p->resample, "do_rescale", p->do_rescale, "rescale_factor",
        (double)p->rescale_factor, "do_normalize", p->do_normalize, "image_mean", (double)p->mean[0],
        (double)p->mean[1], (double)p->mean[2], "image_std", (double)p->std[0], (double)p->std[1],
        (double)p->std[2]);
    if (!attn__path_join(path, dir, "preprocessor_config.json", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    return attn__write_json(ctx, path, pj);
}
