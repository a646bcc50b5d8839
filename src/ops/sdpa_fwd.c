/* Scaled dot-product attention, forward: tiled, online softmax, nothing of
 * size T x S allocated.
 *
 * A strip is up to mr query rows of one (batch, head) (mr, like the key
 * block bk, comes from the kernel family's descriptor, kernels/arch.h; a
 * span's rows are cut into strips of equal height, attn__fwd_strip_rows,
 * and a strip runs at its height rounded up to the family's mrq). It packs its
 * queries once (transposed, pre-scaled), then walks the keys it can see in
 * blocks of bk, straight from the caller's K and V (a task runs up to ATTN_G
 * strips side by side so they share each block while it is in cache; K and V
 * traffic from memory falls by that factor):
 *   s = Q K^T (+ masks);  m' = max(m, rowmax(s));  alpha = exp(m - m')
 *   l' = l*alpha + rowsum(exp(s - m'));  O' = O*alpha + exp(s - m') V
 * and finally out = O / l, lse = m + log(l).
 * Before any arithmetic each strip's keys are classified into segments
 * (ops/sdpa_mask.h): keys in none are skipped, full segments evaluate no
 * mask, so the cost follows the unmasked area. Each task writes disjoint rows with the
 * same arithmetic whatever thread runs it: results do not depend on the
 * thread count. */
#include "kernels/arch.h"
#include "kernels/half.h"
#include "ops/sdpa_mask.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* At most ATTN_G strips per task, sharing each key block while it is in
 * cache, and no more than fit ATTN_G_BYTES of strip state (queries and
 * output accumulators), so the strips and a key block stay in L2. */
#define ATTN_G 16
#define ATTN_G_BYTES (512 * 1024)

typedef struct task {
    int64_t b, h, i0; /* first row */
    int64_t i1;       /* end of the rows: strips from i0 by attn__fwd_strip_next */
    int ns;           /* strips (1..ATTN_G) */
    double cost;
} task;

/* The tasks of one (batch, head) together, heaviest first within it: they
 * read the same K and V, which then stay in L3 (8 MiB at S = 16384, D = 64)
 * while the head is computed. Heaviest first over all tasks put the same
 * query block of every head side by side (a layout broadcast over heads
 * gives them one cost), so each task read its keys from another head's
 * K and V, all of them together beyond L3. The last tasks are still the
 * lightest ones of the last head, for the threads' balance. */
static int task_cmp(const void *x, const void *y) {
    const task *a = x, *b = y;
    if (a->b != b->b) return a->b < b->b ? -1 : 1;
    if (a->h != b->h) return a->h < b->h ? -1 : 1;
    if (a->cost != b->cost) return a->cost < b->cost ? 1 : -1; /* heaviest first */
    return a->i0 < b->i0 ? -1 : (a->i0 > b->i0);
}

/* The geometry of one call: the family's kernels and tile sizes. */
typedef struct geom {
    const attn_kernels *kn;
    int MR;     /* query rows per strip, at most */
    int64_t BK; /* keys per block */
    int Q;      /* strip heights the kernels take: multiples of Q up to MR */
} geom;

/* One strip's state inside a task. */
typedef struct strip {
    int live; /* some row sees a key */
    int R;    /* the kernels' height: sm.mr rounded up to Q */
    int cur[2]; /* first segment ending after the block computed (0), looked
                 * ahead at (1): the blocks only move on */
    attn__strip_mask sm;
    float *qt, *ot, *m, *l, *alpha;
} strip;

/* Floats of one strip's state: qt [D][MR], ot [Dv][MR], m, l, alpha [MR],
 * the rows' key intervals (2 x MR int64) and the key segments (a shorter
 * strip uses the first R of each). */
static size_t strip_floats(const attn__sdpa_plan *p, const geom *g) {
    return attn__round16((size_t)p->D * g->MR) + attn__round16((size_t)p->Dv * g->MR) +
           attn__round16(3 * (size_t)g->MR) + attn__round16(4 * (size_t)g->MR) +
           attn__mask_seg_floats(p);
}

/* RoPE scratch of one thread: a rotated key block [BK][D], a strip's
 * rotated queries [MR][D] (before packing) and the rotation's scratch. */
static size_t rope_floats(const attn__sdpa_plan *p, const geom *g) {
    if (!p->rope && !p->pg) return 0;
    return attn__round16((size_t)g->BK * p->D) + attn__round16((size_t)g->MR * p->D) +
           attn__round16(2 * attn__rope_tmp_doubles(p->rope ? p->rs.rot : 2)) +
           (p->pg ? attn__round16((size_t)g->BK * p->Dv) : 0);
}

/* Rows [a, e) of kv head hk of a paged cache as float32 into dst (row
 * stride W): the cache's block table walked block by block. */
static void paged_gather(const attn__paged *pg, const void *pool, int64_t hk, int64_t W, int64_t a,
                         int64_t e, float *dst) {
    const size_t es = pg->dt == ATTN__KV_F32 ? 4 : 2;
    for (int64_t j = a; j < e; j++) {
        const int64_t blk = pg->tab[j / pg->bs];
        const char *row = (const char *)pool + (size_t)(((hk * pg->nblocks + blk) * pg->bs + j % pg->bs) * W) * es;
        float *d = dst + (j - a) * W;
        if (pg->dt == ATTN__KV_F32) {
            memcpy(d, row, (size_t)W * 4);
        } else if (pg->dt == ATTN__KV_F16) {
            for (int64_t c = 0; c < W; c++)
                d[c] = attn__h2f(((const uint16_t *)row)[c]);
        } else {
            for (int64_t c = 0; c < W; c++)
                d[c] = attn__bf2f(((const uint16_t *)row)[c]);
        }
    }
}

/* Workspace floats one thread needs: the score tile, the RoPE scratch and
 * gs strips. */
static size_t ws_floats(const attn__sdpa_plan *p, const geom *g, int gs) {
    return attn__round16((size_t)g->BK * g->MR) + rope_floats(p, g) +
           (size_t)gs * strip_floats(p, g);
}

/* Where a tile reads its keys: row j at kp + (j - k0) * kst (the caller's K,
 * or a rotated key block). */
typedef struct ksrc {
    const float *kp;
    int64_t k0, kst;
    const float *vp; /* values the same way: row j at vp + (j - v0) * vst */
    int64_t v0, vst;
} ksrc;

/* One (strip, key range) tile: scores, score rules, online softmax, P*V. */
static void tile(const attn__sdpa_plan *p, const geom *g, const strip *st, const ksrc *ks,
                 int64_t ca, int64_t cb, float *s) {
    const int64_t b = st->sm.b, h = st->sm.h;
    const int n = (int)(cb - ca), MR = st->R;
    g->kn->qk(st->qt, MR, ks->kp + (ca - ks->k0) * ks->kst, ks->kst, n, (int)p->D, s);
    attn__mask_tile(p, &st->sm, s, NULL, MR, ca, cb);
    g->kn->softmax(s, MR, n, st->m, st->l, st->alpha);
    if (p->dropout_p > 0.0f)
        for (int64_t j = ca; j < cb; j++)
            for (int r = 0; r < st->sm.mr; r++)
                s[(j - ca) * MR + r] *= attn__dropout_factor(p, b, h, st->sm.i0 + r, j);
    g->kn->pv(s, MR, n, ks->vp + (ca - ks->v0) * ks->vst, ks->vst, (int)p->Dv, st->alpha, st->ot);
}

/* Cursor c of strip st moved to its first segment ending after key kb. */
static int strip_seek(strip *st, int c, int64_t kb) {
    while (st->cur[c] < st->sm.nseg && st->sm.seg[st->cur[c]].b <= kb)
        st->cur[c]++;
    return st->cur[c];
}

/* Tiles of a strip inside the key block [kb, ke): each run of adjacent
 * segments, cut to the block (today's rules give one run). The segments
 * before the block are passed over once, not for every block (a layout of
 * 64-key blocks gave a strip ~30 runs to walk for each of 256 blocks). */
static void strip_block(const attn__sdpa_plan *p, const geom *g, strip *st, const ksrc *ks,
                        int64_t kb, int64_t ke, float *s) {
    const attn__seg *sg = st->sm.seg;
    const int ns = st->sm.nseg;
    for (int k = strip_seek(st, 0, kb); k < ns && sg[k].a < ke;) {
        int64_t a = sg[k].a, e = sg[k].b;
        while (++k < ns && sg[k].a == e && e < ke)
            e = sg[k].b;
        int64_t ca = ATTN_MAX(kb, a), cb = ATTN_MIN(ke, e);
        if (ca < cb) tile(p, g, st, ks, ca, cb, s);
    }
}

/* The keys of [kb, ke) some live strip computes: [*a, *e), empty if none. */
static void block_keys(strip *st, int ns, int64_t kb, int64_t ke, int64_t *a, int64_t *e) {
    *a = ke, *e = kb;
    for (int i = 0; i < ns; i++) {
        if (!st[i].live) continue;
        const attn__seg *sg = st[i].sm.seg;
        for (int k = strip_seek(&st[i], 1, kb); k < st[i].sm.nseg && sg[k].a < ke; k++) {
            int64_t ca = ATTN_MAX(kb, sg[k].a), cb = ATTN_MIN(ke, sg[k].b);
            if (ca < cb) *a = ATTN_MIN(*a, ca), *e = ATTN_MAX(*e, cb);
        }
    }
}

/* From block *kb (a multiple of bk) on, the first block some live strip
 * computes keys of, before uhi: *kb moved there, its keys [*a, *e);
 * *kb >= uhi when none is left. An empty block jumps to the block of the
 * strips' next segment. */
static void next_block(strip *st, int ns, int64_t bk, int64_t uhi, int64_t *kb, int64_t *a,
                       int64_t *e) {
    while (*kb < uhi) {
        block_keys(st, ns, *kb, *kb + bk, a, e);
        if (*a < *e) return;
        int64_t nx = uhi;
        for (int i = 0; i < ns; i++) {
            if (!st[i].live) continue;
            const int k = strip_seek(&st[i], 1, *kb + bk);
            if (k < st[i].sm.nseg) nx = ATTN_MIN(nx, st[i].sm.seg[k].a);
        }
        *kb = ATTN_MAX(*kb + bk, nx / bk * bk);
    }
}

/* Ask for n rows of w floats (row stride rs) in cache, 64 bytes at a time,
 * to read them, or to write them. */
static void prefetch_rows(const float *x, int64_t rs, int64_t n, int64_t w) {
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < w; c += 16)
            __builtin_prefetch(x + j * rs + c, 0, 2);
}
static void prefetch_rows_w(float *x, int64_t rs, int64_t n, int64_t w) {
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < w; c += 16)
            __builtin_prefetch(x + j * rs + c, 1, 2);
}

/* Rows, key segments and packed queries of the strip of rows [i0, i1)
 * (at most MR of them), at its height R. */
static void strip_init(const attn__sdpa_plan *p, const geom *g, int64_t b, int64_t h, int64_t i0,
                       int64_t i1, float *mem, float *rq, double *rtmp, strip *st) {
    const int D = (int)p->D, Dv = (int)p->Dv, MR = g->MR;
    const int mr = (int)ATTN_MIN((int64_t)MR, i1 - i0);
    const int R = (mr + g->Q - 1) / g->Q * g->Q;
    st->R = R;
    st->qt = mem;
    st->ot = st->qt + attn__round16((size_t)D * MR);
    st->m = st->ot + attn__round16((size_t)Dv * MR);
    st->l = st->m + MR;
    st->alpha = st->l + MR;
    st->sm.lo = (int64_t *)(st->m + attn__round16(3 * (size_t)MR));
    st->sm.hi = st->sm.lo + MR;
    st->sm.seg =
        (attn__seg *)(st->m + attn__round16(3 * (size_t)MR) + attn__round16(4 * (size_t)MR));
    for (int r = 0; r < R; r++) {
        st->m[r] = -INFINITY;
        st->l[r] = 0.0f;
    }
    attn__mask_strip(p, b, h, i0, mr, &st->sm);
    memset(st->ot, 0, (size_t)Dv * R * sizeof(float));
    st->live = st->sm.nseg > 0;
    st->cur[0] = st->cur[1] = 0;
    if (!st->live) return;
    const float *q = p->q + b * p->qs[0] + h * p->qs[1] + i0 * p->qs[2];
    int64_t qs = p->qs[2];
    if (p->rope) { /* rotate the strip's rows, then pack them */
        attn__rope_rows(&p->rs, q, qs, rq, D, mr, D, attn__rope_qpos(p, b) + i0, 0, rtmp);
        q = rq, qs = D;
    }
    g->kn->pack_q(q, qs, mr, R, D, p->scale, st->qt);
}

/* out = O / l, lse = m + log(l); rows with no visible key get 0 and -inf. */
static void strip_finish(const attn__sdpa_plan *p, const geom *g, const strip *st) {
    const int Dv = (int)p->Dv;
    const int64_t b = st->sm.b, h = st->sm.h;
    float *out = p->out + b * p->os[0] + h * p->os[1] + st->sm.i0 * p->os[2];
    for (int r = 0; r < st->sm.mr; r++) /* alpha is free now: 1 / l */
        st->alpha[r] = st->m[r] == -INFINITY ? 0.0f : 1.0f / st->l[r];
    g->kn->unpack_o(st->ot, st->R, st->sm.mr, Dv, st->alpha, out, p->os[2]);
    for (int r = 0; r < st->sm.mr; r++) {
        int64_t i = st->sm.i0 + r;
        if (st->m[r] == -INFINITY) /* zeros, whatever the accumulator holds */
            memset(out + r * p->os[2], 0, (size_t)Dv * sizeof(float));
        if (p->lse) {
            float *le = p->lse + b * p->ls[0] + h * p->ls[1] + i * p->ls[2];
            *le = st->m[r] == -INFINITY ? -INFINITY : st->m[r] + logf(st->l[r]);
        }
    }
}

/* A task: up to ATTN_G consecutive strips of one (batch, head). They walk the
 * keys together, one block of BK keys at a time, so each block of K and V
 * comes from memory once and is reused from cache by every strip. Blocks are
 * aligned to multiples of BK and cut at each strip's first and last key, so
 * a strip's tiles (and so its arithmetic) do not depend on its task's other
 * strips: the grouping can change with the thread count, results do not. */
static void run_task(const attn__sdpa_plan *p, const geom *g, const task *t, const task *next,
                     float *ws) {
    float *s = ws; /* [BK][MR] */
    float *rk = s + attn__round16((size_t)g->BK * g->MR); /* RoPE: [BK][D], [MR][D], scratch */
    float *rq = rk + attn__round16((size_t)g->BK * p->D);
    double *rtmp = (double *)(rq + attn__round16((size_t)g->MR * p->D));
    float *mem = rk + rope_floats(p, g);
    const size_t sf = strip_floats(p, g);
    strip st[ATTN_G];
    int64_t ulo = INT64_MAX, uhi = INT64_MIN;
    int64_t r0 = t->i0;
    for (int k = 0; k < t->ns; k++) {
        const int64_t r1 = attn__fwd_strip_next(p, g->MR, g->Q, r0);
        strip_init(p, g, t->b, t->h, r0, r1, mem + k * sf, rq, rtmp, &st[k]);
        r0 = r1;
        if (!st[k].live) continue;
        ulo = ATTN_MIN(ulo, attn__mask_first(&st[k].sm));
        uhi = ATTN_MAX(uhi, attn__mask_last(&st[k].sm));
    }
    const int64_t hk = t->h / p->group;
    float *rv = (float *)rtmp + attn__round16(2 * attn__rope_tmp_doubles(p->rope ? p->rs.rot : 2));
    ksrc ks = {p->k + t->b * p->ks[0] + hk * p->ks[1], 0, p->ks[2],
               p->v + t->b * p->vs[0] + hk * p->vs[1], 0, p->vs[2]};
    /* Blocks no strip computes are passed over; while the strips compute
     * one block, the next one's keys and values are fetched when it does
     * not follow on (a query block of a sparse layout shares each key block
     * among only its 2-4 strips, not 16, so waiting for it from memory
     * showed; consecutive blocks the hardware streams by itself, and asking
     * for them too cost ~3% of a Longformer forward). */
    const int pf = !p->rope_k && !p->pg;
    /* the next task's queries and output rows, for its packing and its
     * results (strips of ~560 keys waited ~4% of their time on each from
     * memory) */
    if (next) {
        prefetch_rows(p->q + next->b * p->qs[0] + next->h * p->qs[1] + next->i0 * p->qs[2],
                      p->qs[2], next->i1 - next->i0, p->D);
        prefetch_rows_w(p->out + next->b * p->os[0] + next->h * p->os[1] + next->i0 * p->os[2],
                        p->os[2], next->i1 - next->i0, p->Dv);
    }
    int64_t kb = ulo < uhi ? ulo / g->BK * g->BK : uhi, a, e;
    next_block(st, t->ns, g->BK, uhi, &kb, &a, &e);
    while (kb < uhi) {
        int64_t nkb = kb + g->BK, na, ne;
        next_block(st, t->ns, g->BK, uhi, &nkb, &na, &ne);
        if (pf && nkb < uhi && nkb != kb + g->BK) {
            prefetch_rows(ks.kp + na * ks.kst, ks.kst, ne - na, p->D);
            prefetch_rows(ks.vp + na * ks.vst, ks.vst, ne - na, p->Dv);
        }
        if (p->rope_k || p->pg) { /* the keys of the block the strips compute, once */
            if (p->pg) { /* gathered through the block table, as float32 */
                paged_gather(p->pg, p->pg->kpool, hk, p->D, a, e, rk);
                paged_gather(p->pg, p->pg->vpool, hk, p->Dv, a, e, rv);
                ks = (ksrc){rk, a, p->D, rv, a, p->Dv};
            }
            if (p->rope_k) { /* rotated */
                const float *src = p->pg ? rk : p->k + t->b * p->ks[0] + hk * p->ks[1] + a * p->ks[2];
                attn__rope_rows(&p->rs, src, p->pg ? p->D : p->ks[2], rk, p->D, (int)(e - a),
                                (int)p->D, attn__rope_kpos(p, t->b) + a, 0, rtmp);
                ks.kp = rk, ks.k0 = a, ks.kst = p->D;
            }
        }
        for (int k = 0; k < t->ns; k++)
            if (st[k].live) strip_block(p, g, &st[k], &ks, kb, kb + g->BK, s);
        kb = nkb, a = na, e = ne;
    }
    for (int k = 0; k < t->ns; k++)
        strip_finish(p, g, &st[k]);
}

static attn_status sdpa_forward(attn_ctx *ctx, const attn_sdpa_args *a) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    attn__sdpa_plan p;
    attn_status st = attn__sdpa_plan_make(ctx, a, 0, &p);
    if (st) return st;
    return attn__sdpa_forward_plan(ctx, &p);
}

static attn_status forward_plan(attn_ctx *ctx, const attn__sdpa_plan *pp);

attn_status attn__sdpa_forward_plan(attn_ctx *ctx, const attn__sdpa_plan *pp) {
    if (pp->T == 0) return ATTN_OK;
    attn__sdpa_plan p = *pp;
    attn__glob glob; /* the global tokens' index, for this call */
    attn_status st = attn__mask_glob_build(ctx, &p, &glob);
    if (st) return st;
    st = forward_plan(ctx, &p);
    attn__mask_glob_free(&glob);
    return st;
}

static attn_status forward_plan(attn_ctx *ctx, const attn__sdpa_plan *pp) {
    const attn__sdpa_plan p = *pp;
    attn_status st;

    const geom g = {&ctx->arch->fwd, ctx->arch->mr, ctx->arch->bk, ctx->arch->mrq};
    /* Rows are cut into spans (attn__row_span), and each span into strips
     * (attn__fwd_strip_next); the strips are the same in every (batch,
     * head), so they are walked once here. */
    const int64_t span = attn__row_span(&p);
    int64_t nqb = 0; /* strips per (batch, head) */
    for (int64_t i = 0; i < p.T; i = attn__fwd_strip_next(&p, g.MR, g.Q, i))
        nqb++;
    /* Strips per task: as many as fit ATTN_G_BYTES, fewer when the threads
     * would otherwise get under ~8 tasks each (results do not depend on this). */
    size_t sb = strip_floats(&p, &g) * sizeof(float);
    int gs = (int)ATTN_MAX((size_t)1, ATTN_MIN((size_t)ATTN_G, ATTN_G_BYTES / sb));
    while (gs > 1 && ctx->nthreads > 1 && p.B * p.H * ((nqb + gs - 1) / gs) < 8 * ctx->nthreads)
        gs--;
    /* The row ranges of the tasks of one (batch, head): up to gs
     * consecutive strips of one span. Twice: count, then fill. */
    task *rows = NULL;
    int64_t nrt = 0;
    for (int pass = 0; pass < 2; pass++) {
        nrt = 0;
        for (int64_t i = 0; i < p.T;) {
            const int64_t s1 = ATTN_MIN((i / span + 1) * span, p.T);
            int64_t e = i;
            int ns = 0;
            while (ns < gs && e < s1)
                e = attn__fwd_strip_next(&p, g.MR, g.Q, e), ns++;
            if (pass) rows[nrt] = (task){.i0 = i, .i1 = e, .ns = ns};
            nrt++;
            i = e;
        }
        if (!pass && !(rows = malloc((size_t)ATTN_MAX(nrt, 1) * sizeof *rows)))
            return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %lld tasks", (long long)nrt);
    }
    const int64_t ntask = p.B * p.H * nrt;
    task *tasks = malloc((size_t)ntask * sizeof *tasks);
    if (!tasks) {
        free(rows);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %lld tasks", (long long)ntask);
    }
    int64_t n = 0;
    for (int64_t b = 0; b < p.B; b++)
        for (int64_t h = 0; h < p.H; h++)
            for (int64_t r = 0; r < nrt; r++) {
                task *t = &tasks[n++];
                *t = rows[r];
                t->b = b, t->h = h;
                /* the work of each strip's middle row times its rows: the
                 * order of the tasks only (a row each was 3.5% of a sparse
                 * forward with 64-key blocks) */
                double cost = 0.0;
                for (int64_t i = t->i0, e; i < t->i1; i = e) {
                    e = attn__fwd_strip_next(&p, g.MR, g.Q, i);
                    cost += (double)(e - i) * ((double)attn__row_keys(&p, b, h, (i + e) / 2) + 1.0);
                }
                t->cost = cost;
            }
    free(rows);
    const int64_t ntask_made = n;
    qsort(tasks, (size_t)ntask_made, sizeof *tasks, task_cmp);

    int nth = (int)ATTN_MIN((int64_t)ctx->nthreads, ntask_made);
    if (nth < 1) nth = 1;
    st = attn__ws_reserve(ctx, nth, ws_floats(&p, &g, gs) * sizeof(float));
    if (st) {
        free(tasks);
        return st;
    }
    if (nth == 1) {
        for (int64_t t = 0; t < ntask_made; t++)
            run_task(&p, &g, &tasks[t], t + 1 < ntask_made ? &tasks[t + 1] : NULL,
                     attn__ws_get(ctx, 0));
    } else {
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1)
        for (int64_t t = 0; t < ntask_made; t++)
            run_task(&p, &g, &tasks[t], t + 1 < ntask_made ? &tasks[t + 1] : NULL,
                     attn__ws_get(ctx, omp_get_thread_num()));
    }
    free(tasks);
    return ATTN_OK;
}

attn_status attn_sdpa_forward(attn_ctx *ctx, const attn_sdpa_args *a) {
    if (!ctx) return ATTN_E_ARG;
    if (attn__ctx_enter(ctx)) return ATTN_E_BUSY; /* another thread's ctx: write nothing */
    attn_status st = sdpa_forward(ctx, a);
    attn__ctx_leave(ctx);
    return st;
}
