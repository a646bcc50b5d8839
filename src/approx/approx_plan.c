/* attn_approx_*: argument validation, the public entry points, FLOP counts
 * and the Performer's random features. */
#include "approx/approx.h"
#include "ops/sdpa_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *attn_approx_name(attn_approx_method m) {
    switch (m) {
    case ATTN_APPROX_LINEAR:
        return "linear";
    case ATTN_APPROX_PERFORMER:
        return "performer";
    case ATTN_APPROX_NYSTROM:
        return "nystrom";
    case ATTN_APPROX_TOPK:
        return "topk";
    default:
        return NULL;
    }
}

static attn_status view4(attn_ctx *ctx, const char *name, const attn_tensor *t, const float **data,
                         int64_t *st) {
    if (!t->data) return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: missing (data is NULL)", name);
    if (t->dtype != ATTN_F32)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE, "%s: dtype must be F32", name);
    if (t->ndim != 4)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: expected 4 dims [B, H, T, D], got %d", name,
                             t->ndim);
    for (int i = 0; i < 4; i++)
        if (t->shape[i] < 0 || t->shape[i] >= ((int64_t)1 << 31))
            return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: size %lld in dim %d out of range", name,
                                 (long long)t->shape[i], i);
    if (t->stride[3] != 1 && t->shape[3] > 1)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "%s: last stride is %lld, must be 1", name,
                             (long long)t->stride[3]);
    *data = (const float *)t->data;
    memcpy(st, t->stride, 4 * sizeof *st);
    return ATTN_OK;
}

static attn_status same_shape(attn_ctx *ctx, const char *name, const attn_tensor *t, int64_t d0,
                              int64_t d1, int64_t d2, int64_t d3) {
    if (t->shape[0] != d0 || t->shape[1] != d1 || t->shape[2] != d2 || t->shape[3] != d3)
        return attn_ctx_fail(
            ctx, ATTN_E_SHAPE,
            "%s: shape [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld, %lld]", name,
            (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2],
            (long long)t->shape[3], (long long)d0, (long long)d1, (long long)d2, (long long)d3);
    return ATTN_OK;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        attn_status s_ = (x);                                                                      \
        if (s_) return s_;                                                                         \
    } while (0)

static attn_status unused(attn_ctx *ctx, const char *method, const char *field, int nonzero) {
    if (nonzero)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: %s must be 0 (the method does not use it)",
                             method, field);
    return ATTN_OK;
}

attn_status attn__approx_plan_make(attn_ctx *ctx, const attn_approx_args *a,
                                   const attn_sdpa_grads *g, attn__approx_plan *p) {
    if (!a) return attn_ctx_fail(ctx, ATTN_E_ARG, "args: NULL");
    memset(p, 0, sizeof *p);
    const char *name = attn_approx_name(a->method);
    if (!name)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "method: %d is not one of linear, performer, nystrom, topk",
                             (int)a->method);
    p->method = a->method;
    TRY(view4(ctx, "q", &a->q, &p->q, p->qs));
    TRY(view4(ctx, "k", &a->k, &p->k, p->ks));
    TRY(view4(ctx, "v", &a->v, &p->v, p->vs));
    const float *o;
    TRY(view4(ctx, "out", &a->out, &o, p->os));
    p->out = (float *)a->out.data;
    p->B = a->q.shape[0], p->H = a->q.shape[1], p->T = a->q.shape[2], p->D = a->q.shape[3];
    p->Hkv = a->k.shape[1], p->S = a->k.shape[2], p->Dv = a->v.shape[3];
    if (p->Hkv < 1 || p->H % p->Hkv)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "k: %lld heads do not divide q's %lld heads",
                             (long long)p->Hkv, (long long)p->H);
    p->group = p->H / p->Hkv;
    TRY(same_shape(ctx, "k", &a->k, p->B, p->Hkv, p->S, p->D));
    TRY(same_shape(ctx, "v", &a->v, p->B, p->Hkv, p->S, p->Dv));
    TRY(same_shape(ctx, "out", &a->out, p->B, p->H, p->T, p->Dv));
    if (p->D < 1 || p->Dv < 1)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "q, v: head dims must be >= 1");
    if (p->D > (1 << 16) || p->Dv > (1 << 16))
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "q, v: head dims above 65536");
    const attn_tensor *ins[3] = {&a->q, &a->k, &a->v};
    const char *inn[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++)
        if (attn__views_overlap(&a->out, ins[i]))
            return attn_ctx_fail(ctx, ATTN_E_ARG, "out: overlaps input %s", inn[i]);
    if (!isfinite(a->scale) || a->scale < 0.0f)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "scale: must be finite and >= 0");
    p->scale = a->scale > 0.0f ? a->scale : (float)(1.0 / sqrt((double)p->D));
    p->causal = a->causal != 0;
    p->chunk = a->chunk;
    if (a->chunk < 0 || a->chunk > 4096)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "chunk: %lld, must be in [0, 4096]",
                             (long long)a->chunk);
    const int m = (int)a->method;
    if (m != ATTN_APPROX_PERFORMER) {
        TRY(unused(ctx, name, "features", a->features != 0));
        TRY(unused(ctx, name, "seed", a->seed != 0));
        TRY(unused(ctx, name, "omega", a->omega != NULL));
    }
    if (m != ATTN_APPROX_NYSTROM) {
        TRY(unused(ctx, name, "landmarks", a->landmarks != 0));
        TRY(unused(ctx, name, "pinv_iters", a->pinv_iters != 0));
    }
    if (m != ATTN_APPROX_TOPK) TRY(unused(ctx, name, "topk", a->topk != 0));
    if (m == ATTN_APPROX_LINEAR) TRY(unused(ctx, name, "scale", a->scale != 0.0f));
    if (m == ATTN_APPROX_NYSTROM || m == ATTN_APPROX_TOPK)
        TRY(unused(ctx, name, "causal", a->causal != 0));
    if (p->causal && p->T != p->S)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "causal: needs T == S (T = %lld, S = %lld)",
                             (long long)p->T, (long long)p->S);
    switch (m) {
    case ATTN_APPROX_LINEAR:
        p->F = p->D;
        break;
    case ATTN_APPROX_PERFORMER:
        if (a->features < 1 || a->features > (1 << 16))
            return attn_ctx_fail(ctx, ATTN_E_ARG, "features: m = %lld, must be in [1, 65536]",
                                 (long long)a->features);
        p->F = a->features;
        p->seed = a->seed;
        p->omega = a->omega;
        if (a->omega && a->seed)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "seed: must be 0 when omega gives the features");
        break;
    case ATTN_APPROX_NYSTROM: {
        int64_t n = ATTN_MIN(p->T, p->S);
        if (a->landmarks < 1 || a->landmarks > n)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "landmarks: %lld, must be in [1, min(T, S) = %lld]",
                                 (long long)a->landmarks, (long long)n);
        if (a->pinv_iters < 0 || a->pinv_iters > 100)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "pinv_iters: %lld, must be in [0, 100]",
                                 (long long)a->pinv_iters);
        p->L = a->landmarks;
        p->iters = a->pinv_iters ? a->pinv_iters : 6;
        break;
    }
    case ATTN_APPROX_TOPK:
        if (a->topk < 1 || a->topk > p->S)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "topk: k = %lld, must be in [1, S = %lld]",
                                 (long long)a->topk, (long long)p->S);
        p->topk = a->topk;
        break;
    }
    if (!g) return ATTN_OK;
    if (m == ATTN_APPROX_NYSTROM)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "nystrom: no backward (forward only)");
    if (g->dmask.data) return attn_ctx_fail(ctx, ATTN_E_ARG, "dmask: must be absent (no mask)");
    const float *x;
    TRY(view4(ctx, "dout", &g->dout, &p->dout, p->dos));
    TRY(view4(ctx, "dq", &g->dq, &x, p->dqs));
    TRY(view4(ctx, "dk", &g->dk, &x, p->dks));
    TRY(view4(ctx, "dv", &g->dv, &x, p->dvs));
    p->dq = (float *)g->dq.data, p->dk = (float *)g->dk.data, p->dv = (float *)g->dv.data;
    TRY(same_shape(ctx, "dout", &g->dout, p->B, p->H, p->T, p->Dv));
    TRY(same_shape(ctx, "dq", &g->dq, p->B, p->H, p->T, p->D));
    TRY(same_shape(ctx, "dk", &g->dk, p->B, p->Hkv, p->S, p->D));
    TRY(same_shape(ctx, "dv", &g->dv, p->B, p->Hkv, p->S, p->Dv));
    const attn_tensor *rd[5] = {&a->q, &a->k, &a->v, &a->out, &g->dout};
    const char *rdn[5] = {"q", "k", "v", "out", "dout"};
    const attn_tensor *wr[3] = {&g->dq, &g->dk, &g->dv};
    const char *wrn[3] = {"dq", "dk", "dv"};
    for (int w = 0; w < 3; w++)
        for (int r = 0; r < 5; r++)
            if (attn__views_overlap(wr[w], rd[r]))
                return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: overlaps %s", wrn[w], rdn[r]);
    return ATTN_OK;
}

/* ---- the Performer's orthogonal random features --------------------------- */
static uint64_t sm64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double gauss(uint64_t *s) { /* Box-Muller, one of the pair */
    double u1 = ((double)(sm64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (double)(sm64(s) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

attn_status attn_performer_draw(attn_ctx *ctx, int64_t D, int64_t m, uint64_t seed, float *omega) {
    attn__ctx_clear(ctx);
    if (!omega) return attn_ctx_fail(ctx, ATTN_E_ARG, "omega: NULL");
    if (D < 1 || D > (1 << 16))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "D: %lld, must be >= 1", (long long)D);
    if (m < 1 || m > (1 << 16))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "features: m = %lld, must be in [1, 65536]",
                             (long long)m);
    double *g = malloc((size_t)(D * D) * sizeof *g);
    if (!g) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "performer features: out of memory");
    uint64_t s = seed ^ 0x5851f42d4c957f2dull;
    for (int64_t r0 = 0; r0 < m; r0 += D) {
        for (int64_t i = 0; i < D * D; i++)
            g[i] = gauss(&s);
        /* Gram-Schmidt (modified, twice for stability) on the rows */
        for (int64_t i = 0; i < D; i++) {
            double *gi = g + i * D;
            for (int pass = 0; pass < 2; pass++)
                for (int64_t j = 0; j < i; j++) {
                    const double *gj = g + j * D;
                    double d = 0.0;
                    for (int64_t t = 0; t < D; t++)
                        d += gi[t] * gj[t];
                    for (int64_t t = 0; t < D; t++)
                        gi[t] -= d * gj[t];
                }
            double n = 0.0;
            for (int64_t t = 0; t < D; t++)
                n += gi[t] * gi[t];
            n = 1.0 / sqrt(n);
            for (int64_t t = 0; t < D; t++)
                gi[t] *= n;
        }
        for (int64_t i = 0; i < D && r0 + i < m; i++) {
            double len = 0.0; /* the norm of a Gaussian vector: chi(D) */
            for (int64_t t = 0; t < D; t++) {
                double x = gauss(&s);
                len += x * x;
            }
            len = sqrt(len);
            for (int64_t t = 0; t < D; t++)
                omega[(r0 + i) * D + t] = (float)(g[i * D + t] * len);
        }
    }
    free(g);
    return ATTN_OK;
}

/* ---- FLOPs ---------------------------------------------------------------- */
double attn_approx_flops(const attn_approx_args *a, int backward) {
    attn__approx_plan p;
    attn_ctx *none = NULL;
    if (attn__approx_plan_make(none, a, NULL, &p)) return 0.0;
    const double B = (double)p.B, H = (double)p.H, Hkv = (double)p.Hkv, T = (double)p.T,
                 S = (double)p.S, D = (double)p.D, Dv = (double)p.Dv, F = (double)p.F;
    double f = 0.0;
    switch (p.method) {
    case ATTN_APPROX_LINEAR:
    case ATTN_APPROX_PERFORMER: {
        const double C = (double)(p.chunk ? p.chunk : p.causal ? 64 : 1024);
        /* key sums phi_k^T [v, 1] once per kv head, phi_q [KV; z] per query */
        f = Hkv * 2.0 * S * F * (Dv + 1) + H * 2.0 * T * F * (Dv + 1);
        if (p.method == ATTN_APPROX_PERFORMER) f += 2.0 * D * F * (Hkv * S + H * T);
        /* the diagonal chunks: phi_q phi_k^T and A [v, 1] over the pairs on and
         * below each chunk's diagonal, which is all the causal kernel computes */
        if (p.causal) {
            const double full = floor(T / C), rem = T - full * C;
            f += H * (full * C * (C + 1.0) + rem * (rem + 1.0)) * (F + Dv + 1);
        }
        if (backward) f *= 2.5;
        break;
    }
    case ATTN_APPROX_NYSTROM: {
        const double L = (double)p.L;
        f = H * (2.0 * T * L * D + 2.0 * L * L * D + 2.0 * L * S * (D + Dv) +
                 (double)p.iters * 4.0 * 2.0 * L * L * L + 2.0 * L * L * Dv + 2.0 * T * L * Dv);
        break;
    }
    case ATTN_APPROX_TOPK:
        f = H * (2.0 * T * S * D + 2.0 * T * (double)p.topk * Dv);
        if (backward) f = H * (2.0 * T * S * D + 2.0 * T * (double)p.topk * (2.0 * D + 2.0 * Dv));
        break;
    default:
        break;
    }
    return B * f;
}

/* ---- entry points ---------------------------------------------------------- */
attn_status attn__approx_features(attn_ctx *ctx, const attn__approx_plan *p, float *om) {
    if (!p->omega) return attn_performer_draw(ctx, p->D, p->F, p->seed, om);
    memcpy(om, p->omega, (size_t)(p->F * p->D) * sizeof(float));
    return ATTN_OK;
}

static attn_status with_omega(attn_ctx *ctx, const attn__approx_plan *p, float **omega) {
    *omega = NULL;
    if (p->method != ATTN_APPROX_PERFORMER) return ATTN_OK;
    *omega = attn__malloc((size_t)(p->F * p->D) * sizeof(float));
    if (!*omega) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "performer features: out of memory");
    attn_status st = attn__approx_features(ctx, p, *omega);
    if (st) {
        attn__free(*omega);
        *omega = NULL;
    }
    return st;
}

attn_status attn_approx_forward(attn_ctx *ctx, const attn_approx_args *a) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    attn__approx_plan p;
    TRY(attn__approx_plan_make(ctx, a, NULL, &p));
    if (p.B * p.H * p.T == 0) return ATTN_OK;
    switch (p.method) {
    case ATTN_APPROX_LINEAR:
    case ATTN_APPROX_PERFORMER: {
        float *omega;
        TRY(with_omega(ctx, &p, &omega));
        /* the feature methods work in the context's workspace */
        attn_status st = ATTN_E_BUSY;
        if (!attn__ctx_enter(ctx)) {
            st = attn__approx_feature_forward(ctx, &p, omega);
            attn__ctx_leave(ctx);
        }
        attn__free(omega);
        return st;
    }
    case ATTN_APPROX_NYSTROM:
        return attn__approx_nystrom_forward(ctx, &p);
    case ATTN_APPROX_TOPK:
        return attn__approx_topk_forward(ctx, &p);
    default:
        return ATTN_E_ARG;
    }
}

attn_status attn_approx_received(attn_ctx *ctx, const attn_approx_args *a, float *received) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    attn__approx_plan p;
    TRY(attn__approx_plan_make(ctx, a, NULL, &p));
    if (!received) return attn_ctx_fail(ctx, ATTN_E_ARG, "received: NULL");
    const int64_t n = p.B * p.H * p.S;
    if (n == 0) return ATTN_OK;
    double *r = attn__malloc((size_t)n * sizeof *r);
    if (!r) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "received: out of memory");
    float *omega = NULL;
    attn_status st = with_omega(ctx, &p, &omega);
    if (!st && p.T == 0) memset(r, 0, (size_t)n * sizeof *r);
    else if (!st && p.method == ATTN_APPROX_NYSTROM)
        st = attn__approx_nystrom_received(ctx, &p, r);
    else if (!st && p.method == ATTN_APPROX_TOPK)
        st = attn__approx_topk_received(ctx, &p, r);
    else if (!st)
        st = attn__approx_feature_received(ctx, &p, omega, r);
    for (int64_t e = 0; !st && e < n; e++)
        received[e] = (float)r[e];
    attn__free(omega), attn__free(r);
    return st;
}

attn_status attn_approx_backward(attn_ctx *ctx, const attn_approx_args *a,
                                 const attn_sdpa_grads *g) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!g) return attn_ctx_fail(ctx, ATTN_E_ARG, "grads: NULL");
    attn__approx_plan p;
    TRY(attn__approx_plan_make(ctx, a, g, &p));
    if (p.method == ATTN_APPROX_TOPK) return attn__approx_topk_backward(ctx, &p);
    float *omega;
    TRY(with_omega(ctx, &p, &omega));
    attn_status st = ATTN_E_BUSY;
    if (!attn__ctx_enter(ctx)) {
        st = attn__approx_feature_backward(ctx, &p, omega);
        attn__ctx_leave(ctx);
    }
    attn__free(omega);
    return st;
}
