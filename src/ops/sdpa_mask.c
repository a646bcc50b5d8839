/* Score rules of the fast path (see sdpa_mask.h): strip classification,
 * score modifications, and the FLOP count that follows the same rules. */
#include "ops/sdpa_mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The interval rules' segments of the strip (at most three) into g. */
static int interval_segments(const attn__sdpa_plan *p, attn__strip_mask *sm, attn__seg *g) {
    int64_t slo = INT64_MAX, shi = INT64_MIN, maxlo = INT64_MIN, minhi = INT64_MAX;
    int any_empty = 0, n = 0;
    for (int r = 0; r < sm->mr; r++) {
        attn__row_range(p, sm->b, sm->i0 + r, &sm->lo[r], &sm->hi[r]);
        if (sm->hi[r] <= sm->lo[r]) {
            any_empty = 1;
            continue;
        }
        slo = ATTN_MIN(slo, sm->lo[r]);
        shi = ATTN_MAX(shi, sm->hi[r]);
        maxlo = ATTN_MAX(maxlo, sm->lo[r]);
        minhi = ATTN_MIN(minhi, sm->hi[r]);
    }
    if (slo >= shi) return 0;
    /* Every row sees [maxlo, minhi) when no row is empty: that middle is
     * full; the edge bands on either side are at most the rows' spread
     * wide and need the per-row rule. */
    if (any_empty || maxlo >= minhi) {
        g[n++] = (attn__seg){slo, shi, ATTN__SEG_PARTIAL};
        return n;
    }
    if (slo < maxlo) g[n++] = (attn__seg){slo, maxlo, ATTN__SEG_PARTIAL};
    g[n++] = (attn__seg){maxlo, minhi, ATTN__SEG_FULL};
    if (minhi < shi) g[n++] = (attn__seg){minhi, shi, ATTN__SEG_PARTIAL};
    return n;
}

/* Append [a, b) of kind to the strip's segments, merged with the last one
 * when they touch and agree. */
static void push(attn__strip_mask *sm, int64_t a, int64_t b, int kind) {
    if (!kind || a >= b) return; /* nothing seen */
    attn__seg *l = sm->nseg ? &sm->seg[sm->nseg - 1] : NULL;
    if (l && l->b == a && l->kind == kind)
        l->b = b;
    else
        sm->seg[sm->nseg++] = (attn__seg){a, b, kind};
}

attn_status attn__mask_glob_build(attn_ctx *ctx, attn__sdpa_plan *p, attn__glob *g) {
    memset(g, 0, sizeof *g);
    p->glob = NULL;
    if (!p->gtok) return ATTN_OK;
    const int64_t nb = p->gtb ? p->B : 1, S = p->S;
    g->nb = nb;
    g->cnt = malloc((size_t)(nb * (S + 1)) * sizeof *g->cnt);
    g->roff = malloc((size_t)(nb + 1) * sizeof *g->roff);
    if (!g->cnt || !g->roff) goto nomem;
    /* prefix counts, and the runs each row needs (a gap of ATTN__GLOB_GAP
     * or more keys starts a new run) */
    int64_t nrun = 0;
    for (int64_t r = 0; r < nb; r++) {
        const uint8_t *m = p->gtok + r * p->gtb;
        int32_t *c = g->cnt + r * (S + 1);
        int64_t last = INT64_MIN / 2, n = 0;
        c[0] = 0;
        for (int64_t j = 0; j < S; j++) {
            c[j + 1] = c[j] + (m[j] != 0);
            if (!m[j]) continue;
            if (j - last > ATTN__GLOB_GAP) n++;
            last = j;
        }
        g->roff[r] = nrun;
        nrun += n;
        g->maxruns = ATTN_MAX(g->maxruns, n);
    }
    g->roff[nb] = nrun;
    g->run = malloc((size_t)ATTN_MAX(nrun, 1) * sizeof *g->run);
    if (!g->run) goto nomem;
    for (int64_t r = 0; r < nb; r++) {
        const uint8_t *m = p->gtok + r * p->gtb;
        const int32_t *c = g->cnt + r * (S + 1);
        attn__grun *u = g->run + g->roff[r];
        int64_t k = -1;
        for (int64_t j = 0; j < S; j++) {
            if (!m[j]) continue;
            if (k < 0 || j - (u[k].e - 1) > ATTN__GLOB_GAP) u[++k] = (attn__grun){j, j + 1, 1};
            u[k].e = j + 1;
        }
        for (int64_t q = 0; q <= k; q++)
            u[q].pure = c[u[q].e] - c[u[q].a] == u[q].e - u[q].a;
    }
    p->glob = g;
    return ATTN_OK;
nomem:
    attn__mask_glob_free(g);
    return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for the global-token index (S=%lld)",
                         (long long)S);
}

void attn__mask_glob_free(attn__glob *g) {
    free(g->cnt);
    free(g->roff);
    free(g->run);
    memset(g, 0, sizeof *g);
}

/* A FULL segment shorter than this next to a PARTIAL one is made PARTIAL
 * (the per-key rule then keeps its keys): fewer, longer tiles. */
#define SHORT_FULL 16

/* push, and fold short FULL pieces into touching PARTIAL ones. */
static void push_merge(attn__strip_mask *sm, int64_t a, int64_t e, int kind) {
    attn__seg *l = sm->nseg ? &sm->seg[sm->nseg - 1] : NULL;
    if (l && l->b == a && l->kind != kind) {
        if (kind == ATTN__SEG_FULL && l->kind == ATTN__SEG_PARTIAL && e - a < SHORT_FULL) {
            l->b = e;
            return;
        }
        if (l->kind == ATTN__SEG_FULL && kind == ATTN__SEG_PARTIAL && l->b - l->a < SHORT_FULL) {
            l->kind = ATTN__SEG_PARTIAL;
            l->b = e;
            attn__seg *m = sm->nseg > 1 ? &sm->seg[sm->nseg - 2] : NULL;
            if (m && m->b == l->a && m->kind == ATTN__SEG_PARTIAL) {
                m->b = e;
                sm->nseg--;
            }
            return;
        }
    }
    push(sm, a, e, kind);
}

/* What a class of the strip's rows does with a piece of keys: ALL = every
 * row sees every key of it, ANY = some row may see some key (a conservative
 * yes is allowed, a wrong ALL is not). */
typedef struct seen {
    int all, any;
} seen;

/* The strip under global tokens. Rows are split into global queries (Q:
 * they see their base interval [0, bhi)) and the others (N: the global keys
 * of [0, bhi) plus their interval [lo, hi) where the layout computes). The
 * key axis is cut at the aggregates of both classes' interval ends and at
 * the global runs; inside a piece every class's ALL and ANY follow from the
 * aggregates alone, for a layout block on and for one off. */
static void strip_global(const attn__sdpa_plan *p, attn__strip_mask *sm) {
    const int64_t b = sm->b;
    int64_t qmin = INT64_MAX, qmax = INT64_MIN; /* Q: min and max of bhi */
    int64_t nmin = INT64_MAX, nmax = INT64_MIN; /* N: min and max of bhi */
    int64_t lmin = INT64_MAX, lmax = INT64_MIN, hmin = INT64_MAX, hmax = INT64_MIN;
    int nq = 0, nn = 0, nempty = 0; /* nempty: an N row with an empty interval */
    for (int r = 0; r < sm->mr; r++) {
        const int64_t i = sm->i0 + r;
        attn__row_range(p, b, i, &sm->lo[r], &sm->hi[r]);
        const int64_t bh = ATTN_MAX(0, attn__row_base_hi(p, b, i));
        if (attn__glob_query(p, b, i)) {
            nq++, qmin = ATTN_MIN(qmin, bh), qmax = ATTN_MAX(qmax, bh);
            continue;
        }
        nn++, nmin = ATTN_MIN(nmin, bh), nmax = ATTN_MAX(nmax, bh);
        if (sm->hi[r] <= sm->lo[r]) {
            nempty = 1;
            continue;
        }
        lmin = ATTN_MIN(lmin, sm->lo[r]), lmax = ATTN_MAX(lmax, sm->lo[r]);
        hmin = ATTN_MIN(hmin, sm->hi[r]), hmax = ATTN_MAX(hmax, sm->hi[r]);
    }
    const int64_t U = ATTN_MAX(nq ? qmax : 0, nn ? nmax : 0); /* no row sees a key >= U */
    const int64_t cuts[8] = {qmin, qmax, nmin, nmax, lmin, lmax, hmin, hmax};
    const int64_t row = p->gtb ? b : 0;
    const attn__grun *run = p->glob->run + p->glob->roff[row];
    const int64_t nrun = p->glob->roff[row + 1] - p->glob->roff[row];
    const uint8_t *L = p->lay ? p->lay + sm->h * p->lhs : NULL;
    const int64_t qb0 = L ? sm->i0 / p->lbq : 0, qb1 = L ? (sm->i0 + sm->mr - 1) / p->lbq : 0;
    int64_t k = 0;
    for (int64_t x = 0, y; x < U; x = y) {
        y = U;
        for (int c = 0; c < 8; c++)
            if (cuts[c] > x && cuts[c] < y) y = cuts[c];
        while (k < nrun && run[k].e <= x)
            k++;
        int gk = 0; /* the piece's keys: 0 none global, 1 all, 2 some */
        if (k < nrun) {
            if (run[k].a > x) {
                y = ATTN_MIN(y, run[k].a);
            } else {
                y = ATTN_MIN(y, run[k].e);
                gk = run[k].pure ? 1 : 2;
            }
        }
        /* Q rows: by the base interval only */
        const seen q = nq ? (seen){y <= qmin, x < qmax} : (seen){1, 0};
        /* N rows by the base interval (global keys) and by their own intervals */
        const seen nb = nn ? (seen){y <= nmin, x < nmax} : (seen){1, 0};
        const seen nl =
            nn ? (seen){!nempty && lmax <= x && y <= hmin, x < hmax && y > lmin} : (seen){1, 0};
        seen on, off; /* N rows where the layout computes the block, and where not */
        if (gk == 1) {
            on = off = nb;
        } else if (gk == 2) {
            on = (seen){nl.all, nb.any};
            off = (seen){!nn, nb.any};
        } else {
            on = nl;
            off = (seen){!nn, 0};
        }
        on = (seen){on.all && q.all, on.any || q.any};
        off = (seen){off.all && q.all, off.any || q.any};
        if (!L || (on.all == off.all && on.any == off.any)) { /* the layout cannot matter */
            push_merge(sm, x, y, on.all ? ATTN__SEG_FULL : on.any ? ATTN__SEG_PARTIAL : 0);
            continue;
        }
        if (!on.any && !off.any) continue;
        for (int64_t kb = x / p->lbk; kb * p->lbk < y; kb++) {
            int any = 0, all = 1;
            for (int64_t qb = qb0; qb <= qb1; qb++) {
                int v = L[qb * p->lnkb + kb] != 0;
                any |= v, all &= v;
            }
            const seen w = all ? on : !any ? off : (seen){on.all && off.all, on.any || off.any};
            push_merge(sm, ATTN_MAX(x, kb * p->lbk), ATTN_MIN(y, (kb + 1) * p->lbk),
                       w.all   ? ATTN__SEG_FULL
                       : w.any ? ATTN__SEG_PARTIAL
                               : 0);
        }
    }
}

void attn__mask_strip(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i0, int mr,
                      attn__strip_mask *sm) {
    sm->b = b, sm->h = h, sm->i0 = i0, sm->mr = mr;
    sm->nseg = 0;
    if (attn__glob_on(p, b)) {
        strip_global(p, sm);
        return;
    }
    attn__seg g[3];
    int ng = interval_segments(p, sm, g);
    sm->nseg = 0;
    if (!p->lay) {
        for (int k = 0; k < ng; k++)
            sm->seg[sm->nseg++] = g[k];
        return;
    }
    /* Keep the key blocks some query block of the strip computes; FULL only
     * where all of them do and the interval rules say full. */
    const int64_t qb0 = i0 / p->lbq, qb1 = (i0 + mr - 1) / p->lbq;
    const uint8_t *L = p->lay + h * p->lhs;
    for (int k = 0; k < ng; k++) {
        for (int64_t kb = g[k].a / p->lbk; kb * p->lbk < g[k].b; kb++) {
            int any = 0, all = 1;
            for (int64_t qb = qb0; qb <= qb1; qb++) {
                int on = L[qb * p->lnkb + kb] != 0;
                any |= on, all &= on;
            }
            if (!any) continue;
            int64_t a = ATTN_MAX(g[k].a, kb * p->lbk), e = ATTN_MIN(g[k].b, (kb + 1) * p->lbk);
            push(sm, a, e, all && g[k].kind == ATTN__SEG_FULL ? ATTN__SEG_FULL : ATTN__SEG_PARTIAL);
        }
    }
}

/* -inf for keys [ea, eb) that row r does not see: outside its interval, or
 * in a key block its query block does not compute. */
static inline void mask_row_partial(const attn__sdpa_plan *p, const attn__strip_mask *sm, int r,
                                    float *sr, int R, int64_t ea, int64_t eb) {
    if (attn__glob_on(p, sm->b)) { /* global tokens: see the rule in sdpa.h */
        const int64_t i = sm->i0 + r, bh = attn__row_base_hi(p, sm->b, i);
        const int64_t lo = sm->lo[r], hi = sm->hi[r];
        if (attn__glob_query(p, sm->b, i)) {
            for (int64_t j = ATTN_MAX(ea, bh); j < eb; j++)
                sr[j * R] = -INFINITY;
            return;
        }
        const uint8_t *G = p->gtok + sm->b * p->gtb;
        if (!p->lay) {
            for (int64_t j = ea; j < eb; j++)
                if (j >= bh || (!G[j] && (j < lo || j >= hi))) sr[j * R] = -INFINITY;
            return;
        }
        for (int64_t kb = ea / p->lbk; kb * p->lbk < eb; kb++) {
            const int on = attn__layout_on(p, sm->h, i, kb);
            const int64_t a = ATTN_MAX(ea, kb * p->lbk), e = ATTN_MIN(eb, (kb + 1) * p->lbk);
            for (int64_t j = a; j < e; j++)
                if (j >= bh || (!G[j] && !(on && j >= lo && j < hi))) sr[j * R] = -INFINITY;
        }
        return;
    }
    for (int64_t j = ea; j < eb; j++)
        if (j < sm->lo[r] || j >= sm->hi[r]) sr[j * R] = -INFINITY;
    if (!p->lay) return;
    const int64_t i = sm->i0 + r;
    for (int64_t kb = ea / p->lbk; kb * p->lbk < eb; kb++)
        if (!attn__layout_on(p, sm->h, i, kb)) {
            int64_t a = ATTN_MAX(ea, kb * p->lbk), e = ATTN_MIN(eb, (kb + 1) * p->lbk);
            for (int64_t j = a; j < e; j++)
                sr[j * R] = -INFINITY;
        }
}

/* The same without a layout, key by key over the rows (each key's scores
 * of the strip are contiguous in s: one pass over the tile instead of a
 * strided walk per row). s[(j - ca)*R + r]; rows <= 256. The rows' lo, hi
 * and base ends never decrease with the row, so for each key the rows that
 * do not see it are a prefix (its key is past their end) and a suffix (it
 * is before their start): two fills per key, the bounds moved along as the
 * key grows, no test per score. A strip holding a global query row (its
 * interval is lifted, so the order breaks) takes the test per score. */
static void mask_cols_partial(const attn__sdpa_plan *p, const attn__strip_mask *sm, float *s, int R,
                              int64_t ca, int64_t ea, int64_t eb) {
    const int mr = sm->mr;
    const int64_t *lo = sm->lo, *hi = sm->hi;
    const int glob = attn__glob_on(p, sm->b);
    int64_t bh[256], end[256];
    int gq = 0;
    for (int r = 0; r < mr; r++) {
        bh[r] = glob ? attn__row_base_hi(p, sm->b, sm->i0 + r) : hi[r];
        end[r] = ATTN_MIN(hi[r], bh[r]); /* the end of the keys a non-global key needs */
        gq |= glob && attn__glob_query(p, sm->b, sm->i0 + r);
    }
    const uint8_t *G = glob ? p->gtok + sm->b * p->gtb : NULL;
    if (!gq) {
        int ne = 0, nb = 0, ns = 0; /* rows [0, ne) end before j, [0, nb) base-end before j, */
        for (int64_t j = ea; j < eb; j++) { /* [ns, mr) start after j */
            float *col = s + (j - ca) * R;
            while (ne < mr && end[ne] <= j)
                ne++;
            while (nb < mr && bh[nb] <= j)
                nb++;
            while (ns < mr && lo[ns] <= j)
                ns++;
            if (G && G[j]) { /* a global key: only the base rules hide it */
                for (int r = 0; r < nb; r++)
                    col[r] = -INFINITY;
                continue;
            }
            for (int r = 0; r < ne; r++)
                col[r] = -INFINITY;
            for (int r = ns; r < mr; r++)
                col[r] = -INFINITY;
        }
        return;
    }
    /* a global query row sees every key j < bhi; the others a global key j
     * < bhi or their interval */
    int64_t glo[256], ghi[256];
    for (int r = 0; r < mr; r++) {
        const int q = attn__glob_query(p, sm->b, sm->i0 + r);
        glo[r] = q ? INT64_MIN : lo[r], ghi[r] = q ? INT64_MAX : hi[r];
    }
    for (int64_t j = ea; j < eb; j++) {
        float *col = s + (j - ca) * R;
        if (G[j]) {
            for (int r = 0; r < mr; r++)
                if (j >= bh[r]) col[r] = -INFINITY;
        } else {
            for (int r = 0; r < mr; r++)
                if (j >= bh[r] || j < glo[r] || j >= ghi[r]) col[r] = -INFINITY;
        }
    }
}

void attn__mask_tile(const attn__sdpa_plan *p, const attn__strip_mask *sm, float *s, float *t,
                     int R, int64_t ca, int64_t cb) {
    /* the segments [k0, k1) that meet the tile; np: some is partial */
    int k0 = 0, np = 0;
    while (k0 < sm->nseg && sm->seg[k0].b <= ca)
        k0++;
    int k1 = k0;
    for (; k1 < sm->nseg && sm->seg[k1].a < cb; k1++)
        np |= sm->seg[k1].kind == ATTN__SEG_PARTIAL;
    if (!np && !attn__mask_has_mods(p)) return;
    const int64_t b = sm->b, h = sm->h;
    const int cols = !p->lay && sm->mr <= 256; /* partial keys column by column, after */
    for (int r = 0; r < sm->mr; r++) {
        int64_t i = sm->i0 + r, pos = i + p->shift;
        float *sr = s + r - ca * R; /* sr[j*R] is key j */
        if (p->softcap > 0.0f) {
            float c = p->softcap, ic = 1.0f / p->softcap;
            if (t) {
                float *tr = t + r - ca * R;
                for (int64_t j = ca; j < cb; j++) {
                    float th = tanhf(sr[j * R] * ic);
                    tr[j * R] = th;
                    sr[j * R] = c * th;
                }
            } else {
                for (int64_t j = ca; j < cb; j++)
                    sr[j * R] = c * tanhf(sr[j * R] * ic);
            }
        }
        if (p->mask_kind == ATTN__MASK_FLOAT) {
            const float *m = (const float *)p->mask + attn__mask_off(p, b, h, i, 0);
            for (int64_t j = ca; j < cb; j++)
                sr[j * R] += m[j];
        }
        if (p->alibi) {
            float sl = p->alibi[h];
            for (int64_t j = ca; j < cb; j++)
                sr[j * R] -= sl * (float)llabs(pos - j);
        }
        if (p->mask_kind == ATTN__MASK_BOOL) {
            const uint8_t *m = (const uint8_t *)p->mask + attn__mask_off(p, b, h, i, 0);
            for (int64_t j = ca; j < cb; j++)
                if (!m[j]) sr[j * R] = -INFINITY;
        }
        if (p->kpm) { /* a padding key is ignored by every row */
            const uint8_t *kp = p->kpm + b * p->kpb;
            for (int64_t j = ca; j < cb; j++)
                if (kp[j]) sr[j * R] = -INFINITY;
        }
        for (int k = k0; np && !cols && k < k1; k++)
            if (sm->seg[k].kind == ATTN__SEG_PARTIAL)
                mask_row_partial(p, sm, r, sr, R, ATTN_MAX(ca, sm->seg[k].a),
                                 ATTN_MIN(cb, sm->seg[k].b));
    }
    for (int k = k0; np && cols && k < k1; k++)
        if (sm->seg[k].kind == ATTN__SEG_PARTIAL)
            mask_cols_partial(p, sm, s, R, ca, ATTN_MAX(ca, sm->seg[k].a),
                              ATTN_MIN(cb, sm->seg[k].b));
}

int64_t attn__row_keys(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i) {
    int64_t lo, hi;
    attn__row_range(p, b, i, &lo, &hi);
    const int glob = attn__glob_on(p, b);
    int64_t n = 0;
    if (glob) { /* the global keys of [0, bhi), and every key for a global query */
        const int64_t bh = ATTN_MAX(0, attn__row_base_hi(p, b, i));
        if (attn__glob_query(p, b, i)) return bh;
        n = attn__glob_count(p, b, 0, bh);
    }
    if (hi <= lo) return n;
    if (!p->lay) return n + (hi - lo) - (glob ? attn__glob_count(p, b, lo, hi) : 0);
    for (int64_t kb = lo / p->lbk; kb * p->lbk < hi; kb++)
        if (attn__layout_on(p, h, i, kb)) {
            const int64_t a = ATTN_MAX(lo, kb * p->lbk), e = ATTN_MIN(hi, (kb + 1) * p->lbk);
            n += (e - a) - (glob ? attn__glob_count(p, b, a, e) : 0); /* globals counted once */
        }
    return n;
}

double attn_sdpa_flops(const attn_sdpa_args *a) {
    attn__sdpa_plan p;
    attn_ctx ctx = {0};
    attn__glob glob;
    if (attn__sdpa_plan_make(&ctx, a, 0, &p) != ATTN_OK) return 0.0;
    if (attn__mask_glob_build(&ctx, &p, &glob) != ATTN_OK) return 0.0;
    /* heads differ only under a per-head layout */
    const int64_t nh = p.lay && p.lhs ? p.H : 1;
    double pairs = 0.0;
    /* without kv_len or per-batch global tokens every batch has the same
     * rows: count one, times B */
    const int nbatch = p.kv_len || (p.glob && p.gtb);
    const int64_t nb = nbatch ? p.B : ATTN_MIN(p.B, 1);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t i = 0; i < p.T; i++)
                pairs += (double)attn__row_keys(&p, b, h, i);
    if (!nbatch) pairs *= (double)p.B;
    attn__mask_glob_free(&glob);
    return 2.0 * (double)(p.H / nh) * pairs * (double)(p.D + p.Dv);
}
