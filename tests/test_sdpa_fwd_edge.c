/* Forward attention edge cases: fully masked rows, empty sizes, the NaN/Inf
 * policy of include/attn/sdpa.h, and bitwise determinism across thread
 * counts and runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "attn_test.h"

static void build(at_sdpa *x, const at_case *c, uint64_t id, uint64_t *seed) {
    at_rng r = at_rng_for(id);
    *seed = r.seed;
    assert_int_equal(at_sdpa_build(x, c, &r), 0);
}

/* Rows with no visible key: out exactly 0, lse exactly -inf. Checks the
 * problem against the oracle, then that every row the oracle finds empty is
 * exactly (0, -inf) in the fast result, and that such rows exist. */
static int check_empty_rows(at_sdpa *x, const char *label, uint64_t seed) {
    if (!at_sdpa_check_forward(at_ctx, &x->a, &x->out, &x->lse, label, seed)) return 0;
    const attn_tensor *o = &x->a.out, *l = &x->a.lse;
    int64_t empty = 0;
    for (int64_t b = 0; b < o->shape[0]; b++)
        for (int64_t h = 0; h < o->shape[1]; h++)
            for (int64_t i = 0; i < o->shape[2]; i++) {
                /* lse = -inf had to match the oracle exactly above */
                float le = *at_f32(l, b, h, i, 0);
                if (le != -INFINITY) continue;
                empty++;
                for (int64_t c = 0; c < o->shape[3]; c++)
                    if (*at_f32(o, b, h, i, c) != 0.0f) {
                        fprintf(stderr, "%s: empty row [%lld,%lld,%lld] has out[%lld] = %g\n",
                                label, (long long)b, (long long)h, (long long)i, (long long)c,
                                (double)*at_f32(o, b, h, i, c));
                        return 0;
                    }
            }
    if (empty == 0) fprintf(stderr, "%s: no empty row (the case tests nothing)\n", label);
    return empty > 0;
}

static void test_fully_masked_rows(void **state) {
    (void)state;
    uint64_t seed;
    at_sdpa x;
    int fails = 0;

    /* causal bottom-right with T > S: the first T - S rows see nothing */
    at_case c1 = {
        .B = 1, .H = 2, .T = 65, .S = 7, .D = 8, .causal = 1, .align = ATTN_ALIGN_BOTTOM_RIGHT};
    build(&x, &c1, 20000, &seed);
    fails += !check_empty_rows(&x, "causal bottom-right T>S", seed);
    at_sdpa_free(&x);

    /* window (0, 0) top-left with T > S: rows i >= S see nothing */
    at_case c2 = {.B = 1, .H = 1, .T = 257, .S = 63, .D = 40, .window = 1, .wl = 0, .wr = 0};
    build(&x, &c2, 20001, &seed);
    fails += !check_empty_rows(&x, "window (0,0) T>S", seed);
    at_sdpa_free(&x);

    /* kv_len = 0 for batch 1 */
    at_case c3 = {.B = 3, .H = 2, .T = 63, .S = 65, .D = 40, .kv_len = 1};
    build(&x, &c3, 20002, &seed);
    fails += !check_empty_rows(&x, "kv_len 0", seed);
    at_sdpa_free(&x);

    /* a boolean mask with whole rows false, one in every strip position */
    at_case c4 = {.B = 2,
                  .H = 2,
                  .T = 65,
                  .S = 257,
                  .D = 64,
                  .mask_dtype = ATTN_BOOL,
                  .mask_bcast = AT_MASK_BHTS};
    build(&x, &c4, 20003, &seed);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t h = 0; h < 2; h++)
            for (int64_t i = (b + h) % 5; i < 65; i += 5) {
                int64_t idx[4] = {b, h, i, 0};
                memset(at_ptr(&x.a.mask, idx), 0, 257);
            }
    fails += !check_empty_rows(&x, "bool mask rows all false", seed);
    at_sdpa_free(&x);

    /* a float mask with whole rows -inf */
    at_case c5 = {.B = 1,
                  .H = 2,
                  .T = 63,
                  .S = 129,
                  .D = 59,
                  .mask_dtype = ATTN_F32,
                  .mask_bcast = AT_MASK_1HTS};
    build(&x, &c5, 20004, &seed);
    for (int64_t h = 0; h < 2; h++)
        for (int64_t i = h; i < 63; i += 4)
            for (int64_t j = 0; j < 129; j++)
                *at_f32(&x.a.mask, 0, h, i, j) = -INFINITY;
    fails += !check_empty_rows(&x, "float mask rows -inf", seed);
    at_sdpa_free(&x);

    /* S = 0: nothing to attend to at all */
    at_case c6 = {.B = 2, .H = 2, .T = 7, .S = 0, .D = 8, .Dv = 5};
    build(&x, &c6, 20005, &seed);
    fails += !check_empty_rows(&x, "S = 0", seed);
    at_sdpa_free(&x);
    assert_int_equal(fails, 0);
}

/* T = 0: success and nothing written. */
static void test_empty_queries(void **state) {
    (void)state;
    uint64_t seed;
    at_sdpa x;
    at_case c = {.B = 2, .H = 2, .T = 0, .S = 7, .D = 8};
    build(&x, &c, 20100, &seed);
    assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_OK);
    assert_true(at_buf_untouched(&x.out));
    assert_true(at_buf_untouched(&x.lse));
    at_sdpa_free(&x);
}

/* Run the forward and keep contiguous copies of out and lse. */
static void run_copy(at_sdpa *x, at_buf *out, at_buf *lse) {
    assert_int_equal(attn_sdpa_forward(at_ctx, &x->a), ATTN_OK);
    assert_int_equal(at_buf_copy_of(out, &x->a.out), 0);
    assert_int_equal(at_buf_copy_of(lse, &x->a.lse), 0);
}

/* Rows of out/lse bitwise equal to a reference, except rows [sb, sh, si]
 * (si = -1: the whole head; sb = -1: none skipped). */
static int rows_equal(const at_buf *o, const at_buf *l, const at_buf *o0, const at_buf *l0,
                      int64_t sb, int64_t sh, int64_t si, const char *label) {
    for (int64_t b = 0; b < o->t.shape[0]; b++)
        for (int64_t h = 0; h < o->t.shape[1]; h++)
            for (int64_t i = 0; i < o->t.shape[2]; i++) {
                if (b == sb && h == sh && (si < 0 || i == si)) continue;
                if (memcmp(at_f32(&o->t, b, h, i, 0), at_f32(&o0->t, b, h, i, 0),
                           (size_t)o->t.shape[3] * sizeof(float)) ||
                    memcmp(at_f32(&l->t, b, h, i, 0), at_f32(&l0->t, b, h, i, 0), sizeof(float))) {
                    fprintf(stderr, "%s: row [%lld,%lld,%lld] changed (ATTN_TEST_SEED=%llu)\n",
                            label, (long long)b, (long long)h, (long long)i,
                            (unsigned long long)at_base_seed());
                    return 0;
                }
            }
    return 1;
}

static int row_all_nan(const at_buf *o, int64_t b, int64_t h, int64_t i) {
    for (int64_t c = 0; c < o->t.shape[3]; c++)
        if (!isnan(*at_f32(&o->t, b, h, i, c))) return 0;
    return 1;
}

/* NaN in q row i: row i of out and lse is NaN, every other row is bitwise
 * what it was without the NaN (rows of one strip share no arithmetic). */
static void test_nan_in_q(void **state) {
    (void)state;
    static const int64_t rows[] = {0, 5, 23, 24, 30, 64};
    for (int arch = 0; arch < 2; arch++) {
        uint64_t seed;
        at_sdpa x;
        at_buf o0, l0;
        at_case c = {.B = 2,
                     .H = 2,
                     .Hkv = 1,
                     .T = 65,
                     .S = 257,
                     .D = 40,
                     .causal = arch,
                     .align = ATTN_ALIGN_BOTTOM_RIGHT};
        build(&x, &c, 20200 + (uint64_t)arch, &seed);
        run_copy(&x, &o0, &l0);
        for (int k = 0; k < 6; k++) {
            int64_t b = k & 1, h = (k >> 1) & 1, i = rows[k];
            float *qp = at_f32(&x.a.q, b, h, i, 7), saved = *qp;
            *qp = NAN;
            at_buf o, l;
            run_copy(&x, &o, &l);
            assert_true(row_all_nan(&o, b, h, i));
            assert_true(isnan(*at_f32(&l.t, b, h, i, 0)));
            assert_true(rows_equal(&o, &l, &o0, &l0, b, h, i, "NaN in q"));
            *qp = saved;
            at_buf_free(&o), at_buf_free(&l);
        }
        at_buf_free(&o0), at_buf_free(&l0);
        at_sdpa_free(&x);
    }
}

/* NaN in a key every query sees: every row NaN. NaN across a value row every
 * query sees: every out row NaN, lse unchanged (it does not read v). An
 * infinity in such a value row: every out row non-finite, lse unchanged. */
static void test_nan_in_kv_seen_by_all(void **state) {
    (void)state;
    uint64_t seed;
    at_sdpa x;
    at_buf o0, l0, o, l;
    at_case c = {.B = 1, .H = 2, .T = 63, .S = 200, .D = 59, .Dv = 24};
    build(&x, &c, 20300, &seed);
    run_copy(&x, &o0, &l0);

    const int64_t j = 150; /* in the second key tile */
    float *kp = at_f32(&x.a.k, 0, 1, j, 3), saved = *kp;
    *kp = NAN;
    run_copy(&x, &o, &l);
    for (int64_t i = 0; i < 63; i++) {
        assert_true(row_all_nan(&o, 0, 1, i));
        assert_true(isnan(*at_f32(&l.t, 0, 1, i, 0)));
    }
    /* head 0 reads its own keys: bitwise unchanged */
    assert_true(rows_equal(&o, &l, &o0, &l0, 0, 1, -1, "NaN in k of head 1"));
    *kp = saved;
    at_buf_free(&o), at_buf_free(&l);

    for (int inf = 0; inf < 2; inf++) {
        for (int64_t cc = 0; cc < 24; cc++)
            *at_f32(&x.a.v, 0, 0, j, cc) = inf ? INFINITY : NAN;
        run_copy(&x, &o, &l);
        for (int64_t i = 0; i < 63; i++) {
            for (int64_t cc = 0; cc < 24; cc++) {
                float y = *at_f32(&o.t, 0, 0, i, cc);
                assert_true(inf ? !isfinite(y) : isnan(y));
            }
            assert_memory_equal(at_f32(&l.t, 0, 0, i, 0), at_f32(&l0.t, 0, 0, i, 0), sizeof(float));
        }
        at_buf_free(&o), at_buf_free(&l);
    }
    at_buf_free(&o0), at_buf_free(&l0);
    at_sdpa_free(&x);
}

/* NaN and Inf in keys and values beyond kv_len[b]: no effect at all (those
 * keys are never read), with and without causal and masks. */
static void test_nan_beyond_kv_len(void **state) {
    (void)state;
    for (int k = 0; k < 3; k++) {
        uint64_t seed;
        at_sdpa x;
        at_buf o0, l0, o, l;
        at_case c = {.B = 3,
                     .H = 2,
                     .T = k == 2 ? 7 : 65,
                     .S = 300,
                     .D = 40,
                     .kv_len = 1,
                     .causal = k == 1,
                     .align = ATTN_ALIGN_BOTTOM_RIGHT,
                     .mask_dtype = k == 2 ? ATTN_F32 : ATTN_BOOL,
                     .mask_bcast = k ? AT_MASK_B1TS : AT_MASK_NONE};
        build(&x, &c, 20400 + (uint64_t)k, &seed);
        x.kv_len[0] = 100; /* a partial tile */
        x.kv_len[2] = 129;
        run_copy(&x, &o0, &l0);
        for (int64_t b = 0; b < 3; b++)
            for (int64_t h = 0; h < 2; h++)
                for (int64_t j = x.kv_len[b]; j < 300; j++)
                    for (int64_t d = 0; d < 40; d++) {
                        *at_f32(&x.a.k, b, h, j, d) = j & 1 ? NAN : INFINITY;
                        *at_f32(&x.a.v, b, h, j, d) = j & 1 ? -INFINITY : NAN;
                    }
        run_copy(&x, &o, &l);
        assert_true(rows_equal(&o, &l, &o0, &l0, -1, -1, -1, "NaN beyond kv_len"));
        at_buf_free(&o), at_buf_free(&l), at_buf_free(&o0), at_buf_free(&l0);
        at_sdpa_free(&x);
    }
}

/* The forward is bitwise independent of the thread count and run to run. */
static void test_threads_bitwise(void **state) {
    (void)state;
    at_case cases[] = {
        {.B = 2, .H = 3, .T = 257, .S = 65, .D = 40},
        {.B = 1,
         .H = 4,
         .Hkv = 2,
         .T = 100,
         .S = 300,
         .D = 64,
         .Dv = 40,
         .causal = 1,
         .align = ATTN_ALIGN_BOTTOM_RIGHT,
         .mask_dtype = ATTN_F32,
         .mask_bcast = AT_MASK_1HTS,
         .alibi = 1,
         .kv_len = 1,
         .layout = AT_BTHD_PAD},
        {.B = 2,
         .H = 2,
         .T = 65,
         .S = 129,
         .D = 59,
         .dropout_p = 0.3f,
         .dropout_seed = 99,
         .window = 1,
         .wl = 20,
         .wr = 3},
    };
    for (int n = 0; n < 3; n++) {
        uint64_t seed;
        at_sdpa x;
        at_buf o0, l0;
        char label[64];
        build(&x, &cases[n], 20500 + (uint64_t)n, &seed);
        assert_int_equal(attn_ctx_set_threads(at_ctx, 1), ATTN_OK);
        run_copy(&x, &o0, &l0);
        static const int nth[] = {2, 3, 2, 1};
        for (int t = 0; t < 4; t++) {
            at_buf o, l;
            at_buf_fill_sentinel(&x.out);
            assert_int_equal(attn_ctx_set_threads(at_ctx, nth[t]), ATTN_OK);
            run_copy(&x, &o, &l);
            snprintf(label, sizeof label, "case %d, %d threads vs 1", n, nth[t]);
            assert_true(at_bitwise_equal("out", label, &o.t, &o0.t));
            assert_true(at_bitwise_equal("lse", label, &l.t, &l0.t));
            at_buf_free(&o), at_buf_free(&l);
        }
        at_buf_free(&o0), at_buf_free(&l0);
        at_sdpa_free(&x);
    }
    assert_int_equal(attn_ctx_set_threads(at_ctx, 2), ATTN_OK);
}

/* FLOPs count 2*(D+Dv) per visible (query, key) pair of the structural
 * masks, summed over batches and heads. */
static void test_flops(void **state) {
    (void)state;
    at_sdpa x;
    uint64_t seed;
    at_case c = {.B = 3, .H = 2, .T = 65, .S = 65, .D = 40, .Dv = 24, .causal = 1};
    build(&x, &c, 20600, &seed);
    double per = 2.0 * (40 + 24);
    assert_true(attn_sdpa_flops(&x.a) == 3 * 2 * per * (65.0 * 66.0 / 2.0));
    x.a.causal = 0;
    assert_true(attn_sdpa_flops(&x.a) == 3 * 2 * per * 65.0 * 65.0);
    int32_t kv[3] = {65, 0, 10};
    x.a.kv_len = kv;
    assert_true(attn_sdpa_flops(&x.a) == 2 * per * 65.0 * (65 + 0 + 10));
    x.a.kv_len = NULL;
    x.a.window = 1, x.a.window_left = 2, x.a.window_right = 0; /* 1+2+3*63 keys per head */
    assert_true(attn_sdpa_flops(&x.a) == 3 * 2 * per * (1 + 2 + 3.0 * 63));
    x.a.q.ndim = 3; /* invalid problems count nothing */
    assert_true(attn_sdpa_flops(&x.a) == 0.0);
    at_sdpa_free(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fully_masked_rows),
        cmocka_unit_test(test_empty_queries),
        cmocka_unit_test(test_nan_in_q),
        cmocka_unit_test(test_nan_in_kv_seen_by_all),
        cmocka_unit_test(test_nan_beyond_kv_len),
        cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_flops),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
