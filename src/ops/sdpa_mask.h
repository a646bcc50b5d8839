/* The one home of the attention score rules on the fast path: which keys a
 * query row sees, how a strip's keys are classified into segments before
 * any arithmetic, and the score modifications (softcap, float mask, ALiBi,
 * boolean mask, and the token-level structural mask on partial segments).
 * The forward, the backward, attn_sdpa_probs and attn_sdpa_flops all read
 * the rules here. src/ref keeps its own independent copy, so that it can
 * catch a mistake here.
 *
 * A strip is `mr` consecutive query rows of one (batch, head). Its visible
 * keys are a sorted list of disjoint segments, each either FULL (every row
 * sees every key: no per-element mask is evaluated) or PARTIAL (a per-row
 * rule decides: attn__mask_tile applies it); keys in no segment are empty
 * for every row and never touched. The interval rules (causal, window,
 * kv_len) give each row one interval [lo, hi), so they make at most three
 * segments: the left edge band, the full middle, the right edge band. A
 * block-sparse layout then keeps only the key blocks some row of the strip
 * computes, cut into runs: a block is FULL where every row's query block
 * computes it and the interval rules say full, PARTIAL otherwise. A new
 * structural rule adds segments here, not code in the drivers.
 *
 * Global tokens (attn_sdpa_args.global_tokens) lift the window and the
 * layout for their rows and keys, but not the base rules (causal, kv_len).
 * A row then sees [0, bhi) (its base interval) if it is a global query,
 * else the global keys of [0, bhi) plus its interval-and-layout keys. The
 * strip's keys are cut at the rows' interval ends and the global key runs
 * (an index built once per call, attn__glob), and each piece is FULL, PARTIAL
 * or skipped by aggregates over the strip's rows, O(1) per piece. */
#ifndef ATTN_SDPA_MASK_H
#define ATTN_SDPA_MASK_H

#include "ops/sdpa_plan.h"

enum { ATTN__SEG_FULL = 1, ATTN__SEG_PARTIAL = 2 };

typedef struct attn__seg {
    int64_t a, b; /* keys [a, b) */
    int kind;     /* ATTN__SEG_FULL or ATTN__SEG_PARTIAL */
} attn__seg;

typedef struct attn__strip_mask {
    int64_t b, h, i0;
    int mr;
    int nseg;         /* 0: no row of the strip sees a key */
    attn__seg *seg;   /* [attn__mask_seg_cap] (caller's memory), sorted, disjoint */
    int64_t *lo, *hi; /* [mr] each row's visible interval (caller's memory) */
} attn__strip_mask;

/* Where global keys are, per batch row of global_tokens (one row when it
 * is broadcast): cnt counts them before each key (prefix sums, so a range
 * is counted in O(1)), and runs cover them: [a, e) in increasing order, two
 * global keys less than ATTN__GLOB_GAP keys apart share a run (pure = every
 * key of the run is global; else the run is mixed, and its keys need the
 * per-key rule). Built by the drivers from plan->gtok, once per call. */
#define ATTN__GLOB_GAP 16
typedef struct attn__grun {
    int64_t a, e;
    int pure;
} attn__grun;

typedef struct attn__glob {
    int64_t nb;      /* batch rows: B, or 1 when broadcast */
    int32_t *cnt;    /* [nb][S + 1]: global keys in [0, j) */
    int64_t *roff;   /* [nb + 1]: the runs of row r are run[roff[r] .. roff[r + 1]) */
    attn__grun *run; /* runs of every row */
    int64_t maxruns; /* most runs of one row */
} attn__glob;

/* Build g from p->gtok and point p->glob at it (p->glob = NULL when there
 * are no global tokens: g stays empty). Returns ATTN_OK or ATTN_E_NOMEM. */
attn_status attn__mask_glob_build(attn_ctx *ctx, attn__sdpa_plan *p, attn__glob *g);
void attn__mask_glob_free(attn__glob *g);

/* Global keys of batch b in [a, e) (0 <= a <= e <= S; p->glob set). */
static inline int64_t attn__glob_count(const attn__sdpa_plan *p, int64_t b, int64_t a, int64_t e) {
    const int32_t *c = p->glob->cnt + (p->gtb ? b : 0) * (p->S + 1);
    return (int64_t)c[e] - (int64_t)c[a];
}

/* Nonzero when batch b has a global token (p->glob may be NULL). */
static inline int attn__glob_on(const attn__sdpa_plan *p, int64_t b) {
    return p->glob && attn__glob_count(p, b, 0, p->S) > 0;
}

/* Nonzero when query i of batch b is a global token: its position p(i) is
 * in [0, S) and marked. */
static inline int attn__glob_query(const attn__sdpa_plan *p, int64_t b, int64_t i) {
    const int64_t pos = i + p->shift;
    return p->gtok && pos >= 0 && pos < p->S && p->gtok[b * p->gtb + pos];
}

/* End of query i's base interval [0, bhi): the rules global tokens do not
 * lift (causal, kv_len); may be <= 0 (the row sees nothing). */
static inline int64_t attn__row_base_hi(const attn__sdpa_plan *p, int64_t b, int64_t i) {
    int64_t h = p->S;
    if (p->kv_len) h = ATTN_MIN(h, (int64_t)p->kv_len[b]);
    if (p->causal) h = ATTN_MIN(h, i + p->shift + 1);
    return h;
}

/* Segments a strip can need: 3 for the interval rules; with a layout, at
 * most one per key block plus the two cuts of the interval rules; with
 * global tokens, one per piece between the cuts (eight row-interval ends
 * and two per global run) plus one per key block. */
static inline int64_t attn__mask_seg_cap(const attn__sdpa_plan *p) {
    if (p->glob) return 12 + 2 * p->glob->maxruns + (p->lay ? p->lnkb : 0);
    return p->lay ? p->lnkb + 3 : 3;
}

/* Floats of workspace that hold a strip's segments (carve with
 * attn__round16 alignment, 8-byte aligned). */
static inline size_t attn__mask_seg_floats(const attn__sdpa_plan *p) {
    return attn__round16((size_t)attn__mask_seg_cap(p) * sizeof(attn__seg) / sizeof(float) + 1);
}

/* Nonzero when query i of head h computes key block kb of the layout. */
static inline int attn__layout_on(const attn__sdpa_plan *p, int64_t h, int64_t i, int64_t kb) {
    return p->lay[h * p->lhs + (i / p->lbq) * p->lnkb + kb] != 0;
}

/* Visible key interval [lo, hi) of query i in batch b from the interval
 * rules (causal, window, kv_len); hi <= lo means the row sees nothing.
 * lo and hi never decrease as i grows. A layout may hide keys inside it;
 * global tokens may add keys outside it (within [0, attn__row_base_hi)). */
static inline void attn__row_range(const attn__sdpa_plan *p, int64_t b, int64_t i, int64_t *lo,
                                   int64_t *hi) {
    int64_t l = 0, h = p->S;
    if (p->kv_len) h = ATTN_MIN(h, (int64_t)p->kv_len[b]);
    int64_t pos = i + p->shift;
    if (p->causal) h = ATTN_MIN(h, pos + 1);
    if (p->window) {
        if (p->wl >= 0) l = ATTN_MAX(l, pos - p->wl);
        if (p->wr >= 0) h = ATTN_MIN(h, pos + p->wr + 1);
    }
    *lo = l;
    *hi = h;
}

/* Address of mask element (b, h, i, j). */
static inline int64_t attn__mask_off(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i,
                                     int64_t j) {
    return b * p->msb + h * p->msh + i * p->mst + j;
}

/* Query rows come in spans no strip may straddle: one span [0, T), or under
 * a layout one per query block (a strip's key blocks are then its own
 * block's, and full ones need no mask). */
static inline int64_t attn__row_span(const attn__sdpa_plan *p) {
    return p->lay ? p->lbq : ATTN_MAX(p->T, 1);
}

/* Start of the strip after the one at row i0, for strips of R rows: i0 + R,
 * cut at the end of its span and at T. Under global tokens shared by every
 * batch, a strip whose rows are one run of global queries and then one run
 * of other rows (or the reverse) is also cut between the two: the global
 * rows compute every key, the others only their window, and a kernel's row
 * group costs the same whatever its rows see (the usual case: global tokens
 * at the start of the sequence). The strips of both passes, with the
 * heights of attn__fwd_strip_rows and attn__strip_rows. */
static inline int64_t attn__strip_next(const attn__sdpa_plan *p, int64_t R, int64_t i0) {
    const int64_t span = attn__row_span(p);
    const int64_t e = ATTN_MIN(ATTN_MIN(i0 + R, (i0 / span + 1) * span), p->T);
    if (p->glob && !p->gtb) {
        const int g0 = attn__glob_query(p, 0, i0);
        int64_t c = i0 + 1, d;
        while (c < e && attn__glob_query(p, 0, c) == g0)
            c++;
        for (d = c; d < e && attn__glob_query(p, 0, d) != g0;)
            d++;
        if (c < e && d == e) return c;
    }
    return e;
}

/* Keys a row's window spans at most (window and causal rules; other rules
 * only narrow it): wl + 1 + wr, the right side 0 under causal; -1 when a
 * side is unbounded or there is no window. */
static inline int64_t attn__window_width(const attn__sdpa_plan *p) {
    if (!p->window || p->wl < 0) return -1;
    if (p->causal) return p->wl + 1;
    return p->wr < 0 ? -1 : p->wl + 1 + p->wr;
}

/* Height of the strips in the span holding row i0, for kernels that take
 * strips of mr rows and of every multiple of q below: a span of n rows is
 * cut into the fewest strips of at most mr rows, of equal height rounded up
 * to q (the last one shorter). The kernels compute each strip at its height
 * rounded up to q, so a 64-row query block costs 64 rows, not a full strip
 * of mr. */
static inline int64_t attn__strip_rows(const attn__sdpa_plan *p, int64_t mr, int64_t q,
                                       int64_t i0) {
    const int64_t span = attn__row_span(p), s0 = i0 / span * span;
    const int64_t n = ATTN_MIN(s0 + span, p->T) - s0, k = (n + mr - 1) / mr;
    return ATTN_MIN(mr, ((n + k - 1) / k + q - 1) / q * q);
}

/* Height of the forward's strips (attn__strip_rows with the family's mr
 * and mrq): a 128-row query block runs as 48 + 48 + 32 rows on avx512 (not
 * 3 x 48), a 64-row one as 32 + 32. Under a window of w <= 32 mr keys (no
 * layout) the strips are at most 2/3 mr high: a strip of h rows computes
 * w + h - 1 keys for every row, and for Longformer's w = 513, 32-row strips
 * ran 5% faster than 48. */
static inline int64_t attn__fwd_strip_rows(const attn__sdpa_plan *p, int64_t mr, int64_t q,
                                           int64_t i0) {
    const int64_t w = attn__window_width(p);
    if (!p->lay && w >= 0 && w <= 32 * mr) mr = ATTN_MAX(q, (2 * mr / 3) / q * q);
    return attn__strip_rows(p, mr, q, i0);
}

/* Start of the forward's strip after the one at row i0: attn__strip_next
 * with the height above, so it is also cut after a run of global query
 * rows (which compute every key, the rows after them only their window). */
static inline int64_t attn__fwd_strip_next(const attn__sdpa_plan *p, int64_t mr, int64_t q,
                                           int64_t i0) {
    return attn__strip_next(p, attn__fwd_strip_rows(p, mr, q, i0), i0);
}

/* Start of the backward's strip after the one at row i0, for the family's
 * bmr and bmrq: attn__strip_rows' heights (no window rule: not measured
 * there), cut after a run of global query rows. A 64-row query block is
 * one strip of 64 rows on avx512 (was 96 computed), a 128-row one 64 + 64;
 * dense T keeps strips of bmr (T = 4096: 42 x 96 + 64). */
static inline int64_t attn__bwd_strip_next(const attn__sdpa_plan *p, int64_t bmr, int64_t q,
                                           int64_t i0) {
    return attn__strip_next(p, attn__strip_rows(p, bmr, q, i0), i0);
}

/* Keys query i of (b, h) can see by the interval rules, the layout and the
 * global tokens (not counting boolean and key-padding masks): the work of
 * its row. */
int64_t attn__row_keys(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i);

/* Nonzero when scores need modifications beyond scale * q.k on every tile
 * (softcap, float or boolean mask, key-padding mask, ALiBi). */
static inline int attn__mask_has_mods(const attn__sdpa_plan *p) {
    return p->softcap > 0.0f || p->mask_kind != ATTN__MASK_NONE || p->alibi || p->kpm;
}

/* Classify the keys of the strip rows [i0, i0 + mr) of (b, h) into
 * segments; sm->lo, sm->hi must point to mr int64_t each, sm->seg to
 * attn__mask_seg_cap(p) segments. Under global tokens p->glob must be set
 * (attn__mask_glob_build). */
void attn__mask_strip(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i0, int mr,
                      attn__strip_mask *sm);

/* Nonzero when row r of a classified strip may see a key by the structural
 * rules (its interval is not empty, or a global token gives it keys); a
 * row that does not has no visible key at all. */
static inline int attn__mask_row_live(const attn__sdpa_plan *p, const attn__strip_mask *sm, int r) {
    if (sm->hi[r] > sm->lo[r]) return 1;
    if (!attn__glob_on(p, sm->b)) return 0;
    const int64_t bh = ATTN_MAX(0, attn__row_base_hi(p, sm->b, sm->i0 + r));
    return attn__glob_query(p, sm->b, sm->i0 + r) ? bh > 0 : attn__glob_count(p, sm->b, 0, bh) > 0;
}

/* The next run of adjacent segments from segment *k: keys [*a, *e), with *k
 * moved past it; 0 when none is left. The forward's tiles lie within runs. */
static inline int attn__mask_next_run(const attn__strip_mask *sm, int *k, int64_t *a, int64_t *e) {
    if (*k >= sm->nseg) return 0;
    *a = sm->seg[*k].a, *e = sm->seg[*k].b;
    while (++*k < sm->nseg && sm->seg[*k].a == *e)
        *e = sm->seg[*k].b;
    return 1;
}

/* First and one-past-last visible key of the strip (nseg > 0). */
static inline int64_t attn__mask_first(const attn__strip_mask *sm) {
    return sm->seg[0].a;
}
static inline int64_t attn__mask_last(const attn__strip_mask *sm) {
    return sm->seg[sm->nseg - 1].b;
}

/* Apply the score rules to a tile of keys [ca, cb) of the strip, laid out
 * s[(j - ca)*R + r] for rows r < sm->mr: softcap (tanh kept in t, same
 * layout, when t != NULL: the backward's derivative), float mask, ALiBi,
 * boolean mask, key-padding mask, and -inf for the keys of partial segments
 * a row does not see (outside its interval, or in a key block its query
 * block does not compute, and not lifted by a global token). Keys in no
 * segment are not masked: a tile must lie within the
 * segments. Skipped (nothing to do) when the tile lies in full segments and
 * attn__mask_has_mods is 0. */
void attn__mask_tile(const attn__sdpa_plan *p, const attn__strip_mask *sm, float *s, float *t,
                     int R, int64_t ca, int64_t cb);

#endif /* ATTN_SDPA_MASK_H */
