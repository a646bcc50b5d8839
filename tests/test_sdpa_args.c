/* Bad arguments to attn_sdpa_forward (and the oracle, which shares the
 * validation): each returns the right status with a message naming the
 * problem, and writes nothing (out and lse hold sentinels before the call and
 * must still hold them after). Leaks are left to the sanitizer run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "attn_test.h"

enum { B = 2, H = 4, HKV = 2, T = 9, S = 11, D = 8, DV = 6 };

typedef struct fixture {
    attn_ctx *ctx;
    at_sdpa x;
    int32_t kv_len[B];
    at_buf mask;
} fixture;

static int setup(void **state) {
    static fixture f;
    memset(&f, 0, sizeof f);
    if (attn_ctx_create(&f.ctx, 2) != ATTN_OK) return -1;
    at_rng r = at_rng_for(30000);
    if (at_sdpa_alloc(&f.x, B, H, HKV, T, S, D, DV, AT_BHTD, &r)) return -1;
    int64_t msh[4] = {B, 1, T, S};
    if (at_buf_alloc(&f.mask, ATTN_F32, 4, msh, NULL, 0)) return -1;
    at_fill_uniform(&f.mask.t, &r, -1.0f, 1.0f);
    *state = &f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    at_sdpa_free(&f->x);
    at_buf_free(&f->mask);
    attn_ctx_free(f->ctx);
    return 0;
}

/* A valid problem: the baseline every case breaks in one way. */
static attn_sdpa_args valid(fixture *f) {
    attn_sdpa_args a = f->x.a;
    f->kv_len[0] = S;
    f->kv_len[1] = 3;
    a.kv_len = f->kv_len;
    a.mask = f->mask.t;
    return a;
}

/* Expect status st and a message containing word, from both the forward and
 * the oracle, with out and lse untouched. */
static void expect(fixture *f, const attn_sdpa_args *a, attn_status st, const char *word,
                   const char *what) {
    for (int ref = 0; ref < 2; ref++) {
        at_buf_fill_sentinel(&f->x.out);
        at_buf_fill_sentinel(&f->x.lse);
        attn_status got = ref ? attn_sdpa_forward_ref(f->ctx, a) : attn_sdpa_forward(f->ctx, a);
        const char *msg = attn_ctx_last_error(f->ctx);
        if (got != st || !strstr(msg, word)) {
            fprintf(stderr, "%s (%s): got %s \"%s\", expected %s with \"%s\"\n", what,
                    ref ? "oracle" : "forward", attn_status_str(got), msg, attn_status_str(st),
                    word);
            fail();
        }
        if (!at_buf_untouched(&f->x.out) || !at_buf_untouched(&f->x.lse)) {
            fprintf(stderr, "%s (%s): output written on error\n", what, ref ? "oracle" : "forward");
            fail();
        }
    }
}

static void test_valid_baseline(void **state) {
    fixture *f = *state;
    attn_sdpa_args a = valid(f);
    assert_true(at_sdpa_check_forward(f->ctx, &a, &f->x.out, &f->x.lse, "baseline", 0));
    assert_string_equal(attn_ctx_last_error(f->ctx), ""); /* a success clears the message */
}

static void test_ranks(void **state) {
    fixture *f = *state;
    const char *names[] = {"q", "k", "v", "out"};
    for (int w = 0; w < 4; w++)
        for (int nd = 3; nd <= 5; nd += 2) {
            attn_sdpa_args a = valid(f);
            attn_tensor *t = w == 0 ? &a.q : w == 1 ? &a.k : w == 2 ? &a.v : &a.out;
            t->ndim = nd == 5 ? 2 : 3;
            char what[32];
            snprintf(what, sizeof what, "%s with %d dims", names[w], t->ndim);
            expect(f, &a, ATTN_E_SHAPE, names[w], what);
        }
    attn_sdpa_args a = valid(f);
    a.lse.ndim = 4;
    expect(f, &a, ATTN_E_SHAPE, "lse", "lse with 4 dims");
}

static void test_shape_mismatches(void **state) {
    fixture *f = *state;
    struct {
        int which, dim;
        int64_t val;
        const char *word;
    } cases[] = {
        {1, 0, B + 1, "batch"},   {2, 0, 1, "batch"},    {3, 0, 1, "batch"},
        {2, 1, HKV + 1, "heads"}, {1, 1, 3, "multiple"}, {2, 2, S + 1, "keys"},
        {1, 3, D + 1, "D="},      {3, 1, H - 1, "out"},  {3, 2, T + 1, "out"},
        {3, 3, DV + 1, "out"},    {4, 0, B - 1, "lse"},  {4, 1, H + 1, "lse"},
        {4, 2, T - 1, "lse"},     {0, 0, 0, "B, H"},     {0, 3, 0, "D"},
    };
    for (size_t n = 0; n < sizeof cases / sizeof cases[0]; n++) {
        attn_sdpa_args a = valid(f);
        attn_tensor *ts[] = {&a.q, &a.k, &a.v, &a.out, &a.lse};
        ts[cases[n].which]->shape[cases[n].dim] = cases[n].val;
        if (cases[n].which == 1 && cases[n].dim == 1) a.v.shape[1] = cases[n].val; /* H % Hkv */
        char what[64];
        snprintf(what, sizeof what, "tensor %d dim %d = %lld", cases[n].which, cases[n].dim,
                 (long long)cases[n].val);
        expect(f, &a, ATTN_E_SHAPE, cases[n].word, what);
    }
}

static void test_layout_and_dtype(void **state) {
    fixture *f = *state;
    const char *names[] = {"q", "k", "v", "out", "lse"};
    for (int w = 0; w < 5; w++) {
        attn_sdpa_args a = valid(f);
        attn_tensor *ts[] = {&a.q, &a.k, &a.v, &a.out, &a.lse};
        ts[w]->stride[ts[w]->ndim - 1] = 2;
        expect(f, &a, ATTN_E_LAYOUT, "stride", names[w]);
        a = valid(f);
        ts[w]->dtype = ATTN_F64;
        expect(f, &a, ATTN_E_DTYPE, names[w], names[w]);
    }
    for (int w = 0; w < 4; w++) {
        attn_sdpa_args a = valid(f);
        attn_tensor *ts[] = {&a.q, &a.k, &a.v, &a.out};
        ts[w]->data = NULL;
        expect(f, &a, ATTN_E_ARG, names[w], "missing tensor");
    }
}

static void test_option_values(void **state) {
    fixture *f = *state;
    attn_sdpa_args a;
    const float bad_scale[] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
        a = valid(f);
        a.scale = bad_scale[k];
        expect(f, &a, ATTN_E_ARG, "scale", "scale");
    }
    const float bad_cap[] = {-1.0f, NAN, INFINITY};
    for (int k = 0; k < 3; k++) {
        a = valid(f);
        a.softcap = bad_cap[k];
        expect(f, &a, ATTN_E_ARG, "softcap", "softcap");
    }
    const int64_t bad_w[][2] = {{-2, 0}, {0, -2}, {-100, -1}};
    for (int k = 0; k < 3; k++) {
        a = valid(f);
        a.window = 1;
        a.window_left = bad_w[k][0];
        a.window_right = bad_w[k][1];
        expect(f, &a, ATTN_E_ARG, "window", "window");
    }
    const int32_t bad_len[] = {S + 1, -1, INT32_MIN};
    for (int k = 0; k < 3; k++) {
        a = valid(f);
        f->kv_len[1] = bad_len[k];
        expect(f, &a, ATTN_E_ARG, "kv_len", "kv_len");
    }
    const float bad_p[] = {-0.1f, 1.0f, 1.5f, NAN};
    for (int k = 0; k < 4; k++) {
        a = valid(f);
        a.dropout_p = bad_p[k];
        expect(f, &a, ATTN_E_ARG, "dropout", "dropout_p");
    }
    a = valid(f);
    a.align = (attn_align)7;
    expect(f, &a, ATTN_E_ARG, "align", "align");
}

static void test_bad_masks(void **state) {
    fixture *f = *state;
    attn_sdpa_args a;
    const attn_dtype bad_dt[] = {ATTN_F64, ATTN_I32, ATTN_F16};
    for (int k = 0; k < 3; k++) {
        a = valid(f);
        a.mask.dtype = bad_dt[k];
        expect(f, &a, ATTN_E_DTYPE, "mask", "mask dtype");
    }
    const int64_t bad_shape[][4] = {
        {B + 1, 1, T, S}, {1, 3, T, S}, {1, 1, T + 1, S}, {1, 1, T, S - 1}};
    for (int k = 0; k < 4; k++) {
        a = valid(f);
        memcpy(a.mask.shape, bad_shape[k], sizeof bad_shape[k]);
        expect(f, &a, ATTN_E_SHAPE, "mask", "mask shape");
    }
    a = valid(f);
    a.mask.ndim = 3;
    expect(f, &a, ATTN_E_SHAPE, "mask", "mask rank 3");
    a = valid(f);
    a.mask.stride[3] = 2;
    expect(f, &a, ATTN_E_LAYOUT, "mask", "mask last stride");
}

static void test_null_args(void **state) {
    fixture *f = *state;
    attn_sdpa_args a = valid(f);
    expect(f, NULL, ATTN_E_ARG, "args", "NULL args");
    at_buf_fill_sentinel(&f->x.out);
    assert_int_equal(attn_sdpa_forward(NULL, &a), ATTN_E_ARG);
    assert_int_equal(attn_sdpa_forward_ref(NULL, &a), ATTN_E_ARG);
    assert_true(at_buf_untouched(&f->x.out));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_baseline),   cmocka_unit_test(test_ranks),
        cmocka_unit_test(test_shape_mismatches), cmocka_unit_test(test_layout_and_dtype),
        cmocka_unit_test(test_option_values),    cmocka_unit_test(test_bad_masks),
        cmocka_unit_test(test_null_args),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
