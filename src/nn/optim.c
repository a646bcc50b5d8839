/* AdamW, gradient clipping by global norm, and the initialisation RNG. */
#include "nn/nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

uint64_t attn__rng_next(attn__rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float attn__rng_uniform(attn__rng *r, float lo, float hi) {
    /* 24 random bits: every value is an exact float in [0, 1) */
    float u = (float)(attn__rng_next(r) >> 40) * (1.0f / 16777216.0f);
    return lo + (hi - lo) * u;
}

void attn__rng_normal(attn__rng *r, float *w, int64_t n, float s, int truncate) {
    for (int64_t i = 0; i < n; i++) {
        double z;
        do {
            const double u1 = ((double)(attn__rng_next(r) >> 11) + 0.5) / 9007199254740992.0;
            const double u2 = ((double)(attn__rng_next(r) >> 11) + 0.5) / 9007199254740992.0;
            z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        } while (truncate && (z < -2.0 || z > 2.0));
        w[i] = (float)(z * s);
    }
}

struct attn_adamw {
    attn_adamw_config cfg;
    int n;
    attn_param *params; /* copies of the caller's views */
    float *m, *v;       /* first and second moments, all parameters back to back */
    int64_t step;
};

static int contiguous(const attn_tensor *t) {
    int64_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != s) return 0;
        s *= t->shape[d];
    }
    return 1;
}

attn_status attn_adamw_create(attn_ctx *ctx, const attn_adamw_config *cfg, const attn_param *params,
                              int n, attn_adamw **out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!out || !cfg || (n > 0 && !params) || n < 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_adamw_create: NULL argument or n < 0");
    *out = NULL;
    attn_adamw_config c = *cfg;
    if (c.lr == 0.0f) c.lr = 1e-3f;
    if (c.beta1 == 0.0f) c.beta1 = 0.9f;
    if (c.beta2 == 0.0f) c.beta2 = 0.999f;
    if (c.eps == 0.0f) c.eps = 1e-8f;
    if (!(c.lr > 0.0f) || !isfinite(c.lr) || !(c.weight_decay >= 0.0f) ||
        !isfinite(c.weight_decay) || !(c.eps > 0.0f))
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "AdamW: lr must be > 0, weight_decay >= 0, eps > 0 (got %g, %g, %g)",
                             (double)c.lr, (double)c.weight_decay, (double)c.eps);
    if (!(c.beta1 >= 0.0f && c.beta1 < 1.0f) || !(c.beta2 >= 0.0f && c.beta2 < 1.0f))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "AdamW: betas must be in [0, 1) (got %g, %g)",
                             (double)c.beta1, (double)c.beta2);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const attn_param *p = &params[i];
        int64_t nv = attn_tensor_numel(&p->value), ng = attn_tensor_numel(&p->grad);
        if (!p->value.data || !p->grad.data || p->value.dtype != ATTN_F32 ||
            p->grad.dtype != ATTN_F32 || nv != ng || !contiguous(&p->value) ||
            !contiguous(&p->grad))
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "AdamW: parameter %d (%s): value and grad must be contiguous F32 "
                                 "views of the same size",
                                 i, p->name ? p->name : "?");
        total += nv;
    }
    attn_adamw *o = calloc(1, sizeof *o);
    if (!o) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "AdamW: out of memory");
    o->cfg = c;
    o->n = n;
    o->params = malloc((size_t)(n > 0 ? n : 1) * sizeof *o->params);
    o->m = calloc((size_t)(total > 0 ? total : 1), sizeof(float));
    o->v = calloc((size_t)(total > 0 ? total : 1), sizeof(float));
    if (!o->params || !o->m || !o->v) {
        attn_adamw_free(o);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "AdamW: out of memory for %lld moments",
                             (long long)total);
    }
    if (n > 0) memcpy(o->params, params, (size_t)n * sizeof *params);
    *out = o;
    return ATTN_OK;
}

attn_status attn_adamw_step(attn_ctx *ctx, attn_adamw *o) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!o) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_adamw_step: optimiser is NULL");
    o->step++;
    const attn_adamw_config *c = &o->cfg;
    /* bias corrections in double: beta^t underflows gracefully */
    double bc1 = 1.0 - pow((double)c->beta1, (double)o->step);
    double bc2 = 1.0 - pow((double)c->beta2, (double)o->step);
    float step_size = (float)((double)c->lr / bc1);
    float sbc2 = (float)sqrt(bc2);
    float decay = 1.0f - c->lr * c->weight_decay;
    int64_t off = 0;
    for (int i = 0; i < o->n; i++) {
        float *w = o->params[i].value.data;
        const float *g = o->params[i].grad.data;
        int64_t len = attn_tensor_numel(&o->params[i].value);
        float *m = o->m + off, *v = o->v + off;
        for (int64_t j = 0; j < len; j++) {
            w[j] *= decay;
            m[j] = c->beta1 * m[j] + (1.0f - c->beta1) * g[j];
            v[j] = c->beta2 * v[j] + (1.0f - c->beta2) * g[j] * g[j];
            /* torch: denom = sqrt(v) / sqrt(bc2) + eps; w -= lr/bc1 * m / denom */
            w[j] -= step_size * m[j] / (sqrtf(v[j]) / sbc2 + c->eps);
        }
        off += len;
    }
    return ATTN_OK;
}

void attn_adamw_set_lr(attn_adamw *o, float lr) {
    if (o && lr > 0.0f) o->cfg.lr = lr;
}

void attn_adamw_free(attn_adamw *o) {
    if (!o) return;
    free(o->params);
    free(o->m);
    free(o->v);
    free(o);
}

attn_status attn_param_clip_grad_norm(attn_ctx *ctx, const attn_param *params, int n,
                                      float max_norm, double *norm) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!(max_norm > 0.0f) || (n > 0 && !params) || n < 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "clip_grad_norm: max_norm must be > 0 (got %g)",
                             (double)max_norm);
    double ss = 0.0;
    for (int i = 0; i < n; i++) {
        const float *g = params[i].grad.data;
        int64_t len = attn_tensor_numel(&params[i].grad);
        for (int64_t j = 0; j < len; j++)
            ss += (double)g[j] * (double)g[j];
    }
    double total = sqrt(ss);
    if (norm) *norm = total;
    /* torch: coef = max_norm / (norm + 1e-6), applied when below 1 */
    double coefd = (double)max_norm / (total + 1e-6);
    if (isfinite(total) && coefd < 1.0) {
        float coef = (float)coefd;
        for (int i = 0; i < n; i++) {
            float *g = params[i].grad.data;
            int64_t len = attn_tensor_numel(&params[i].grad);
            for (int64_t j = 0; j < len; j++)
                g[j] *= coef;
        }
    }
    return ATTN_OK;
}
