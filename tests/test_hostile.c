/* Issue 10's library defects, each as the probe found it: window sides near
 * INT64_MAX, sizes whose products overflow behind an empty dimension, a
 * batch of INT64_MAX. Each case failed (wrong result, a spin, or "out of
 * memory for -2 tasks") before its fix. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "attn_test.h"
#include "core/internal.h"
#include "kernels/arch.h"

#include <pthread.h>
#include <sched.h>

/* --window 0,INT64_MAX masked 8 of 10 rows while 0,-1 masked none: a side
 * beyond S + T must mean exactly "unbounded", in every path and in the
 * FLOP count; also a huge left side with bottom-right alignment. */
static void test_window_huge_sides(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    at_rng r = at_rng_for(41000);
    for (int align = 0; align < 2; align++)
        for (int side = 0; side < 2; side++)
            for (int ref = 0; ref < 2; ref++) {
                at_sdpa x, y;
                assert_int_equal(at_sdpa_alloc(&x, 1, 2, 2, 10, 7, 4, 4, AT_BHTD, &r), 0);
                assert_int_equal(at_sdpa_alloc(&y, 1, 2, 2, 10, 7, 4, 4, AT_BHTD, &r), 0);
                y.a.q = x.a.q, y.a.k = x.a.k, y.a.v = x.a.v;
                x.a.align = y.a.align = align ? ATTN_ALIGN_BOTTOM_RIGHT : ATTN_ALIGN_TOP_LEFT;
                x.a.window = y.a.window = 1;
                x.a.window_left = side ? 1 : INT64_MAX;
                x.a.window_right = side ? INT64_MAX : 1;
                y.a.window_left = side ? 1 : -1;
                y.a.window_right = side ? -1 : 1;
                attn_status s1 =
                    ref ? attn_sdpa_forward_ref(ctx, &x.a) : attn_sdpa_forward(ctx, &x.a);
                attn_status s2 =
                    ref ? attn_sdpa_forward_ref(ctx, &y.a) : attn_sdpa_forward(ctx, &y.a);
                assert_int_equal(s1, ATTN_OK);
                assert_int_equal(s2, ATTN_OK);
                assert_true(at_bitwise_equal("out", "huge window side", &x.a.out, &y.a.out));
                assert_true(at_bitwise_equal("lse", "huge window side", &x.a.lse, &y.a.lse));
                assert_true(attn_sdpa_flops(&x.a) == attn_sdpa_flops(&y.a));
                assert_true(attn_sdpa_flops(&x.a) > 0);
                at_sdpa_free(&x);
                at_sdpa_free(&y);
            }
    attn_ctx_free(ctx);
}

/* Views of any size over a tiny buffer (stride 0 on the outer dims): the
 * plan must refuse impossible sizes before any work or allocation. */
static attn_tensor huge_view(float *buf, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    attn_tensor t = attn_tensor_make(buf, ATTN_F32, 4, (int64_t[]){d0, d1, d2, d3});
    t.stride[0] = t.stride[1] = t.stride[2] = 0;
    t.stride[3] = 1;
    return t;
}

static void expect_too_large(attn_ctx *ctx, attn_sdpa_args *a, float *buf) {
    attn_status s = attn_sdpa_forward(ctx, a);
    assert_int_equal(s, ATTN_E_SHAPE);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "too large"));
    assert_int_equal(attn_sdpa_forward_ref(ctx, a), ATTN_E_SHAPE);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "too large"));
    attn_sdpa_grads g = {0};
    g.dout = a->out;
    g.dq = a->q;
    g.dk = a->k;
    g.dv = a->v;
    a->lse = attn_tensor_make(buf, ATTN_F32, 3, a->q.shape);
    a->lse.stride[0] = a->lse.stride[1] = 0;
    a->lse.stride[2] = 1;
    assert_int_equal(attn_sdpa_backward(ctx, a, &g), ATTN_E_SHAPE);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "too large"));
    assert_int_equal(attn_sdpa_backward_ref(ctx, a, &g), ATTN_E_SHAPE);
    assert_true(attn_sdpa_flops(a) == 0.0);
}

static void test_impossible_sizes(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    static float buf[64];
    /* q/k/v [2^20, 2^20, 0, 4]: 2^40 empty heads (--ref spun through them,
     * --backward asked for 2^40 tasks) */
    const int64_t M = (int64_t)1 << 20;
    attn_sdpa_args a = {0};
    a.q = huge_view(buf, M, M, 0, 4);
    a.k = huge_view(buf, M, M, 0, 4);
    a.v = huge_view(buf, M, M, 0, 4);
    a.out = huge_view(buf, M, M, 0, 4);
    expect_too_large(ctx, &a, buf);
    /* B = INT64_MAX ("out of memory for -2 tasks") */
    memset(&a, 0, sizeof a);
    a.q = huge_view(buf, INT64_MAX, 1, 1, 4);
    a.k = huge_view(buf, INT64_MAX, 1, 1, 4);
    a.v = huge_view(buf, INT64_MAX, 1, 1, 4);
    a.out = huge_view(buf, INT64_MAX, 1, 1, 4);
    expect_too_large(ctx, &a, buf);
    /* a product past 2^60 with every size inside its own limit */
    memset(&a, 0, sizeof a);
    a.q = huge_view(buf, 1 << 15, 1 << 15, INT32_MAX, 1 << 20);
    a.k = huge_view(buf, 1 << 15, 1 << 15, 1, 1 << 20);
    a.v = huge_view(buf, 1 << 15, 1 << 15, 1, 4);
    a.out = huge_view(buf, 1 << 15, 1 << 15, INT32_MAX, 4);
    expect_too_large(ctx, &a, buf);
    attn_ctx_free(ctx);
}

/* out == k, out == v and out over q shifted by a row returned ATTN_OK with
 * wrong results: any overlap of an output with an input is ATTN_E_ARG,
 * except out == q exactly, which gives the separate-buffer result. */
static void test_aliasing(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    at_rng r = at_rng_for(42000);
    at_sdpa x;
    assert_int_equal(at_sdpa_alloc(&x, 1, 2, 2, 9, 9, 8, 8, AT_BHTD, &r), 0);
    attn_sdpa_args a = x.a;
    a.out = x.a.k;
    assert_int_equal(attn_sdpa_forward(ctx, &a), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "out overlaps k"));
    a.out = x.a.v;
    assert_int_equal(attn_sdpa_forward(ctx, &a), ATTN_E_ARG);
    assert_int_equal(attn_sdpa_forward_ref(ctx, &a), ATTN_E_ARG);
    a.out = x.a.q;
    a.out.data = (float *)x.a.q.data + x.a.q.stride[2]; /* q shifted by a row */
    a.out.shape[2] -= 1;
    a.q.shape[2] -= 1;
    a.lse.shape[2] -= 1;
    assert_int_equal(attn_sdpa_forward(ctx, &a), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "out overlaps q"));
    a = x.a;
    a.lse = attn_tensor_make(x.a.k.data, ATTN_F32, 3, x.a.lse.shape);
    assert_int_equal(attn_sdpa_forward(ctx, &a), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "lse overlaps k"));

    /* the one aliasing allowed: out == q exactly */
    a = x.a;
    assert_int_equal(attn_sdpa_forward(ctx, &a), ATTN_OK);
    at_buf qcopy;
    assert_int_equal(at_buf_copy_of(&qcopy, &x.a.q), 0);
    a.q = qcopy.t;
    a.out = qcopy.t;
    assert_int_equal(attn_sdpa_forward(ctx, &a), ATTN_OK);
    assert_true(at_bitwise_equal("out == q", "in place", &qcopy.t, &x.a.out));

    /* gradients: dq == k, dv == dout */
    a = x.a;
    assert_int_equal(attn_sdpa_forward(ctx, &a), ATTN_OK);
    at_sdpa y;
    assert_int_equal(at_sdpa_alloc(&y, 1, 2, 2, 9, 9, 8, 8, AT_BHTD, &r), 0);
    attn_sdpa_grads g = {.dout = y.a.q, .dq = y.a.out, .dk = y.a.k, .dv = y.a.v};
    assert_int_equal(attn_sdpa_backward(ctx, &a, &g), ATTN_OK);
    g.dq = x.a.k;
    assert_int_equal(attn_sdpa_backward(ctx, &a, &g), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "dq overlaps k"));
    g.dq = y.a.out;
    g.dv = y.a.q;
    assert_int_equal(attn_sdpa_backward(ctx, &a, &g), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "dv overlaps dout"));
    at_buf_free(&qcopy);
    at_sdpa_free(&x);
    at_sdpa_free(&y);
    attn_ctx_free(ctx);
}

/* One context used from two threads at once (forbidden) gave wrong results
 * and could use freed workspace: the sdpa entry points now return
 * ATTN_E_BUSY to the second thread and write nothing to the context. */
typedef struct busy_arg {
    attn_ctx *ctx;
    attn_sdpa_args a;
    attn_tensor ref_out;
    int iters, ok, busy, wrong;
    attn_status first;
} busy_arg;

static void *call_once(void *p) {
    busy_arg *x = p;
    x->first = attn_sdpa_forward(x->ctx, &x->a);
    return NULL;
}

static void *hammer(void *p) {
    busy_arg *x = p;
    /* a refused call returns at once: yield and go on until iters calls
     * succeeded (the other thread's call may take long: scalar kernels,
     * sanitizers, a loaded machine) */
    while (x->ok < x->iters && !x->wrong) {
        attn_status s = attn_sdpa_forward(x->ctx, &x->a);
        if (s == ATTN_OK) {
            x->ok++;
            const float *o = x->a.out.data, *r = x->ref_out.data;
            if (memcmp(o, r, (size_t)attn_tensor_numel(&x->ref_out) * sizeof *o)) x->wrong++;
        } else if (s == ATTN_E_BUSY) {
            x->busy++;
            sched_yield();
        } else {
            x->wrong++;
        }
    }
    return NULL;
}

static void test_concurrent_ctx(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    at_rng r = at_rng_for(43000);
    at_sdpa x[2];
    busy_arg arg[2];
    for (int t = 0; t < 2; t++) {
        assert_int_equal(at_sdpa_alloc(&x[t], 1, 2, 1, 130, 130, 16 + 48 * t, 16, AT_BHTD, &r), 0);
        arg[t] = (busy_arg){ctx, x[t].a, {0}, 100, 0, 0, 0, ATTN_OK};
    }
    at_buf ref[2];
    for (int t = 0; t < 2; t++) {
        assert_int_equal(attn_sdpa_forward(ctx, &x[t].a), ATTN_OK);
        assert_int_equal(at_buf_copy_of(&ref[t], &x[t].a.out), 0);
        arg[t].ref_out = ref[t].t;
    }
    /* deterministic: this thread holds the context, another calls */
    assert_int_equal(attn__ctx_enter(ctx), ATTN_OK);
    attn_ctx_fail(ctx, ATTN_E_ARG, "this thread's message");
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, call_once, &arg[0]), 0);
    pthread_join(th, NULL);
    assert_int_equal(arg[0].first, ATTN_E_BUSY);
    assert_string_equal(attn_ctx_last_error(ctx), "this thread's message");
    /* the owner may nest */
    assert_int_equal(attn_sdpa_forward(ctx, &x[0].a), ATTN_OK);
    attn__ctx_leave(ctx);
    assert_int_equal(pthread_create(&th, NULL, call_once, &arg[0]), 0);
    pthread_join(th, NULL);
    assert_int_equal(arg[0].first, ATTN_OK);

    /* racing: every call either succeeds with the right bits or is refused */
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, hammer, &arg[0]), 0);
    assert_int_equal(pthread_create(&b, NULL, hammer, &arg[1]), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(arg[t].wrong, 0);
        assert_int_equal(arg[t].ok, arg[t].iters);
        printf("thread %d: %d ok, %d refused (ATTN_E_BUSY)\n", t, arg[t].ok, arg[t].busy);
    }
    for (int t = 0; t < 2; t++) {
        at_buf_free(&ref[t]);
        at_sdpa_free(&x[t]);
    }
    attn_ctx_free(ctx);
}

/* The backward's scratch is ~3 strips x D floats: a strip of 96 rows
 * whatever T was (D = 2^20, T = S = 1 took 1.2 GB and 16 s). A short T now
 * gets a strip of T rounded up to the family's register strip. */
static void test_backward_scratch_short_t(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    const int64_t D = 1 << 14;
    at_rng r = at_rng_for(44000);
    at_sdpa x, y;
    assert_int_equal(at_sdpa_alloc(&x, 1, 1, 1, 1, 3, D, D, AT_BHTD, &r), 0);
    assert_int_equal(at_sdpa_alloc(&y, 1, 1, 1, 1, 3, D, D, AT_BHTD, &r), 0);
    assert_int_equal(attn_sdpa_forward(ctx, &x.a), ATTN_OK);
    attn_sdpa_grads g = {.dout = y.a.out, .dq = y.a.q, .dk = y.a.k, .dv = y.a.v};
    at_fill_uniform(&y.a.out, &r, -1.0f, 1.0f);
    assert_int_equal(attn_sdpa_backward(ctx, &x.a, &g), ATTN_OK);
    const size_t R = (size_t)ctx->arch->mr, bbk = (size_t)ctx->arch->bbk;
    const size_t bound = (3 * R * (size_t)D + 4 * bbk * R + 6 * R + 64) * sizeof(float) + 64;
    printf("backward scratch for T=1, D=%lld: %zu bytes (bound %zu, strip %zu rows)\n",
           (long long)D, ctx->ws_size[0], bound, R);
    assert_true(ctx->ws_size[0] <= bound);
    at_sdpa_free(&x);
    at_sdpa_free(&y);
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_huge_sides),
        cmocka_unit_test(test_impossible_sizes),
        cmocka_unit_test(test_aliasing),
        cmocka_unit_test(test_concurrent_ctx),
        cmocka_unit_test(test_backward_scratch_short_t),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
