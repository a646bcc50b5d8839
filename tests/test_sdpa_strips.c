/* The forward's strips of their own height (ops/sdpa_mask.h,
 * attn__fwd_strip_next): a span's rows in the fewest strips of equal height
 * in multiples of the family's mrq, narrower under a narrow window, cut
 * after runs of global query rows. Checked here:
 *  - the walk itself, for every family's mr and mrq: strips cover the rows
 *    once, never straddle a span (a layout's query block), are at most mr
 *    (or 2/3 mr under a narrow window) high, as few as the height allows,
 *    and leading global query rows get a strip of their own;
 *  - the forward on short strips (query blocks of 1 to 193 rows, their
 *    tails, odd T and S) with GQA, causal in both alignments, kv_len, key
 *    padding and global tokens (shared, at the start, the middle and the
 *    end, and per batch), against the float64 oracle with the tolerance
 *    rule, at 1 and 3 threads;
 *  - a row's results do not depend on its strip's height: an all-ones
 *    layout of any block size, and a window strip, give bitwise the dense
 *    kernel's (or the layout-free window's) output and lse.
 * The backward's strips (attn__bwd_strip_next: up to bmr rows, heights in
 * multiples of bmrq, no window rule) get the same three checks: the walk,
 * short strips against the oracle (1 and 3 threads, the 3-thread runs of a
 * single (batch, kv head) split by key chunk and query strip), and
 * gradients bitwise independent of the strips' heights. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "at_sdpa_bwd.h"
#include "attn_test.h"
#include "kernels/arch.h"
#include "ops/sdpa_mask.h"

static const int64_t qblocks[] = {1,  7,  8,  15, 16, 17, 24,  31,  32,  33,  40, 47,
                                  48, 49, 64, 65, 80, 96, 100, 128, 130, 192, 193};
#define NQB (int)(sizeof qblocks / sizeof qblocks[0])

/* The global tokens of pattern g over S keys into m: 0 none, 1 the first
 * 5, 2 five in the middle, 3 the last 3, 4 the first 16 and 9..11 of the
 * middle. */
static void globals_pattern(uint8_t *m, int64_t S, int g) {
    memset(m, 0, (size_t)S);
    for (int64_t j = 0; j < S; j++) {
        if (g == 1) m[j] = j < 5;
        if (g == 2) m[j] = j >= S / 2 && j < S / 2 + 5;
        if (g == 3) m[j] = j >= S - 3;
        if (g == 4) m[j] = j < 16 || (j >= S / 2 + 9 && j < S / 2 + 12);
    }
}

/* Walk the strips of plan p for a family of (mr, q) and check them: the
 * forward's, or with bwd the backward's (no narrower strips under a window). */
static void check_walk(const attn__sdpa_plan *p, int64_t mr, int64_t q, int bwd, const char *what) {
    const int64_t span = attn__row_span(p), w = attn__window_width(p);
    const int64_t cap =
        !bwd && !p->lay && w >= 0 && w <= 32 * mr ? ATTN_MAX(q, (2 * mr / 3) / q * q) : mr;
    int64_t strips = 0, cuts = 0;
    for (int64_t i0 = 0; i0 < p->T;) {
        const int64_t e = bwd ? attn__bwd_strip_next(p, mr, q, i0)
                              : attn__fwd_strip_next(p, mr, q, i0),
                      h = bwd ? attn__strip_rows(p, mr, q, i0) : attn__fwd_strip_rows(p, mr, q, i0);
        if (e <= i0 || e > p->T)
            fail_msg("%s: strip at %lld ends at %lld", what, (long long)i0, (long long)e);
        if (e - i0 > h || h > cap || h % q)
            fail_msg("%s: strip [%lld, %lld) in a height of %lld (cap %lld, q %lld)", what,
                     (long long)i0, (long long)e, (long long)h, (long long)cap, (long long)q);
        if (i0 / span != (e - 1) / span)
            fail_msg("%s: strip [%lld, %lld) straddles spans of %lld", what, (long long)i0,
                     (long long)e, (long long)span);
        /* a strip ends at its height, its span's end, T, or a global cut */
        const int64_t full = ATTN_MIN(ATTN_MIN(i0 + h, (i0 / span + 1) * span), p->T);
        if (e != full) {
            cuts++;
            if (!p->glob || p->gtb || attn__glob_query(p, 0, e - 1) == attn__glob_query(p, 0, e))
                fail_msg("%s: strip [%lld, %lld) cut short with no global run ending there", what,
                         (long long)i0, (long long)e);
        }
        strips++;
        i0 = e;
    }
    /* as few as the height allows: ceil(n / cap) a span, at most one more
     * for each cut */
    int64_t fewest = 0;
    for (int64_t s0 = 0; s0 < p->T; s0 += span)
        fewest += (ATTN_MIN(s0 + span, p->T) - s0 + cap - 1) / cap;
    if (strips < fewest || strips > fewest + cuts)
        fail_msg("%s: %lld strips, expected %lld (+ %lld cuts)", what, (long long)strips,
                 (long long)fewest, (long long)cuts);
}

static void test_strip_walk(void **state) {
    (void)state;
    static const int64_t Ts[] = {1, 5, 16, 17, 47, 48, 49, 63, 64, 65, 100, 128, 129, 300, 1001};
    const char *name;
    int fams = 0;
    for (int fi = 0; (name = attn_arch_available(fi)) != NULL; fi++) {
        attn_status why;
        const attn__arch *f = attn__arch_find(name, &why);
        if (!f) continue;
        fams++;
        assert_true(f->mrq >= 1 && f->mr % f->mrq == 0);
        assert_true(f->bmrq >= 1 && f->bmr % f->bmrq == 0);
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
            for (int lq = -1; lq < NQB; lq += 3)
                for (int g = 0; g < 5; g++)
                    for (int win = 0; win < 3; win++) {
                        const int64_t T = Ts[ti], S = T + 3;
                        at_case c = {.B = 1, .H = 1, .T = T, .S = S, .D = 4};
                        at_rng r = at_rng_for(99100 + (uint64_t)ti);
                        at_sdpa x;
                        assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
                        uint8_t *gm = malloc((size_t)S), *blocks = NULL;
                        globals_pattern(gm, S, g);
                        attn_sdpa_args a = x.a;
                        if (g) a.global_tokens = attn_tensor_make(gm, ATTN_U8, 1, (int64_t[]){S});
                        if (win) /* a narrow window (2/3 mr strips) or a wide one */
                            a.window = 1, a.window_left = win == 1 ? 20 : 5000, a.window_right = 3;
                        attn_sdpa_layout L = {0};
                        if (lq >= 0) {
                            L.bq = qblocks[lq], L.bk = 16;
                            L.nqb = (T + L.bq - 1) / L.bq, L.nkb = (S + 15) / 16;
                            blocks = malloc((size_t)(L.nqb * L.nkb));
                            memset(blocks, 1, (size_t)(L.nqb * L.nkb));
                            L.blocks = blocks;
                            a.layout = &L;
                        }
                        attn__sdpa_plan p;
                        attn__glob glob;
                        assert_int_equal(attn__sdpa_plan_make(at_ctx, &a, 0, &p), ATTN_OK);
                        assert_int_equal(attn__mask_glob_build(at_ctx, &p, &glob), ATTN_OK);
                        char what[128];
                        snprintf(what, sizeof what, "%s T=%lld block %lld globals %d window %d",
                                 name, (long long)T, lq >= 0 ? (long long)L.bq : 0LL, g, win);
                        check_walk(&p, f->mr, f->mrq, 0, what);
                        check_walk(&p, f->bmr, f->bmrq, 1, what);
                        /* leading global rows get a strip of their own */
                        if (g == 1 && T > 5 && (lq < 0 || L.bq > 5)) {
                            assert_int_equal(attn__fwd_strip_next(&p, f->mr, f->mrq, 0), 5);
                            assert_int_equal(attn__bwd_strip_next(&p, f->bmr, f->bmrq, 0), 5);
                        }
                        /* a 64-row query block is one backward strip of 64
                         * rows where the family takes that height */
                        if (lq >= 0 && L.bq == 64 && T >= 64 && !g && 64 % f->bmrq == 0)
                            assert_int_equal(attn__bwd_strip_next(&p, f->bmr, f->bmrq, 0), 64);
                        attn__mask_glob_free(&glob);
                        free(gm), free(blocks);
                        at_sdpa_free(&x);
                    }
    }
    assert_true(fams >= 1);
}

/* Variant v (0..3) of a short-strip case: causal (1, 3), kv_len (2, 3),
 * key padding (2), global tokens (3), per-head layout (odd v); builds the
 * tensors into x and a random layout of query blocks of bq rows into L
 * (its blocks returned, for the caller to free). */
static uint8_t *variant_case(at_case *c, int v, int64_t bq, at_rng *r, at_sdpa *x,
                             attn_sdpa_layout *L) {
    c->causal = v == 1 || v == 3;
    c->align = at_rng_int(r, 0, 1) ? ATTN_ALIGN_BOTTOM_RIGHT : ATTN_ALIGN_TOP_LEFT;
    c->kv_len = v >= 2;
    c->kpm = v == 2 ? 1 : 0;
    c->global = v == 3 ? (int)at_rng_int(r, 1, 2) : 0;
    c->global_frac = 0.05f;
    assert_int_equal(at_sdpa_build(x, c, r), 0);
    memset(L, 0, sizeof *L);
    L->bq = bq, L->bk = (int64_t[]){7, 16, 48, 128}[at_rng_int(r, 0, 3)];
    L->nqb = (c->T + L->bq - 1) / L->bq, L->nkb = (c->S + L->bk - 1) / L->bk;
    L->per_head = v & 1;
    const int64_t nb = (L->per_head ? c->H : 1) * L->nqb * L->nkb;
    uint8_t *blocks = malloc((size_t)nb);
    assert_non_null(blocks);
    for (int64_t e = 0; e < nb; e++)
        blocks[e] = at_rng_unit(r) < 0.6;
    L->blocks = blocks;
    return blocks;
}

/* Short strips against the oracle: query blocks of every height class with
 * their tails, odd sizes, GQA, causal, kv_len, key padding, globals. */

static void test_short_strips_oracle(void **state) {
    (void)state;
    int fails = 0, n = 0;
    const int step = at_quick() ? 3 : 1;
    for (int qi = 0; qi < NQB; qi += step)
        for (int v = 0; v < 4; v++) {
            const int64_t bq = qblocks[qi];
            at_rng r = at_rng_for(99300 + (uint64_t)(qi * 8 + v));
            at_case c = {.B = 2, .H = 4, .Hkv = 2, .D = (int64_t)at_rng_int(&r, 1, 70)};
            c.Dv = at_rng_int(&r, 1, 70);
            c.T = ATTN_MIN(3 * bq + at_rng_int(&r, 0, bq), 420); /* whole blocks and a tail */
            c.S = at_rng_int(&r, 2, 300) | 1;
            at_sdpa x;
            attn_sdpa_layout L;
            uint8_t *blocks = variant_case(&c, v, bq, &r, &x, &L);
            x.a.layout = v == 0 && qi % 2 ? NULL : &L; /* some plain, for the dense tails */
            if (!x.a.layout) x.a.window = 1, x.a.window_left = (int64_t)bq, x.a.window_right = 5;
            for (int th = 1; th <= 3; th += 2) {
                assert_int_equal(attn_ctx_set_threads(at_ctx, th), ATTN_OK);
                char label[96];
                snprintf(label, sizeof label,
                         "short strips: query block %lld variant %d, %d threads", (long long)bq, v,
                         th);
                fails += !at_sdpa_check_forward(at_ctx, &x.a, &x.out, &x.lse, label, r.seed);
                n++;
            }
            free(blocks);
            at_sdpa_free(&x);
        }
    assert_int_equal(attn_ctx_set_threads(at_ctx, 2), ATTN_OK);
    assert_true(n > 0);
    assert_int_equal(fails, 0);
}

/* Run a into its out and lse, then copy them to o and l. */
static void run_copy(const attn_sdpa_args *a, const at_sdpa *x, float *o, float *l) {
    assert_int_equal(attn_sdpa_forward(at_ctx, a), ATTN_OK);
    memcpy(o, x->out.mem, x->out.count * sizeof(float));
    memcpy(l, x->lse.mem, x->lse.count * sizeof(float));
}

/* The same rows in strips of other heights give the same bits. */
static void test_bitwise_across_heights(void **state) {
    (void)state;
    for (int v = 0; v < 4; v++) {
        at_case c = {.B = 2, .H = 4, .Hkv = 2, .T = 387, .S = 301, .D = 40, .Dv = 24};
        c.causal = v & 1;
        c.align = v & 1 ? ATTN_ALIGN_BOTTOM_RIGHT : ATTN_ALIGN_TOP_LEFT;
        c.kv_len = v >= 2;
        c.kpm = v == 3;
        at_rng r = at_rng_for(99500 + (uint64_t)v);
        at_sdpa x;
        assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
        const size_t no = x.out.count, nl = x.lse.count;
        float *o0 = malloc(no * sizeof(float)), *l0 = malloc(nl * sizeof(float));
        float *o1 = malloc(no * sizeof(float)), *l1 = malloc(nl * sizeof(float));
        for (int win = 0; win < 2; win++) {
            attn_sdpa_args a = x.a;
            if (win) a.window = 1, a.window_left = 37, a.window_right = 11; /* 2/3-high strips */
            run_copy(&a, &x, o0, l0);
            for (int qi = 0; qi < NQB; qi++) {
                /* every block on: the layout hides nothing, its query blocks
                 * only cut the strips (and a window's strips are full height) */
                attn_sdpa_layout L = {0};
                L.bq = qblocks[qi], L.bk = 16;
                L.nqb = (c.T + L.bq - 1) / L.bq, L.nkb = (c.S + 15) / 16;
                uint8_t *blocks = malloc((size_t)(L.nqb * L.nkb));
                memset(blocks, 1, (size_t)(L.nqb * L.nkb));
                L.blocks = blocks;
                attn_sdpa_args b = a;
                b.layout = &L;
                run_copy(&b, &x, o1, l1);
                if (memcmp(o0, o1, no * sizeof(float)) || memcmp(l0, l1, nl * sizeof(float)))
                    fail_msg("variant %d window %d: query blocks of %lld rows change the bits", v,
                             win, (long long)L.bq);
                free(blocks);
            }
        }
        free(o0), free(l0), free(o1), free(l1);
        at_sdpa_free(&x);
    }
}

/* The backward on short strips against the oracle: query blocks of every
 * height class with their tails, odd sizes, GQA, causal in both
 * alignments, kv_len, key padding, globals; at 1 thread and 3 (one
 * (batch, kv head) when v is odd, so the work is split by key chunk and
 * query strip). */
static void test_bwd_short_strips_oracle(void **state) {
    (void)state;
    int fails = 0, n = 0;
    const int step = at_quick() ? 4 : 2;
    for (int qi = 0; qi < NQB; qi += step)
        for (int v = 0; v < 4; v++) {
            const int64_t bq = qblocks[qi];
            at_rng r = at_rng_for(99700 + (uint64_t)(qi * 8 + v));
            at_case c = {.B = v & 1 ? 1 : 2, .H = 4, .Hkv = v & 1 ? 1 : 2};
            c.D = at_rng_int(&r, 1, 70), c.Dv = at_rng_int(&r, 1, 70);
            c.T = ATTN_MIN(2 * bq + at_rng_int(&r, 0, bq), 300); /* whole blocks and a tail */
            c.S = at_rng_int(&r, 2, 200) | 1;
            at_sdpa x;
            attn_sdpa_layout L;
            uint8_t *blocks = variant_case(&c, v, bq, &r, &x, &L);
            x.a.layout = v == 0 && qi % 2 ? NULL : &L; /* some plain, for the dense tails */
            for (int th = 1; th <= 3; th += 2) {
                assert_int_equal(attn_ctx_set_threads(at_ctx, th), ATTN_OK);
                at_grads gr;
                assert_int_equal(at_grads_alloc(&gr, &x.a, c.layout, 0, &r), 0);
                char label[96];
                snprintf(label, sizeof label,
                         "backward short strips: query block %lld variant %d, %d threads",
                         (long long)bq, v, th);
                fails += !at_sdpa_check_backward(at_ctx, &x.a, &gr, label, r.seed);
                n++;
                at_grads_free(&gr);
            }
            free(blocks);
            at_sdpa_free(&x);
        }
    assert_int_equal(attn_ctx_set_threads(at_ctx, 2), ATTN_OK);
    assert_true(n > 0);
    assert_int_equal(fails, 0);
}

/* Gradients of a into gr, copied to dq, dk, dv (the forward's out and lse
 * in x already). */
static void run_bwd_copy(const attn_sdpa_args *a, at_grads *gr, float *d[3]) {
    assert_int_equal(attn_sdpa_backward(at_ctx, a, &gr->g), ATTN_OK);
    memcpy(d[0], gr->dq.mem, gr->dq.count * sizeof(float));
    memcpy(d[1], gr->dk.mem, gr->dk.count * sizeof(float));
    memcpy(d[2], gr->dv.mem, gr->dv.count * sizeof(float));
}

/* The backward's rows in strips of other heights give the same gradient
 * bits: the dense kernel against an all-ones layout of every query block
 * size (whose blocks only cut the strips), fused (1 thread) and split (3
 * threads on one (batch, kv head)). */
static void test_bwd_bitwise_across_heights(void **state) {
    (void)state;
    for (int v = 0; v < 4; v++) {
        at_case c = {.B = v & 1 ? 1 : 2, .H = 4, .Hkv = v & 1 ? 1 : 2, .T = 263, .S = 201};
        c.D = 40, c.Dv = 24;
        c.causal = v & 1;
        c.align = v & 1 ? ATTN_ALIGN_BOTTOM_RIGHT : ATTN_ALIGN_TOP_LEFT;
        c.kv_len = v >= 2;
        c.kpm = v == 3;
        at_rng r = at_rng_for(99900 + (uint64_t)v);
        at_sdpa x;
        assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
        assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_OK);
        at_grads gr;
        assert_int_equal(at_grads_alloc(&gr, &x.a, c.layout, 0, &r), 0);
        const size_t cnt[3] = {gr.dq.count, gr.dk.count, gr.dv.count};
        float *d0[3], *d1[3];
        for (int t = 0; t < 3; t++)
            d0[t] = malloc(cnt[t] * sizeof(float)), d1[t] = malloc(cnt[t] * sizeof(float));
        for (int th = 1; th <= 3; th += 2) {
            assert_int_equal(attn_ctx_set_threads(at_ctx, th), ATTN_OK);
            run_bwd_copy(&x.a, &gr, d0);
            for (int qi = 0; qi < NQB; qi += at_quick() ? 2 : 1) {
                attn_sdpa_layout L = {0};
                L.bq = qblocks[qi], L.bk = 16;
                L.nqb = (c.T + L.bq - 1) / L.bq, L.nkb = (c.S + 15) / 16;
                uint8_t *blocks = malloc((size_t)(L.nqb * L.nkb));
                memset(blocks, 1, (size_t)(L.nqb * L.nkb));
                L.blocks = blocks;
                attn_sdpa_args b = x.a;
                b.layout = &L;
                run_bwd_copy(&b, &gr, d1);
                for (int t = 0; t < 3; t++)
                    if (memcmp(d0[t], d1[t], cnt[t] * sizeof(float)))
                        fail_msg("variant %d, %d threads: query blocks of %lld rows change the "
                                 "bits of %s",
                                 v, th, (long long)L.bq, (const char *[]){"dq", "dk", "dv"}[t]);
                free(blocks);
            }
        }
        assert_int_equal(attn_ctx_set_threads(at_ctx, 2), ATTN_OK);
        for (int t = 0; t < 3; t++)
            free(d0[t]), free(d1[t]);
        at_grads_free(&gr);
        at_sdpa_free(&x);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strip_walk),
        cmocka_unit_test(test_bitwise_across_heights),
        cmocka_unit_test(test_short_strips_oracle),
        cmocka_unit_test(test_bwd_bitwise_across_heights),
        cmocka_unit_test(test_bwd_short_strips_oracle),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
