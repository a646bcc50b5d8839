/* Score rules of the fast path (see sdpa_mask.h): strip classification,
 * score modifications, and the FLOP count that follows the same rules. */
#include "ops/sdpa_mask.h"

#include <math.h>
#include <stdlib.h>

void attn__mask_strip(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i0, int mr,
                      attn__strip_mask *sm) {
    int64_t slo = INT64_MAX, shi = INT64_MIN, maxlo = INT64_MIN, minhi = INT64_MAX;
    int any_empty = 0;
    sm->b = b, sm->h = h, sm->i0 = i0, sm->mr = mr;
    for (int r = 0; r < mr; r++) {
        attn__row_range(p, b, i0 + r, &sm->lo[r], &sm->hi[r]);
        if (sm->hi[r] <= sm->lo[r]) {
            any_empty = 1;
            continue;
        }
        slo = ATTN_MIN(slo, sm->lo[r]);
        shi = ATTN_MAX(shi, sm->hi[r]);
        maxlo = ATTN_MAX(maxlo, sm->lo[r]);
        minhi = ATTN_MIN(minhi, sm->hi[r]);
    }
    sm->nseg = 0;
    if (slo >= shi) return;
    /* Every row sees [maxlo, minhi) when no row is empty: that middle is
     * full; the edge bands on either side are at most the rows' spread
     * wide and need the per-row rule. */
    if (any_empty || maxlo >= minhi) {
        sm->seg[sm->nseg++] = (attn__seg){slo, shi, ATTN__SEG_PARTIAL};
        return;
    }
    if (slo < maxlo) sm->seg[sm->nseg++] = (attn__seg){slo, maxlo, ATTN__SEG_PARTIAL};
    sm->seg[sm->nseg++] = (attn__seg){maxlo, minhi, ATTN__SEG_FULL};
    if (minhi < shi) sm->seg[sm->nseg++] = (attn__seg){minhi, shi, ATTN__SEG_PARTIAL};
}

/* -inf for keys [ea, eb) that row r does not see (per-row interval). */
static inline void mask_row_partial(const attn__strip_mask *sm, int r, float *sr, int R, int64_t ea,
                                    int64_t eb) {
    for (int64_t j = ea; j < eb; j++)
        if (j < sm->lo[r] || j >= sm->hi[r]) sr[j * R] = -INFINITY;
}

void attn__mask_tile(const attn__sdpa_plan *p, const attn__strip_mask *sm, float *s, float *t,
                     int R, int64_t ca, int64_t cb) {
    /* the partial segments' parts inside the tile */
    int64_t pa[ATTN__SEG_MAX], pb[ATTN__SEG_MAX];
    int np = 0;
    for (int k = 0; k < sm->nseg; k++) {
        const attn__seg *g = &sm->seg[k];
        if (g->kind != ATTN__SEG_PARTIAL) continue;
        int64_t a = ATTN_MAX(ca, g->a), e = ATTN_MIN(cb, g->b);
        if (a < e) pa[np] = a, pb[np] = e, np++;
    }
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
        for (int k = 0; k < np; k++)
            mask_row_partial(sm, r, sr, R, pa[k], pb[k]);
    }
}

double attn_sdpa_flops(const attn_sdpa_args *a) {
    attn__sdpa_plan p;
    attn_ctx ctx = {0};
    if (attn__sdpa_plan_make(&ctx, a, 0, &p) != ATTN_OK) return 0.0;
    double pairs = 0.0;
    /* without kv_len every batch has the same rows: count one, times B */
    const int64_t nb = p.kv_len ? p.B : ATTN_MIN(p.B, 1);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t i = 0; i < p.T; i++) {
            int64_t lo, hi;
            attn__row_range(&p, b, i, &lo, &hi);
            if (hi > lo) pairs += (double)(hi - lo);
        }
    if (!p.kv_len) pairs *= (double)p.B;
    return 2.0 * (double)p.H * pairs * (double)(p.D + p.Dv);
}
