/* Test support for the attention backward: the plain fp32 backward, owned
 * gradient buffers, the check against the float64 oracle. */
#include "at_sdpa_bwd.h"
#include "ops/sdpa_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Structural and boolean masks, from the documented rules. */
static int visible(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i, int64_t j) {
    int64_t pos = i + p->shift;
    if (p->kv_len && j >= p->kv_len[b]) return 0;
    if (p->causal && j > pos) return 0;
    const uint8_t *gt = p->gtok ? p->gtok + b * p->gtb : NULL; /* global tokens */
    const int global = gt && (gt[j] || (pos >= 0 && pos < p->S && gt[pos]));
    if (p->window && !global) {
        if (p->wl >= 0 && j < pos - p->wl) return 0;
        if (p->wr >= 0 && j > pos + p->wr) return 0;
    }
    if (p->mask_kind == ATTN__MASK_BOOL &&
        !((const uint8_t *)p->mask)[b * p->msb + h * p->msh + i * p->mst + j])
        return 0;
    if (p->kpm && p->kpm[b * p->kpb + j]) return 0;
    if (p->lay && !global && !p->lay[h * p->lhs + (i / p->lbq) * p->lnkb + j / p->lbk]) return 0;
    return 1;
}

static float *f32(const attn_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    return at_f32(t, i0, i1, i2, i3);
}

/* dmask element (b,h,i,j) of a view shaped as the mask (right-aligned,
 * size-1 dims summed over). */
static float *dmask_at(const attn_tensor *t, int64_t b, int64_t h, int64_t i, int64_t j) {
    const int64_t full[4] = {b, h, i, j};
    int64_t idx[4];
    for (int d = 0; d < t->ndim; d++)
        idx[d] = t->shape[d] == 1 ? 0 : full[4 - t->ndim + d];
    return (float *)at_ptr(t, idx);
}

static void zero_view(const attn_tensor *t) {
    at_fill_value(t, 0.0f);
}

/* Index n of 0..len-1 in increasing order, or decreasing when rev. */
static inline int64_t ord(int64_t n, int64_t len, int rev) {
    return rev ? len - 1 - n : n;
}

attn_status at_naive32_backward(attn_ctx *ctx, const attn_sdpa_args *a, const attn_sdpa_grads *g) {
    return at_naive32_backward_order(ctx, a, g, 0);
}

attn_status at_naive32_backward_order(attn_ctx *ctx, const attn_sdpa_args *a,
                                      const attn_sdpa_grads *g, int variant) {
    const int rk = variant & 1, rr = (variant >> 1) & 1; /* reverse keys; reverse rows and dims */
    attn__sdpa_plan p;
    attn_status st = attn__sdpa_plan_make(ctx, a, 0, &p);
    if (st) return st;
    if (a->rope.rot_dim) { /* on rotated copies; the gradients rotated back */
        at_buf qr, kr;
        attn_sdpa_args r;
        if (at_rope_copies(a, &qr, &kr, &r)) return ATTN_E_NOMEM;
        st = at_naive32_backward_order(ctx, &r, g, variant);
        at_buf_free(&qr), at_buf_free(&kr);
        if (st) return st;
        at_rope_rotate(&a->rope, &g->dq, 0, 1);
        if (!a->rope.k_rotated) at_rope_rotate(&a->rope, &g->dk, 1, 1);
        return ATTN_OK;
    }
    size_t nS = (size_t)(p.S > 0 ? p.S : 1);
    float *s = malloc(nS * sizeof *s), *dcap = malloc(nS * sizeof *dcap);
    float *pz = malloc(nS * sizeof *pz), *dpz = malloc(nS * sizeof *dpz);
    float *z = malloc(nS * sizeof *z);
    if (!s || !dcap || !pz || !dpz || !z) {
        free(s), free(dcap), free(pz), free(dpz), free(z);
        return ATTN_E_NOMEM;
    }
    zero_view(&g->dq), zero_view(&g->dk), zero_view(&g->dv);
    if (g->dmask.data) zero_view(&g->dmask);
    const float keep = p.dropout_p > 0.0f ? 1.0f / (1.0f - p.dropout_p) : 1.0f;
    for (int64_t b = 0; b < p.B; b++)
        for (int64_t h = 0; h < p.H; h++)
            for (int64_t ii = 0; ii < p.T; ii++) {
                const int64_t i = ord(ii, p.T, rr);
                const int64_t hk = h / p.group, pos = i + p.shift;
                const float *q = f32(&a->q, b, h, i, 0), *go = f32(&g->dout, b, h, i, 0);
                float mx = -INFINITY;
                for (int64_t j = 0; j < p.S; j++) {
                    dcap[j] = 1.0f;
                    z[j] = 1.0f;
                    if (p.dropout_p > 0.0f) {
                        uint32_t u = attn__rng_u32(p.seed, (uint64_t)b, (uint64_t)h, (uint64_t)i,
                                                   (uint64_t)j);
                        z[j] = u >= p.drop_thr ? keep : 0.0f;
                    }
                    if (!visible(&p, b, h, i, j)) {
                        s[j] = -INFINITY;
                        continue;
                    }
                    const float *k = f32(&a->k, b, hk, j, 0);
                    float x = 0.0f;
                    for (int64_t dd = 0; dd < p.D; dd++) {
                        const int64_t d = ord(dd, p.D, rr);
                        x += q[d] * k[d];
                    }
                    x *= p.scale;
                    if (p.softcap > 0.0f) {
                        float t = tanhf(x / p.softcap);
                        x = p.softcap * t;
                        dcap[j] = 1.0f - t * t;
                    }
                    if (p.mask_kind == ATTN__MASK_FLOAT)
                        x += ((const float *)p.mask)[b * p.msb + h * p.msh + i * p.mst + j];
                    if (p.alibi) x -= p.alibi[h] * (float)llabs(pos - j);
                    s[j] = x;
                    if (x > mx) mx = x;
                }
                if (mx == -INFINITY) continue; /* no visible key: zero gradients */
                float l = 0.0f;
                for (int64_t jj = 0; jj < p.S; jj++) {
                    const int64_t j = ord(jj, p.S, rk);
                    l += s[j] == -INFINITY ? 0.0f : expf(s[j] - mx);
                }
                float di = 0.0f;
                for (int64_t jj = 0; jj < p.S; jj++) {
                    const int64_t j = ord(jj, p.S, rk);
                    pz[j] = s[j] == -INFINITY ? 0.0f : expf(s[j] - mx) / l; /* P */
                    dpz[j] = 0.0f;
                    if (pz[j] == 0.0f) continue;
                    const float *v = f32(&a->v, b, hk, j, 0);
                    for (int64_t cc = 0; cc < p.Dv; cc++) {
                        const int64_t c = ord(cc, p.Dv, rr);
                        dpz[j] += go[c] * v[c];
                    }
                    dpz[j] *= z[j];
                    di += pz[j] * dpz[j];
                }
                float *dq = f32(&g->dq, b, h, i, 0);
                for (int64_t jj = 0; jj < p.S; jj++) {
                    const int64_t j = ord(jj, p.S, rk);
                    if (s[j] == -INFINITY) continue;
                    float ds = pz[j] * (dpz[j] - di);
                    if (g->dmask.data) *dmask_at(&g->dmask, b, h, i, j) += ds;
                    float dsr = ds * dcap[j] * p.scale;
                    const float *k = f32(&a->k, b, hk, j, 0);
                    float *dk = f32(&g->dk, b, hk, j, 0), *dv = f32(&g->dv, b, hk, j, 0);
                    for (int64_t d = 0; d < p.D; d++) {
                        dq[d] += dsr * k[d];
                        dk[d] += dsr * q[d];
                    }
                    for (int64_t c = 0; c < p.Dv; c++)
                        dv[c] += pz[j] * z[j] * go[c];
                }
            }
    free(s), free(dcap), free(pz), free(dpz), free(z);
    return ATTN_OK;
}

int at_grads_alloc(at_grads *gr, const attn_sdpa_args *a, at_layout layout, int want_dmask,
                   at_rng *r) {
    memset(gr, 0, sizeof *gr);
    int64_t B = a->q.shape[0], H = a->q.shape[1], T = a->q.shape[2], D = a->q.shape[3];
    int64_t Hkv = a->k.shape[1], S = a->k.shape[2], Dv = a->v.shape[3];
    if (at_buf_layout(&gr->dout, B, H, T, Dv, layout) ||
        at_buf_layout(&gr->dq, B, H, T, D, layout) ||
        at_buf_layout(&gr->dk, B, Hkv, S, D, layout) ||
        at_buf_layout(&gr->dv, B, Hkv, S, Dv, layout))
        goto fail;
    if (want_dmask && a->mask.data && a->mask.dtype == ATTN_F32) {
        int pad = layout == AT_BHTD_PAD || layout == AT_BTHD_PAD ? 2 : 0;
        if (at_buf_alloc(&gr->dmask, ATTN_F32, a->mask.ndim, a->mask.shape, NULL, pad)) goto fail;
        gr->g.dmask = gr->dmask.t;
    }
    at_fill_uniform(&gr->dout.t, r, -1.0f, 1.0f);
    gr->g.dout = gr->dout.t;
    gr->g.dq = gr->dq.t;
    gr->g.dk = gr->dk.t;
    gr->g.dv = gr->dv.t;
    return 0;
fail:
    at_grads_free(gr);
    return -1;
}

void at_grads_free(at_grads *gr) {
    at_buf_free(&gr->dout), at_buf_free(&gr->dq), at_buf_free(&gr->dk);
    at_buf_free(&gr->dv), at_buf_free(&gr->dmask);
}

/* Contiguous gradient buffers of the same shapes as gr (dout shared). */
static int alloc_like(at_grads *o, const at_grads *gr) {
    memset(o, 0, sizeof *o);
    const attn_tensor *q = &gr->dq.t, *k = &gr->dk.t, *v = &gr->dv.t;
    if (at_buf_f32(&o->dq, q->shape[0], q->shape[1], q->shape[2], q->shape[3]) ||
        at_buf_f32(&o->dk, k->shape[0], k->shape[1], k->shape[2], k->shape[3]) ||
        at_buf_f32(&o->dv, v->shape[0], v->shape[1], v->shape[2], v->shape[3]))
        return -1;
    if (gr->g.dmask.data) {
        if (at_buf_alloc(&o->dmask, ATTN_F32, gr->dmask.t.ndim, gr->dmask.t.shape, NULL, 0))
            return -1;
        o->g.dmask = o->dmask.t;
    }
    o->g.dout = gr->g.dout;
    o->g.dq = o->dq.t;
    o->g.dk = o->dk.t;
    o->g.dv = o->dv.t;
    return 0;
}

int at_sdpa_check_backward(attn_ctx *ctx, const attn_sdpa_args *a, at_grads *gr, const char *label,
                           uint64_t seed) {
    char desc[512], full[768];
    at_sdpa_describe(a, desc, sizeof desc);
    snprintf(full, sizeof full, "%s%s%s%s", label ? label : "", label ? ": " : "", desc,
             gr->g.dmask.data ? " dmask" : "");
    at_grads o, n[AT_NAIVE_ORDERS];
    int ok = 0;
    memset(&o, 0, sizeof o), memset(n, 0, sizeof n);
    if (alloc_like(&o, gr)) {
        fprintf(stderr, "out of memory in the test\n");
        goto done;
    }
    for (int k = 0; k < AT_NAIVE_ORDERS; k++)
        if (alloc_like(&n[k], gr)) {
            fprintf(stderr, "out of memory in the test\n");
            goto done;
        }
    attn_status st = attn_sdpa_forward(ctx, a);
    if (st == ATTN_OK) st = attn_sdpa_backward(ctx, a, &gr->g);
    if (st != ATTN_OK) {
        fprintf(stderr, "forward/backward failed (%s: %s) in case: %s\n", attn_status_str(st),
                attn_ctx_last_error(ctx), full);
        goto done;
    }
    if ((st = attn_sdpa_backward_ref(ctx, a, &o.g)) != ATTN_OK) {
        fprintf(stderr, "oracle failed (%s) in case: %s\n", attn_ctx_last_error(ctx), full);
        goto done;
    }
    /* the plain fp32 error is the worst of several summation orders: one
     * order is one draw of rounding luck (sums over many rows of a GQA
     * group or a broadcast dmask make that luck matter) */
    for (int k = 0; k < AT_NAIVE_ORDERS; k++)
        if ((st = at_naive32_backward_order(ctx, a, &n[k].g, k)) != ATTN_OK) {
            fprintf(stderr, "naive32 failed (%s) in case: %s\n", attn_ctx_last_error(ctx), full);
            goto done;
        }
    const attn_tensor *ndq[AT_NAIVE_ORDERS], *ndk[AT_NAIVE_ORDERS], *ndv[AT_NAIVE_ORDERS],
        *ndm[AT_NAIVE_ORDERS];
    for (int k = 0; k < AT_NAIVE_ORDERS; k++)
        ndq[k] = &n[k].g.dq, ndk[k] = &n[k].g.dk, ndv[k] = &n[k].g.dv, ndm[k] = &n[k].g.dmask;
    at_stats s;
    ok = at_check_n("dq", full, seed, &gr->g.dq, &o.g.dq, ndq, AT_NAIVE_ORDERS, &s) &&
         at_check_n("dk", full, seed, &gr->g.dk, &o.g.dk, ndk, AT_NAIVE_ORDERS, &s) &&
         at_check_n("dv", full, seed, &gr->g.dv, &o.g.dv, ndv, AT_NAIVE_ORDERS, &s);
    if (ok && gr->g.dmask.data)
        ok = at_check_n("dmask", full, seed, &gr->g.dmask, &o.g.dmask, ndm, AT_NAIVE_ORDERS, &s);
    if (ok && (!at_buf_padding_intact(&gr->dq) || !at_buf_padding_intact(&gr->dk) ||
               !at_buf_padding_intact(&gr->dv) || !at_buf_padding_intact(&gr->dmask))) {
        fprintf(stderr, "  ... in case: %s (seed %llu)\n", full,
                (unsigned long long)at_base_seed());
        ok = 0;
    }
done:
    at_buf_free(&o.dq), at_buf_free(&o.dk), at_buf_free(&o.dv), at_buf_free(&o.dmask);
    for (int k = 0; k < AT_NAIVE_ORDERS; k++)
        at_buf_free(&n[k].dq), at_buf_free(&n[k].dk), at_buf_free(&n[k].dv),
            at_buf_free(&n[k].dmask);
    return ok;
}

int at_sdpa_run_backward(attn_ctx *ctx, const at_case *c, int want_dmask, uint64_t case_id,
                         const char *label) {
    at_rng r = at_rng_for(case_id);
    at_sdpa x;
    at_grads gr;
    if (at_sdpa_build(&x, c, &r)) {
        fprintf(stderr, "out of memory building a test case\n");
        return 0;
    }
    if (at_grads_alloc(&gr, &x.a, c->layout, want_dmask, &r)) {
        at_sdpa_free(&x);
        fprintf(stderr, "out of memory building a test case\n");
        return 0;
    }
    int ok = at_sdpa_check_backward(ctx, &x.a, &gr, label, r.seed);
    at_grads_free(&gr);
    at_sdpa_free(&x);
    return ok;
}
