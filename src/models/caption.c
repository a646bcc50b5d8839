/* An image captioner trained from scratch (attn/caption.h): the ViT
 * encoder of vit_train.c (attn__vit_trainer_encode and its backward) feeds
 * a small pre-LN decoder (nn/block.h attn__dec_layer) through
 * cross-attention.
 *
 * One step over B images and their captions ids [B, T+1]:
 *   x = vit_layers(pixels)                     attn__vit_trainer_encode
 *   enc = LN_vit(x[:, 1:])                     the patch tokens, final LayerNorm
 *   h = wte[ids[:, :T]] + wpe[0..T)            attn__embedding_forward
 *   h = dec_layer_l(h, enc), l = 0..L-1        attn__dec_layer_forward
 *   loss = CE(LN(h) wte^T, ids[:, 1:]), mean   attn__lm_head_ce (tied head)
 * and back in reverse; the decoder layers accumulate dL/d(enc), which goes
 * through the encoder's final LayerNorm into the patch rows of the
 * encoder's dx ([CLS] row zero) and on through the encoder. */
#include "io/json.h"
#include "models/vit.h"
#include "nn/block.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <sys/types.h>

#define CAP_MAX_PARAMS (8 + 16 * 64 + 32 * 16)
#define CAP_MAX_DEC 16

struct attn_caption_trainer {
    attn_vit_trainer *enc;
    attn_caption_config dc;
    int64_t E, S, Te; /* width, patch tokens, encoder tokens (1 + S) */
    int max_batch;
    float *w, *gw; /* the decoder's weights and gradients, one block each */
    int64_t nw;
    float *wte, *wpe, *lnf_g, *lnf_b;
    attn__dec_layer dec[CAP_MAX_DEC];
    attn__dec_layer_grad dgr[CAP_MAX_DEC];
    float *gwte, *gwpe, *glnf_g, *glnf_b;
    attn_param params[CAP_MAX_PARAMS];
    char names[CAP_MAX_PARAMS][160];
    int nparams;
    /* buffers */
    float *act_mem, *bwd, *h, *hf, *dh, *mean, *rstd, *enc_in, *enc_x, *enc_mean, *enc_rstd, *denc;
    float *ce_scratch;
    int32_t *tgt;
    int64_t act_per;
    char **words;
    attn__dec_layer_act act[CAP_MAX_DEC];
};

void attn_caption_trainer_free(attn_caption_trainer *t) {
    if (!t) return;
    attn_vit_trainer_free(t->enc);
    for (int64_t i = 0; t->words && i < t->dc.vocab; i++)
        free(t->words[i]);
    free(t->words);
    attn__free(t->w), attn__free(t->gw), attn__free(t->act_mem), attn__free(t->bwd);
    attn__free(t->h), attn__free(t->hf), attn__free(t->dh), attn__free(t->mean), attn__free(t->rstd);
    attn__free(t->enc_in), attn__free(t->enc_x), attn__free(t->enc_mean), attn__free(t->enc_rstd);
    attn__free(t->denc), attn__free(t->ce_scratch), attn__free(t->tgt);
    free(t);
}

/* Carve the next n floats of the weight and gradient blocks (init: 'n'
 * normal, '1' ones, '0' zeros) and list them as a parameter. */
static float *carve(attn_caption_trainer *t, int64_t *off, attn__rng *r, char init, const char *name,
                    int ndim, int64_t d0, int64_t d1, float **grad) {
    const int64_t n = ndim == 1 ? d0 : d0 * d1;
    float *v = t->w + *off, *g = t->gw + *off;
    *off += n;
    if (init == 'n')
        attn__rng_normal(r, v, n, 0.02f, 1);
    else
        for (int64_t i = 0; i < n; i++)
            v[i] = init == '1' ? 1.0f : 0.0f;
    const int i = t->nparams++;
    snprintf(t->names[i], sizeof t->names[i], "decoder.%s", name);
    const int64_t shape[2] = {d0, d1};
    t->params[i].name = t->names[i];
    t->params[i].value = attn_tensor_make(v, ATTN_F32, ndim, shape);
    t->params[i].grad = attn_tensor_make(g, ATTN_F32, ndim, shape);
    *grad = g;
    return v;
}

/* Lay out (and, with w set, initialise and list) the decoder's weights;
 * returns the float count. */
static int64_t layout(attn_caption_trainer *t, attn__rng *r) {
    const int64_t E = t->E, V = t->dc.vocab, P = t->dc.max_len, I = t->dc.mlp, H = t->dc.heads;
    int64_t off = 0;
    if (!t->w) {
        off = V * E + P * E + 2 * E;
        off += t->dc.layers * (2 * (3 * E * E + 3 * E + E * E + E) + 2 * I * E + I + E + 6 * E);
        return off;
    }
    t->wte = carve(t, &off, r, 'n', "wte", 2, V, E, &t->gwte);
    t->wpe = carve(t, &off, r, 'n', "wpe", 2, P, E, &t->gwpe);
    for (int64_t l = 0; l < t->dc.layers; l++) {
        attn__dec_layer *D = &t->dec[l];
        attn__dec_layer_grad *G = &t->dgr[l];
        memset(D, 0, sizeof *D), memset(G, 0, sizeof *G);
        char n[128];
#define W2(field, gfield, sfx, d0, d1, ini)                                                        \
    snprintf(n, sizeof n, "layers.%lld.%s", (long long)l, sfx),                                    \
        D->field = carve(t, &off, r, ini, n, 2, d0, d1, &G->gfield)
#define W1(field, gfield, sfx, d0, ini)                                                            \
    snprintf(n, sizeof n, "layers.%lld.%s", (long long)l, sfx),                                    \
        D->field = carve(t, &off, r, ini, n, 1, d0, 0, &G->gfield)
        W2(self.w_qkv, self.w_qkv, "self_attn.in_proj_weight", 3 * E, E, 'n');
        W1(self.b_qkv, self.b_qkv, "self_attn.in_proj_bias", 3 * E, '0');
        W2(self.w_out, self.w_out, "self_attn.out_proj.weight", E, E, 'n');
        W1(self.b_out, self.b_out, "self_attn.out_proj.bias", E, '0');
        W2(cross.w_qkv, cross.w_qkv, "cross_attn.in_proj_weight", 3 * E, E, 'n');
        W1(cross.b_qkv, cross.b_qkv, "cross_attn.in_proj_bias", 3 * E, '0');
        W2(cross.w_out, cross.w_out, "cross_attn.out_proj.weight", E, E, 'n');
        W1(cross.b_out, cross.b_out, "cross_attn.out_proj.bias", E, '0');
        W2(ffn.w1, ffn.w1, "mlp.fc1.weight", I, E, 'n');
        W1(ffn.b1, ffn.b1, "mlp.fc1.bias", I, '0');
        W2(ffn.w2, ffn.w2, "mlp.fc2.weight", E, I, 'n');
        W1(ffn.b2, ffn.b2, "mlp.fc2.bias", E, '0');
        W1(ln1_g, ln1_g, "ln1.weight", E, '1');
        W1(ln1_b, ln1_b, "ln1.bias", E, '0');
        W1(lnc_g, lnc_g, "ln_cross.weight", E, '1');
        W1(lnc_b, lnc_b, "ln_cross.bias", E, '0');
        W1(ln2_g, ln2_g, "ln2.weight", E, '1');
        W1(ln2_b, ln2_b, "ln2.bias", E, '0');
#undef W1
#undef W2
        attn__mha_block *blk[2] = {&D->self, &D->cross};
        for (int k = 0; k < 2; k++) {
            blk[k]->heads.H = H, blk[k]->heads.Hkv = H, blk[k]->heads.Dh = E / H;
            blk[k]->E = E, blk[k]->KV = E, blk[k]->kdim = E;
        }
        D->self.heads.causal = 1;
        D->self.kdim = 0;
        D->ffn.E = E, D->ffn.I = I;
        D->eps = 1e-5f;
    }
    t->lnf_g = carve(t, &off, r, '1', "ln_f.weight", 1, E, 0, &t->glnf_g);
    t->lnf_b = carve(t, &off, r, '0', "ln_f.bias", 1, E, 0, &t->glnf_b);
    return off;
}

attn_status attn_caption_trainer_create(attn_ctx *ctx, const attn_vit_config *enc,
                                        const attn_image_preproc *pre,
                                        const attn_caption_config *dec, int max_batch,
                                        uint64_t seed, attn_caption_trainer **out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!enc || !pre || !dec || !out) return attn_ctx_fail(ctx, ATTN_E_ARG, "NULL argument");
    *out = NULL;
    if (dec->vocab < 2 || dec->vocab > 1 << 20 || dec->max_len < 2 || dec->max_len > 4096 ||
        dec->layers < 1 || dec->layers > CAP_MAX_DEC || dec->heads < 1 || dec->mlp < 1 ||
        enc->hidden_size % dec->heads || dec->bos < 0 || dec->bos >= dec->vocab || dec->eos < 0 ||
        dec->eos >= dec->vocab)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "captioner: decoder vocab %lld, max_len %lld, layers %lld, heads "
                             "%lld, mlp %lld (need vocab >= 2, max_len 2..4096, layers 1..%d, "
                             "heads dividing the width %lld, mlp >= 1)",
                             (long long)dec->vocab, (long long)dec->max_len,
                             (long long)dec->layers, (long long)dec->heads, (long long)dec->mlp,
                             CAP_MAX_DEC, (long long)enc->hidden_size);
    attn_caption_trainer *t = calloc(1, sizeof *t);
    if (!t) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "captioner: out of memory");
    attn_status st = attn_vit_trainer_create(ctx, enc, pre, max_batch, seed, &t->enc);
    if (st) {
        free(t);
        return st;
    }
    const attn_vit *m = attn_vit_trainer_model(t->enc);
    t->dc = *dec, t->max_batch = max_batch;
    t->words = calloc((size_t)dec->vocab, sizeof *t->words);
    for (int64_t i = 0; t->words && i < dec->vocab; i++) {
        char def[32];
        snprintf(def, sizeof def, "w%lld", (long long)i);
        if (!(t->words[i] = strdup(dec->words && dec->words[i] ? dec->words[i] : def))) {
            attn_caption_trainer_free(t);
            return attn_ctx_fail(ctx, ATTN_E_NOMEM, "captioner: out of memory");
        }
    }
    t->dc.words = (const char *const *)t->words;
    t->E = enc->hidden_size, t->S = m->grid * m->grid, t->Te = 1 + t->S;
    /* the encoder's parameters, minus its unused classifier head */
    int ne;
    const attn_param *ep = attn_vit_trainer_params(t->enc, &ne);
    for (int i = 0; i < ne; i++) {
        if (!strncmp(ep[i].name, "classifier.", 11)) continue;
        t->params[t->nparams] = ep[i];
        snprintf(t->names[t->nparams], sizeof t->names[0], "encoder.%s", ep[i].name);
        t->params[t->nparams].name = t->names[t->nparams];
        t->nparams++;
    }
    const int64_t nw = layout(t, NULL);
    t->nw = nw;
    t->w = attn__malloc((size_t)nw * sizeof(float));
    t->gw = attn__malloc((size_t)nw * sizeof(float));
    const int64_t E = t->E, B = max_batch, T = dec->max_len, S = t->S, N = B * T;
    if (t->w && t->gw) {
        attn__rng r = {seed * 0xa0761d6478bd642full + 0xcafe};
        layout(t, &r);
        t->act_per = attn__dec_layer_act_floats(&t->dec[0], B, T, S);
        t->act_mem = attn__malloc((size_t)(t->act_per * dec->layers) * sizeof(float));
        t->bwd = attn__malloc((size_t)attn__dec_layer_bwd_floats(&t->dec[0], B, T, S) *
                              sizeof(float));
    }
    t->h = attn__malloc((size_t)(N * E) * sizeof(float));
    t->hf = attn__malloc((size_t)(N * E) * sizeof(float));
    t->dh = attn__malloc((size_t)(N * E) * sizeof(float));
    t->mean = attn__malloc((size_t)N * sizeof(float));
    t->rstd = attn__malloc((size_t)N * sizeof(float));
    t->enc_in = attn__malloc((size_t)(B * S * E) * sizeof(float));
    t->enc_x = attn__malloc((size_t)(B * S * E) * sizeof(float));
    t->denc = attn__malloc((size_t)(B * S * E) * sizeof(float));
    t->enc_mean = attn__malloc((size_t)(B * S) * sizeof(float));
    t->enc_rstd = attn__malloc((size_t)(B * S) * sizeof(float));
    t->ce_scratch = attn__malloc((size_t)attn__lm_head_ce_floats(dec->vocab) * sizeof(float));
    t->tgt = attn__malloc((size_t)N * sizeof(int32_t));
    if (!t->words || !t->w || !t->gw || !t->act_mem || !t->bwd || !t->h || !t->hf || !t->dh || !t->mean || !t->rstd ||
        !t->enc_in || !t->enc_x || !t->denc || !t->enc_mean || !t->enc_rstd || !t->ce_scratch ||
        !t->tgt) {
        attn_caption_trainer_free(t);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "captioner: out of memory for batch %d",
                             max_batch);
    }
    *out = t;
    return ATTN_OK;
}

const attn_param *attn_caption_trainer_params(attn_caption_trainer *t, int *n) {
    if (n) *n = t ? t->nparams : 0;
    return t ? t->params : NULL;
}

/* The encoder: states enc_x [B*S, E] (final LayerNorm of the patch rows). */
static attn_status encode(attn_ctx *ctx, attn_caption_trainer *t, int64_t B, const float *pixels) {
    attn_status st = attn__vit_trainer_encode(ctx, t->enc, B, pixels);
    if (st) return st;
    float *x, *dx;
    attn_vit *g;
    attn__vit_trainer_bufs(t->enc, &x, &dx, &g);
    const attn_vit *m = attn_vit_trainer_model(t->enc);
    const int64_t E = t->E, S = t->S, Te = t->Te;
    for (int64_t b = 0; b < B; b++)
        memcpy(t->enc_in + b * S * E, x + (b * Te + 1) * E, (size_t)(S * E) * sizeof(float));
    attn__layernorm_rows_train(ctx, B * S, E, t->enc_in, m->ln_g, m->ln_b, m->cfg.layer_norm_eps,
                               t->enc_x, t->enc_mean, t->enc_rstd);
    return ATTN_OK;
}

/* The decoder over ids (B rows of stride ld, the first T read) into the
 * final-LayerNormed hf [B*T, E]. */
static attn_status decode(attn_ctx *ctx, attn_caption_trainer *t, int64_t B, const int32_t *ids,
                          int64_t ld, int64_t T) {
    const int64_t E = t->E, S = t->S;
    const int32_t *rows[4096];
    const int32_t **rp = rows;
    int32_t const **heap = NULL;
    if (B > 4096) {
        heap = malloc((size_t)B * sizeof *heap);
        if (!heap) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "captioner: out of memory");
        rp = heap;
    }
    for (int64_t b = 0; b < B; b++)
        rp[b] = ids + b * ld;
    const attn__batch bt = {B, T, NULL};
    const attn__embedding emb = {E, t->wte, t->wpe, NULL, NULL, NULL, 0.0f};
    attn__embedding_forward(ctx, &emb, &bt, rp, 0, t->h);
    free(heap);
    const attn__enc_states es = {t->enc_x, S, NULL};
    attn_status st = ATTN_OK;
    for (int64_t l = 0; l < t->dc.layers && !st; l++) {
        attn__dec_layer_act_bind(&t->dec[l], B, T, S, t->act_mem + l * t->act_per, &t->act[l]);
        st = attn__dec_layer_forward(ctx, &t->dec[l], &bt, t->h, &es, &t->act[l]);
    }
    if (st) return st;
    attn__layernorm_rows_train(ctx, B * T, E, t->h, t->lnf_g, t->lnf_b, 1e-5f, t->hf, t->mean,
                               t->rstd);
    return ATTN_OK;
}

attn_status attn_caption_trainer_step(attn_ctx *ctx, attn_caption_trainer *t, int64_t B,
                                      const float *pixels, const int32_t *ids, int64_t T,
                                      int train, double *loss) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!t || !pixels || !ids) return attn_ctx_fail(ctx, ATTN_E_ARG, "NULL argument");
    if (B < 1 || B > t->max_batch || T < 1 || T > t->dc.max_len)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "captioner: batch %lld of %lld tokens outside "
                                              "[1, %d] x [1, %lld]",
                             (long long)B, (long long)T, t->max_batch, (long long)t->dc.max_len);
    const int64_t V = t->dc.vocab, E = t->E, S = t->S, N = B * T;
    for (int64_t i = 0; i < B * (T + 1); i++)
        if (ids[i] < 0 || ids[i] >= V)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "captioner: token %d outside [0, %lld)", ids[i],
                                 (long long)V);
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < T; k++)
            t->tgt[b * T + k] = ids[b * (T + 1) + k + 1];
    attn_status st = encode(ctx, t, B, pixels);
    if (!st) st = decode(ctx, t, B, ids, T + 1, T);
    if (st) return st;
    const float scale = 1.0f / (float)N;
    if (!train) {
        const double sum = attn__lm_head_ce(ctx, t->hf, N, E, t->wte, V, t->tgt, -1, scale, NULL,
                                            NULL, t->ce_scratch);
        if (loss) *loss = sum / (double)N;
        return ATTN_OK;
    }
    for (int i = 0; i < t->nparams; i++)
        memset(t->params[i].grad.data, 0,
               (size_t)attn_tensor_numel(&t->params[i].grad) * sizeof(float));
    const double sum = attn__lm_head_ce(ctx, t->hf, N, E, t->wte, V, t->tgt, -1, scale, t->dh,
                                        t->gwte, t->ce_scratch);
    if (loss) *loss = sum / (double)N;
    /* the final LayerNorm's input is h (the stream) */
    attn__layernorm_rows_backward(ctx, N, E, t->h, t->lnf_g, t->mean, t->rstd, t->dh, t->dh,
                                  t->glnf_g, t->glnf_b);
    memset(t->denc, 0, (size_t)(B * S * E) * sizeof(float));
    const attn__batch bt = {B, T, NULL};
    const attn__enc_states es = {t->enc_x, S, NULL};
    for (int64_t l = t->dc.layers - 1; l >= 0 && !st; l--)
        st = attn__dec_layer_backward(ctx, &t->dec[l], &bt, &es, &t->act[l], t->dh, t->denc,
                                      &t->dgr[l], t->bwd);
    if (st) return st;
    const int32_t *rows[4096];
    const int32_t **rp = rows;
    int32_t const **heap = NULL;
    if (B > 4096) {
        heap = malloc((size_t)B * sizeof *heap);
        if (!heap) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "captioner: out of memory");
        rp = heap;
    }
    for (int64_t b = 0; b < B; b++)
        rp[b] = ids + b * (T + 1);
    const attn__embedding emb = {E, t->wte, t->wpe, NULL, NULL, NULL, 0.0f};
    attn__embedding_backward(ctx, &emb, &bt, rp, 0, t->dh, t->gwte, t->gwpe, NULL);
    free(heap);
    /* into the encoder: its final LayerNorm, then the patch rows of dx */
    float *x, *dx;
    attn_vit *g;
    attn__vit_trainer_bufs(t->enc, &x, &dx, &g);
    const attn_vit *m = attn_vit_trainer_model(t->enc);
    attn__layernorm_rows_backward(ctx, B * S, E, t->enc_in, m->ln_g, t->enc_mean, t->enc_rstd,
                                  t->denc, t->denc, g->ln_g, g->ln_b);
    const int64_t Te = t->Te;
    for (int64_t b = 0; b < B; b++) {
        memset(dx + b * Te * E, 0, (size_t)E * sizeof(float));
        memcpy(dx + (b * Te + 1) * E, t->denc + b * S * E, (size_t)(S * E) * sizeof(float));
    }
    return attn__vit_trainer_encode_backward(ctx, t->enc, B);
}

attn_status attn_caption_generate(attn_ctx *ctx, attn_caption_trainer *t, int64_t B,
                                  const float *pixels, int32_t bos, int32_t eos, int32_t *out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!t || !pixels || !out) return attn_ctx_fail(ctx, ATTN_E_ARG, "NULL argument");
    const int64_t V = t->dc.vocab, E = t->E, P = t->dc.max_len;
    if (B < 1 || B > t->max_batch || bos < 0 || bos >= V || eos < 0 || eos >= V)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "captioner: batch %lld, bos %d, eos %d out of range",
                             (long long)B, bos, eos);
    attn_status st = encode(ctx, t, B, pixels);
    if (st) return st;
    for (int64_t i = 0; i < B * P; i++)
        out[i] = eos;
    for (int64_t b = 0; b < B; b++)
        out[b * P] = bos;
    for (int64_t T = 1; T < P; T++) {
        /* no KV cache: the prefix is run again for each word */
        if ((st = decode(ctx, t, B, out, P, T))) return st;
        int done = 1;
        for (int64_t b = 0; b < B; b++) {
            if (out[b * P + T - 1] == eos && T > 1) continue;
            const float *hr = t->hf + (b * T + T - 1) * E;
            int32_t best = 0;
            float bv = -INFINITY;
            for (int64_t v = 0; v < V; v++) {
                float s = 0.0f;
                for (int64_t e = 0; e < E; e++)
                    s += hr[e] * t->wte[v * E + e];
                if (s > bv) bv = s, best = (int32_t)v;
            }
            out[b * P + T] = best;
            if (best != eos) done = 0;
        }
        if (done) break;
    }
    return ATTN_OK;
}

const attn_caption_config *attn_caption_trainer_config(const attn_caption_trainer *t) {
    return t ? &t->dc : NULL;
}

/* ---- saving and loading ---------------------------------------------------- */

attn_status attn_caption_save(attn_ctx *ctx, const attn_caption_trainer *t, const char *dir) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!t || !dir) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_caption_save: NULL argument");
    if (mkdir(dir, 0777) && errno != EEXIST)
        return attn_ctx_fail(ctx, ATTN_E_IO, "%s: cannot create the directory", dir);
    char path[ATTN__PATH_LEN];
    const char *names[CAP_MAX_PARAMS];
    attn_tensor ts[CAP_MAX_PARAMS];
    for (int i = 0; i < t->nparams; i++)
        names[i] = t->params[i].name, ts[i] = t->params[i].value;
    if (!attn__path_join(path, dir, "model.safetensors", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    attn_status st = attn_safetensors_write(ctx, path, t->nparams, names, ts);
    if (st) return st;
    const attn_vit *m = attn_vit_trainer_model(t->enc);
    const attn_vit_config *c = &m->cfg;
    json_t *words = json_array();
    for (int64_t i = 0; i < t->dc.vocab; i++)
        json_array_append_new(words, json_string(t->words[i]));
    json_t *j = json_pack(
        "{s:s, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f}, s:{s:i, s:i, s:i, s:i, s:i}, s:o, s:i, "
        "s:i}",
        "model_type", "attn_captioner", "encoder", "image_size", (int)c->image_size, "patch_size",
        (int)c->patch_size, "num_channels", (int)c->num_channels, "hidden_size",
        (int)c->hidden_size, "num_hidden_layers", (int)c->num_layers, "num_attention_heads",
        (int)c->num_heads, "intermediate_size", (int)c->intermediate_size, "layer_norm_eps",
        (double)c->layer_norm_eps, "decoder", "vocab_size", (int)t->dc.vocab, "max_len",
        (int)t->dc.max_len, "num_layers", (int)t->dc.layers, "num_heads", (int)t->dc.heads,
        "intermediate_size", (int)t->dc.mlp, "words", words, "bos", (int)t->dc.bos, "eos",
        (int)t->dc.eos);
    if (!attn__path_join(path, dir, "config.json", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    if ((st = attn__write_json(ctx, path, j))) return st;
    return attn__vit_write_preproc(ctx, &m->pre, dir);
}

static attn_status load_config(attn_ctx *ctx, const char *path, json_t *j, attn_vit_config *c,
                               attn_caption_config *d, const char ***words) {
    const char *type;
    attn_status st;
    if ((st = attn__json_get_str(ctx, path, j, "model_type", "", &type))) return st;
    if (strcmp(type, "attn_captioner"))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: model_type '%s' is not attn_captioner",
                             path, type);
    json_t *e = json_object_get(j, "encoder"), *dj = json_object_get(j, "decoder");
    json_t *w = json_object_get(j, "words");
    if (!json_is_object(e) || !json_is_object(dj) || !json_is_array(w))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                             "%s: needs objects 'encoder' and 'decoder' and an array 'words'",
                             path);
    int64_t v[12];
    if ((st = attn__json_get_int(ctx, path, e, "image_size", 0, 0, 1, &v[0])) ||
        (st = attn__json_get_int(ctx, path, e, "patch_size", 0, 0, 1, &v[1])) ||
        (st = attn__json_get_int(ctx, path, e, "num_channels", 0, 0, 3, &v[2])) ||
        (st = attn__json_get_int(ctx, path, e, "hidden_size", 0, 0, 1, &v[3])) ||
        (st = attn__json_get_int(ctx, path, e, "num_hidden_layers", 0, 0, 1, &v[4])) ||
        (st = attn__json_get_int(ctx, path, e, "num_attention_heads", 0, 0, 1, &v[5])) ||
        (st = attn__json_get_int(ctx, path, e, "intermediate_size", 0, 0, 1, &v[6])) ||
        (st = attn__json_get_int(ctx, path, dj, "vocab_size", 0, 0, 2, &v[7])) ||
        (st = attn__json_get_int(ctx, path, dj, "max_len", 0, 0, 2, &v[8])) ||
        (st = attn__json_get_int(ctx, path, dj, "num_layers", 0, 0, 1, &v[9])) ||
        (st = attn__json_get_int(ctx, path, dj, "num_heads", 0, 0, 1, &v[10])) ||
        (st = attn__json_get_int(ctx, path, dj, "intermediate_size", 0, 0, 1, &v[11])))
        return st;
    int64_t bos, eos;
    if ((st = attn__json_get_int(ctx, path, j, "bos", 0, 0, 0, &bos)) ||
        (st = attn__json_get_int(ctx, path, j, "eos", 0, 0, 0, &eos)))
        return st;
    if (v[2] != 3 || v[0] > 1024 || v[1] > v[0] || v[0] % v[1] || v[3] > 4096 || v[4] > 64 ||
        v[3] % v[5] || v[6] > 65536 || v[7] > (1 << 20) || v[8] > 4096 || v[9] > CAP_MAX_DEC ||
        v[3] % v[10] || v[11] > 65536 || bos >= v[7] || eos >= v[7] ||
        (int64_t)json_array_size(w) != v[7])
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "%s: sizes out of range or inconsistent (3 channels, patch dividing "
                             "the image, heads dividing the width, bos/eos and %zu words for a "
                             "vocabulary of %lld)",
                             path, json_array_size(w), (long long)v[7]);
    *words = calloc((size_t)v[7], sizeof **words);
    if (!*words) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory", path);
    for (int64_t i = 0; i < v[7]; i++) {
        (*words)[i] = json_string_value(json_array_get(w, (size_t)i));
        if (!(*words)[i])
            return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: words[%lld] is not a string", path,
                                 (long long)i);
    }
    memset(c, 0, sizeof *c);
    c->image_size = v[0], c->patch_size = v[1], c->num_channels = 3, c->hidden_size = v[3];
    c->num_layers = v[4], c->num_heads = v[5], c->intermediate_size = v[6];
    c->layer_norm_eps = 1e-12f, c->qkv_bias = 1, c->num_labels = 10;
    json_t *eps = json_object_get(e, "layer_norm_eps");
    if (eps && json_is_number(eps)) c->layer_norm_eps = (float)json_number_value(eps);
    d->vocab = v[7], d->max_len = v[8], d->layers = v[9], d->heads = v[10], d->mlp = v[11];
    d->words = *words, d->bos = (int32_t)bos, d->eos = (int32_t)eos;
    return ATTN_OK;
}

attn_status attn_caption_load(attn_ctx *ctx, const char *dir, int max_batch,
                              attn_image_preproc *pre, attn_caption_trainer **out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!dir || !pre || !out) return attn_ctx_fail(ctx, ATTN_E_ARG, "NULL argument");
    *out = NULL;
    char path[ATTN__PATH_LEN];
    if (!attn__path_join(path, dir, "config.json", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    json_t *j = NULL;
    attn_status st = attn__json_load(ctx, path, 0, &j);
    if (st) return st;
    attn_vit_config c;
    attn_caption_config d;
    const char **words = NULL;
    st = load_config(ctx, path, j, &c, &d, &words);
    if (!st) st = attn_image_preproc_load(ctx, dir, c.image_size, pre);
    attn_caption_trainer *t = NULL;
    if (!st) st = attn_caption_trainer_create(ctx, &c, pre, &d, max_batch, 0, &t);
    free(words);
    json_decref(j);
    if (st) return st;
    attn_safetensors *sf = NULL;
    if (!attn__path_join(path, dir, "model.safetensors", NULL))
        st = attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    if (!st) st = attn_safetensors_open(ctx, path, &sf);
    for (int i = 0; !st && i < t->nparams; i++) {
        const attn_tensor *want = &t->params[i].value;
        float *data = NULL;
        attn_tensor view;
        st = attn_safetensors_get_f32(ctx, sf, t->params[i].name, &data, &view);
        if (st) break;
        int same = view.ndim == want->ndim;
        for (int k = 0; same && k < view.ndim; k++)
            same = view.shape[k] == want->shape[k];
        if (same)
            memcpy(want->data, data, (size_t)attn_tensor_numel(want) * sizeof(float));
        else
            st = attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: tensor %s has the wrong shape for config.json",
                               path, t->params[i].name);
        attn_buffer_free(data);
    }
    attn_safetensors_close(sf);
    if (st) {
        attn_caption_trainer_free(t);
        return st;
    }
    *out = t;
    return ATTN_OK;
}

attn_status attn_caption_cross_attention(attn_ctx *ctx, attn_caption_trainer *t,
                                         const float *pixels, const int32_t *ids, int64_t T,
                                         float *out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!t || !pixels || !ids || !out) return attn_ctx_fail(ctx, ATTN_E_ARG, "NULL argument");
    if (T < 1 || T > t->dc.max_len)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "captioner: %lld tokens outside [1, %lld]",
                             (long long)T, (long long)t->dc.max_len);
    for (int64_t i = 0; i < T; i++)
        if (ids[i] < 0 || ids[i] >= t->dc.vocab)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "captioner: token %d outside [0, %lld)", ids[i],
                                 (long long)t->dc.vocab);
    if (t->S > 4096)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "captioner: %lld patches (at most 4096 shown)",
                             (long long)t->S);
    attn_status st = encode(ctx, t, 1, pixels);
    if (!st) st = decode(ctx, t, 1, ids, T, T);
    if (st) return st;
    /* recomputed from the saved projections of the last layer: q [T, E]
     * (cross: q only), k in the first E columns of kv [S, 2E] */
    const attn__dec_layer_act *a = &t->act[t->dc.layers - 1];
    const int64_t E = t->E, S = t->S, H = t->dc.heads, Dh = E / H;
    const double scale = 1.0 / sqrt((double)Dh);
    for (int64_t r = 0; r < T; r++) {
        float *o = out + r * S;
        for (int64_t s = 0; s < S; s++)
            o[s] = 0.0f;
        for (int64_t h = 0; h < H; h++) {
            const float *q = a->cross.qkv + r * E + h * Dh;
            double sc[4096], mx = -INFINITY, sum = 0.0;
            for (int64_t s = 0; s < S && s < 4096; s++) {
                const float *k = a->cross.kv + s * 2 * E + h * Dh;
                double d = 0.0;
                for (int64_t e = 0; e < Dh; e++)
                    d += (double)q[e] * k[e];
                sc[s] = d * scale;
                mx = fmax(mx, sc[s]);
            }
            for (int64_t s = 0; s < S && s < 4096; s++)
                sum += (sc[s] = exp(sc[s] - mx));
            for (int64_t s = 0; s < S && s < 4096; s++)
                o[s] += (float)(sc[s] / sum / (double)H);
#ifdef CAP_DEBUG
            double md = 0;
            for (int64_t e = 0; e < Dh; e++) {
                double v = 0;
                for (int64_t s = 0; s < S; s++)
                    v += sc[s] / sum * a->cross.kv[s * 2 * E + E + h * Dh + e];
                md = fmax(md, fabs(v - a->cross.o[r * E + h * Dh + e]));
            }
            fprintf(stderr, "debug r%lld h%lld |PV - o| %.2e\n", (long long)r, (long long)h, md);
#endif
        }
    }
    return ATTN_OK;
}

int64_t attn_caption_patch_grid(const attn_caption_trainer *t, int64_t *patch) {
    const attn_vit *m = attn_vit_trainer_model(t->enc);
    if (patch) *patch = m->cfg.patch_size;
    return m->grid;
}
