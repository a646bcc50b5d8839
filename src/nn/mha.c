/* Multi-head attention layer: parameters, forward, backward.
 *
 *   q = x_q Wq^T + bq   [B,T,E]   seen as [B,H,T,Dh] by strides, no copy
 *   k = x_k Wk^T + bk   [B,S,KV]  seen as [B,Hkv,S,Dh]
 *   v = x_v Wv^T + bv   [B,S,KV]
 *   o = attention(q, k, v)        written [B,T,H,Dh] through strides
 *   y = o Wo^T + bo     [B,T,E]
 */
#include "nn/mha.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *NAMES_PACKED[] = {"in_proj_weight", "in_proj_bias"};
static const char *NAMES_SPLIT[] = {"q_proj_weight", "k_proj_weight", "v_proj_weight",
                                    "in_proj_bias"};
static const char *NAMES_GQA[] = {"q_proj_weight", "k_proj_weight", "v_proj_weight",
                                  "q_proj_bias",   "k_proj_bias",   "v_proj_bias"};

static void add_param(attn_mha *m, const char *name, float *w, float *g, int ndim, int64_t d0,
                      int64_t d1) {
    int64_t sh[2] = {d0, d1};
    attn_param *p = &m->params[m->nparams++];
    p->name = name;
    p->value = attn_tensor_make(w, ATTN_F32, ndim, sh);
    p->grad = attn_tensor_make(g, ATTN_F32, ndim, sh);
}

static void build_params(attn_mha *m) {
    int64_t E = m->E, KV = m->KV, nq = E * E, nk = KV * m->kdim;
    int bias = !m->cfg.no_bias;
    m->nparams = 0;
    if (m->Hkv == m->H && m->kdim == E && m->vdim == E) {
        add_param(m, NAMES_PACKED[0], m->w_in, m->gw_in, 2, 3 * E, E);
        if (bias) add_param(m, NAMES_PACKED[1], m->b_in, m->gb_in, 1, 3 * E, 0);
    } else if (m->Hkv == m->H) {
        add_param(m, NAMES_SPLIT[0], m->w_in, m->gw_in, 2, E, E);
        add_param(m, NAMES_SPLIT[1], m->w_in + nq, m->gw_in + nq, 2, E, m->kdim);
        add_param(m, NAMES_SPLIT[2], m->w_in + nq + nk, m->gw_in + nq + nk, 2, E, m->vdim);
        if (bias) add_param(m, NAMES_SPLIT[3], m->b_in, m->gb_in, 1, 3 * E, 0);
    } else {
        add_param(m, NAMES_GQA[0], m->w_in, m->gw_in, 2, E, E);
        add_param(m, NAMES_GQA[1], m->w_in + nq, m->gw_in + nq, 2, KV, m->kdim);
        add_param(m, NAMES_GQA[2], m->w_in + nq + nk, m->gw_in + nq + nk, 2, KV, m->vdim);
        if (bias) {
            add_param(m, NAMES_GQA[3], m->b_in, m->gb_in, 1, E, 0);
            add_param(m, NAMES_GQA[4], m->b_in + E, m->gb_in + E, 1, KV, 0);
            add_param(m, NAMES_GQA[5], m->b_in + E + KV, m->gb_in + E + KV, 1, KV, 0);
        }
    }
    add_param(m, "out_proj.weight", m->w_out, m->gw_out, 2, E, E);
    if (bias) add_param(m, "out_proj.bias", m->b_out, m->gb_out, 1, E, 0);
}

static void xavier(attn__rng *r, float *w, int64_t fan_out, int64_t fan_in) {
    float bound = (float)sqrt(6.0 / (double)(fan_in + fan_out));
    for (int64_t i = 0; i < fan_out * fan_in; i++)
        w[i] = attn__rng_uniform(r, -bound, bound);
}

attn_status attn_mha_create(attn_ctx *ctx, const attn_mha_config *cfg, uint64_t seed,
                            attn_mha **out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!cfg || !out) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_mha_create: NULL argument");
    *out = NULL;
    attn_mha_config c = *cfg;
    if (c.Hkv == 0) c.Hkv = c.H;
    if (c.kdim == 0) c.kdim = c.E;
    if (c.vdim == 0) c.vdim = c.E; /* as PyTorch: each of kdim, vdim defaults to E */
    if (c.E < 1 || c.H < 1 || c.Hkv < 1 || c.kdim < 1 || c.vdim < 1)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "mha: E, H, Hkv, kdim, vdim must be >= 1 (got E=%lld H=%lld "
                             "Hkv=%lld kdim=%lld vdim=%lld)",
                             (long long)c.E, (long long)c.H, (long long)c.Hkv, (long long)c.kdim,
                             (long long)c.vdim);
    if (c.E % c.H)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "mha: embed dim E=%lld is not divisible by H=%lld",
                             (long long)c.E, (long long)c.H);
    if (c.H % c.Hkv)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "mha: H=%lld is not a multiple of Hkv=%lld",
                             (long long)c.H, (long long)c.Hkv);
    if (c.E > (1 << 20) || c.kdim > (1 << 20) || c.vdim > (1 << 20))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "mha: widths above 2^20 are not supported");
    if (!(c.dropout >= 0.0f && c.dropout < 1.0f))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "mha: dropout must be in [0, 1), got %g",
                             (double)c.dropout);
    if (c.window && (c.window_left < -1 || c.window_right < -1))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "mha: window sides must be >= -1");
    attn_mha *m = calloc(1, sizeof *m);
    if (!m) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "mha: out of memory");
    m->cfg = c;
    m->E = c.E, m->H = c.H, m->Hkv = c.Hkv, m->Dh = c.E / c.H;
    m->heads = (attn__heads){.H = c.H,
                             .Hkv = c.Hkv,
                             .Dh = m->Dh,
                             .scale = c.scale,
                             .softcap = c.softcap,
                             .causal = c.causal,
                             .align = c.align,
                             .window = c.window,
                             .window_left = c.window_left,
                             .window_right = c.window_right};
    m->KV = c.Hkv * m->Dh, m->kdim = c.kdim, m->vdim = c.vdim;
    int64_t E = m->E, KV = m->KV;
    size_t nw = (size_t)(E * E + KV * m->kdim + KV * m->vdim), nb = (size_t)(E + 2 * KV);
    /* one allocation per tensor class keeps every parameter contiguous */
    m->w_in = calloc(nw, sizeof(float));
    m->gw_in = calloc(nw, sizeof(float));
    m->b_in = calloc(nb, sizeof(float));
    m->gb_in = calloc(nb, sizeof(float));
    m->w_out = calloc((size_t)(E * E), sizeof(float));
    m->gw_out = calloc((size_t)(E * E), sizeof(float));
    m->b_out = calloc((size_t)E, sizeof(float));
    m->gb_out = calloc((size_t)E, sizeof(float));
    if (!m->w_in || !m->gw_in || !m->b_in || !m->gb_in || !m->w_out || !m->gw_out || !m->b_out ||
        !m->gb_out) {
        attn_mha_free(m);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "mha: out of memory for the parameters");
    }
    attn__rng r = {seed};
    if (c.Hkv == c.H && c.kdim == E && c.vdim == E) {
        xavier(&r, m->w_in, 3 * E, E); /* PyTorch: over the packed [3E, E] */
    } else {
        xavier(&r, m->w_in, E, E);
        xavier(&r, m->w_in + E * E, KV, m->kdim);
        xavier(&r, m->w_in + E * E + KV * m->kdim, KV, m->vdim);
    }
    /* kaiming_uniform(a=sqrt(5)): gain sqrt(2/(1+5)), bound gain*sqrt(3/fan_in) = 1/sqrt(E) */
    float bound = (float)(1.0 / sqrt((double)E));
    for (int64_t i = 0; i < E * E; i++)
        m->w_out[i] = attn__rng_uniform(&r, -bound, bound);
    build_params(m);
    *out = m;
    return ATTN_OK;
}

void attn_mha_free(attn_mha *m) {
    if (!m) return;
    free(m->w_in), free(m->gw_in), free(m->b_in), free(m->gb_in);
    free(m->w_out), free(m->gw_out), free(m->b_out), free(m->gb_out);
    free(m->p1), free(m->p2), free(m->o), free(m->lse);
    free(m->dp1), free(m->dp2), free(m->dout);
    free(m);
}

const attn_mha_config *attn_mha_get_config(const attn_mha *m) {
    return m ? &m->cfg : NULL;
}

const attn_param *attn_mha_get_params(attn_mha *m, int *n) {
    if (n) *n = m ? m->nparams : 0;
    return m ? m->params : NULL;
}

/* ---- projections over [B, R, K] views with any outer strides ----------- */

/* y[b,r,:] = x[b,r,:] W^T + bias for a [B,R,K] view x into rows of y
 * (y row (b,r) at y + b*ys0 + r*ys1). One GEMM when both collapse to a
 * uniform row stride, else one per batch. */
static void proj_fwd(attn_ctx *ctx, const float *x, int64_t xs0, int64_t xs1, int64_t B, int64_t R,
                     int64_t K, const float *W, const float *bias, int64_t N, float *y, int64_t ys0,
                     int64_t ys1) {
    if (R == 1) xs1 = K, ys1 = N; /* one row per batch: its stride is never used */
    if (B == 1 || (xs0 == R * xs1 && ys0 == R * ys1)) {
        attn__linear_forward(ctx, x, xs1, B * R, K, W, bias, N, y, ys1);
        return;
    }
    for (int64_t b = 0; b < B; b++)
        attn__linear_forward(ctx, x + b * xs0, xs1, R, K, W, bias, N, y + b * ys0, ys1);
}

/* Backward of proj_fwd: dx (may be NULL; acc_dx adds into it), dW and db
 * overwritten. dy rows contiguous with row stride lddy. */
static void proj_bwd(attn_ctx *ctx, const float *x, int64_t xs0, int64_t xs1, int64_t B, int64_t R,
                     int64_t K, const float *W, int64_t N, const float *dy, int64_t lddy, float *dx,
                     int64_t dxs0, int64_t dxs1, int acc_dx, float *dW, float *db) {
    if (R == 1) xs1 = K, dxs1 = K;
    int collapse = B == 1 || (xs0 == R * xs1 && (!dx || dxs0 == R * dxs1));
    if (collapse) {
        attn__linear_backward(ctx, x, xs1, B * R, K, W, N, dy, lddy, dx, dxs1, acc_dx, dW, db, 0);
        return;
    }
    for (int64_t b = 0; b < B; b++)
        attn__linear_backward(ctx, x + b * xs0, xs1, R, K, W, N, dy + b * R * lddy, lddy,
                              dx ? dx + b * dxs0 : NULL, dxs1, acc_dx, dW, db, b > 0);
}

/* ---- validation --------------------------------------------------------- */

static attn_status check3(attn_ctx *ctx, const char *name, const attn_tensor *t, int64_t d0,
                          int64_t d1, int64_t d2) {
    if (!t->data) return attn_ctx_fail(ctx, ATTN_E_ARG, "mha: %s is missing", name);
    if (t->dtype != ATTN_F32) return attn_ctx_fail(ctx, ATTN_E_DTYPE, "mha: %s must be F32", name);
    if (t->ndim != 3 || t->shape[0] != d0 || t->shape[1] != d1 || t->shape[2] != d2)
        return attn_ctx_fail(
            ctx, ATTN_E_SHAPE, "mha: %s must be [%lld, %lld, %lld], got %d dims [%lld, %lld, %lld]",
            name, (long long)d0, (long long)d1, (long long)d2, t->ndim, (long long)t->shape[0],
            (long long)(t->ndim > 1 ? t->shape[1] : 0), (long long)(t->ndim > 2 ? t->shape[2] : 0));
    if (t->stride[2] != 1 && d2 > 1)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "mha: %s: last stride must be 1", name);
    if (d1 > 1 && t->stride[1] < d2)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "mha: %s: rows overlap (stride %lld < %lld)", name,
                             (long long)t->stride[1], (long long)d2);
    return ATTN_OK;
}

/* Shapes of a forward's arguments: B, T, S and the key/value mode. */
static attn_status check_args(attn_ctx *ctx, const attn_mha *m, const attn_mha_args *a, int64_t *B,
                              int64_t *T, int64_t *S, int *mode) {
    attn_status st;
    if (!a) return attn_ctx_fail(ctx, ATTN_E_ARG, "mha: args is NULL");
    const attn_tensor *xq = &a->x_q;
    if (!xq->data || xq->ndim != 3)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "mha: x_q must be a [B, T, E=%lld] tensor",
                             (long long)m->E);
    *B = xq->shape[0], *T = xq->shape[1];
    if (*B < 1 || *T < 1) return attn_ctx_fail(ctx, ATTN_E_SHAPE, "mha: x_q: B and T must be >= 1");
    if ((st = check3(ctx, "x_q", xq, *B, *T, m->E))) return st;
    if (a->x_v.data && !a->x_k.data)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "mha: x_v given without x_k");
    if (!a->x_k.data) {
        if (m->kdim != m->E || m->vdim != m->E)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "mha: self-attention (no x_k) needs kdim == vdim == E, but "
                                 "kdim=%lld vdim=%lld E=%lld",
                                 (long long)m->kdim, (long long)m->vdim, (long long)m->E);
        *S = *T;
        *mode = ATTN__MHA_SELF;
    } else {
        *S = a->x_k.ndim == 3 ? a->x_k.shape[1] : 0;
        if (*S < 1) return attn_ctx_fail(ctx, ATTN_E_SHAPE, "mha: x_k must be [B, S>=1, kdim]");
        if ((st = check3(ctx, "x_k", &a->x_k, *B, *S, m->kdim))) return st;
        if (a->x_v.data) {
            if ((st = check3(ctx, "x_v", &a->x_v, *B, *S, m->vdim))) return st;
            *mode = ATTN__MHA_SPLIT;
        } else {
            if (m->kdim != m->vdim)
                return attn_ctx_fail(ctx, ATTN_E_ARG,
                                     "mha: x_k alone serves keys and values, which needs kdim == "
                                     "vdim (%lld != %lld): pass x_v",
                                     (long long)m->kdim, (long long)m->vdim);
            *mode = ATTN__MHA_KV;
        }
    }
    return ATTN_OK;
}

static int grow(float **p, size_t *cap, size_t n) {
    if (*cap >= n) return 0;
    float *q = realloc(*p, (n ? n : 1) * sizeof(float));
    if (!q) return -1;
    *p = q, *cap = n;
    return 0;
}

void attn__mha_attend_args(const attn_mha *m, const attn_mha_args *a, attn__attend_args *at) {
    memset(at, 0, sizeof *at);
    const int64_t T = m->T, S = m->S, ld1 = m->ld1, KV = m->KV;
    at->B = m->B, at->T = T, at->S = S;
    at->q = (attn__rows){m->p1, T * ld1, ld1};
    if (m->mode == ATTN__MHA_SELF) {
        at->k = (attn__rows){m->p1 + m->E, T * ld1, ld1};
        at->v = (attn__rows){m->p1 + m->E + KV, T * ld1, ld1};
    } else {
        at->k = (attn__rows){m->p2, S * 2 * KV, 2 * KV};
        at->v = (attn__rows){m->p2 + KV, S * 2 * KV, 2 * KV};
    }
    at->o = (attn__rows){m->o, T * m->E, m->E};
    at->lse = m->lse;
    at->kv_len = a->kv_len;
    at->mask = a->mask;
    at->key_padding_mask = a->key_padding_mask;
    at->dropout_p = a->training ? m->cfg.dropout : 0.0f;
    at->seed = a->seed;
}

void attn__mha_sdpa_args(const attn_mha *m, const attn_mha_args *a, attn_sdpa_args *s) {
    attn__attend_args at;
    attn__mha_attend_args(m, a, &at);
    attn__attend_sdpa_args(&m->heads, &at, s);
}

attn_status attn_mha_forward(attn_ctx *ctx, attn_mha *m, const attn_mha_args *a) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!m) return attn_ctx_fail(ctx, ATTN_E_ARG, "mha: layer is NULL");
    int64_t B, T, S;
    int mode;
    attn_status st = check_args(ctx, m, a, &B, &T, &S, &mode);
    if (st) return st;
    if ((st = check3(ctx, "y", &a->y, B, T, m->E))) return st;
    if (a->attn_weights.data) {
        const attn_tensor *w = &a->attn_weights;
        int ok = w->dtype == ATTN_F32 &&
                 ((w->ndim == 4 && w->shape[0] == B && w->shape[1] == m->H && w->shape[2] == T &&
                   w->shape[3] == S) ||
                  (w->ndim == 3 && w->shape[0] == B && w->shape[1] == T && w->shape[2] == S));
        if (!ok)
            return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                                 "mha: attn_weights must be F32 [%lld, %lld, %lld, %lld] (per "
                                 "head) or [%lld, %lld, %lld] (averaged)",
                                 (long long)B, (long long)m->H, (long long)T, (long long)S,
                                 (long long)B, (long long)T, (long long)S);
        if (w->stride[w->ndim - 1] != 1 && S > 1)
            return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "mha: attn_weights: last stride must be 1");
    }
    int64_t E = m->E, KV = m->KV;
    int64_t ld1 = mode == ATTN__MHA_SELF ? E + 2 * KV : E;
    m->saved = 0;
    if (grow(&m->p1, &m->cap1, (size_t)(B * T * ld1)) ||
        (mode != ATTN__MHA_SELF && grow(&m->p2, &m->cap2, (size_t)(B * S * 2 * KV))) ||
        grow(&m->o, &m->capo, (size_t)(B * T * E)) ||
        grow(&m->lse, &m->caplse, (size_t)(B * m->H * T)))
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "mha: out of memory for activations");
    m->B = B, m->T = T, m->S = S, m->ld1 = ld1, m->mode = mode;

    const float *bin = m->cfg.no_bias ? NULL : m->b_in;
    const attn_tensor *xq = &a->x_q, *xk = &a->x_k, *xv = &a->x_v;
    if (mode == ATTN__MHA_SELF) {
        proj_fwd(ctx, xq->data, xq->stride[0], xq->stride[1], B, T, E, m->w_in, bin, E + 2 * KV,
                 m->p1, T * ld1, ld1);
    } else {
        proj_fwd(ctx, xq->data, xq->stride[0], xq->stride[1], B, T, E, m->w_in, bin, E, m->p1,
                 T * E, E);
        const float *wk = m->w_in + E * E, *wv = wk + KV * m->kdim;
        const float *bk = bin ? bin + E : NULL, *bv = bin ? bin + E + KV : NULL;
        if (mode == ATTN__MHA_KV) {
            proj_fwd(ctx, xk->data, xk->stride[0], xk->stride[1], B, S, m->kdim, wk, bk, 2 * KV,
                     m->p2, S * 2 * KV, 2 * KV);
        } else {
            proj_fwd(ctx, xk->data, xk->stride[0], xk->stride[1], B, S, m->kdim, wk, bk, KV, m->p2,
                     S * 2 * KV, 2 * KV);
            proj_fwd(ctx, xv->data, xv->stride[0], xv->stride[1], B, S, m->vdim, wv, bv, KV,
                     m->p2 + KV, S * 2 * KV, 2 * KV);
        }
    }
    attn__attend_args at;
    attn__mha_attend_args(m, a, &at);
    if ((st = attn__attend(ctx, &m->heads, &at))) return st;
    proj_fwd(ctx, m->o, T * E, E, B, T, E, m->w_out, m->cfg.no_bias ? NULL : m->b_out, E, a->y.data,
             a->y.stride[0], a->y.stride[1]);
    m->saved = 1;
    if (a->attn_weights.data && (st = attn__mha_weights(ctx, m, a))) return st;
    return ATTN_OK;
}

attn_status attn_mha_backward(attn_ctx *ctx, attn_mha *m, const attn_mha_args *a,
                              const attn_mha_grads *g) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!m || !g) return attn_ctx_fail(ctx, ATTN_E_ARG, "mha backward: NULL argument");
    int64_t B, T, S;
    int mode;
    attn_status st = check_args(ctx, m, a, &B, &T, &S, &mode);
    if (st) return st;
    if (!m->saved || B != m->B || T != m->T || S != m->S || mode != m->mode)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "mha backward: no saved forward of these shapes (run "
                             "attn_mha_forward with the same inputs first)");
    int64_t E = m->E, KV = m->KV, ld1 = m->ld1;
    if ((st = check3(ctx, "dy", &g->dy, B, T, E)) || (st = check3(ctx, "dx_q", &g->dx_q, B, T, E)))
        return st;
    if (mode != ATTN__MHA_SELF && (st = check3(ctx, "dx_k", &g->dx_k, B, S, m->kdim))) return st;
    if (mode == ATTN__MHA_SPLIT && (st = check3(ctx, "dx_v", &g->dx_v, B, S, m->vdim))) return st;
    if (mode == ATTN__MHA_SELF && (g->dx_k.data || g->dx_v.data))
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "mha backward: self-attention has one input: its gradient is "
                             "dx_q (dx_k, dx_v must be absent)");
    if (mode == ATTN__MHA_KV && g->dx_v.data)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "mha backward: keys and values both come from x_k: dx_v must be "
                             "absent (dx_k holds both paths)");
    if (grow(&m->dp1, &m->capd1, (size_t)(B * T * ld1)) ||
        (mode != ATTN__MHA_SELF && grow(&m->dp2, &m->capd2, (size_t)(B * S * 2 * KV))) ||
        grow(&m->dout, &m->capdo, (size_t)(B * T * E)))
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "mha backward: out of memory");
    int bias = !m->cfg.no_bias;

    /* y = o Wo^T + bo  ->  do = dy Wo, dWo = dy^T o, dbo = sum dy */
    const attn_tensor *dy = &g->dy;
    const float *dyp = dy->data;
    float *dyc = NULL;
    int uniform = (T == 1 || dy->stride[1] == E) && (B == 1 || dy->stride[0] == T * E);
    if (!uniform) {
        /* the GEMMs below want dy as uniform rows: gather a strided dy once */
        dyc = malloc((size_t)(B * T * E) * sizeof *dyc);
        if (!dyc) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "mha backward: out of memory");
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                memcpy(dyc + (b * T + t) * E, dyp + b * dy->stride[0] + t * dy->stride[1],
                       (size_t)E * sizeof *dyc);
        dyp = dyc;
    }
    attn__linear_backward(ctx, m->o, E, B * T, E, m->w_out, E, dyp, E, m->dout, E, 0, m->gw_out,
                          bias ? m->gb_out : NULL, 0);
    free(dyc);

    attn__attend_args at;
    attn__mha_attend_args(m, a, &at);
    float *dk = mode == ATTN__MHA_SELF ? m->dp1 + E : m->dp2;
    float *dv = mode == ATTN__MHA_SELF ? m->dp1 + E + KV : m->dp2 + KV;
    if ((st = attn__attend_backward(ctx, &m->heads, &at, m->dout, m->dp1, dk, dv))) return st;

    const attn_tensor *xq = &a->x_q, *xk = &a->x_k, *xv = &a->x_v;
    const attn_tensor *dxq = &g->dx_q, *dxk = &g->dx_k, *dxv = &g->dx_v;
    float *gbin = bias ? m->gb_in : NULL;
    if (mode == ATTN__MHA_SELF) {
        /* dx = [dq dk dv] [Wq; Wk; Wv]: one GEMM sums the three paths */
        proj_bwd(ctx, xq->data, xq->stride[0], xq->stride[1], B, T, E, m->w_in, E + 2 * KV, m->dp1,
                 ld1, dxq->data, dxq->stride[0], dxq->stride[1], 0, m->gw_in, gbin);
        return ATTN_OK;
    }
    proj_bwd(ctx, xq->data, xq->stride[0], xq->stride[1], B, T, E, m->w_in, E, m->dp1, E, dxq->data,
             dxq->stride[0], dxq->stride[1], 0, m->gw_in, gbin);
    const float *wk = m->w_in + E * E, *wv = wk + KV * m->kdim;
    float *gwk = m->gw_in + E * E, *gwv = gwk + KV * m->kdim;
    if (mode == ATTN__MHA_KV) {
        proj_bwd(ctx, xk->data, xk->stride[0], xk->stride[1], B, S, m->kdim, wk, 2 * KV, m->dp2,
                 2 * KV, dxk->data, dxk->stride[0], dxk->stride[1], 0, gwk, gbin ? gbin + E : NULL);
    } else {
        proj_bwd(ctx, xk->data, xk->stride[0], xk->stride[1], B, S, m->kdim, wk, KV, m->dp2, 2 * KV,
                 dxk->data, dxk->stride[0], dxk->stride[1], 0, gwk, gbin ? gbin + E : NULL);
        proj_bwd(ctx, xv->data, xv->stride[0], xv->stride[1], B, S, m->vdim, wv, KV, m->dp2 + KV,
                 2 * KV, dxv->data, dxv->stride[0], dxv->stride[1], 0, gwv,
                 gbin ? gbin + E + KV : NULL);
    }
    return ATTN_OK;
}
