/* Scaled dot-product attention, forward: tiled, online softmax, nothing of
 * size T x S allocated.
 *
 * A strip is ATTN_MR query rows of one (batch, head). It packs its queries
 * once (transposed, pre-scaled), then walks the keys it can see in blocks of
 * ATTN_BK, straight from the caller's K and V (a task runs up to ATTN_G
 * strips side by side so they share each block while it is in cache; K and V
 * traffic from memory falls by that factor):
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

#ifndef ATTN_BK
#define ATTN_BK 128 /* keys per block; tiles never cross a multiple of BK */
#endif
/* At most ATTN_G strips per task, sharing each key block while it is in
 * cache, and no more than fit ATTN_G_BYTES of strip state (queries and
 * output accumulators), so the strips and a key block stay in L2. */
#define ATTN_G 16
#define ATTN_G_BYTES (512 * 1024)

typedef struct task {
    int64_t b, h, i0; /* first row */
    int ns;           /* strips (1..ATTN_G) */
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
 * boolean mask and the structural interval on keys [ea, eb) (the part of the
 * tile that lies in an edge band; ea >= eb when the tile is full). Score of
 * row r, key j (ca <= j < cb) lives at s[(j - ca)*MR + r]. */
static void score_mods(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i0, int mr, float *s,
                       int64_t ca, int64_t cb, const int64_t *lo, const int64_t *hi, int64_t ea,
                       int64_t eb) {
    for (int r = 0; r < mr; r++) {
        int64_t i = i0 + r, pos = i + p->shift;
        float *sr = s + r - ca * ATTN_MR; /* sr[j*MR] is key j */
        if (p->softcap > 0.0f) {
            float c = p->softcap, ic = 1.0f / p->softcap;
            for (int64_t j = ca; j < cb; j++)
                sr[j * ATTN_MR] = c * tanhf(sr[j * ATTN_MR] * ic);
        }
        if (p->mask_kind == ATTN__MASK_FLOAT) {
            const float *m = (const float *)p->mask + attn__mask_off(p, b, h, i, 0);
            for (int64_t j = ca; j < cb; j++)
                sr[j * ATTN_MR] += m[j];
        }
        if (p->alibi) {
            float sl = p->alibi[h];
            for (int64_t j = ca; j < cb; j++)
                sr[j * ATTN_MR] -= sl * (float)llabs(pos - j);
        }
        if (p->mask_kind == ATTN__MASK_BOOL) {
            const uint8_t *m = (const uint8_t *)p->mask + attn__mask_off(p, b, h, i, 0);
            for (int64_t j = ca; j < cb; j++)
                if (!m[j]) sr[j * ATTN_MR] = -INFINITY;
        }
        for (int64_t j = ea; j < eb; j++)
            if (j < lo[r] || j >= hi[r]) sr[j * ATTN_MR] = -INFINITY;
    }
}

/* One strip's state inside a task. */
typedef struct strip {
    int64_t i0;
    int mr, live;    /* rows in use; live: some row sees a key */
    int64_t cuts[4]; /* parts [cuts[p], cuts[p+1]): edge, full middle, edge */
    int split;       /* the middle part is full (no per-element mask) */
    int64_t lo[ATTN_MR], hi[ATTN_MR];
    float *qt, *ot, *m, *l, *alpha;
} strip;

/* Floats of one strip's state: qt [D][MR], ot [Dv][MR], m, l, alpha [MR]. */
static size_t strip_floats(const attn__sdpa_plan *p) {
    return attn__round16((size_t)p->D * ATTN_MR) + attn__round16((size_t)p->Dv * ATTN_MR) +
           attn__round16(3 * ATTN_MR);
}

/* Workspace floats one thread needs: the score tile and gs strips. */
static size_t ws_floats(const attn__sdpa_plan *p, int gs) {
    return (size_t)ATTN_BK * ATTN_MR + (size_t)gs * strip_floats(p);
}

/* One (strip, key range) tile: scores, masks, online softmax, P*V. Only the
 * keys of the tile inside the strip's edge bands get the per-element
 * structural mask; a tile wholly in the full middle gets none. */
static void tile(const attn__sdpa_plan *p, const attn_kernels *kn, int64_t b, int64_t h,
                 const strip *st, int64_t ca, int64_t cb, float *s) {
    const int64_t hk = h / p->group;
    const float *kb = p->k + b * p->ks[0] + hk * p->ks[1];
    const float *vb = p->v + b * p->vs[0] + hk * p->vs[1];
    const int n = (int)(cb - ca);
    const int mods = p->softcap > 0.0f || p->mask_kind != ATTN__MASK_NONE || p->alibi;
    kn->qk(st->qt, kb + ca * p->ks[2], p->ks[2], n, (int)p->D, s);
    /* edge keys: [ca, cuts[1]) and [cuts[2], cb), one span when they meet */
    int64_t ea = ca, eb = cb;
    if (st->split) {
        int64_t e1 = ATTN_MIN(cb, st->cuts[1]), e2 = ATTN_MAX(ca, st->cuts[2]);
        if (e1 <= ca)
            ea = e2; /* no left edge here: right edge only */
        else if (e2 >= cb)
            eb = e1; /* no right edge here: left edge only */
        /* else both edges: mask all of [ca, cb) (a tile wider than the middle) */
    }
    if (mods || ea < eb) score_mods(p, b, h, st->i0, st->mr, s, ca, cb, st->lo, st->hi, ea, eb);
    kn->softmax(s, n, st->m, st->l, st->alpha);
    if (p->dropout_p > 0.0f)
        for (int64_t j = ca; j < cb; j++)
            for (int r = 0; r < st->mr; r++)
                s[(j - ca) * ATTN_MR + r] *= attn__dropout_factor(p, b, h, st->i0 + r, j);
    kn->pv(s, n, vb + ca * p->vs[2], p->vs[2], (int)p->Dv, st->alpha, st->ot);
}

/* Rows, visible keys and packed queries of the strip starting at row i0. */
static void strip_init(const attn__sdpa_plan *p, const attn_kernels *kn, int64_t b, int64_t h,
                       int64_t i0, float *mem, strip *st) {
    const int D = (int)p->D, Dv = (int)p->Dv;
    st->i0 = i0;
    st->mr = (int)ATTN_MIN((int64_t)ATTN_MR, p->T - i0);
    st->qt = mem;
    st->ot = st->qt + attn__round16((size_t)D * ATTN_MR);
    st->m = st->ot + attn__round16((size_t)Dv * ATTN_MR);
    st->l = st->m + ATTN_MR;
    st->alpha = st->l + ATTN_MR;
    int64_t slo = INT64_MAX, shi = INT64_MIN, maxlo = INT64_MIN, minhi = INT64_MAX;
    int any_empty = 0;
    for (int r = 0; r < ATTN_MR; r++) {
        st->m[r] = -INFINITY;
        st->l[r] = 0.0f;
        st->lo[r] = st->hi[r] = 0;
        if (r >= st->mr) continue;
        attn__row_range(p, b, i0 + r, &st->lo[r], &st->hi[r]);
        if (st->hi[r] <= st->lo[r]) {
            any_empty = 1;
            continue;
        }
        slo = ATTN_MIN(slo, st->lo[r]);
        shi = ATTN_MAX(shi, st->hi[r]);
        maxlo = ATTN_MAX(maxlo, st->lo[r]);
        minhi = ATTN_MIN(minhi, st->hi[r]);
    }
    memset(st->ot, 0, (size_t)Dv * ATTN_MR * sizeof(float));
    st->live = slo < shi;
    if (!st->live) return;
    kn->pack_q(p->q + b * p->qs[0] + h * p->qs[1] + i0 * p->qs[2], p->qs[2], st->mr, D, p->scale,
               st->qt);
    /* Split the strip's keys [slo, shi) at maxlo and minhi: only the two
     * edges (each at most the rows' spread wide) need per-element masks;
     * the middle is full tiles. */
    st->split = !any_empty && maxlo < minhi;
    st->cuts[0] = st->cuts[1] = slo;
    st->cuts[2] = st->cuts[3] = shi;
    if (st->split) {
        st->cuts[1] = maxlo;
        st->cuts[2] = minhi;
    }
}

/* out = O / l, lse = m + log(l); rows with no visible key get 0 and -inf. */
static void strip_finish(const attn__sdpa_plan *p, int64_t b, int64_t h, const strip *st) {
    const int Dv = (int)p->Dv;
    for (int r = 0; r < st->mr; r++) {
        int64_t i = st->i0 + r;
        float *dst = p->out + b * p->os[0] + h * p->os[1] + i * p->os[2];
        const float *src = st->ot + r; /* src[c*MR] is column c */
        if (st->m[r] == -INFINITY) {
            memset(dst, 0, (size_t)Dv * sizeof(float));
        } else {
            float inv = 1.0f / st->l[r];
            for (int c = 0; c < Dv; c++)
                dst[c] = src[(size_t)c * ATTN_MR] * inv;
        }
        if (p->lse) {
            float *le = p->lse + b * p->ls[0] + h * p->ls[1] + i * p->ls[2];
            *le = st->m[r] == -INFINITY ? -INFINITY : st->m[r] + logf(st->l[r]);
        }
    }
}

/* A task: up to ATTN_G consecutive strips of one (batch, head). They walk the
 * keys together, one block of ATTN_BK keys at a time, so each block of K and
 * V comes from memory once and is reused from cache by every strip. Blocks are
 * aligned to multiples of ATTN_BK and cut at each strip's part boundaries, so
 * a strip's tiles (and so its arithmetic) do not depend on its task's other
 * strips: the grouping can change with the thread count, results do not. */
static void run_task(const attn__sdpa_plan *p, const attn_kernels *kn, const task *t, float *ws) {
    const int64_t b = t->b, h = t->h;
    float *s = ws; /* [BK][MR] */
    float *mem = s + (size_t)ATTN_BK * ATTN_MR;
    strip st[ATTN_G];
    int64_t ulo = INT64_MAX, uhi = INT64_MIN;
    for (int g = 0; g < t->ns; g++) {
        strip_init(p, kn, b, h, t->i0 + (int64_t)g * ATTN_MR, mem + g * strip_floats(p), &st[g]);
        if (!st[g].live) continue;
        ulo = ATTN_MIN(ulo, st[g].cuts[0]);
        uhi = ATTN_MAX(uhi, st[g].cuts[3]);
    }
    for (int64_t kb = ulo < uhi ? ulo / ATTN_BK * ATTN_BK : uhi; kb < uhi; kb += ATTN_BK) {
        int64_t ke = kb + ATTN_BK;
        for (int g = 0; g < t->ns; g++) {
            const strip *sg = &st[g];
            if (!sg->live) continue;
            int64_t ca = ATTN_MAX(kb, sg->cuts[0]), cb = ATTN_MIN(ke, sg->cuts[3]);
            if (ca < cb) tile(p, kn, b, h, sg, ca, cb, s);
        }
    }
    for (int g = 0; g < t->ns; g++)
        strip_finish(p, b, h, &st[g]);
}

attn_status attn_sdpa_forward(attn_ctx *ctx, const attn_sdpa_args *a) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    attn__sdpa_plan p;
    attn_status st = attn__sdpa_plan_make(ctx, a, 0, &p);
    if (st) return st;
    if (p.T == 0) return ATTN_OK;

    const attn_kernels *kn = attn__kernels();
    const int64_t nqb = (p.T + ATTN_MR - 1) / ATTN_MR; /* strips per (batch, head) */
    /* Strips per task: as many as fit ATTN_G_BYTES, fewer when the threads
     * would otherwise get under ~8 tasks each (results do not depend on this). */
    size_t sb = strip_floats(&p) * sizeof(float);
    int gs = (int)ATTN_MAX((size_t)1, ATTN_MIN((size_t)ATTN_G, ATTN_G_BYTES / sb));
    while (gs > 1 && ctx->nthreads > 1 && p.B * p.H * ((nqb + gs - 1) / gs) < 8 * ctx->nthreads)
        gs--;
    const int64_t tph = (nqb + gs - 1) / gs; /* tasks per (batch, head) */
    const int64_t ntask = p.B * p.H * tph;
    task *tasks = malloc((size_t)ntask * sizeof *tasks);
    if (!tasks)
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %lld tasks", (long long)ntask);
    int64_t n = 0;
    for (int64_t b = 0; b < p.B; b++)
        for (int64_t h = 0; h < p.H; h++)
            for (int64_t tb = 0; tb < tph; tb++) {
                task *t = &tasks[n++];
                t->b = b, t->h = h, t->i0 = tb * gs * ATTN_MR;
                int64_t last = ATTN_MIN(t->i0 + (int64_t)gs * ATTN_MR, p.T);
                t->ns = (int)((last - t->i0 + ATTN_MR - 1) / ATTN_MR);
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
    st = attn__ws_reserve(ctx, nth, ws_floats(&p, gs) * sizeof(float));
    if (st) {
        free(tasks);
        return st;
    }
    if (nth == 1) {
        for (int64_t t = 0; t < ntask; t++)
            run_task(&p, kn, &tasks[t], attn__ws_get(ctx, 0));
    } else {
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1)
        for (int64_t t = 0; t < ntask; t++)
            run_task(&p, kn, &tasks[t], attn__ws_get(ctx, omp_get_thread_num()));
    }
    free(tasks);
    return ATTN_OK;
}
