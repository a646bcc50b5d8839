/* Global tokens (attn_sdpa_args.global_tokens, Longformer's global
 * attention) against the float64 oracle, forward and backward, with the
 * tolerance rule: random combinations with every other option (windows,
 * layouts, causal in both alignments, kv_len, GQA, masks, key padding,
 * ALiBi, softcap, dropout, RoPE); directed patterns (global tokens at the
 * start, middle and end, none, all) equal to the dense kernel given the
 * equivalent boolean mask; attn_sdpa_probs; the tile classifier itself
 * (every visible pair inside a segment, FULL segments really full, keys far
 * from every window and global token skipped, the computed area close to
 * the visible one); keys no strip reads may be NaN; attn_sdpa_flops;
 * bad global_tokens get their statuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "at_sdpa_bwd.h"
#include "ops/sdpa_mask.h"

static const int64_t lens[] = {1, 5, 24, 25, 48, 49, 63, 65, 97, 129, 200};
#define NLENS (int)(sizeof lens / sizeof lens[0])
static const int64_t bsizes[] = {1, 3, 7, 16, 24, 48, 64};
#define NBS (int)(sizeof bsizes / sizeof bsizes[0])

/* A random block layout for [H, T] x [S]: density 0.05..0.95. */
static uint8_t *lay_random(attn_sdpa_layout *L, at_rng *r, int64_t H, int64_t T, int64_t S) {
    L->bq = bsizes[at_rng_int(r, 0, NBS - 1)];
    L->bk = bsizes[at_rng_int(r, 0, NBS - 1)];
    L->nqb = (T + L->bq - 1) / L->bq;
    L->nkb = (S + L->bk - 1) / L->bk;
    L->per_head = (int)at_rng_int(r, 0, 1);
    const int64_t n = (L->per_head ? H : 1) * L->nqb * L->nkb;
    double dens = 0.05 + 0.9 * at_rng_unit(r);
    uint8_t *blocks = malloc((size_t)(n > 0 ? n : 1));
    for (int64_t e = 0; e < n; e++)
        blocks[e] = at_rng_unit(r) < dens;
    L->blocks = blocks;
    return blocks;
}

/* The structural rule of sdpa.h, written out from the arguments: causal,
 * kv_len, and (global query || global key || (window && layout)). Boolean
 * and key-padding masks are not included. */
static int gtok_at(const attn_tensor *g, int64_t b, int64_t j) {
    int64_t idx[2] = {g->ndim == 2 && g->shape[0] > 1 ? b : 0, j};
    return *(const uint8_t *)at_ptr(g, g->ndim == 2 ? idx : idx + 1) != 0;
}

static int structural(const attn_sdpa_args *a, int64_t b, int64_t h, int64_t i, int64_t j) {
    const int64_t T = a->q.shape[2], S = a->k.shape[2];
    const int64_t pos = i + (a->align == ATTN_ALIGN_BOTTOM_RIGHT ? S - T : 0);
    if (a->kv_len && j >= a->kv_len[b]) return 0;
    if (a->causal && j > pos) return 0;
    if (a->global_tokens.data && (gtok_at(&a->global_tokens, b, j) ||
                                  (pos >= 0 && pos < S && gtok_at(&a->global_tokens, b, pos))))
        return 1;
    if (a->window && a->window_left >= 0 && j < pos - a->window_left) return 0;
    if (a->window && a->window_right >= 0 && j > pos + a->window_right) return 0;
    if (a->layout) {
        const attn_sdpa_layout *L = a->layout;
        if (!L->blocks[((L->per_head ? h : 0) * L->nqb + i / L->bq) * L->nkb + j / L->bk]) return 0;
    }
    return 1;
}

/* ---- random combinations against the oracle ---- */

static at_case random_case(at_rng *r, uint64_t k) {
    at_case c = at_case_random(r, k, lens, NLENS);
    /* A row that sees one key has a zero exact gradient, which the plain
     * fp32 backward (D_i = rowsum(P dPz)) gets exactly while the fast one
     * (D_i = rowsum(dO out)) gets to rounding: with a global key, many rows
     * of a short S see only it, and their noise piles onto a few dk rows
     * past the bare 1e-6 (the tolerance then measures luck). So S >= 7 and
     * T <= 2S. */
    if (c.S < 7) c.S = 7;
    if (c.T > 2 * c.S) c.T = 2 * c.S;
    c.global = (int)at_rng_int(r, 1, 2);
    static const float fr[] = {0.01f, 0.05f, 0.2f, 0.6f};
    c.global_frac = fr[at_rng_int(r, 0, 3)];
    if (at_rng_int(r, 0, 4)) { /* mostly a window: what global tokens lift */
        c.window = 1;
        c.wl = at_rng_int(r, -1, 12);
        c.wr = at_rng_int(r, -1, 12);
    }
    return c;
}

static int run_case(attn_ctx *ctx, const at_case *c, uint64_t id, const char *label) {
    at_rng r = at_rng_for(id);
    at_sdpa x;
    if (at_sdpa_build(&x, c, &r)) return 0;
    attn_sdpa_layout L;
    uint8_t *blocks = NULL;
    char full[200];
    snprintf(full, sizeof full, "%s", label);
    if (at_rng_int(&r, 0, 2) == 0) {
        blocks = lay_random(&L, &r, c->H, c->T, c->S);
        x.a.layout = &L;
        snprintf(full, sizeof full, "%s layout %lldx%lld%s", label, (long long)L.bq,
                 (long long)L.bk, L.per_head ? " per head" : "");
    }
    int ok = at_sdpa_check_forward(ctx, &x.a, &x.out, c->no_lse ? NULL : &x.lse, full, r.seed);
    if (ok && !c->no_lse) {
        at_grads g;
        int dm = c->mask_dtype == ATTN_F32 && c->mask_bcast == AT_MASK_BHTS;
        if (at_grads_alloc(&g, &x.a, c->layout, dm, &r)) {
            ok = 0;
        } else {
            ok = at_sdpa_check_backward(ctx, &x.a, &g, full, r.seed);
            at_grads_free(&g);
        }
    }
    free(blocks);
    at_sdpa_free(&x);
    return ok;
}

static void test_random_against_oracle(void **state) {
    (void)state;
    int fails = at_run_random_cases(at_quick() ? 40 : 160, 95000, 96000, "global case", random_case,
                                    run_case);
    assert_int_equal(fails, 0);
}

/* ---- directed patterns, and the equivalent dense boolean mask ---- */

enum { P_NONE, P_START, P_MIDDLE, P_END, P_MIX, P_ALL, P_NPAT };
static const char *const pat_name[] = {"none", "start", "middle", "end", "start+middle+end", "all"};

static void fill_pattern(uint8_t *g, int64_t S, int pat) {
    memset(g, 0, (size_t)S);
    for (int64_t j = 0; j < S; j++)
        switch (pat) {
        case P_START:
            g[j] = j < 3;
            break;
        case P_MIDDLE:
            g[j] = j == S / 2 || j == S / 2 + 1;
            break;
        case P_END:
            g[j] = j == S - 1;
            break;
        case P_MIX:
            g[j] = j == 0 || j == S / 3 || j == S - 1;
            break;
        case P_ALL:
            g[j] = 1;
            break;
        default:
            break;
        }
}

enum { O_PLAIN, O_CAUSAL, O_GQA, O_KVLEN, O_PAD, O_ROPE, O_DROPOUT, O_BR, O_NOPT };
static const char *const opt_name[] = {"plain",       "causal", "gqa",     "kv_len",
                                       "key_padding", "rope",   "dropout", "bottom-right"};

/* Longformer (window w each side + the pattern's global tokens) with one
 * more option: against the oracle (forward and backward), and against the
 * dense kernel given the rule as a boolean mask [B, 1, T, S]. */
static void one_pattern(int pat, int opt, int64_t T, int64_t S, int64_t w) {
    at_case c = {.B = 2, .H = 2, .T = T, .S = S, .D = 24, .Dv = 20};
    c.window = 1, c.wl = w, c.wr = w;
    if (opt == O_CAUSAL) c.causal = 1;
    if (opt == O_GQA) c.H = 4, c.Hkv = 2;
    if (opt == O_KVLEN) c.kv_len = 1, c.B = 3;
    if (opt == O_PAD) c.kpm = 1;
    if (opt == O_DROPOUT) c.dropout_p = 0.2f, c.dropout_seed = 11;
    if (opt == O_BR) c.align = ATTN_ALIGN_BOTTOM_RIGHT, c.causal = 1;
    if (opt == O_ROPE) {
        c.rope.rot_dim = 16;
        c.rope.theta = 10000.0;
        c.rope.q_pos = 3;
        c.rope.k_pos = 3;
    }
    at_rng r = at_rng_for(97000 + (uint64_t)(pat * 16 + opt));
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    /* batch 0 the pattern, batch 1 (and 2) another, so rows differ */
    at_buf gb;
    int64_t gsh[2] = {c.B, S};
    assert_int_equal(at_buf_alloc(&gb, ATTN_U8, 2, gsh, NULL, 0), 0);
    for (int64_t b = 0; b < c.B; b++)
        fill_pattern(at_ptr(&gb.t, (int64_t[]){b, 0}), S, b == 0 ? pat : (pat + 2) % P_NPAT);
    x.a.global_tokens = gb.t;
    char label[160];
    snprintf(label, sizeof label, "pattern %s, %s, T=%lld S=%lld w=%lld", pat_name[pat],
             opt_name[opt], (long long)T, (long long)S, (long long)w);
    assert_true(at_sdpa_check_forward(at_ctx, &x.a, &x.out, &x.lse, label, r.seed));
    at_grads g;
    assert_int_equal(at_grads_alloc(&g, &x.a, AT_BHTD, 0, &r), 0);
    assert_true(at_sdpa_check_backward(at_ctx, &x.a, &g, label, r.seed));

    /* the same rule as a dense boolean mask, window and global tokens off */
    at_buf m, out2, lse2;
    int64_t ms[4] = {c.B, 1, T, S};
    assert_int_equal(at_buf_alloc(&m, ATTN_BOOL, 4, ms, NULL, 0), 0);
    for (int64_t b = 0; b < c.B; b++)
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < S; j++)
                *(uint8_t *)at_ptr(&m.t, (int64_t[]){b, 0, i, j}) = structural(&x.a, b, 0, i, j);
    assert_int_equal(at_buf_f32(&out2, c.B, c.H, T, c.Dv), 0);
    int64_t ls[3] = {c.B, c.H, T};
    assert_int_equal(at_buf_alloc(&lse2, ATTN_F32, 3, ls, NULL, 0), 0);
    attn_sdpa_args d = x.a;
    d.window = 0;
    d.global_tokens = (attn_tensor){0};
    d.mask = m.t;
    d.out = out2.t;
    d.lse = lse2.t;
    assert_int_equal(attn_sdpa_forward(at_ctx, &d), ATTN_OK);
    for (int64_t b = 0; b < c.B; b++)
        for (int64_t h = 0; h < c.H; h++)
            for (int64_t i = 0; i < T; i++) {
                for (int64_t e = 0; e < c.Dv; e++) {
                    float u = *at_f32(&x.out.t, b, h, i, e), v = *at_f32(&out2.t, b, h, i, e);
                    if (!(fabsf(u - v) <= 1e-5f * (1.0f + fabsf(v))))
                        fail_msg("%s: out[%lld,%lld,%lld,%lld] global %g, dense mask %g", label,
                                 (long long)b, (long long)h, (long long)i, (long long)e, (double)u,
                                 (double)v);
                }
                float l1 = *at_f32(&x.lse.t, b, h, i, 0), l2 = *at_f32(&lse2.t, b, h, i, 0);
                if (!(l1 == l2 || fabsf(l1 - l2) <= 1e-5f * (1.0f + fabsf(l2))))
                    fail_msg("%s: lse[%lld,%lld,%lld] global %g, dense mask %g", label,
                             (long long)b, (long long)h, (long long)i, (double)l1, (double)l2);
            }
    at_buf_free(&m), at_buf_free(&out2), at_buf_free(&lse2), at_buf_free(&gb);
    at_grads_free(&g);
    at_sdpa_free(&x);
}

static void test_patterns_dense_equivalence(void **state) {
    (void)state;
    /* odd sizes, a window narrower than a strip and one wider */
    for (int pat = 0; pat < P_NPAT; pat++)
        for (int opt = 0; opt < O_NOPT; opt++) {
            int64_t T = opt == O_BR ? 131 : 211, S = opt == O_BR ? 197 : 211;
            one_pattern(pat, opt, T, S, (pat + opt) % 2 ? 5 : 60);
        }
}

/* Global tokens shared by every batch ([S] or [1, S]) at the start or the
 * end of the rows: the backward then cuts the strip holding them between
 * the global rows and the others (attn__strip_next); gradients against the
 * oracle, 1 and 3 threads. */
static void test_backward_strip_cut(void **state) {
    (void)state;
    const int64_t T = 301, S = 301;
    for (int where = 0; where < 3; where++) {
        at_case c = {.B = 2, .H = 2, .Hkv = 1, .T = T, .S = S, .D = 16, .Dv = 12};
        c.window = 1, c.wl = 20, c.wr = 7;
        at_rng r = at_rng_for(97800 + (uint64_t)where);
        at_sdpa x;
        assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
        at_buf gb;
        int64_t gs[2] = {1, S};
        assert_int_equal(
            at_buf_alloc(&gb, ATTN_U8, where == 2 ? 2 : 1, where == 2 ? gs : gs + 1, NULL, 0), 0);
        uint8_t *g = gb.t.data;
        memset(g, 0, (size_t)S);
        for (int64_t j = 0; j < 10; j++)
            g[where == 1 ? S - 1 - j : j] = 1; /* the first or the last 10 tokens */
        x.a.global_tokens = gb.t;
        for (int th = 1; th <= 3; th += 2) {
            assert_int_equal(attn_ctx_set_threads(at_ctx, th), ATTN_OK);
            char label[64];
            snprintf(label, sizeof label, "strip cut %d, %d threads", where, th);
            assert_true(at_sdpa_check_forward(at_ctx, &x.a, &x.out, &x.lse, label, r.seed));
            at_grads gr;
            assert_int_equal(at_grads_alloc(&gr, &x.a, AT_BHTD, 0, &r), 0);
            assert_true(at_sdpa_check_backward(at_ctx, &x.a, &gr, label, r.seed));
            at_grads_free(&gr);
        }
        assert_int_equal(attn_ctx_set_threads(at_ctx, 2), ATTN_OK);
        at_buf_free(&gb);
        at_sdpa_free(&x);
    }
}

/* No global token: bitwise the window's own result; every token global:
 * the dense result (the window lifted everywhere). */
static void test_none_and_all(void **state) {
    (void)state;
    const int64_t T = 157, S = 157;
    at_case c = {.B = 1, .H = 3, .Hkv = 1, .T = T, .S = S, .D = 32};
    c.window = 1, c.wl = 9, c.wr = 4;
    at_rng r = at_rng_for(97900);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    at_buf g, o1, o2;
    int64_t gs[1] = {S};
    assert_int_equal(at_buf_alloc(&g, ATTN_BOOL, 1, gs, NULL, 0), 0);
    assert_int_equal(at_buf_f32(&o1, 1, 3, T, 32), 0);
    assert_int_equal(at_buf_f32(&o2, 1, 3, T, 32), 0);
    attn_sdpa_args a = x.a;
    a.lse = (attn_tensor){0};
    a.out = o1.t;
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_OK); /* window only */
    memset(g.t.data, 0, (size_t)S);
    a.global_tokens = g.t;
    a.out = o2.t;
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_OK);
    assert_memory_equal(o1.t.data, o2.t.data, (size_t)(3 * T * 32) * sizeof(float));
    a.window = 0, a.global_tokens = (attn_tensor){0}, a.out = o1.t;
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_OK); /* dense */
    memset(g.t.data, 1, (size_t)S);
    a.window = 1, a.global_tokens = g.t, a.out = o2.t;
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_OK);
    for (int64_t e = 0; e < 3 * T * 32; e++) {
        float u = ((float *)o1.t.data)[e], v = ((float *)o2.t.data)[e];
        if (!(fabsf(u - v) <= 1e-5f * (1.0f + fabsf(u))))
            fail_msg("all global: element %lld dense %g global %g", (long long)e, (double)u,
                     (double)v);
    }
    /* all global in the oracle check too, with the window on */
    assert_true(at_sdpa_check_forward(at_ctx, &a, &o2, NULL, "all global", r.seed));
    at_buf_free(&g), at_buf_free(&o1), at_buf_free(&o2);
    at_sdpa_free(&x);
}

/* attn_sdpa_probs under global tokens: with V = I the forward's output is
 * the probabilities (the forward is checked against the oracle above), and
 * pairs the rule hides are exactly 0. */
static void test_probs(void **state) {
    (void)state;
    const int64_t T = 150, S = 150;
    at_case c = {.B = 2, .H = 2, .Hkv = 1, .T = T, .S = S, .D = 16, .Dv = S};
    c.window = 1, c.wl = 7, c.wr = 7, c.causal = 1, c.global = 1, c.global_frac = 0.04f;
    at_rng r = at_rng_for(97950);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    for (int64_t hk = 0; hk < 1; hk++)
        for (int64_t b = 0; b < 2; b++)
            for (int64_t j = 0; j < S; j++)
                for (int64_t e = 0; e < S; e++)
                    *at_f32(&x.v.t, b, hk, j, e) = j == e;
    assert_true(at_sdpa_check_forward(at_ctx, &x.a, &x.out, &x.lse, "probs: V = I", r.seed));
    at_buf pb;
    assert_int_equal(at_buf_f32(&pb, 1, 1, T, S), 0);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t h = 0; h < 2; h++) {
            attn_tensor pv = {
                .data = pb.t.data, .dtype = ATTN_F32, .ndim = 2, .shape = {T, S}, .stride = {S, 1}};
            assert_int_equal(attn_sdpa_probs(at_ctx, &x.a, b, h, 0, pv), ATTN_OK);
            for (int64_t i = 0; i < T; i++)
                for (int64_t j = 0; j < S; j++) {
                    float pr = ((float *)pb.t.data)[i * S + j], o = *at_f32(&x.out.t, b, h, i, j);
                    if (!structural(&x.a, b, h, i, j)) {
                        if (pr != 0.0f)
                            fail_msg("probs[%lld,%lld,%lld,%lld] = %g for a hidden pair",
                                     (long long)b, (long long)h, (long long)i, (long long)j,
                                     (double)pr);
                    } else if (!(fabsf(pr - o) <= 1e-6f + 1e-5f * o)) {
                        fail_msg("probs[%lld,%lld,%lld,%lld] = %g, forward %g", (long long)b,
                                 (long long)h, (long long)i, (long long)j, (double)pr, (double)o);
                    }
                }
        }
    at_buf_free(&pb);
    at_sdpa_free(&x);
}

/* ---- the tile classifier ---- */

typedef struct area {
    double tiles, full, visible; /* pairs in segments, in FULL ones, visible */
} area;

/* Walk every strip of mr rows of every (b, h) through attn__mask_strip and
 * check: each visible pair lies in a segment; each FULL segment is seen by
 * every row of the strip; a segment key no row sees lies within the rows'
 * window hull, or near a global key, or the strip has a global query (so
 * keys far from every window and global token are skipped). */
static area classify_all(const attn_sdpa_args *a, int mr, const char *label) {
    attn__sdpa_plan p;
    attn_ctx *ctx = at_ctx;
    assert_int_equal(attn__sdpa_plan_make(ctx, a, 0, &p), ATTN_OK);
    attn__glob glob;
    assert_int_equal(attn__mask_glob_build(ctx, &p, &glob), ATTN_OK);
    const int64_t cap = attn__mask_seg_cap(&p);
    attn__seg *seg = malloc((size_t)cap * sizeof *seg);
    int64_t *lo = malloc((size_t)mr * sizeof *lo), *hi = malloc((size_t)mr * sizeof *hi);
    uint8_t *in = malloc((size_t)(p.S > 0 ? p.S : 1));
    area ar = {0, 0, 0};
    for (int64_t b = 0; b < p.B; b++)
        for (int64_t h = 0; h < p.H; h++)
            for (int64_t i0 = 0; i0 < p.T; i0 = attn__strip_next(&p, mr, i0)) {
                const int n = (int)(attn__strip_next(&p, mr, i0) - i0);
                attn__strip_mask sm = {.lo = lo, .hi = hi, .seg = seg};
                attn__mask_strip(&p, b, h, i0, n, &sm);
                assert_true(sm.nseg <= cap);
                memset(in, 0, (size_t)p.S);
                for (int k = 0; k < sm.nseg; k++) {
                    assert_true(sm.seg[k].a < sm.seg[k].b);
                    assert_true(k == 0 || sm.seg[k - 1].b <= sm.seg[k].a); /* sorted, disjoint */
                    for (int64_t j = sm.seg[k].a; j < sm.seg[k].b; j++)
                        in[j] = (uint8_t)sm.seg[k].kind;
                    ar.tiles += (double)n * (double)(sm.seg[k].b - sm.seg[k].a);
                    if (sm.seg[k].kind == ATTN__SEG_FULL)
                        ar.full += (double)n * (double)(sm.seg[k].b - sm.seg[k].a);
                }
                int gq = 0;
                int64_t wlo = INT64_MAX, whi = INT64_MIN;
                for (int r = 0; r < n; r++) {
                    gq |= attn__glob_query(&p, b, i0 + r);
                    int64_t l, e;
                    attn__row_range(&p, b, i0 + r, &l, &e);
                    if (l < e) wlo = ATTN_MIN(wlo, l), whi = ATTN_MAX(whi, e);
                }
                for (int64_t j = 0; j < p.S; j++) {
                    int any = 0, all = 1;
                    for (int r = 0; r < n; r++) {
                        int v = structural(a, b, h, i0 + r, j);
                        any |= v, all &= v;
                        ar.visible += v;
                    }
                    if (any && !in[j])
                        fail_msg("%s: (b %lld, h %lld, strip %lld) sees key %lld outside its "
                                 "segments",
                                 label, (long long)b, (long long)h, (long long)i0, (long long)j);
                    if (in[j] == ATTN__SEG_FULL && !all)
                        fail_msg("%s: (b %lld, h %lld, strip %lld) key %lld in a FULL segment "
                                 "that a row does not see",
                                 label, (long long)b, (long long)h, (long long)i0, (long long)j);
                    if (in[j] && !any && !gq && !(j >= wlo && j < whi)) {
                        int near = 0;
                        for (int64_t d = -ATTN__GLOB_GAP; d <= ATTN__GLOB_GAP && !near; d++)
                            near = j + d >= 0 && j + d < p.S && p.gtok && p.gtok[b * p.gtb + j + d];
                        if (!near)
                            fail_msg("%s: (b %lld, h %lld, strip %lld) computes key %lld, which "
                                     "no row sees, far from its window and any global token",
                                     label, (long long)b, (long long)h, (long long)i0,
                                     (long long)j);
                    }
                }
            }
    free(seg), free(lo), free(hi), free(in);
    attn__mask_glob_free(&glob);
    return ar;
}

static void test_classifier(void **state) {
    (void)state;
    const int64_t T = 1003, S = 1003;
    at_case c = {.B = 2, .H = 2, .T = T, .S = S, .D = 4};
    at_rng r = at_rng_for(98000);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    at_buf gb;
    int64_t gsh[2] = {2, S};
    assert_int_equal(at_buf_alloc(&gb, ATTN_U8, 2, gsh, NULL, 0), 0);
    uint8_t *g = gb.t.data;
    memset(g, 0, (size_t)(2 * S));
    for (int64_t j = 0; j < 8; j++)
        g[j] = 1; /* batch 0: Longformer's 8 leading global tokens */
    g[S + 0] = g[S + 500] = g[S + 504] = g[S + 1002] = 1; /* batch 1: start, middle, end */
    for (int64_t j = 700; j < 760; j += 3)
        g[S + j] = 1; /* and a mixed run */
    int32_t kvl[2] = {1003, 870};
    uint8_t blocks[64 * 64];
    for (int e = 0; e < 64 * 64; e++)
        blocks[e] = (uint8_t)((e * 7919) % 5 != 0);
    for (int variant = 0; variant < 5; variant++) {
        attn_sdpa_args a = x.a;
        a.global_tokens = gb.t;
        a.window = 1, a.window_left = 40, a.window_right = 40;
        attn_sdpa_layout L = {blocks, 32, 40, (T + 31) / 32, (S + 39) / 40, 0};
        if (variant == 1) a.causal = 1;
        if (variant == 2) a.kv_len = kvl;
        if (variant == 3) a.layout = &L; /* window and layout, lifted by the globals */
        if (variant == 4) a.window = 0, a.layout = &L;
        static const int mrs[] = {7, 24, 48}; /* strip heights */
        for (int m = 0; m < 3; m++) {
            const int mr = mrs[m];
            char label[64];
            snprintf(label, sizeof label, "classifier variant %d mr %d", variant, mr);
            area ar = classify_all(&a, mr, label);
            if (getenv("AT_VERBOSE"))
                fprintf(stderr, "%s: tiles %.0f full %.0f visible %.0f (dense %lld)\n", label,
                        ar.tiles, ar.full, ar.visible, (long long)(2 * 2 * T * S));
            /* mostly inside the band and the globals: little waste, and most
             * of the visible area needs no mask */
            if (variant <= 2) {
                assert_true(ar.tiles < 0.35 * (double)(2 * 2 * T * S));
                assert_true(ar.tiles < 3.0 * ar.visible);
                /* (causal: a 41-key band has no full middle in 48-row strips) */
                if (variant != 1) assert_true(ar.full > 0.3 * ar.visible);
                assert_true(ar.full > 0.05 * ar.visible);
            }
        }
    }
    at_buf_free(&gb);
    at_sdpa_free(&x);
}

/* Keys no strip reads may hold NaN: rows far from them and from every
 * global query stay finite; a global query (which sees every key) does not. */
static void test_unread_keys(void **state) {
    (void)state;
    const int64_t T = 700, S = 700, D = 16, j0 = 600, w = 16;
    at_case c = {.B = 1, .H = 2, .Hkv = 1, .T = T, .S = S, .D = D};
    c.window = 1, c.wl = w, c.wr = w;
    at_rng r = at_rng_for(98100);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    at_buf gb;
    int64_t gs[1] = {S};
    assert_int_equal(at_buf_alloc(&gb, ATTN_U8, 1, gs, NULL, 0), 0);
    uint8_t *g = gb.t.data;
    memset(g, 0, (size_t)S);
    g[0] = g[1] = g[350] = 1;
    x.a.global_tokens = gb.t;
    for (int64_t d = 0; d < D; d++)
        *at_f32(&x.k.t, 0, 0, j0, d) = NAN, *at_f32(&x.v.t, 0, 0, j0, d) = NAN;
    assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_OK);
    for (int64_t h = 0; h < 2; h++)
        for (int64_t i = 0; i < T; i++) {
            const int far = llabs(i - j0) > w + 96 && i > 1 + 96 && llabs(i - 350) > 96;
            const float o = *at_f32(&x.out.t, 0, h, i, 0);
            if (far && !isfinite(o))
                fail_msg("row %lld read the NaN key %lld (window %lld, globals 0, 1, 350)",
                         (long long)i, (long long)j0, (long long)w);
            if ((i == 0 || i == 1 || i == 350 || llabs(i - j0) <= w) && !isnan(o))
                fail_msg("row %lld sees key %lld but its output is %g", (long long)i, (long long)j0,
                         (double)o);
        }
    at_buf_free(&gb);
    at_sdpa_free(&x);
}

/* attn_sdpa_flops counts the rule's pairs. */
static void test_flops(void **state) {
    (void)state;
    at_case c = {.B = 3, .H = 2, .T = 97, .S = 120, .D = 8, .Dv = 4, .kv_len = 1};
    c.window = 1, c.wl = 6, c.wr = 2, c.causal = 1, c.align = ATTN_ALIGN_BOTTOM_RIGHT;
    c.global = 1, c.global_frac = 0.05f;
    at_rng r = at_rng_for(98200);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    uint8_t blocks[64];
    for (int e = 0; e < 64; e++)
        blocks[e] = (uint8_t)(e % 3 != 1);
    attn_sdpa_layout L = {blocks, 16, 16, 7, 8, 0};
    for (int lay = 0; lay < 2; lay++) {
        x.a.layout = lay ? &L : NULL;
        double pairs = 0;
        for (int64_t b = 0; b < 3; b++)
            for (int64_t h = 0; h < 2; h++)
                for (int64_t i = 0; i < c.T; i++)
                    for (int64_t j = 0; j < c.S; j++)
                        pairs += structural(&x.a, b, h, i, j);
        assert_true(pairs > 0);
        assert_true(fabs(attn_sdpa_flops(&x.a) - 2.0 * pairs * (8 + 4)) < 0.5);
    }
    at_sdpa_free(&x);
}

static void test_bad_global_tokens(void **state) {
    (void)state;
    at_case c = {.B = 2, .H = 2, .T = 10, .S = 12, .D = 4};
    at_rng r = at_rng_for(98300);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    uint8_t g[64] = {1};
    float gf[64] = {0};
    attn_sdpa_args a = x.a;
    a.global_tokens = attn_tensor_make(g, ATTN_U8, 1, (int64_t[]){12});
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_OK);
    a.global_tokens = attn_tensor_make(g, ATTN_BOOL, 2, (int64_t[]){2, 12});
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_OK);
    a.global_tokens = attn_tensor_make(g, ATTN_U8, 2, (int64_t[]){1, 12});
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_OK);
    struct {
        attn_tensor t;
        attn_status st;
    } bad[] = {
        {attn_tensor_make(gf, ATTN_F32, 1, (int64_t[]){12}), ATTN_E_DTYPE},
        {attn_tensor_make(g, ATTN_I32, 1, (int64_t[]){12}), ATTN_E_DTYPE},
        {attn_tensor_make(g, ATTN_U8, 1, (int64_t[]){13}), ATTN_E_SHAPE},
        {attn_tensor_make(g, ATTN_U8, 1, (int64_t[]){10}), ATTN_E_SHAPE}, /* T, not S */
        {attn_tensor_make(g, ATTN_U8, 2, (int64_t[]){3, 12}), ATTN_E_SHAPE},
        {attn_tensor_make(g, ATTN_U8, 3, (int64_t[]){1, 2, 12}), ATTN_E_SHAPE},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        a.global_tokens = bad[k].t;
        assert_int_equal(attn_sdpa_forward(at_ctx, &a), bad[k].st);
        assert_non_null(strstr(attn_ctx_last_error(at_ctx), "global_tokens"));
        assert_int_equal(attn_sdpa_forward_ref(at_ctx, &a), bad[k].st);
        assert_true(attn_sdpa_flops(&a) == 0.0);
    }
    a.global_tokens = attn_tensor_make(g, ATTN_U8, 1, (int64_t[]){12});
    a.global_tokens.stride[0] = 2;
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_E_LAYOUT);
    /* an input: the output may not overlap it */
    a.global_tokens = attn_tensor_make(x.out.t.data, ATTN_U8, 1, (int64_t[]){12});
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "global_tokens"));
    /* the backward and probs validate it the same way */
    a.global_tokens = attn_tensor_make(gf, ATTN_F32, 1, (int64_t[]){12});
    at_grads gr;
    assert_int_equal(at_grads_alloc(&gr, &x.a, AT_BHTD, 0, &r), 0);
    assert_int_equal(attn_sdpa_backward(at_ctx, &a, &gr.g), ATTN_E_DTYPE);
    float pr[12 * 10];
    attn_tensor pv = attn_tensor_make(pr, ATTN_F32, 2, (int64_t[]){10, 12});
    assert_int_equal(attn_sdpa_probs(at_ctx, &a, 0, 0, 0, pv), ATTN_E_DTYPE);
    at_grads_free(&gr);
    at_sdpa_free(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_global_tokens),
        cmocka_unit_test(test_flops),
        cmocka_unit_test(test_none_and_all),
        cmocka_unit_test(test_backward_strip_cut),
        cmocka_unit_test(test_classifier),
        cmocka_unit_test(test_unread_keys),
        cmocka_unit_test(test_probs),
        cmocka_unit_test(test_patterns_dense_equivalence),
        cmocka_unit_test(test_random_against_oracle),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
