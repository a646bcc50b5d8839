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
    return at_case_random(r, k, lens, NLENS);
}

static void test_random_cases(void **state) {
    (void)state;
    int fails = at_run_random_cases(at_quick() ? 60 : 400, 40000, 50000, "random case", random_case,
                                    at_sdpa_run_forward);
    assert_int_equal(fails, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_random_cases)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
