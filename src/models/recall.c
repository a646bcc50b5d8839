/* Associative-recall model (attn_recall_*, attn/models.h): embeddings,
 * pre-LN attention blocks on attn_mha, an optional MLP, a readout at the last
 * position and cross-entropy; forward and backward side by side. The task
 * and the model are described in attn/models.h.
 *
 * The blocks keep their own training code (LayerNorm and MLP backward beside
 * the forward), written before nn/block.h had a layer backward
 * (attn__layer_backward, nn/block_bwd.c); attention itself is attn_mha, so
 * it runs through nn/attention.c like every other attention. */
#include "nn/nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARAMS 128
#define MAX_LAYERS ATTN_RECALL_MAX_LAYERS
#define MAX_KEYS ATTN_RECALL_MAX_KEYS
#define MAX_PAIRS ATTN_RECALL_MAX_PAIRS

typedef struct block {
    attn_mha *mha;
    float *ln1_g, *ln1_b, *ln2_g, *ln2_b, *w1, *b1, *w2, *b2;
    float *g_ln1_g, *g_ln1_b, *g_ln2_g, *g_ln2_b, *g_w1, *g_b1, *g_w2, *g_b2;
    /* activations of the last forward, [M = B*T rows] */
    float *h1, *mean1, *rstd1; /* LN1(x) */
    float *xm;                 /* stream after attention */
    float *h2, *mean2, *rstd2; /* LN2(xm) */
    float *pre, *act;          /* [M, mlp] before / after GELU */
} block;

struct attn_recall {
    attn_recall_config cfg;
    int T, V; /* sequence length, token vocabulary */
    float *tok, *pos, *prev, *lnf_g, *lnf_b, *wr, *br;
    float *g_tok, *g_pos, *g_prev, *g_lnf_g, *g_lnf_b, *g_wr, *g_br;
    block blk[MAX_LAYERS];
    float *xs[MAX_LAYERS + 1]; /* stream entering each block, and the output */
    float *hf, *meanf, *rstdf, *logits;
    /* backward scratch */
    float *dstream, *dtmp, *dh, *dact, *dhf, *dlogits, *attn_out;
    attn_param params[MAX_PARAMS];
    char names[MAX_PARAMS][64];
    int nparams;
    void *owned[4 * MAX_PARAMS];
    int nowned;
};

static float *alloc(attn_recall *r, size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (p) r->owned[r->nowned++] = p;
    return p;
}

/* A parameter [d0, d1] (d1 = 0: 1-D) and its gradient; NULL on failure. */
static float *param(attn_recall *r, const char *name, int64_t d0, int64_t d1, float **grad) {
    size_t n = (size_t)(d0 * (d1 ? d1 : 1));
    float *w = alloc(r, n), *g = alloc(r, n);
    if (!w || !g) return NULL;
    attn_param *p = &r->params[r->nparams];
    snprintf(r->names[r->nparams], sizeof r->names[0], "%s", name);
    int64_t sh[2] = {d0, d1};
    p->name = r->names[r->nparams++];
    p->value = attn_tensor_make(w, ATTN_F32, d1 ? 2 : 1, sh);
    p->grad = attn_tensor_make(g, ATTN_F32, d1 ? 2 : 1, sh);
    *grad = g;
    return w;
}

static float normal(attn__rng *g) {
    /* Box-Muller; u1 in (0, 1] so the log is finite */
    float u1 = 1.0f - attn__rng_uniform(g, 0.0f, 1.0f), u2 = attn__rng_uniform(g, 0.0f, 1.0f);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

static void fill_uniform(attn__rng *g, float *w, int64_t n, float bound) {
    for (int64_t i = 0; i < n; i++)
        w[i] = attn__rng_uniform(g, -bound, bound);
}

static attn_status check_config(attn_ctx *ctx, const attn_recall_config *c) {
    if (c->n_keys < 1 || c->n_keys > MAX_KEYS || c->n_values < 2 || c->n_pairs < 1 ||
        c->n_pairs > c->n_keys || c->n_pairs > MAX_PAIRS || c->E < 1 || c->H < 1 || c->E % c->H ||
        c->layers < 1 || c->layers > MAX_LAYERS || c->mlp < 0 || c->batch < 1)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "recall: bad configuration (need 1 <= pairs <= keys, keys <= %d, "
                             "pairs <= %d, values >= 2, E %% H == 0, 1 <= layers <= %d, "
                             "batch >= 1)",
                             MAX_KEYS, MAX_PAIRS, MAX_LAYERS);
    return ATTN_OK;
}

void attn_recall_free(attn_recall *r) {
    if (!r) return;
    for (int l = 0; l < MAX_LAYERS; l++)
        attn_mha_free(r->blk[l].mha);
    for (int i = 0; i < r->nowned; i++)
        free(r->owned[i]);
    free(r);
}

attn_status attn_recall_create(attn_ctx *ctx, const attn_recall_config *cfg, attn_recall **out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!cfg || !out) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_recall_create: NULL argument");
    *out = NULL;
    const attn_recall_config *c = cfg;
    attn_status st0 = check_config(ctx, c);
    if (st0) return st0;
    attn_recall *r = calloc(1, sizeof *r);
    if (!r) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "recall: out of memory");
    r->cfg = *c;
    r->T = 2 * c->n_pairs + 1;
    r->V = c->n_keys + c->n_values;
    int64_t E = c->E, T = r->T, M = (int64_t)c->batch * T, F = c->mlp;
    attn__rng g = {c->seed ^ 0x5eedull};
    attn_status st = ATTN_E_NOMEM;
    int ok = 1;
    /* PyTorch defaults: nn.Embedding N(0,1), nn.Linear U(+-1/sqrt(fan_in)),
     * LayerNorm weight 1 and bias 0; linear biases start at 0 here. */
    ok &= (r->tok = param(r, "tok_emb.weight", r->V, E, &r->g_tok)) != NULL;
    ok &= (r->pos = param(r, "pos_emb.weight", T, E, &r->g_pos)) != NULL;
    if (ok && c->shift) ok &= (r->prev = param(r, "prev_emb.weight", r->V, E, &r->g_prev)) != NULL;
    if (ok) {
        for (int64_t i = 0; i < r->V * E; i++)
            r->tok[i] = normal(&g);
        for (int64_t i = 0; c->shift && i < r->V * E; i++)
            r->prev[i] = normal(&g);
        for (int64_t i = 0; i < T * E; i++)
            r->pos[i] = normal(&g);
    }
    for (int l = 0; ok && l < c->layers; l++) {
        block *b = &r->blk[l];
        char nm[64];
#define P(field, suffix, d0, d1)                                                                   \
    (snprintf(nm, sizeof nm, "layers.%d.%s", l, suffix),                                           \
     (b->field = param(r, nm, d0, d1, &b->g_##field)) != NULL)
        ok &= P(ln1_g, "ln1.weight", E, 0) && P(ln1_b, "ln1.bias", E, 0);
        if (ok && F) {
            ok &= P(ln2_g, "ln2.weight", E, 0) && P(ln2_b, "ln2.bias", E, 0);
            ok &= P(w1, "mlp.fc1.weight", F, E) && P(b1, "mlp.fc1.bias", F, 0);
            ok &= P(w2, "mlp.fc2.weight", E, F) && P(b2, "mlp.fc2.bias", E, 0);
        }
#undef P
        if (!ok) break;
        for (int64_t i = 0; i < E; i++)
            b->ln1_g[i] = 1.0f;
        if (F) {
            for (int64_t i = 0; i < E; i++)
                b->ln2_g[i] = 1.0f;
            fill_uniform(&g, b->w1, F * E, 1.0f / sqrtf((float)E));
            fill_uniform(&g, b->w2, E * F, 1.0f / sqrtf((float)F));
        }
        attn_mha_config mc = {0};
        mc.E = E, mc.H = c->H;
        if ((st = attn_mha_create(ctx, &mc, attn__rng_next(&g), &b->mha))) goto fail;
        int np;
        const attn_param *mp = attn_mha_get_params(b->mha, &np);
        for (int i = 0; i < np && r->nparams < MAX_PARAMS; i++) {
            r->params[r->nparams] = mp[i];
            snprintf(r->names[r->nparams], sizeof r->names[0], "layers.%d.attn.%s", l, mp[i].name);
            r->params[r->nparams].name = r->names[r->nparams];
            r->nparams++;
        }
        ok &= (b->h1 = alloc(r, (size_t)(M * E))) && (b->mean1 = alloc(r, (size_t)M)) &&
              (b->rstd1 = alloc(r, (size_t)M)) && (b->xm = alloc(r, (size_t)(M * E)));
        if (ok && F)
            ok &= (b->h2 = alloc(r, (size_t)(M * E))) && (b->mean2 = alloc(r, (size_t)M)) &&
                  (b->rstd2 = alloc(r, (size_t)M)) && (b->pre = alloc(r, (size_t)(M * F))) &&
                  (b->act = alloc(r, (size_t)(M * F)));
    }
    ok = ok && (r->lnf_g = param(r, "ln_f.weight", E, 0, &r->g_lnf_g)) &&
         (r->lnf_b = param(r, "ln_f.bias", E, 0, &r->g_lnf_b)) &&
         (r->wr = param(r, "readout.weight", c->n_values, E, &r->g_wr)) &&
         (r->br = param(r, "readout.bias", c->n_values, 0, &r->g_br));
    if (ok) {
        for (int64_t i = 0; i < E; i++)
            r->lnf_g[i] = 1.0f;
        fill_uniform(&g, r->wr, c->n_values * E, 1.0f / sqrtf((float)E));
    }
    for (int l = 0; ok && l <= c->layers; l++)
        ok &= (r->xs[l] = alloc(r, (size_t)(M * E))) != 0;
    ok = ok && (r->hf = alloc(r, (size_t)(c->batch * E))) &&
         (r->meanf = alloc(r, (size_t)c->batch)) && (r->rstdf = alloc(r, (size_t)c->batch)) &&
         (r->logits = alloc(r, (size_t)(c->batch * c->n_values))) &&
         (r->dstream = alloc(r, (size_t)(M * E))) && (r->dtmp = alloc(r, (size_t)(M * E))) &&
         (r->dh = alloc(r, (size_t)(M * E))) && (r->dact = alloc(r, (size_t)(M * (F ? F : 1)))) &&
         (r->dhf = alloc(r, (size_t)(c->batch * E))) &&
         (r->dlogits = alloc(r, (size_t)(c->batch * c->n_values))) &&
         (r->attn_out = alloc(r, (size_t)(M * E)));
    if (!ok) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "recall: out of memory");
        goto fail;
    }
    *out = r;
    return ATTN_OK;
fail:
    attn_recall_free(r);
    return st;
}

const attn_param *attn_recall_get_params(attn_recall *r, int *n) {
    if (n) *n = r ? r->nparams : 0;
    return r ? r->params : NULL;
}

attn_status attn_recall_sample(attn_ctx *ctx, const attn_recall_config *c, uint64_t *state,
                               int batch, int32_t *ids, int32_t *answer) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!c || !state || (batch > 0 && (!ids || !answer)) || batch < 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_recall_sample: NULL argument or batch < 0");
    attn_status st = check_config(ctx, c);
    if (st) return st;
    attn__rng rng = {*state}, *g = &rng;
    int T = 2 * c->n_pairs + 1;
    int keys[MAX_KEYS];
    for (int b = 0; b < batch; b++) {
        /* distinct keys: a partial Fisher-Yates shuffle */
        int nk = c->n_keys;
        for (int i = 0; i < nk; i++)
            keys[i] = i;
        int32_t *s = ids + (int64_t)b * T;
        int32_t vals[MAX_PAIRS];
        for (int p = 0; p < c->n_pairs; p++) {
            int j = p + (int)(attn__rng_next(g) % (uint64_t)(nk - p));
            int t = keys[p];
            keys[p] = keys[j], keys[j] = t;
            vals[p] = (int32_t)(attn__rng_next(g) % (uint64_t)c->n_values);
            s[2 * p] = keys[p];
            s[2 * p + 1] = c->n_keys + vals[p];
        }
        int q = (int)(attn__rng_next(g) % (uint64_t)c->n_pairs);
        s[T - 1] = keys[q];
        answer[b] = vals[q];
    }
    *state = rng.s;
    return ATTN_OK;
}

static attn_mha_args mha_args(const block *b, float *y, int64_t B, int64_t T, int64_t E) {
    attn_mha_args a;
    memset(&a, 0, sizeof a);
    int64_t sh[3] = {B, T, E};
    a.x_q = attn_tensor_make(b->h1, ATTN_F32, 3, sh);
    a.y = attn_tensor_make(y, ATTN_F32, 3, sh);
    return a;
}

attn_status attn_recall_step(attn_ctx *ctx, attn_recall *r, const int32_t *ids,
                             const int32_t *answer, int B, int train, double *loss, int *correct) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!r || !ids || !answer)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_recall_step: NULL argument");
    const attn_recall_config *c = &r->cfg;
    if (B < 1 || B > c->batch)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "recall: batch %d outside [1, %d]", B, c->batch);
    for (int64_t i = 0; i < (int64_t)B * r->T; i++)
        if (ids[i] < 0 || ids[i] >= r->V)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "recall: token %lld: id %d outside [0, %d)",
                                 (long long)i, ids[i], r->V);
    for (int b = 0; b < B; b++)
        if (answer[b] < 0 || answer[b] >= c->n_values)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "recall: answer %d: %d outside [0, %d)", b,
                                 answer[b], c->n_values);
    int64_t T = r->T, E = c->E, M = (int64_t)B * T, F = c->mlp, NV = c->n_values;
    const float eps = 1e-5f;
    attn_status st;
    /* ---- forward ---- */
    for (int64_t i = 0; i < M; i++) {
        const float *te = r->tok + (int64_t)ids[i] * E, *pe = r->pos + (i % T) * E;
        for (int64_t e = 0; e < E; e++)
            r->xs[0][i * E + e] = te[e] + pe[e];
        if (r->prev && i % T) {
            const float *pv = r->prev + (int64_t)ids[i - 1] * E;
            for (int64_t e = 0; e < E; e++)
                r->xs[0][i * E + e] += pv[e];
        }
    }
    for (int l = 0; l < c->layers; l++) {
        block *b = &r->blk[l];
        const float *x = r->xs[l];
        attn__layernorm_forward(x, E, M, E, b->ln1_g, b->ln1_b, eps, b->h1, E, b->mean1, b->rstd1);
        attn_mha_args a = mha_args(b, r->attn_out, B, T, E);
        if ((st = attn_mha_forward(ctx, b->mha, &a))) return st;
        for (int64_t i = 0; i < M * E; i++)
            b->xm[i] = x[i] + r->attn_out[i];
        float *xo = r->xs[l + 1];
        if (!F) {
            memcpy(xo, b->xm, (size_t)(M * E) * sizeof *xo);
            continue;
        }
        attn__layernorm_forward(b->xm, E, M, E, b->ln2_g, b->ln2_b, eps, b->h2, E, b->mean2,
                                b->rstd2);
        attn__linear_forward(ctx, b->h2, E, M, E, b->w1, b->b1, F, b->pre, F);
        memcpy(b->act, b->pre, (size_t)(M * F) * sizeof *b->act);
        attn__gelu_forward(b->act, M * F);
        attn__linear_forward(ctx, b->act, F, M, F, b->w2, b->b2, E, xo, E);
        for (int64_t i = 0; i < M * E; i++)
            xo[i] += b->xm[i];
    }
    const float *xl = r->xs[c->layers] + (T - 1) * E; /* last position, row stride T*E */
    attn__layernorm_forward(xl, T * E, B, E, r->lnf_g, r->lnf_b, eps, r->hf, E, r->meanf, r->rstdf);
    attn__linear_forward(ctx, r->hf, E, B, E, r->wr, r->br, NV, r->logits, NV);
    double total = 0.0;
    int right = 0;
    for (int b = 0; b < B; b++) {
        const float *z = r->logits + (int64_t)b * NV;
        int arg = 0;
        double mx = z[0], sum = 0.0;
        for (int64_t k = 1; k < NV; k++)
            if (z[k] > mx) mx = z[k], arg = (int)k;
        for (int64_t k = 0; k < NV; k++)
            sum += exp((double)z[k] - mx);
        total += mx + log(sum) - (double)z[answer[b]];
        right += arg == answer[b];
        /* d(mean CE)/dz = (softmax - onehot) / B */
        for (int64_t k = 0; k < NV; k++)
            r->dlogits[(int64_t)b * NV + k] =
                (float)((exp((double)z[k] - mx) / sum - (k == answer[b])) / B);
    }
    if (loss) *loss = total / B;
    if (correct) *correct = right;
    if (!train) return ATTN_OK;

    /* ---- backward: gradients overwritten ---- */
    attn__linear_backward(ctx, r->hf, E, B, E, r->wr, NV, r->dlogits, NV, r->dhf, E, 0, r->g_wr,
                          r->g_br, 0);
    memset(r->dstream, 0, (size_t)(M * E) * sizeof(float));
    memset(r->g_lnf_g, 0, (size_t)E * sizeof(float));
    memset(r->g_lnf_b, 0, (size_t)E * sizeof(float));
    attn__layernorm_backward(xl, T * E, B, E, r->lnf_g, r->meanf, r->rstdf, r->dhf, E,
                             r->dstream + (T - 1) * E, T * E, r->g_lnf_g, r->g_lnf_b);
    for (int l = c->layers - 1; l >= 0; l--) {
        block *b = &r->blk[l];
        /* dstream = dL/d(stream after block l) */
        if (F) {
            attn__linear_backward(ctx, b->act, F, M, F, b->w2, E, r->dstream, E, r->dact, F, 0,
                                  b->g_w2, b->g_b2, 0);
            attn__gelu_backward(b->pre, r->dact, r->dact, M * F);
            attn__linear_backward(ctx, b->h2, E, M, E, b->w1, F, r->dact, F, r->dh, E, 0, b->g_w1,
                                  b->g_b1, 0);
            memset(b->g_ln2_g, 0, (size_t)E * sizeof(float));
            memset(b->g_ln2_b, 0, (size_t)E * sizeof(float));
            attn__layernorm_backward(b->xm, E, M, E, b->ln2_g, b->mean2, b->rstd2, r->dh, E,
                                     r->dtmp, E, b->g_ln2_g, b->g_ln2_b);
            for (int64_t i = 0; i < M * E; i++)
                r->dstream[i] += r->dtmp[i];
        }
        /* now dstream = dL/dxm; the attention branch */
        attn_mha_args a = mha_args(b, r->attn_out, B, T, E);
        attn_mha_grads gr;
        memset(&gr, 0, sizeof gr);
        int64_t sh[3] = {B, T, E};
        gr.dy = attn_tensor_make(r->dstream, ATTN_F32, 3, sh);
        gr.dx_q = attn_tensor_make(r->dh, ATTN_F32, 3, sh);
        if ((st = attn_mha_backward(ctx, b->mha, &a, &gr))) return st;
        memset(b->g_ln1_g, 0, (size_t)E * sizeof(float));
        memset(b->g_ln1_b, 0, (size_t)E * sizeof(float));
        attn__layernorm_backward(r->xs[l], E, M, E, b->ln1_g, b->mean1, b->rstd1, r->dh, E, r->dtmp,
                                 E, b->g_ln1_g, b->g_ln1_b);
        for (int64_t i = 0; i < M * E; i++)
            r->dstream[i] += r->dtmp[i];
    }
    memset(r->g_tok, 0, (size_t)(r->V * E) * sizeof(float));
    memset(r->g_pos, 0, (size_t)(T * E) * sizeof(float));
    if (r->prev) memset(r->g_prev, 0, (size_t)(r->V * E) * sizeof(float));
    for (int64_t i = 0; i < M; i++) {
        float *gt = r->g_tok + (int64_t)ids[i] * E, *gp = r->g_pos + (i % T) * E;
        const float *d = r->dstream + i * E;
        for (int64_t e = 0; e < E; e++)
            gt[e] += d[e], gp[e] += d[e];
        if (r->prev && i % T) {
            float *gv = r->g_prev + (int64_t)ids[i - 1] * E;
            for (int64_t e = 0; e < E; e++)
                gv[e] += d[e];
        }
    }
    return ATTN_OK;
}
