/* Forward attention against the float64 oracle: every mask kind and
 * alignment, ALiBi, softcap, dropout and their combinations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "attn_test.h"

static int run(at_case *c, uint64_t id, const char *label) {
    /* the sanitizer run keeps every case but shrinks the long sides (still
     * more than one 128-key tile and several 24-row strips) */
    if (at_quick()) {
        if (c->T > 130) c->T = 130;
        if (c->S > 130) c->S = 130;
    }
    return at_sdpa_run_forward(at_ctx, c, id, label);
}

/* (T, S) pairs with T < S, T > S and T == S, around the tile sizes. */
static const int64_t pairs[][2] = {{7, 65},     {65, 7}, {63, 64}, {64, 63}, {257, 1000},
                                   {1000, 257}, {1, 7},  {7, 1},   {65, 65}, {2, 2}};
#define NPAIRS (int)(sizeof pairs / sizeof pairs[0])

static void test_causal(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 10000;
    for (int p = 0; p < NPAIRS; p++)
        for (int al = 0; al < 2; al++) {
            at_case c = {.B = 2,
                         .H = 2,
                         .T = pairs[p][0],
                         .S = pairs[p][1],
                         .D = 40,
                         .Dv = 24,
                         .causal = 1,
                         .align = (attn_align)al};
            fails += !run(&c, id++, "causal");
        }
    assert_int_equal(fails, 0);
}

/* Windows (L, R) with -1 sides and 0, alone and with causal, both alignments. */
static void test_windows(void **state) {
    (void)state;
    static const int64_t w[][2] = {{0, 0},  {3, -1},  {-1, 5},  {16, 16}, {0, -1},
                                   {-1, 0}, {-1, -1}, {100, 2}, {1, 130}, {200, 0}};
    int fails = 0;
    uint64_t id = 11000;
    for (int k = 0; k < (int)(sizeof w / sizeof w[0]); k++)
        for (int al = 0; al < 2; al++) {
            const int64_t *ts = pairs[(k * 2 + al) % NPAIRS];
            at_case c = {.B = 1,
                         .H = 2,
                         .T = ts[0],
                         .S = ts[1],
                         .D = 59,
                         .Dv = 8,
                         .window = 1,
                         .wl = w[k][0],
                         .wr = w[k][1],
                         .causal = (k + al) % 3 == 0,
                         .align = (attn_align)al};
            fails += !run(&c, id++, "window");
        }
    assert_int_equal(fails, 0);
}

/* kv_len per batch: b = 0 gets S, b = 1 gets 0, the rest random. */
static void test_kv_len(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 12000;
    for (int p = 0; p < NPAIRS; p += 2)
        for (int causal = 0; causal < 2; causal++) {
            at_case c = {.B = 4,
                         .H = 2,
                         .T = pairs[p][0],
                         .S = pairs[p][1],
                         .D = 64,
                         .kv_len = 1,
                         .causal = causal,
                         .align = ATTN_ALIGN_BOTTOM_RIGHT};
            fails += !run(&c, id++, "kv_len");
        }
    assert_int_equal(fails, 0);
}

/* Float additive masks (with and without -inf entries) and BOOL/U8
 * keep-masks, in every broadcast shape. */
static void test_masks(void **state) {
    (void)state;
    static const int bc[] = {AT_MASK_TS, AT_MASK_1HTS, AT_MASK_B1TS, AT_MASK_BHTS};
    static const attn_dtype dt[] = {ATTN_F32, ATTN_F32, ATTN_BOOL, ATTN_U8};
    int fails = 0;
    uint64_t id = 13000;
    for (int d = 0; d < 4; d++)
        for (int b = 0; b < 4; b++) {
            const int64_t *ts = pairs[(d * 4 + b) % NPAIRS];
            at_case c = {.B = 2,
                         .H = 3,
                         .T = ts[0],
                         .S = ts[1],
                         .D = 40,
                         .Dv = 80,
                         .mask_dtype = dt[d],
                         .mask_bcast = bc[b],
                         .mask_ninf = d == 1 ? 0.3f : 0.0f,
                         .mask_keep = b == 3 ? 0.1f : 0.0f,
                         .layout = b == 2 ? AT_BTHD_PAD : AT_BHTD};
            fails += !run(&c, id++, "mask");
        }
    assert_int_equal(fails, 0);
}

/* Stride 0 broadcasts: a [B,H,T,S] mask view whose T stride is 0 (one
 * key-padding row per batch and head, read by every query), and one whose B
 * and H strides are 0 (one [T,S] mask for all). */
static void test_mask_stride0(void **state) {
    (void)state;
    int fails = 0;
    for (int k = 0; k < 4; k++) {
        at_case c = {.B = 2,
                     .H = 2,
                     .T = 65,
                     .S = 257,
                     .D = 40,
                     .mask_bcast = AT_MASK_BHTS,
                     .mask_dtype = k & 1 ? ATTN_BOOL : ATTN_F32,
                     .mask_ninf = 0.2f,
                     .causal = k >= 2,
                     .align = ATTN_ALIGN_BOTTOM_RIGHT};
        at_rng r = at_rng_for(13500 + (uint64_t)k);
        at_sdpa x;
        assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
        attn_tensor *m = &x.a.mask;
        if (k % 2 == 0) {
            m->stride[2] = 0; /* every query row reads row 0 */
        } else {
            m->stride[0] = 0, m->stride[1] = 0;
        }
        fails += !at_sdpa_check_forward(at_ctx, &x.a, &x.out, &x.lse, "mask stride 0", r.seed);
        at_sdpa_free(&x);
    }
    assert_int_equal(fails, 0);
}

static void test_alibi_softcap(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 14000;
    for (int p = 0; p < NPAIRS; p += 3)
        for (int k = 0; k < 3; k++) {
            at_case c = {.B = 1,
                         .H = 4,
                         .T = pairs[p][0],
                         .S = pairs[p][1],
                         .D = 128,
                         .alibi = k != 1,
                         .softcap = k >= 1 ? (k == 1 ? 5.0f : 30.0f) : 0.0f,
                         .logit_mul = k == 1 ? 10.0f : 1.0f,
                         .causal = k == 2,
                         .align = (attn_align)(p & 1)};
            fails += !run(&c, id++, "alibi/softcap");
        }
    assert_int_equal(fails, 0);
}

/* Everything at once, with GQA and strided views. */
static void test_combined(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 15000;
    for (int k = 0; k < 8; k++) {
        const int64_t *ts = pairs[k % NPAIRS];
        at_case c = {.B = 3,
                     .H = 4,
                     .Hkv = k & 1 ? 1 : 2,
                     .T = ts[0],
                     .S = ts[1],
                     .D = 80,
                     .Dv = 59,
                     .layout = (at_layout)(k % 4),
                     .causal = k % 3 == 0,
                     .align = (attn_align)((k >> 1) & 1),
                     .window = k % 3 != 2,
                     .wl = 9,
                     .wr = k & 2 ? -1 : 4,
                     .kv_len = 1,
                     .mask_dtype = k & 1 ? ATTN_BOOL : ATTN_F32,
                     .mask_bcast = 1 + k % 4,
                     .mask_ninf = 0.1f,
                     .alibi = k & 1,
                     .softcap = k & 2 ? 20.0f : 0.0f};
        fails += !run(&c, id++, "combined");
    }
    assert_int_equal(fails, 0);
}

/* Dropout: the keep mask is a pure function of (seed, b, h, i, j), so the
 * oracle regenerates it and the result must match within tolerance. */
static void test_dropout(void **state) {
    (void)state;
    static const float ps[] = {0.1f, 0.5f, 0.9f};
    int fails = 0;
    uint64_t id = 16000;
    for (int k = 0; k < 3; k++)
        for (int causal = 0; causal < 2; causal++) {
            const int64_t *ts = pairs[(k * 2 + causal) % NPAIRS];
            at_case c = {.B = 2,
                         .H = 2,
                         .T = ts[0],
                         .S = ts[1],
                         .D = 40,
                         .causal = causal,
                         .dropout_p = ps[k],
                         .dropout_seed = 1234567 + (uint64_t)k};
            fails += !run(&c, id++, "dropout");
        }
    assert_int_equal(fails, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_causal),       cmocka_unit_test(test_windows),
        cmocka_unit_test(test_kv_len),       cmocka_unit_test(test_masks),
        cmocka_unit_test(test_mask_stride0), cmocka_unit_test(test_alibi_softcap),
        cmocka_unit_test(test_combined),     cmocka_unit_test(test_dropout),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
