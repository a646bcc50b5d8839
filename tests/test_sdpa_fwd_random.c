/* Forward attention against the float64 oracle on random combinations of
 * every option: the structured sweeps cover each feature; this covers how
 * they meet (odd sizes around the 24-row strips and 128-key tiles, GQA,
 * layouts, masks of every kind and broadcast, windows, kv_len, ALiBi,
 * softcap, dropout, S = 0, no lse, 1-3 threads). Each case's parameters come
 * from its own seeded stream, so a failure names a reproducible case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "attn_test.h"

static const int64_t lens[] = {1,  2,  3,  5,  7,  17,  23,  24,  25,  47,
                               48, 49, 63, 64, 65, 127, 128, 129, 200, 257};
#define NLENS (int)(sizeof lens / sizeof lens[0])

static at_case random_case(at_rng *r, uint64_t k) {
    static const attn_dtype dts[] = {ATTN_F32, ATTN_BOOL, ATTN_U8};
    at_case c = {0};
    c.B = at_rng_int(r, 1, 3);
    c.Hkv = at_rng_int(r, 1, 3);
    c.H = c.Hkv * at_rng_int(r, 1, 3);
    c.T = lens[at_rng_int(r, 0, NLENS - 1)];
    c.S = at_rng_int(r, 0, 9) == 0 ? 0 : lens[at_rng_int(r, 0, NLENS - 1)];
    c.D = at_rng_int(r, 1, 70);
    c.Dv = at_rng_int(r, 1, 70);
    c.layout = (at_layout)at_rng_int(r, 0, 3);
    c.causal = (int)at_rng_int(r, 0, 1);
    c.align = (attn_align)at_rng_int(r, 0, 1);
    c.window = (int)at_rng_int(r, 0, 1);
    c.wl = at_rng_int(r, -1, 40);
    c.wr = at_rng_int(r, -1, 40);
    c.kv_len = (int)at_rng_int(r, 0, 1);
    c.mask_bcast = (int)at_rng_int(r, AT_MASK_NONE, AT_MASK_BHTS);
    c.mask_dtype = dts[at_rng_int(r, 0, 2)];
    c.mask_ninf = at_rng_int(r, 0, 1) ? 0.3f : 0.0f;
    c.mask_keep = at_rng_int(r, 0, 1) ? 0.05f : 0.0f; /* sparse keep-masks: empty rows */
    c.alibi = (int)at_rng_int(r, 0, 1);
    c.softcap = at_rng_int(r, 0, 2) == 0 ? 7.0f : 0.0f;
    c.dropout_p = at_rng_int(r, 0, 3) == 0 ? 0.25f : 0.0f;
    c.dropout_seed = k;
    c.no_lse = at_rng_int(r, 0, 5) == 0;
    return c;
}

static void test_random_cases(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    const int n = at_quick() ? 60 : 400;
    int fails = 0;
    for (int k = 0; k < n; k++) {
        at_rng r = at_rng_for(40000 + (uint64_t)k);
        at_case c = random_case(&r, (uint64_t)k);
        int threads = (int)at_rng_int(&r, 1, 3);
        assert_int_equal(attn_ctx_set_threads(ctx, threads), ATTN_OK);
        char label[64];
        snprintf(label, sizeof label, "random case %d, %d threads", k, threads);
        fails += !at_sdpa_run_forward(ctx, &c, 50000 + (uint64_t)k, label);
    }
    attn_ctx_free(ctx);
    assert_int_equal(fails, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_random_cases)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
