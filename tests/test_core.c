/* The core API: contexts and threads, status strings, dtypes, tensor views,
 * the error message, ATTN_NUM_THREADS and the kernel family name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attn_test.h"

static void test_ctx_lifecycle(void **state) {
    (void)state;
    attn_ctx *ctx = (attn_ctx *)(uintptr_t)1;
    assert_int_equal(attn_ctx_create(&ctx, 3), ATTN_OK);
    assert_non_null(ctx);
    assert_int_equal(attn_ctx_threads(ctx), 3);
    assert_string_equal(attn_ctx_last_error(ctx), "");
    assert_int_equal(attn_ctx_set_threads(ctx, 1), ATTN_OK);
    assert_int_equal(attn_ctx_threads(ctx), 1);
    assert_int_equal(attn_ctx_set_threads(ctx, -1), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "negative"));
    assert_int_equal(attn_ctx_threads(ctx), 1); /* unchanged by the failure */
    assert_int_equal(attn_ctx_set_threads(ctx, 0), ATTN_OK);
    assert_true(attn_ctx_threads(ctx) >= 1);
    attn_ctx_free(ctx);
    attn_ctx_free(NULL); /* a no-op */

    ctx = (attn_ctx *)(uintptr_t)1;
    assert_int_equal(attn_ctx_create(&ctx, -2), ATTN_E_ARG);
    assert_null(ctx); /* never left dangling */
    assert_int_equal(attn_ctx_create(NULL, 1), ATTN_E_ARG);
    assert_int_equal(attn_ctx_set_threads(NULL, 1), ATTN_E_ARG);
    /* more threads than the documented maximum are refused (OpenMP's runtime
     * would end the process if it could not create them) */
    const int max = attn_ctx_max_threads();
    assert_true(max >= 16 && max <= 4096);
    assert_int_equal(attn_ctx_create(&ctx, max + 1), ATTN_E_ARG);
    assert_null(ctx);
    assert_int_equal(attn_ctx_create(&ctx, 100000), ATTN_E_ARG);
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    assert_int_equal(attn_ctx_set_threads(ctx, max + 1), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "maximum"));
    assert_int_equal(attn_ctx_threads(ctx), 2); /* kept */
    assert_int_equal(attn_ctx_set_threads(ctx, max), ATTN_OK);
    attn_ctx_free(ctx);
    assert_string_equal(attn_ctx_last_error(NULL), "");
}

/* numel and strides never overflow silently: 0 for an empty view whatever
 * its other dims, -1 when the product does not fit, strides saturated. */
static void test_numel_overflow(void **state) {
    (void)state;
    const int64_t big[4] = {0, (int64_t)1 << 40, (int64_t)1 << 40, 4};
    attn_tensor t = attn_tensor_make(NULL, ATTN_F32, 4, big);
    assert_int_equal(attn_tensor_numel(&t), 0);
    assert_true(t.stride[0] == INT64_MAX && t.stride[3] == 1);
    const int64_t huge[3] = {(int64_t)1 << 40, (int64_t)1 << 40, 2};
    t = attn_tensor_make(NULL, ATTN_F32, 3, huge);
    assert_int_equal(attn_tensor_numel(&t), -1);
    const int64_t neg[2] = {3, -1};
    t = attn_tensor_make(NULL, ATTN_F32, 2, neg);
    assert_int_equal(attn_tensor_numel(&t), -1);
    const int64_t ok[2] = {3, 5};
    t = attn_tensor_make(NULL, ATTN_F32, 2, ok);
    assert_int_equal(attn_tensor_numel(&t), 15);
}

/* 0 threads means ATTN_NUM_THREADS, else every core; a malformed value is
 * ignored. */
static void test_num_threads_env(void **state) {
    (void)state;
    char *saved = getenv("ATTN_NUM_THREADS") ? strdup(getenv("ATTN_NUM_THREADS")) : NULL;
    long ncores = sysconf(_SC_NPROCESSORS_ONLN);
    attn_ctx *ctx;
    setenv("ATTN_NUM_THREADS", "5", 1);
    assert_int_equal(attn_ctx_create(&ctx, 0), ATTN_OK);
    assert_int_equal(attn_ctx_threads(ctx), 5);
    setenv("ATTN_NUM_THREADS", "3", 1);
    assert_int_equal(attn_ctx_set_threads(ctx, 0), ATTN_OK);
    assert_int_equal(attn_ctx_threads(ctx), 3);
    attn_ctx_free(ctx);
    const char *bad[] = {"abc", "-4", "0", "7x", ""};
    for (int k = 0; k < 5; k++) {
        setenv("ATTN_NUM_THREADS", bad[k], 1);
        assert_int_equal(attn_ctx_create(&ctx, 0), ATTN_OK);
        assert_int_equal(attn_ctx_threads(ctx), ncores > 0 ? ncores : 1);
        attn_ctx_free(ctx);
    }
    unsetenv("ATTN_NUM_THREADS");
    assert_int_equal(attn_ctx_create(&ctx, 0), ATTN_OK);
    assert_int_equal(attn_ctx_threads(ctx), ncores > 0 ? ncores : 1);
    attn_ctx_free(ctx);
    /* an explicit count wins over the environment */
    setenv("ATTN_NUM_THREADS", "5", 1);
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    assert_int_equal(attn_ctx_threads(ctx), 2);
    attn_ctx_free(ctx);
    if (saved)
        setenv("ATTN_NUM_THREADS", saved, 1);
    else
        unsetenv("ATTN_NUM_THREADS");
    free(saved);
}

static void test_status_strings(void **state) {
    (void)state;
    static const struct {
        attn_status s;
        const char *name;
    } all[] = {
        {ATTN_OK, "ATTN_OK"},
        {ATTN_E_ARG, "ATTN_E_ARG"},
        {ATTN_E_SHAPE, "ATTN_E_SHAPE"},
        {ATTN_E_LAYOUT, "ATTN_E_LAYOUT"},
        {ATTN_E_NOMEM, "ATTN_E_NOMEM"},
        {ATTN_E_IO, "ATTN_E_IO"},
        {ATTN_E_FORMAT, "ATTN_E_FORMAT"},
        {ATTN_E_NOTFOUND, "ATTN_E_NOTFOUND"},
        {ATTN_E_DTYPE, "ATTN_E_DTYPE"},
        {ATTN_E_UNSUPPORTED, "ATTN_E_UNSUPPORTED"},
    };
    const int n = (int)(sizeof all / sizeof all[0]);
    for (int k = 0; k < n; k++) {
        const char *s = attn_status_str(all[k].s);
        assert_non_null(s);
        /* the code's own name, then ':' (so ATTN_E_ARG does not match a
         * hypothetical ATTN_E_ARGS) */
        assert_int_equal(strncmp(s, all[k].name, strlen(all[k].name)), 0);
        assert_int_equal(s[strlen(all[k].name)], ':');
        for (int j = 0; j < k; j++)
            assert_string_not_equal(s, attn_status_str(all[j].s));
    }
    assert_non_null(attn_status_str((attn_status)-1000));
    assert_non_null(strstr(attn_status_str((attn_status)-1000), "unknown"));
    assert_true(ATTN_OK == 0);
    for (int k = 1; k < n; k++)
        assert_true(all[k].s < 0);
}

static void test_error_message(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    assert_int_equal(attn_ctx_fail(ctx, ATTN_E_IO, "cannot read %s (%d)", "x.bin", 7), ATTN_E_IO);
    assert_string_equal(attn_ctx_last_error(ctx), "cannot read x.bin (7)");
    /* long messages are truncated, not overflowed */
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(attn_ctx_fail(ctx, ATTN_E_ARG, "%s", big), ATTN_E_ARG);
    size_t len = strlen(attn_ctx_last_error(ctx));
    assert_true(len > 0 && len < sizeof big - 1);
    assert_int_equal(attn_ctx_fail(NULL, ATTN_E_SHAPE, "no context"), ATTN_E_SHAPE);
    /* a successful call clears the message */
    float q[4] = {1, 2, 3, 4}, out[4];
    attn_sdpa_args a = {0};
    a.q = a.k = a.v = attn_tensor_f32_4d(q, 1, 1, 1, 4);
    a.out = attn_tensor_f32_4d(out, 1, 1, 1, 4);
    assert_int_equal(attn_sdpa_forward(ctx, &a), ATTN_OK);
    assert_string_equal(attn_ctx_last_error(ctx), "");
    assert_memory_equal(out, q, sizeof q); /* one key: out = v exactly */
    attn_ctx_free(ctx);
}

static void test_dtypes(void **state) {
    (void)state;
    static const struct {
        attn_dtype t;
        size_t size;
        const char *name;
    } all[] = {
        {ATTN_F32, 4, "F32"}, {ATTN_F64, 8, "F64"}, {ATTN_F16, 2, "F16"}, {ATTN_BF16, 2, "BF16"},
        {ATTN_I32, 4, "I32"}, {ATTN_I64, 8, "I64"}, {ATTN_U8, 1, "U8"},   {ATTN_BOOL, 1, "BOOL"},
    };
    for (int k = 0; k < 8; k++) {
        assert_int_equal(attn_dtype_size(all[k].t), all[k].size);
        assert_string_equal(attn_dtype_name(all[k].t), all[k].name);
    }
    assert_int_equal(attn_dtype_size((attn_dtype)99), 0);
    assert_null(attn_dtype_name((attn_dtype)99));
}

static void test_tensor_helpers(void **state) {
    (void)state;
    float buf[2 * 3 * 5 * 7];
    attn_tensor t = attn_tensor_f32_4d(buf, 2, 3, 5, 7);
    assert_ptr_equal(t.data, buf);
    assert_int_equal(t.dtype, ATTN_F32);
    assert_int_equal(t.ndim, 4);
    const int64_t shape[4] = {2, 3, 5, 7}, stride[4] = {105, 35, 7, 1};
    for (int d = 0; d < 4; d++) {
        assert_int_equal(t.shape[d], shape[d]);
        assert_int_equal(t.stride[d], stride[d]);
    }
    assert_int_equal(attn_tensor_numel(&t), 210);

    uint8_t m[6];
    const int64_t sh2[2] = {2, 3};
    attn_tensor u = attn_tensor_make(m, ATTN_BOOL, 2, sh2);
    assert_int_equal(u.ndim, 2);
    assert_int_equal(u.stride[0], 3);
    assert_int_equal(u.stride[1], 1);
    assert_int_equal(attn_tensor_numel(&u), 6);
    const int64_t sh1[1] = {9};
    attn_tensor v = attn_tensor_make(NULL, ATTN_I64, 1, sh1);
    assert_null(v.data);
    assert_int_equal(v.stride[0], 1);
    assert_int_equal(attn_tensor_numel(&v), 9);
    const int64_t sh0[4] = {4, 0, 2, 2};
    attn_tensor z = attn_tensor_make(NULL, ATTN_F32, 4, sh0);
    assert_int_equal(attn_tensor_numel(&z), 0);
}

/* The kernel family: a known name, stable, and "scalar" when forced. */
static void test_arch_name(void **state) {
    (void)state;
    const char *name = attn_arch_name();
    assert_non_null(name);
    int known = 0; /* one of the families this build has and this CPU runs */
    for (int i = 0; attn_arch_available(i); i++)
        known |= strcmp(name, attn_arch_available(i)) == 0;
    assert_true(known);
    assert_string_equal(attn_arch_name(), name);
    const char *forced = getenv("ATTN_ARCH");
    if (forced && strcmp(forced, "scalar") == 0) assert_string_equal(name, "scalar");
    fprintf(stderr, "kernels: %s\n", name);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_lifecycle),  cmocka_unit_test(test_num_threads_env),
        cmocka_unit_test(test_status_strings), cmocka_unit_test(test_error_message),
        cmocka_unit_test(test_dtypes),         cmocka_unit_test(test_tensor_helpers),
        cmocka_unit_test(test_arch_name),      cmocka_unit_test(test_numel_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
