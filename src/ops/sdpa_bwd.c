/* Scaled dot-product attention, backward: probabilities recomputed tile by
 * tile from the forward's lse, nothing of size T x S allocated, no atomics.
 *
 * Forward (per row i):  s = scale*q_i.K^T (+ softcap, mask, alibi)
 *                       P = exp(s - lse_i);  out_i = (P∘Z_i) V
 * Backward:             dV  += (P∘Z)^T dO          dP~ = dO V^T
 *                       dPz  = dP~ ∘ Z             D_i = rowsum(dO_i ∘ out_i)
 *                       dS   = P ∘ (dPz - D_i)     (= dmask for a float mask)
 *                       dS  *= 1 - (s_c/softcap)^2 (softcap only)
 *                       dQ   = scale * dS K        dK = scale * dS^T Q
 *
 * A fused task owns one (batch, key/value head): it zeroes that head's dK and
 * dV, then walks every query strip (up to bmr rows, from the kernel family's
 * descriptor, kernels/arch.h; a span's rows in the fewest strips of equal
 * height in multiples of bmrq, attn__bwd_strip_next) of every query head of
 * the group, in a fixed order, and each strip the key tiles it can see. dQ
 * of the strip accumulates in L1/L2 workspace; dK and dV accumulate in place
 * in the caller's buffers. With fewer (batch, kv head) pairs than threads the
 * work is split instead: dK, dV by key chunk, dQ by query strip (S and dP are
 * then computed twice). Nothing is shared between tasks and every sum runs
 * in the same order either way, so the gradients are bitwise the same for
 * any thread count, also for a dmask summed over broadcast heads or batches
 * (its rows are then owned by the dQ strip tasks; summed over query rows
 * too, by one dQ task walking every strip of its heads).
 * Keys are classified like the forward's (ops/sdpa_mask.h): keys in no
 * segment skipped, full segments unmasked. */
#include "ops/sdpa_bwd.h"

#include "kernels/arch.h"
#include "ops/sdpa_mask.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static attn_status check_grad(attn_ctx *ctx, const char *name, const attn_tensor *t,
                              const int64_t *shape, int out) {
    if (!t->data) return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: missing (data is NULL)", name);
    if (t->dtype != ATTN_F32)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE, "%s: dtype must be F32", name);
    if (t->ndim != 4)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: expected 4 dims, got %d", name, t->ndim);
    if (t->shape[0] != shape[0] || t->shape[1] != shape[1] || t->shape[2] != shape[2] ||
        t->shape[3] != shape[3])
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "%s: must be [%lld,%lld,%lld,%lld], got "
                             "[%lld,%lld,%lld,%lld]",
                             name, (long long)shape[0], (long long)shape[1], (long long)shape[2],
                             (long long)shape[3], (long long)t->shape[0], (long long)t->shape[1],
                             (long long)t->shape[2], (long long)t->shape[3]);
    if (t->stride[3] != 1 && t->shape[3] > 1)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "%s: last stride is %lld, must be 1", name,
                             (long long)t->stride[3]);
    /* an output with stride 0 on a dim of size > 1 would be written twice
     * (harmless when the view is empty) */
    int empty = shape[0] == 0 || shape[1] == 0 || shape[2] == 0 || shape[3] == 0;
    for (int d = 0; out && !empty && d < 3; d++)
        if (t->stride[d] == 0 && t->shape[d] > 1)
            return attn_ctx_fail(ctx, ATTN_E_LAYOUT,
                                 "%s: an output cannot broadcast (stride 0 in dim %d)", name, d);
    return ATTN_OK;
}

attn_status attn__sdpa_gplan_make(attn_ctx *ctx, const attn__sdpa_plan *p, const attn_sdpa_args *a,
                                  const attn_sdpa_grads *g, attn__sdpa_gplan *gp) {
    attn_status st;
    memset(gp, 0, sizeof *gp);
    if (!g) return attn_ctx_fail(ctx, ATTN_E_ARG, "grads is NULL");
    int64_t so[4] = {p->B, p->H, p->T, p->Dv}, sq[4] = {p->B, p->H, p->T, p->D};
    int64_t sk[4] = {p->B, p->Hkv, p->S, p->D}, sv[4] = {p->B, p->Hkv, p->S, p->Dv};
    if ((st = check_grad(ctx, "dout", &g->dout, so, 0)) ||
        (st = check_grad(ctx, "dq", &g->dq, sq, 1)) ||
        (st = check_grad(ctx, "dk", &g->dk, sk, 1)) || (st = check_grad(ctx, "dv", &g->dv, sv, 1)))
        return st;
    /* a gradient may not share memory with anything the backward reads */
    {
        attn_tensor in[ATTN__SDPA_NIN + 3], outs[4] = {g->dq, g->dk, g->dv, g->dmask};
        const char *names[ATTN__SDPA_NIN + 3], *onames[4] = {"dq", "dk", "dv", "dmask"};
        int n = attn__sdpa_inputs(a, p, in, names);
        in[n] = a->out, names[n++] = "out";
        in[n] = a->lse, names[n++] = "lse";
        in[n] = g->dout, names[n++] = "dout";
        for (int o = 0; o < 4; o++)
            for (int i = 0; i < n; i++)
                if (attn__views_overlap(&outs[o], &in[i]))
                    return attn_ctx_fail(ctx, ATTN_E_ARG,
                                         "%s overlaps %s in memory (gradients may not share "
                                         "memory with inputs)",
                                         onames[o], names[i]);
    }
    gp->dout = g->dout.data;
    gp->dq = g->dq.data;
    gp->dk = g->dk.data;
    gp->dv = g->dv.data;
    memcpy(gp->dos, g->dout.stride, sizeof gp->dos);
    memcpy(gp->dqs, g->dq.stride, sizeof gp->dqs);
    memcpy(gp->dks, g->dk.stride, sizeof gp->dks);
    memcpy(gp->dvs, g->dv.stride, sizeof gp->dvs);
    if (g->dmask.data) {
        const attn_tensor *m = &a->mask, *dm = &g->dmask;
        if (p->mask_kind != ATTN__MASK_FLOAT)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "dmask: requested, but the mask is %s (only a float mask has a "
                                 "gradient)",
                                 p->mask_kind == ATTN__MASK_NONE ? "absent" : "boolean");
        if (dm->dtype != ATTN_F32)
            return attn_ctx_fail(ctx, ATTN_E_DTYPE, "dmask: dtype must be F32");
        if (dm->ndim != m->ndim)
            return attn_ctx_fail(ctx, ATTN_E_SHAPE, "dmask: must have the mask's %d dims, got %d",
                                 m->ndim, dm->ndim);
        for (int d = 0; d < m->ndim; d++)
            if (dm->shape[d] != m->shape[d])
                return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                                     "dmask: must have the mask's shape (dim %d is %lld, mask has "
                                     "%lld)",
                                     d, (long long)dm->shape[d], (long long)m->shape[d]);
        /* right-aligned as the mask: [B|1, H|1, T|1, S] with leading dims
         * missing meaning 1; a size-1 dim is summed over */
        int nd = dm->ndim;
        int64_t sh[4] = {1, 1, 1, 1}, sd[4] = {0, 0, 0, 0};
        for (int d = 0; d < nd; d++) {
            sh[4 - nd + d] = dm->shape[d];
            sd[4 - nd + d] = dm->stride[d];
        }
        if (sd[3] != 1 && sh[3] > 1)
            return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "dmask: last stride must be 1");
        int empty = sh[0] == 0 || sh[1] == 0 || sh[2] == 0 || sh[3] == 0;
        for (int d = 0; d < 3 && !empty; d++)
            if (sd[d] == 0 && sh[d] > 1)
                return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "dmask: an output cannot broadcast");
        gp->dmask = dm->data;
        gp->dmB = sh[0];
        gp->dmH = sh[1];
        gp->dmT = sh[2];
        gp->dmb = gp->dmB > 1 ? sd[0] : 0;
        gp->dmh = gp->dmH > 1 ? sd[1] : 0;
        gp->dmt = gp->dmT > 1 ? sd[2] : 0;
    }
    return ATTN_OK;
}

/* The geometry of one call: the family's kernels and tile sizes. */
typedef struct geom {
    const attn_bwd_kernels *kn;
    int BMR; /* query rows per strip, at most (the scratch's stride) */
    int BBK; /* keys per tile */
    int Q;   /* strip heights the kernels take: multiples of Q up to BMR */
} geom;

/* Per-thread scratch of one task. */
typedef struct bwd_ws {
    float *qt, *dot;       /* [D][BMR] scaled queries, [Dv][BMR] dout, transposed */
    float *s, *dp, *z, *t; /* [BBK][BMR] tiles: scores/P, dP/dS, dropout, tanh */
    float *dq;             /* [BMR][ldq] */
    float *lse, *di;       /* [BMR] */
    int64_t *lo, *hi;      /* [BMR] the rows' key intervals */
    attn__seg *seg;        /* the strip's key segments */
    float *rq, *rk;        /* RoPE: the strip's rotated queries [BMR][D], a rotated key
                            * tile [BBK][D] */
    double *rtmp;          /* RoPE: the rotation's scratch */
    int ldq;
} bwd_ws;

static size_t ws_floats(const attn__sdpa_plan *p, const geom *g) {
    size_t tile = (size_t)g->BBK * g->BMR, R = (size_t)g->BMR;
    return attn__round16((size_t)p->D * R) + attn__round16((size_t)p->Dv * R) + 4 * tile +
           R * attn__round16((size_t)p->D) + attn__round16(2 * R) + attn__round16(4 * R) +
           attn__mask_seg_floats(p) +
           (p->rope ? attn__round16(R * p->D) + attn__round16((size_t)g->BBK * p->D) +
                          attn__round16(2 * attn__rope_tmp_doubles(p->rs.rot))
                    : 0);
}

static bwd_ws ws_carve(const attn__sdpa_plan *p, const geom *g, float *w) {
    size_t tile = (size_t)g->BBK * g->BMR, R = (size_t)g->BMR;
    bwd_ws ws;
    ws.ldq = (int)attn__round16((size_t)p->D);
    ws.qt = w;
    ws.dot = ws.qt + attn__round16((size_t)p->D * R);
    ws.s = ws.dot + attn__round16((size_t)p->Dv * R);
    ws.dp = ws.s + tile;
    ws.z = ws.dp + tile;
    ws.t = ws.z + tile;
    ws.dq = ws.t + tile;
    ws.lse = ws.dq + R * ws.ldq;
    ws.di = ws.lse + R;
    ws.lo = (int64_t *)(ws.lse + attn__round16(2 * R));
    ws.hi = ws.lo + R;
    ws.seg = (attn__seg *)(ws.lse + attn__round16(2 * R) + attn__round16(4 * R));
    ws.rq = ws.lse + attn__round16(2 * R) + attn__round16(4 * R) + attn__mask_seg_floats(p);
    ws.rk = ws.rq + attn__round16(R * p->D);
    ws.rtmp = (double *)(ws.rk + attn__round16((size_t)g->BBK * p->D));
    return ws;
}

enum { DO_Q = 1, DO_KV = 2, DO_M = 4 }; /* what a strip walk accumulates: dQ, dK+dV, dmask */

typedef struct strip {
    const attn__strip_mask *sm;
    int what;
} strip;

/* One (strip, key tile [ca, cb)) step of the backward. */
static void tile(const attn__sdpa_plan *p, const attn__sdpa_gplan *gp, const geom *g,
                 const strip *st, int64_t ca, int64_t cb, const bwd_ws *w) {
    const attn_bwd_kernels *kn = g->kn;
    const int64_t b = st->sm->b, h = st->sm->h, i0 = st->sm->i0, hk = h / p->group;
    const int mr = st->sm->mr, n = (int)(cb - ca), D = (int)p->D, Dv = (int)p->Dv, R = g->BMR;
    const float *kb = p->k + b * p->ks[0] + hk * p->ks[1] + ca * p->ks[2];
    int64_t kst = p->ks[2], qst = p->qs[2];
    if (p->rope_k) { /* the tile's keys rotated (dK is rotated back by the task) */
        attn__rope_rows(&p->rs, kb, kst, w->rk, D, n, D, attn__rope_kpos(p, b) + ca, 0, w->rtmp);
        kb = w->rk, kst = D;
    }
    const float *vb = p->v + b * p->vs[0] + hk * p->vs[1] + ca * p->vs[2];
    float *dkb = gp->dk + b * gp->dks[0] + hk * gp->dks[1] + ca * gp->dks[2];
    float *dvb = gp->dv + b * gp->dvs[0] + hk * gp->dvs[1] + ca * gp->dvs[2];
    const float *qr = p->q + b * p->qs[0] + h * p->qs[1] + i0 * p->qs[2];
    if (p->rope) qr = w->rq, qst = D; /* the strip's rotated queries */
    const float *dor = gp->dout + b * gp->dos[0] + h * gp->dos[1] + i0 * gp->dos[2];
    float *s = w->s, *dp = w->dp;

    kn->dot_t(w->qt, R, kb, kst, n, D, mr, s);         /* S = (scale Q) K^T */
    kn->dot_t(w->dot, R, vb, p->vs[2], n, Dv, mr, dp); /* dP~ = dO V^T */
    attn__mask_tile(p, st->sm, s, w->t, R, ca, cb);
    if (p->dropout_p > 0.0f) {
        for (int64_t j = ca; j < cb; j++)
            for (int r = 0; r < mr; r++) {
                size_t e = (size_t)(j - ca) * R + r;
                w->z[e] = attn__dropout_factor(p, b, h, i0 + r, j);
                dp[e] *= w->z[e]; /* dPz = dP~ ∘ Z */
            }
    }
    kn->softmax_bwd(s, dp, R, n, mr, w->lse, w->di); /* s <- P, dp <- dS */
    if (gp->dmask && (st->what & DO_M)) {
        int64_t bm = gp->dmB > 1 ? b : 0, hm = gp->dmH > 1 ? h : 0;
        for (int r = 0; r < mr; r++) {
            float *dm = gp->dmask + attn__dmask_off(gp, bm, hm, i0 + r, 0);
            for (int64_t j = ca; j < cb; j++)
                dm[j] += dp[(j - ca) * R + r];
        }
    }
    if (p->softcap > 0.0f) /* ds/ds_raw = 1 - tanh^2 (padding rows have dS = 0) */
        for (int j = 0; j < n; j++)
            for (int r = 0; r < mr; r++) {
                size_t e = (size_t)j * R + r;
                dp[e] *= 1.0f - w->t[e] * w->t[e];
            }
    if (st->what & DO_KV) {
        if (p->dropout_p > 0.0f) /* P∘Z */
            for (int j = 0; j < n; j++)
                for (int r = 0; r < mr; r++)
                    s[(size_t)j * R + r] *= w->z[(size_t)j * R + r];
        kn->acc_tn(s, R, mr, n, dor, gp->dos[2], Dv, dvb, gp->dvs[2]); /* dV += (P∘Z)^T dO */
        kn->acc_tn(dp, R, mr, n, qr, qst, D, dkb, gp->dks[2]);         /* dK += dS^T Q */
    }
    if (st->what & DO_Q) kn->acc_nn(dp, R, mr, n, kb, kst, D, w->dq, w->ldq); /* dQ += dS K */
}

/* Walk one strip over its visible keys within [klo, khi), accumulating what
 * asks for: dQ (written out at the end) and/or dK, dV (and dmask). Every
 * accumulation runs in increasing key order within a row and increasing row
 * order within a key, whatever [klo, khi) and the tile boundaries are, so a
 * strip walked whole or in key chunks gives bitwise the same gradients. */
static void run_strip(const attn__sdpa_plan *p, const attn__sdpa_gplan *gp, const geom *g,
                      int64_t b, int64_t h, int64_t i0, int64_t klo, int64_t khi, int what,
                      const bwd_ws *w) {
    const int D = (int)p->D, Dv = (int)p->Dv, R = g->BMR;
    const int mr = (int)(attn__bwd_strip_next(p, R, g->Q, i0) - i0);
    attn__strip_mask sm;
    sm.lo = w->lo;
    sm.hi = w->hi;
    sm.seg = w->seg;
    attn__mask_strip(p, b, h, i0, mr, &sm);
    if (what & DO_Q) memset(w->dq, 0, (size_t)R * w->ldq * sizeof(float));
    for (int r = 0; r < R; r++) {
        w->lse[r] = INFINITY; /* dead or padding row: P = 0 */
        w->di[r] = 0.0f;
        if (r >= mr || !attn__mask_row_live(p, &sm, r)) continue;
        int64_t i = i0 + r;
        float l = p->lse[b * p->ls[0] + h * p->ls[1] + i * p->ls[2]];
        if (l == -INFINITY) continue; /* every key masked (boolean mask): zero gradients */
        w->lse[r] = l;
        /* D_i = rowsum(dO_i ∘ out_i) = rowsum(P ∘ dPz) */
        const float *o = p->out + b * p->os[0] + h * p->os[1] + i * p->os[2];
        const float *gr = gp->dout + b * gp->dos[0] + h * gp->dos[1] + i * gp->dos[2];
        double acc = 0.0;
        for (int c = 0; c < Dv; c++)
            acc += (double)o[c] * (double)gr[c];
        w->di[r] = (float)acc;
    }

    if (sm.nseg && ATTN_MAX(attn__mask_first(&sm), klo) < ATTN_MIN(attn__mask_last(&sm), khi)) {
        const float *q = p->q + b * p->qs[0] + h * p->qs[1] + i0 * p->qs[2];
        int64_t qs = p->qs[2];
        if (p->rope) { /* rotated once per strip: packed for S, read by dK += dS^T Q */
            attn__rope_rows(&p->rs, q, qs, w->rq, D, mr, D, attn__rope_qpos(p, b) + i0, 0,
                            w->rtmp);
            q = w->rq, qs = D;
        }
        g->kn->pack_t(q, qs, mr, R, D, p->scale, w->qt);
        g->kn->pack_t(gp->dout + b * gp->dos[0] + h * gp->dos[1] + i0 * gp->dos[2], gp->dos[2], mr,
                      R, Dv, 1.0f, w->dot);
        strip st = {&sm, what};
        /* each segment (full or partial) in tiles of BBK keys from its start */
        for (int k = 0; k < sm.nseg; k++) {
            int64_t pa = ATTN_MAX(sm.seg[k].a, klo), pb = ATTN_MIN(sm.seg[k].b, khi);
            for (int64_t ca = pa; ca < pb; ca += g->BBK)
                tile(p, gp, g, &st, ca, ATTN_MIN(ca + g->BBK, pb), w);
        }
    }
    if (!(what & DO_Q)) return;
    for (int r = 0; r < mr; r++) {
        float *dst = gp->dq + b * gp->dqs[0] + h * gp->dqs[1] + (i0 + r) * gp->dqs[2];
        const float *src = w->dq + (size_t)r * w->ldq;
        if (w->lse[r] == INFINITY) {
            memset(dst, 0, (size_t)D * sizeof(float));
        } else {
            for (int c = 0; c < D; c++)
                dst[c] = p->scale * src[c];
        }
    }
    if (p->rope) { /* dQ was computed against rotated keys: rotate it back */
        float *dst = gp->dq + b * gp->dqs[0] + h * gp->dqs[1] + i0 * gp->dqs[2];
        attn__rope_rows(&p->rs, dst, gp->dqs[2], dst, gp->dqs[2], mr, D,
                        attn__rope_qpos(p, b) + i0, 1, w->rtmp);
    }
}

/* A task: keys [klo, khi) of (b, hk) for dK, dV (and dQ of the group's
 * query heads when fused), or one query strip (b, h, i0) for dQ alone. */
typedef struct task {
    int64_t b, h, i0, klo, khi;
    int what;
    double cost; /* for scheduling only: heaviest first */
} task;

static int task_cmp(const void *x, const void *y) {
    const task *a = x, *b = y;
    if (a->cost != b->cost) return a->cost < b->cost ? 1 : -1;
    /* a total order on the fields that identify a task (qsort is not stable) */
    const int64_t ka[5] = {a->what, a->b, a->h, a->i0, a->klo};
    const int64_t kb[5] = {b->what, b->b, b->h, b->i0, b->klo};
    for (int k = 0; k < 5; k++)
        if (ka[k] != kb[k]) return ka[k] < kb[k] ? -1 : 1;
    return 0;
}

static void run_task(const attn__sdpa_plan *p, const attn__sdpa_gplan *gp, const geom *g,
                     const task *t, float *wsp) {
    const bwd_ws w = ws_carve(p, g, wsp);
    if (!(t->what & DO_KV)) { /* a dQ strip (every strip if i0 < 0), of one (b, h) or, b or
                                 h < 0, of all */
        for (int64_t b = 0; b < p->B; b++)
            for (int64_t h = 0; h < p->H; h++)
                if ((t->b < 0 || t->b == b) && (t->h < 0 || t->h == h))
                    for (int64_t i0 = t->i0 < 0 ? 0 : t->i0; i0 < (t->i0 < 0 ? p->T : t->i0 + 1);
                         i0 = attn__bwd_strip_next(p, g->BMR, g->Q, i0))
                        run_strip(p, gp, g, b, h, i0, 0, p->S, t->what, &w);
        return;
    }
    const int64_t hk = t->h;
    float *dkb = gp->dk + t->b * gp->dks[0] + hk * gp->dks[1];
    float *dvb = gp->dv + t->b * gp->dvs[0] + hk * gp->dvs[1];
    for (int64_t j = t->klo; j < t->khi; j++) {
        memset(dkb + j * gp->dks[2], 0, (size_t)p->D * sizeof(float));
        memset(dvb + j * gp->dvs[2], 0, (size_t)p->Dv * sizeof(float));
    }
    for (int64_t h = hk * p->group; h < (hk + 1) * p->group; h++)
        for (int64_t i0 = 0; i0 < p->T; i0 = attn__bwd_strip_next(p, g->BMR, g->Q, i0))
            run_strip(p, gp, g, t->b, h, i0, t->klo, t->khi, t->what, &w);
    /* dK = scale * dS^T Q: the strip's Q was read unscaled */
    for (int64_t j = t->klo; j < t->khi; j++) {
        float *row = dkb + j * gp->dks[2];
        for (int64_t d = 0; d < p->D; d++)
            row[d] *= p->scale;
    }
    if (p->rope_k && t->khi > t->klo) /* dK of the rotated keys: rotate it back */
        attn__rope_rows(&p->rs, dkb + t->klo * gp->dks[2], gp->dks[2], dkb + t->klo * gp->dks[2],
                        gp->dks[2], (int)(t->khi - t->klo), (int)p->D,
                        attn__rope_kpos(p, t->b) + t->klo, 1, w.rtmp);
}

attn_status attn__sdpa_bwd_plan(attn_ctx *ctx, const attn_sdpa_args *a, const attn_sdpa_grads *g,
                                attn__sdpa_plan *p, attn__sdpa_gplan *gp) {
    attn__ctx_clear(ctx);
    attn_status st = attn__sdpa_plan_make(ctx, a, ATTN__PLAN_NEED_LSE, p);
    if (st) return st;
    return attn__sdpa_gplan_make(ctx, p, a, g, gp);
}

static attn_status backward_plan(attn_ctx *ctx, const attn__sdpa_plan *pp,
                                 const attn__sdpa_gplan *gpp);

static attn_status sdpa_backward(attn_ctx *ctx, const attn_sdpa_args *a,
                                 const attn_sdpa_grads *grads) {
    if (!ctx) return ATTN_E_ARG;
    attn__sdpa_plan p;
    attn__sdpa_gplan gp;
    attn_status st = attn__sdpa_bwd_plan(ctx, a, grads, &p, &gp);
    if (st) return st;
    attn__glob glob; /* the global tokens' index, for this call */
    if ((st = attn__mask_glob_build(ctx, &p, &glob))) return st;
    st = backward_plan(ctx, &p, &gp);
    attn__mask_glob_free(&glob);
    return st;
}

static attn_status backward_plan(attn_ctx *ctx, const attn__sdpa_plan *pp,
                                 const attn__sdpa_gplan *gpp) {
    const attn__sdpa_plan p = *pp;
    const attn__sdpa_gplan gp = *gpp;
    attn_status st;

    /* A strip is bmr rows, or, when T is shorter, T rounded up to the
     * family's register strip (the kernels take any multiple of it): the
     * scratch is ~3 strips x D floats, so a short T no longer pays for 96
     * rows (D = 2^20, T = 1: 1.2 GB and 16 s before). With one strip either
     * way, the sums and so the results are bitwise the same. */
    const int64_t unit = ctx->arch->mr;
    const int bmr =
        (int)ATTN_MIN((int64_t)ctx->arch->bmr, ATTN_MAX(1, (p.T + unit - 1) / unit) * unit);
    const geom g = {&ctx->arch->bwd, bmr, ctx->arch->bbk, ctx->arch->bmrq};
    int nth = ctx->nthreads;
    /* Fused tasks (b, hk) do the least arithmetic. With fewer of them than
     * threads, split: dK, dV by (b, hk, key chunk) and dQ by query strip,
     * which recomputes S and dP once more (7 GEMM-like steps instead of 5)
     * but keeps every thread busy. A dmask summed over heads or batches of
     * different (b, hk) forces the split too (with 2+ threads): the dQ task
     * of a strip then also owns the strip's dmask rows and sums them over
     * (b, h) in the fused order. Every plan gives bitwise the same result. */
    int64_t nkv = p.B * p.Hkv, nck = 1;
    int msum = gp.dmask && ((gp.dmH == 1 && p.Hkv > 1) || (gp.dmB == 1 && p.B > 1));
    int split = nth > 1 && (nkv < nth || msum) && p.T > 0 && p.S > 0;
    if (split) nck = ATTN_MAX(1, ATTN_MIN((2 * nth + nkv - 1) / nkv, p.S / (4 * g.BBK)));
    int64_t nstrip = 0;
    for (int64_t i0 = 0; i0 < p.T; i0 = attn__bwd_strip_next(&p, g.BMR, g.Q, i0))
        nstrip++;
    int64_t qB = msum && gp.dmB == 1 ? 1 : p.B, qH = msum && gp.dmH == 1 ? 1 : p.H;
    /* a dmask summed over T too: the rows of all strips add into one row, so
     * one dQ task walks every strip of its (b, h) in order (i0 = -1) */
    int allstrips = msum && gp.dmT == 1 && nstrip > 1;
    int64_t nqs = allstrips ? 1 : nstrip;
    int64_t ntask = nkv * nck + (split ? qB * qH * nqs : 0);
    task *tasks = malloc((size_t)ATTN_MAX(ntask, 1) * sizeof *tasks);
    if (!tasks)
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %lld tasks", (long long)ntask);
    int64_t n = 0, chunk = (p.S + nck - 1) / nck;
    int kvw = split ? (msum ? DO_KV : DO_KV | DO_M) : DO_Q | DO_KV | DO_M;
    int qw = msum ? DO_Q | DO_M : DO_Q;
    for (int64_t b = 0; b < p.B; b++)
        for (int64_t hk = 0; hk < p.Hkv; hk++)
            for (int64_t c = 0; c < nck; c++)
                tasks[n++] = (task){b,
                                    hk,
                                    0,
                                    ATTN_MIN(c * chunk, p.S),
                                    ATTN_MIN((c + 1) * chunk, p.S),
                                    kvw,
                                    (double)p.group * p.T * ATTN_MIN(chunk, p.S) * 5.0};
    for (int64_t b = 0; split && b < qB; b++)
        for (int64_t h = 0; h < qH; h++)
            for (int64_t s = 0, i0 = 0; s < nqs; s++, i0 = attn__bwd_strip_next(&p, g.BMR, g.Q, i0))
                tasks[n++] = (task){qB == 1 && p.B > 1 ? -1 : b,
                                    qH == 1 && p.H > 1 ? -1 : h,
                                    allstrips ? -1 : i0,
                                    0,
                                    p.S,
                                    qw,
                                    (double)(p.B / qB) * (p.H / qH) * g.BMR * p.S * 3.0 *
                                        (double)(nstrip / nqs)};
    qsort(tasks, (size_t)ntask, sizeof *tasks, task_cmp);
    nth = (int)ATTN_MAX(1, ATTN_MIN((int64_t)nth, ntask));
    /* Each thread's scratch is ~3 strips x D floats whatever T is (302 MiB
     * at D = 2^18): past a 512 MiB total, more threads add memory rather
     * than speed, so they are capped (results do not depend on the count) */
    const size_t wsb = ws_floats(&p, &g) * sizeof(float);
    nth = (int)ATTN_MAX(1, ATTN_MIN((int64_t)nth, (int64_t)(((size_t)512 << 20) / wsb)));
    if ((st = attn__ws_reserve(ctx, nth, wsb))) {
        free(tasks);
        return st;
    }

    if (gp.dmask)
        for (int64_t b = 0; b < gp.dmB; b++)
            for (int64_t h = 0; h < gp.dmH; h++)
                for (int64_t i = 0; i < gp.dmT; i++)
                    memset(gp.dmask + attn__dmask_off(&gp, b, h, i, 0), 0,
                           (size_t)p.S * sizeof(float));
    if (nth == 1) {
        for (int64_t t = 0; t < ntask; t++)
            run_task(&p, &gp, &g, &tasks[t], attn__ws_get(ctx, 0));
    } else {
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1)
        for (int64_t t = 0; t < ntask; t++)
            run_task(&p, &gp, &g, &tasks[t], attn__ws_get(ctx, omp_get_thread_num()));
    }
    free(tasks);
    return ATTN_OK;
}

attn_status attn_sdpa_backward(attn_ctx *ctx, const attn_sdpa_args *a,
                               const attn_sdpa_grads *grads) {
    if (!ctx) return ATTN_E_ARG;
    if (attn__ctx_enter(ctx)) return ATTN_E_BUSY; /* another thread's ctx: write nothing */
    attn_status st = sdpa_backward(ctx, a, grads);
    attn__ctx_leave(ctx);
    return st;
}
