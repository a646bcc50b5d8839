/* Scaled dot-product attention, forward: tiled, online softmax, nothing of
 * size T x S allocated.
 *
 * A task is one strip of ATTN_MR query rows of one (batch, head). It packs
 * its queries once (transposed, pre-scaled), then walks the keys it can see
 * in blocks of ATTN_BK, straight from the caller's K and V:
 *   s = Q K^T (+ masks);  m' = max(m, rowmax(s));  alpha = exp(m - m')
 *   l' = l*alpha + rowsum(exp(s - m'));  O' = O*alpha + exp(s - m') V
 * and finally out = O / l, lse = m + log(l).
 * Before any arithmetic each (strip, key block) tile is classified from the
 * structural masks (causal, window, kv_len), whose visible keys form one
 * interval per row: empty tiles are skipped, full tiles evaluate no mask, so
 * the cost follows the unmasked area. Each task writes disjoint rows with the
 * same arithmetic whatever thread runs it: results do not depend on the
 * thread count. */
#include "kernels/kernels.h"
#include "ops/sdpa_plan.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define ATTN_BK 128 /* keys per tile */

typedef struct task {
    int64_t b, h, i0;
    double cost;
} task;

static int task_cmp(const void *x, const void *y) {
    const task *a = x, *b = y;
    if (a->cost != b->cost) return a->cost < b->cost ? 1 : -1; /* heaviest first */
    if (a->b != b->b) return a->b < b->b ? -1 : 1;
    if (a->h != b->h) return a->h < b->h ? -1 : 1;
    return a->i0 < b->i0 ? -1 : (a->i0 > b->i0);
}

/* Everything but the plain scaled dot product: softcap, float mask, ALiBi,
 * boolean mask and (for partial tiles) the structural interval. Score of row
 * r, key j (ca <= j < cb) lives at s[(j - ca)*MR + r]. */
static void score_mods(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i0, int mr,
                       float *s, int64_t ca, int64_t cb, const int64_t *lo, const int64_t *hi,
                       int full) {
    for (int r = 0; r < mr; r++) {
        int64_t i = i0 + r, pos = i + p->shift;
        float *sr = s + r - ca * ATTN_MR; /* sr[j*MR] is key j */
        if (p->softcap > 0.0f) {
            float c = p->softcap, ic = 1.0f / p->softcap;
            for (int64_t j = ca; j < cb; j++) sr[j * ATTN_MR] = c * tanhf(sr[j * ATTN_MR] * ic);
        }
        if (p->mask_kind == ATTN__MASK_FLOAT) {
            const float *m = (const float *)p->mask + attn__mask_off(p, b, h, i, 0);
            for (int64_t j = ca; j < cb; j++) sr[j * ATTN_MR] += m[j];
        }
        if (p->alibi) {
            float sl = p->alibi[h];
            for (int64_t j = ca; j < cb; j++) sr[j * ATTN_MR] -= sl * (float)llabs(pos - j);
        }
        if (p->mask_kind == ATTN__MASK_BOOL) {
            const uint8_t *m = (const uint8_t *)p->mask + attn__mask_off(p, b, h, i, 0);
            for (int64_t j = ca; j < cb; j++)
                if (!m[j]) sr[j * ATTN_MR] = -INFINITY;
        }
        if (!full) {
            for (int64_t j = ca; j < cb; j++)
                if (j < lo[r] || j >= hi[r]) sr[j * ATTN_MR] = -INFINITY;
        }
    }
}

/* Workspace floats one thread needs. */
static size_t ws_floats(const attn__sdpa_plan *p) {
    return attn__round16((size_t)p->D * ATTN_MR) + (size_t)ATTN_BK * ATTN_MR +
           (size_t)p->Dv * ATTN_MR + 3 * ATTN_MR;
}

/* One (strip, key block) tile: scores, masks, online softmax, P*V. */
static void tile(const attn__sdpa_plan *p, const attn_kernels *kn, int64_t b, int64_t h,
                 int64_t i0, int mr, int64_t ca, int64_t cb, int full, const int64_t *lo,
                 const int64_t *hi, const float *qt, float *s, float *ot, float *m, float *l,
                 float *alpha) {
    const int64_t hk = h / p->group;
    const float *kb = p->k + b * p->ks[0] + hk * p->ks[1];
    const float *vb = p->v + b * p->vs[0] + hk * p->vs[1];
    const int n = (int)(cb - ca);
    const int mods = p->softcap > 0.0f || p->mask_kind != ATTN__MASK_NONE || p->alibi;
    kn->qk(qt, kb + ca * p->ks[2], p->ks[2], n, (int)p->D, s);
    if (mods || !full) score_mods(p, b, h, i0, mr, s, ca, cb, lo, hi, full);
    kn->softmax(s, n, m, l, alpha);
    if (p->dropout_p > 0.0f)
        for (int64_t j = ca; j < cb; j++)
            for (int r = 0; r < mr; r++)
                s[(j - ca) * ATTN_MR + r] *= attn__dropout_factor(p, b, h, i0 + r, j);
    kn->pv(s, n, vb + ca * p->vs[2], p->vs[2], (int)p->Dv, alpha, ot);
}

static void run_task(const attn__sdpa_plan *p, const attn_kernels *kn, const task *t, float *ws) {
    const int D = (int)p->D, Dv = (int)p->Dv;
    const int64_t b = t->b, h = t->h, i0 = t->i0;
    const int mr = (int)ATTN_MIN((int64_t)ATTN_MR, p->T - i0);
    float *qt = ws;                                     /* [D][MR] */
    float *s = qt + attn__round16((size_t)D * ATTN_MR); /* [BK][MR] */
    float *ot = s + (size_t)ATTN_BK * ATTN_MR;          /* [Dv][MR], transposed output */
    float *m = ot + (size_t)Dv * ATTN_MR;               /* [MR] */
    float *l = m + ATTN_MR, *alpha = l + ATTN_MR;       /* [MR], [MR] */
    int64_t lo[ATTN_MR], hi[ATTN_MR];

    int64_t slo = INT64_MAX, shi = INT64_MIN, maxlo = INT64_MIN, minhi = INT64_MAX;
    int any_empty = 0;
    for (int r = 0; r < ATTN_MR; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        if (r >= mr) continue;
        attn__row_range(p, b, i0 + r, &lo[r], &hi[r]);
        if (hi[r] <= lo[r]) {
            any_empty = 1;
            continue;
        }
        slo = ATTN_MIN(slo, lo[r]);
        shi = ATTN_MAX(shi, hi[r]);
        maxlo = ATTN_MAX(maxlo, lo[r]);
        minhi = ATTN_MIN(minhi, hi[r]);
    }

    memset(ot, 0, (size_t)Dv * ATTN_MR * sizeof(float));
    if (slo < shi) {
        kn->pack_q(p->q + b * p->qs[0] + h * p->qs[1] + i0 * p->qs[2], p->qs[2], mr, D, p->scale,
                   qt);
        /* Split the strip's keys [slo, shi) at maxlo and minhi: only the two
         * edges (each at most the rows' spread wide) need per-element masks;
         * the middle is full tiles. */
        int64_t cuts[4] = {slo, slo, shi, shi};
        int split = !any_empty && maxlo < minhi;
        if (split) {
            cuts[1] = maxlo;
            cuts[2] = minhi;
        }
        for (int part = 0; part < 3; part++) {
            int full = part == 1 && split;
            for (int64_t ca = cuts[part]; ca < cuts[part + 1]; ca += ATTN_BK) {
                int64_t cb = ATTN_MIN(ca + ATTN_BK, cuts[part + 1]);
                tile(p, kn, b, h, i0, mr, ca, cb, full, lo, hi, qt, s, ot, m, l, alpha);
            }
        }
    }

    for (int r = 0; r < mr; r++) {
        int64_t i = i0 + r;
        float *dst = p->out + b * p->os[0] + h * p->os[1] + i * p->os[2];
        const float *src = ot + r; /* src[c*MR] is column c */
        if (m[r] == -INFINITY) { /* no visible key */
            memset(dst, 0, (size_t)Dv * sizeof(float));
        } else {
            float inv = 1.0f / l[r];
            for (int c = 0; c < Dv; c++) dst[c] = src[(size_t)c * ATTN_MR] * inv;
        }
        if (p->lse) {
            float *le = p->lse + b * p->ls[0] + h * p->ls[1] + i * p->ls[2];
            *le = m[r] == -INFINITY ? -INFINITY : m[r] + logf(l[r]);
        }
    }
}

attn_status attn_sdpa_forward(attn_ctx *ctx, const attn_sdpa_args *a) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    attn__sdpa_plan p;
    attn_status st = attn__sdpa_plan_make(ctx, a, 0, &p);
    if (st) return st;
    if (p.T == 0) return ATTN_OK;

    const attn_kernels *kn = attn__kernels();
    int64_t nqb = (p.T + ATTN_MR - 1) / ATTN_MR;
    int64_t ntask = p.B * p.H * nqb;
    task *tasks = malloc((size_t)ntask * sizeof *tasks);
    if (!tasks) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %lld tasks", (long long)ntask);
    int64_t n = 0;
    for (int64_t b = 0; b < p.B; b++)
        for (int64_t h = 0; h < p.H; h++)
            for (int64_t qb = 0; qb < nqb; qb++) {
                task *t = &tasks[n++];
                t->b = b, t->h = h, t->i0 = qb * ATTN_MR;
                int64_t last = ATTN_MIN(t->i0 + ATTN_MR, p.T);
                double cost = 0.0;
                for (int64_t i = t->i0; i < last; i++) {
                    int64_t lo, hi;
                    attn__row_range(&p, b, i, &lo, &hi);
                    cost += (double)(hi > lo ? hi - lo : 0) + 1.0;
                }
                t->cost = cost;
            }
    qsort(tasks, (size_t)ntask, sizeof *tasks, task_cmp);

    int nth = (int)ATTN_MIN((int64_t)ctx->nthreads, ntask);
    if (nth < 1) nth = 1;
    st = attn__ws_reserve(ctx, nth, ws_floats(&p) * sizeof(float));
    if (st) {
        free(tasks);
        return st;
    }
    if (nth == 1) {
        for (int64_t t = 0; t < ntask; t++) run_task(&p, kn, &tasks[t], attn__ws_get(ctx, 0));
    } else {
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1)
        for (int64_t t = 0; t < ntask; t++)
            run_task(&p, kn, &tasks[t], attn__ws_get(ctx, omp_get_thread_num()));
    }
    free(tasks);
    return ATTN_OK;
}
