/* Score rules of the fast path (see sdpa_mask.h): strip classification,
 * score modifications, and the FLOP count that follows the same rules. */
#include "ops/sdpa_mask.h"

#include <math.h>
#include <stdlib.h>

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
    attn__seg *l = sm->nseg ? &sm->seg[sm->nseg - 1] : NULL;
    if (l && l->b == a && l->kind == kind)
        l->b = b;
    else
        sm->seg[sm->nseg++] = (attn__seg){a, b, kind};
}

void attn__mask_strip(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i0, int mr,
                      attn__strip_mask *sm) {
    sm->b = b, sm->h = h, sm->i0 = i0, sm->mr = mr;
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
        for (int k = k0; np && k < k1; k++)
            if (sm->seg[k].kind == ATTN__SEG_PARTIAL)
                mask_row_partial(p, sm, r, sr, R, ATTN_MAX(ca, sm->seg[k].a),
                                 ATTN_MIN(cb, sm->seg[k].b));
    }
}

int64_t attn__row_keys(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i) {
    int64_t lo, hi;
    attn__row_range(p, b, i, &lo, &hi);
    if (hi <= lo) return 0;
    if (!p->lay) return hi - lo;
    int64_t n = 0;
    for (int64_t kb = lo / p->lbk; kb * p->lbk < hi; kb++)
        if (attn__layout_on(p, h, i, kb))
            n += ATTN_MIN(hi, (kb + 1) * p->lbk) - ATTN_MAX(lo, kb * p->lbk);
    return n;
}

double attn_sdpa_flops(const attn_sdpa_args *a) {
    attn__sdpa_plan p;
    attn_ctx ctx = {0};
    if (attn__sdpa_plan_make(&ctx, a, 0, &p) != ATTN_OK) return 0.0;
    /* heads differ only under a per-head layout */
    const int64_t nh = p.lay && p.lhs ? p.H : 1;
    double pairs = 0.0;
    /* without kv_len every batch has the same rows: count one, times B */
    const int64_t nb = p.kv_len ? p.B : ATTN_MIN(p.B, 1);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t i = 0; i < p.T; i++)
                pairs += (double)attn__row_keys(&p, b, h, i);
    if (!p.kv_len) pairs *= (double)p.B;
    return 2.0 * (double)(p.H / nh) * pairs * (double)(p.D + p.Dv);
}
