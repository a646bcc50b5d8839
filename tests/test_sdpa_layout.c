/* Block-sparse attention (attn_sdpa_args.layout) against the float64 oracle:
 * random layouts of random block sizes (shared or per head) combined with
 * every other option, forward and backward, with the tolerance rule; the
 * equivalent dense boolean mask gives the same answer; blocks no row
 * computes are never read (NaN keys there change nothing); FLOPs follow the
 * layout; the pattern builder's shapes; bad layouts get their statuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "at_sdpa_bwd.h"

static const int64_t lens[] = {1, 5, 24, 25, 48, 63, 64, 65, 129, 200};
#define NLENS (int)(sizeof lens / sizeof lens[0])
static const int64_t bsizes[] = {1, 3, 7, 16, 24, 48, 64, 100};
#define NBS (int)(sizeof bsizes / sizeof bsizes[0])

typedef struct lay {
    attn_sdpa_layout L;
    uint8_t *blocks;
} lay;

/* A random layout for q [.., H, T, ..], k [.., S, ..]: density 0.05..0.95. */
static void lay_random(lay *y, at_rng *r, int64_t H, int64_t T, int64_t S) {
    y->L.bq = bsizes[at_rng_int(r, 0, NBS - 1)];
    y->L.bk = bsizes[at_rng_int(r, 0, NBS - 1)];
    y->L.nqb = (T + y->L.bq - 1) / y->L.bq;
    y->L.nkb = (S + y->L.bk - 1) / y->L.bk;
    y->L.per_head = (int)at_rng_int(r, 0, 1);
    const int64_t n = (y->L.per_head ? H : 1) * y->L.nqb * y->L.nkb;
    double dens = 0.05 + 0.9 * at_rng_unit(r);
    y->blocks = malloc((size_t)(n > 0 ? n : 1));
    for (int64_t e = 0; e < n; e++)
        y->blocks[e] = at_rng_unit(r) < dens;
    y->L.blocks = y->blocks;
}

/* S >= 2: with one key the exact gradient is 0 and a plain fp32 run can
 * land on exactly 0, which shrinks the tolerance to the bare 1e-6 (the
 * mask-broadcast sweep does the same). */
static at_case random_case(at_rng *r, uint64_t k) {
    at_case c = at_case_random(r, k, lens, NLENS);
    if (c.S < 2) c.S = 7;
    return c;
}

/* Forward and backward of case c with a random layout, against the oracle. */
static int run_case(attn_ctx *ctx, const at_case *c, uint64_t id, const char *label) {
    at_rng r = at_rng_for(id);
    at_sdpa x;
    if (at_sdpa_build(&x, c, &r)) return 0;
    lay y;
    lay_random(&y, &r, c->H, c->T, c->S);
    x.a.layout = &y.L;
    char full[160];
    snprintf(full, sizeof full, "%s layout %lldx%lld%s", label, (long long)y.L.bq,
             (long long)y.L.bk, y.L.per_head ? " per head" : "");
    int ok = at_sdpa_check_forward(ctx, &x.a, &x.out, c->no_lse ? NULL : &x.lse, full, r.seed);
    if (ok && !c->no_lse) {
        at_grads g;
        /* dmask only for an unbroadcast float mask: a dmask summed over
         * batches and heads is the mask-broadcast test's subject, and its
         * single plain-fp32 draw sets a tolerance that is luck there */
        int dm = c->mask_dtype == ATTN_F32 && c->mask_bcast == AT_MASK_BHTS;
        if (at_grads_alloc(&g, &x.a, c->layout, dm, &r)) {
            ok = 0;
        } else {
            ok = at_sdpa_check_backward(ctx, &x.a, &g, full, r.seed);
            at_grads_free(&g);
        }
    }
    free(y.blocks);
    at_sdpa_free(&x);
    return ok;
}

static void test_random_against_oracle(void **state) {
    (void)state;
    int fails = at_run_random_cases(at_quick() ? 40 : 200, 91000, 92000, "layout case", random_case,
                                    run_case);
    assert_int_equal(fails, 0);
}

/* The layout as a dense boolean mask [H, T, S] (1 = attend). */
static uint8_t *dense_of(const attn_sdpa_layout *L, int64_t H, int64_t T, int64_t S) {
    uint8_t *m = malloc((size_t)(H * T * S));
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < S; j++)
                m[(h * T + i) * S + j] =
                    L->blocks[((L->per_head ? h : 0) * L->nqb + i / L->bq) * L->nkb + j / L->bk];
    return m;
}

/* Every built pattern equals its dense mask through the fast kernels (both
 * within the tolerance of the oracle, and within a few ulp of each other),
 * and keys in blocks no row computes are never read. */
static void test_patterns_and_dense_equivalence(void **state) {
    (void)state;
    const int64_t H = 2, T = 300, S = 300, D = 32, bq = 32, bk = 32;
    const int64_t nq = (T + bq - 1) / bq, nk = (S + bk - 1) / bk;
    attn_sdpa_layout_spec specs[6];
    memset(specs, 0, sizeof specs);
    specs[0].use_window = 1, specs[0].window = 1;                      /* local */
    specs[1].use_window = 1, specs[1].window = 1, specs[1].global = 1; /* Longformer */
    specs[2].use_window = 1, specs[2].window = 1, specs[2].global = 1, specs[2].random = 2;
    specs[2].seed = 7;                                                   /* BigBird */
    specs[3].use_window = 1, specs[3].window = 0, specs[3].stride = 3;   /* strided */
    specs[4].use_window = 1, specs[4].window = 4, specs[4].dilation = 2; /* dilated */
    specs[5].use_window = 1, specs[5].window = 2, specs[5].causal = 1;   /* causal band */
    for (int sp = 0; sp < 6; sp++) {
        uint8_t *blocks = malloc((size_t)(nq * nk));
        assert_int_equal(attn_sdpa_layout_build(at_ctx, &specs[sp], T, S, bq, bk, blocks), ATTN_OK);
        attn_sdpa_layout L = {blocks, bq, bk, nq, nk, 0};
        at_case c = {.B = 1, .H = H, .T = T, .S = S, .D = D, .Dv = D};
        at_rng r = at_rng_for(93000 + (uint64_t)sp);
        at_sdpa x;
        assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
        /* NaN in every key and value row of key blocks no query computes */
        for (int64_t kb = 0; kb < nk; kb++) {
            int used = 0;
            for (int64_t qb = 0; qb < nq; qb++)
                used |= blocks[qb * nk + kb];
            for (int64_t j = kb * bk; !used && j < S && j < (kb + 1) * bk; j++)
                for (int64_t hk = 0; hk < H; hk++)
                    for (int64_t d = 0; d < D; d++) {
                        *at_f32(&x.k.t, 0, hk, j, d) = NAN;
                        *at_f32(&x.v.t, 0, hk, j, d) = NAN;
                    }
        }
        x.a.layout = &L;
        char label[64];
        snprintf(label, sizeof label, "pattern %d", sp);
        assert_true(at_sdpa_check_forward(at_ctx, &x.a, &x.out, &x.lse, label, r.seed));
        /* the same through a dense boolean mask, keys cleaned of NaN (a mask
         * reads every key of the tiles it cuts) */
        at_buf out2, m;
        assert_int_equal(at_buf_f32(&out2, 1, H, T, D), 0);
        uint8_t *dm = dense_of(&L, H, T, S);
        int64_t ms[3] = {H, T, S};
        assert_int_equal(at_buf_alloc(&m, ATTN_BOOL, 3, ms, NULL, 0), 0);
        memcpy(m.t.data, dm, (size_t)(H * T * S));
        for (int64_t e = 0; e < H * S * D; e++) {
            float *kk = (float *)x.k.t.data + e, *vv = (float *)x.v.t.data + e;
            if (isnan(*kk)) *kk = 0.0f;
            if (isnan(*vv)) *vv = 0.0f;
        }
        attn_sdpa_args d2 = x.a;
        d2.layout = NULL;
        d2.mask = m.t;
        d2.out = out2.t;
        d2.lse.data = NULL;
        assert_int_equal(attn_sdpa_forward(at_ctx, &d2), ATTN_OK);
        for (int64_t e = 0; e < H * T * D; e++) {
            float a = ((float *)x.out.t.data)[e], b = ((float *)out2.t.data)[e];
            assert_false(isnan(a));
            if (fabsf(a - b) > 1e-5f * (1.0f + fabsf(b)))
                fail_msg("pattern %d: element %lld layout %g dense mask %g", sp, (long long)e,
                         (double)a, (double)b);
        }
        /* FLOPs follow the layout: the dense mask is not counted, the layout is */
        double fl = attn_sdpa_flops(&x.a), pairs = 0;
        for (int64_t e = 0; e < H * T * S; e++)
            pairs += dm[e];
        assert_true(fabs(fl - 2.0 * pairs * (double)(2 * D)) < 0.5);
        free(dm);
        at_buf_free(&out2);
        at_buf_free(&m);
        at_sdpa_free(&x);
        free(blocks);
    }
}

/* The builder's shapes on a small grid (8 x 8 blocks of the same size). */
static void test_builder_shapes(void **state) {
    (void)state;
    uint8_t b[64];
    attn_sdpa_layout_spec s = {0};
    assert_int_equal(attn_sdpa_layout_build(at_ctx, &s, 64, 64, 8, 8, b), ATTN_OK);
    for (int e = 0; e < 64; e++)
        assert_int_equal(b[e], 0); /* zero spec: empty */
    s.use_window = 1, s.window = 1, s.causal = 1;
    assert_int_equal(attn_sdpa_layout_build(at_ctx, &s, 64, 64, 8, 8, b), ATTN_OK);
    for (int q = 0; q < 8; q++)
        for (int k = 0; k < 8; k++)
            assert_int_equal(b[q * 8 + k], k <= q && k >= q - 1);
    memset(&s, 0, sizeof s);
    s.global = 1;
    assert_int_equal(attn_sdpa_layout_build(at_ctx, &s, 64, 64, 8, 8, b), ATTN_OK);
    for (int q = 0; q < 8; q++)
        for (int k = 0; k < 8; k++)
            assert_int_equal(b[q * 8 + k], q == 0 || k == 0);
    memset(&s, 0, sizeof s);
    s.random = 3, s.seed = 1;
    assert_int_equal(attn_sdpa_layout_build(at_ctx, &s, 64, 64, 8, 8, b), ATTN_OK);
    uint8_t b2[64];
    assert_int_equal(attn_sdpa_layout_build(at_ctx, &s, 64, 64, 8, 8, b2), ATTN_OK);
    assert_memory_equal(b, b2, 64); /* seeded */
    for (int q = 0; q < 8; q++) {
        int n = 0;
        for (int k = 0; k < 8; k++)
            n += b[q * 8 + k];
        assert_int_equal(n, 3);
    }
    memset(&s, 0, sizeof s);
    s.use_window = 1, s.window = 4, s.dilation = 2;
    assert_int_equal(attn_sdpa_layout_build(at_ctx, &s, 64, 64, 8, 8, b), ATTN_OK);
    for (int q = 0; q < 8; q++)
        for (int k = 0; k < 8; k++)
            assert_int_equal(b[q * 8 + k], abs(k - q) <= 4 && (k - q) % 2 == 0);
    s.window = -1;
    assert_int_equal(attn_sdpa_layout_build(at_ctx, &s, 64, 64, 8, 8, b), ATTN_E_ARG);
    assert_int_equal(attn_sdpa_layout_build(at_ctx, &s, 64, 64, 0, 8, b), ATTN_E_ARG);
}

static void test_bad_layouts(void **state) {
    (void)state;
    at_case c = {.B = 1, .H = 2, .T = 10, .S = 12, .D = 4};
    at_rng r = at_rng_for(94000);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    uint8_t blocks[64] = {1};
    attn_sdpa_layout L = {blocks, 4, 4, 3, 3, 0};
    x.a.layout = &L;
    assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_OK);
    L.nkb = 4; /* 12 keys in blocks of 4 are 3 blocks */
    assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_E_SHAPE);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "layout"));
    L.nkb = 3, L.bq = 0;
    assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_E_ARG);
    L.bq = 4, L.blocks = NULL;
    assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_E_ARG);
    at_sdpa_free(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builder_shapes),
        cmocka_unit_test(test_bad_layouts),
        cmocka_unit_test(test_patterns_and_dense_equivalence),
        cmocka_unit_test(test_random_against_oracle),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
