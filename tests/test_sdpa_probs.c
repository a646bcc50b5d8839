/* attn_sdpa_probs against the float64 oracle. With V the identity (Dv = S,
 * v_j = e_j) attention's output row i is row i of the probabilities
 * (dropout included), so the oracle forward and the plain fp32 forwards on
 * that V give the reference and the tolerance of the probabilities exactly
 * as the forward's tests give them for out. Random combinations of every
 * option (masks of every kind and broadcast, windows, causal in both
 * alignments, kv_len, ALiBi, softcap, dropout, GQA, strided layouts), then
 * row ranges into padded views (bitwise the full call's rows, nothing
 * outside written), and the argument checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "attn_test.h"

static const int64_t lens[] = {1, 2, 5, 7, 23, 24, 25, 48, 49, 63, 65, 127, 129, 200};
#define NLENS (int)(sizeof lens / sizeof lens[0])

/* Every forward option; V is the identity (Dv = S), so S >= 1; lse is
 * needed; large logits one time in four. */
static at_case random_case(at_rng *r, uint64_t k) {
    at_case c = at_case_random(r, k, lens, NLENS);
    if (c.S == 0) c.S = lens[at_rng_int(r, 0, NLENS - 1)];
    c.Dv = c.S;
    c.no_lse = 0;
    c.logit_mul = at_rng_int(r, 0, 3) == 0 ? 10.0f : 0.0f;
    return c;
}

/* v[b, hk, j, c] = (j == c) */
static void set_identity(const attn_tensor *v) {
    for (int64_t b = 0; b < v->shape[0]; b++)
        for (int64_t h = 0; h < v->shape[1]; h++)
            for (int64_t j = 0; j < v->shape[2]; j++)
                for (int64_t c = 0; c < v->shape[3]; c++)
                    *at_f32(v, b, h, j, c) = j == c ? 1.0f : 0.0f;
}

/* One case: 1 if it passes. */
static int run_case(attn_ctx *ctx, const at_case *c, uint64_t id, const char *label) {
    at_rng r = at_rng_for(id);
    at_sdpa x;
    if (at_sdpa_build(&x, c, &r)) return 0;
    set_identity(&x.v.t);
    int ok = 0;
    char desc[512], full[640];
    at_sdpa_describe(&x.a, desc, sizeof desc);
    snprintf(full, sizeof full, "%s: %s", label, desc);
    const int64_t B = c->B, H = c->H, T = c->T, S = c->S;
    at_buf fast = {0}, ref = {0}, nv[AT_NAIVE_ORDERS] = {{0}}, rl = {0};
    if (at_buf_f32(&fast, B, H, T, S) || at_buf_f32(&ref, B, H, T, S)) goto done;
    for (int k = 0; k < AT_NAIVE_ORDERS; k++)
        if (at_buf_f32(&nv[k], B, H, T, S)) goto done;
    int64_t ls[3] = {B, H, T};
    if (at_buf_alloc(&rl, ATTN_F32, 3, ls, NULL, 0)) goto done;
    /* lse from the fast forward; probabilities rebuilt from it */
    if (attn_sdpa_forward(ctx, &x.a)) {
        fprintf(stderr, "forward failed: %s (%s)\n", attn_ctx_last_error(ctx), full);
        goto done;
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            attn_tensor pv = {.data = at_f32(&fast.t, b, h, 0, 0),
                              .dtype = ATTN_F32,
                              .ndim = 2,
                              .shape = {T, S},
                              .stride = {S, 1}};
            if (attn_sdpa_probs(ctx, &x.a, b, h, 0, pv)) {
                fprintf(stderr, "probs failed: %s (%s)\n", attn_ctx_last_error(ctx), full);
                goto done;
            }
        }
    /* references: forwards on V = I into private buffers */
    attn_sdpa_args ra = x.a;
    ra.out = ref.t;
    ra.lse = rl.t;
    if (attn_sdpa_forward_ref(ctx, &ra)) goto done;
    for (int k = 0; k < AT_NAIVE_ORDERS; k++) {
        ra.out = nv[k].t;
        if (at_naive32_forward_order(ctx, &ra, k)) goto done;
    }
    const attn_tensor *no[AT_NAIVE_ORDERS];
    for (int k = 0; k < AT_NAIVE_ORDERS; k++)
        no[k] = &nv[k].t;
    ok = at_check_n("probs", full, r.seed, &fast.t, &ref.t, no, AT_NAIVE_ORDERS, NULL);
done:
    for (int k = 0; k < AT_NAIVE_ORDERS; k++)
        at_buf_free(&nv[k]);
    at_buf_free(&fast);
    at_buf_free(&ref);
    at_buf_free(&rl);
    at_sdpa_free(&x);
    return ok;
}

static void test_random_against_oracle(void **state) {
    (void)state;
    int fails = at_run_random_cases(at_quick() ? 40 : 250, 61000, 62000, "probs case", random_case,
                                    run_case);
    assert_int_equal(fails, 0);
}

/* Rows [i0, i0 + n) into a view with a padded row stride: bitwise the full
 * call's rows; the padding and the rows around stay untouched. */
static void test_row_ranges(void **state) {
    (void)state;
    at_case c = {.B = 2,
                 .H = 4,
                 .Hkv = 2,
                 .T = 77,
                 .S = 150,
                 .D = 32,
                 .Dv = 16,
                 .causal = 1,
                 .align = ATTN_ALIGN_BOTTOM_RIGHT,
                 .alibi = 1,
                 .mask_bcast = AT_MASK_B1TS,
                 .mask_dtype = ATTN_F32,
                 .mask_ninf = 0.2f};
    at_rng r = at_rng_for(63000);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_OK);
    const int64_t T = c.T, S = c.S, ld = S + 13;
    float *all = malloc((size_t)(T * S) * sizeof *all);
    float *part = malloc((size_t)(T * ld) * sizeof *part);
    assert_non_null(all);
    assert_non_null(part);
    attn_tensor pa = {.data = all, .dtype = ATTN_F32, .ndim = 2, .shape = {T, S}, .stride = {S, 1}};
    assert_int_equal(attn_sdpa_probs(at_ctx, &x.a, 1, 3, 0, pa), ATTN_OK);
    const int64_t ranges[][2] = {{0, 1}, {5, 30}, {23, 26}, {40, 37}, {76, 1}, {10, 0}};
    for (size_t k = 0; k < sizeof ranges / sizeof ranges[0]; k++) {
        const int64_t i0 = ranges[k][0], n = ranges[k][1];
        for (int64_t e = 0; e < T * ld; e++)
            part[e] = AT_SENTINEL;
        attn_tensor pp = {
            .data = part + ld, .dtype = ATTN_F32, .ndim = 2, .shape = {n, S}, .stride = {ld, 1}};
        assert_int_equal(attn_sdpa_probs(at_ctx, &x.a, 1, 3, i0, pp), ATTN_OK);
        for (int64_t e = 0; e < T * ld; e++) {
            int64_t row = e / ld - 1, col = e % ld;
            if (row >= 0 && row < n && col < S)
                assert_memory_equal(&part[e], &all[(i0 + row) * S + col], sizeof(float));
            else
                assert_true(part[e] == AT_SENTINEL);
        }
    }
    /* out is not needed */
    attn_sdpa_args a = x.a;
    memset(&a.out, 0, sizeof a.out);
    assert_int_equal(attn_sdpa_probs(at_ctx, &a, 1, 3, 0, pa), ATTN_OK);
    free(all);
    free(part);
    at_sdpa_free(&x);
}

static void test_bad_arguments(void **state) {
    (void)state;
    at_case c = {.B = 1, .H = 2, .T = 9, .S = 11, .D = 8};
    at_rng r = at_rng_for(64000);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_OK);
    float buf[9 * 12];
    attn_tensor p = {
        .data = buf, .dtype = ATTN_F32, .ndim = 2, .shape = {9, 11}, .stride = {11, 1}};
    assert_int_equal(attn_sdpa_probs(at_ctx, &x.a, 0, 2, 0, p), ATTN_E_ARG); /* h >= H */
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "(b, h)"));
    assert_int_equal(attn_sdpa_probs(at_ctx, &x.a, -1, 0, 0, p), ATTN_E_ARG);
    assert_int_equal(attn_sdpa_probs(at_ctx, &x.a, 0, 0, 1, p), ATTN_E_ARG); /* rows past T */
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "rows"));
    attn_tensor q = p;
    q.shape[1] = 10;
    assert_int_equal(attn_sdpa_probs(at_ctx, &x.a, 0, 0, 0, q), ATTN_E_SHAPE);
    q = p;
    q.stride[0] = 5;
    assert_int_equal(attn_sdpa_probs(at_ctx, &x.a, 0, 0, 0, q), ATTN_E_LAYOUT);
    q = p;
    q.dtype = ATTN_F16;
    assert_int_equal(attn_sdpa_probs(at_ctx, &x.a, 0, 0, 0, q), ATTN_E_DTYPE);
    attn_sdpa_args a = x.a;
    memset(&a.lse, 0, sizeof a.lse);
    assert_int_equal(attn_sdpa_probs(at_ctx, &a, 0, 0, 0, p), ATTN_E_ARG); /* lse required */
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "lse"));
    assert_int_equal(attn_sdpa_probs(NULL, &x.a, 0, 0, 0, p), ATTN_E_ARG);
    at_sdpa_free(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_against_oracle),
        cmocka_unit_test(test_row_ranges),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
