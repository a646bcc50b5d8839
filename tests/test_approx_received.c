/* attn_approx_received: the attention each key receives under each
 * approximate method, against the column sums of the method's own matrix
 * P taken from the float64 reference of its formula (src/ref/approx_ref.c)
 * run with V = the identity (then out_i = P_i, row i of P), with the
 * project's tolerance rule (the reference's fp32 twin, two summation
 * orders, the yardstick). Causal and non-causal, T != S, GQA, several
 * batches and chunk sizes; the same bits for 1 and 2 threads; bad
 * arguments named. Also attn_approx_args.omega (the Performer's features
 * given instead of drawn). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "approx/approx.h"
#include "attn_test.h"

typedef struct rcase {
    attn_approx_method method;
    int causal;
    int64_t B, H, Hkv, T, S, D, count, chunk;
    float sigma; /* scale of q and k */
} rcase;

static void fill(at_rng *r, float *x, int64_t n, float sigma) {
    for (int64_t i = 0; i < n; i++)
        x[i] = sigma * at_rng_normal(r);
}

static int check_case(const rcase *c, uint64_t seed) {
    at_rng r = at_rng_for(seed);
    const int64_t B = c->B, H = c->H, Hkv = c->Hkv, T = c->T, S = c->S, D = c->D;
    float *q = malloc(sizeof(float) * (size_t)(B * H * T * D));
    float *k = malloc(sizeof(float) * (size_t)(B * Hkv * S * D));
    float *v = calloc((size_t)(B * Hkv * S * S), sizeof(float)); /* identity per head */
    float *out = malloc(sizeof(float) * (size_t)(B * H * T * S));
    float *got = malloc(sizeof(float) * (size_t)(B * H * S)),
          *got1 = malloc(sizeof(float) * (size_t)(B * H * S));
    double *p64 = malloc(sizeof(double) * (size_t)(B * H * T * S));
    float *p32[2] = {malloc(sizeof(float) * (size_t)(B * H * T * S)),
                     malloc(sizeof(float) * (size_t)(B * H * T * S))};
    double *e64 = calloc((size_t)(B * H * S), sizeof(double));
    float *e32 = calloc((size_t)(B * H * S), sizeof(float));
    fill(&r, q, B * H * T * D, c->sigma);
    fill(&r, k, B * Hkv * S * D, c->sigma);
    for (int64_t g = 0; g < B * Hkv; g++)
        for (int64_t j = 0; j < S; j++)
            v[(g * S + j) * S + j] = 1.0f;
    attn_approx_args a;
    memset(&a, 0, sizeof a);
    a.q = attn_tensor_make(q, ATTN_F32, 4, (int64_t[]){B, H, T, D});
    a.k = attn_tensor_make(k, ATTN_F32, 4, (int64_t[]){B, Hkv, S, D});
    a.v = attn_tensor_make(v, ATTN_F32, 4, (int64_t[]){B, Hkv, S, S});
    a.out = attn_tensor_make(out, ATTN_F32, 4, (int64_t[]){B, H, T, S});
    a.method = c->method, a.causal = c->causal, a.chunk = c->chunk;
    if (c->method == ATTN_APPROX_PERFORMER) a.features = c->count, a.seed = seed;
    if (c->method == ATTN_APPROX_NYSTROM) a.landmarks = c->count;
    if (c->method == ATTN_APPROX_TOPK) a.topk = c->count;
    assert_int_equal(attn_approx_received(at_ctx, &a, got), ATTN_OK);
    attn_ctx *one;
    assert_int_equal(attn_ctx_create(&one, 1), ATTN_OK);
    assert_int_equal(attn_approx_received(one, &a, got1), ATTN_OK);
    attn_ctx_free(one);
    int ok = !memcmp(got, got1, sizeof(float) * (size_t)(B * H * S));
    if (!ok) fprintf(stderr, "received: 1 and 2 threads differ\n");
    attn__approx_plan p;
    assert_int_equal(attn__approx_plan_make(at_ctx, &a, NULL, &p), ATTN_OK);
    assert_int_equal(attn__approx_ref64(at_ctx, &p, p64), ATTN_OK);
    assert_int_equal(attn__approx_ref32(at_ctx, &p, 0, p32[0]), ATTN_OK);
    assert_int_equal(attn__approx_ref32(at_ctx, &p, 1, p32[1]), ATTN_OK);
    for (int64_t bh = 0; bh < B * H; bh++)
        for (int64_t j = 0; j < S; j++) {
            float s32[2] = {0.0f, 0.0f};
            for (int64_t i = 0; i < T; i++) {
                e64[bh * S + j] += p64[(bh * T + i) * S + j];
                for (int o = 0; o < 2; o++)
                    s32[o] += p32[o][(bh * T + i) * S + j];
            }
            const double d0 = fabs(s32[0] - e64[bh * S + j]), d1 = fabs(s32[1] - e64[bh * S + j]);
            e32[bh * S + j] = d0 >= d1 ? s32[0] : s32[1];
        }
    char what[160];
    snprintf(what, sizeof what,
             "%s%s B=%lld H=%lld/%lld T=%lld S=%lld D=%lld count=%lld chunk=%lld",
             attn_approx_name(c->method), c->causal ? " causal" : "", (long long)B, (long long)H,
             (long long)Hkv, (long long)T, (long long)S, (long long)D, (long long)c->count,
             (long long)c->chunk);
    ok = ok && at_check_f64(what, got, e64, e32, B * H * S, seed);
    /* a received total is the number of queries that see a key at all */
    free(q), free(k), free(v), free(out), free(got), free(got1), free(p64);
    free(p32[0]), free(p32[1]), free(e64), free(e32);
    return ok;
}

static void test_against_reference(void **state) {
    (void)state;
    const rcase cases[] = {
        {ATTN_APPROX_LINEAR, 0, 2, 4, 2, 29, 41, 8, 0, 0, 1.0f},
        {ATTN_APPROX_LINEAR, 1, 2, 4, 2, 37, 37, 8, 0, 5, 1.0f},
        {ATTN_APPROX_LINEAR, 0, 1, 3, 3, 1, 1, 5, 0, 0, 1.0f},
        {ATTN_APPROX_PERFORMER, 0, 2, 4, 2, 29, 41, 8, 24, 0, 1.0f},
        {ATTN_APPROX_PERFORMER, 1, 1, 2, 1, 37, 37, 16, 7, 0, 2.0f},
        {ATTN_APPROX_PERFORMER, 0, 1, 2, 2, 50, 50, 16, 64, 0, 3.0f},
        {ATTN_APPROX_NYSTROM, 0, 2, 4, 2, 33, 45, 8, 5, 7, 1.0f},
        {ATTN_APPROX_NYSTROM, 0, 1, 2, 1, 17, 17, 12, 17, 0, 0.5f},
        {ATTN_APPROX_TOPK, 0, 2, 4, 2, 29, 41, 8, 3, 5, 1.0f},
        {ATTN_APPROX_TOPK, 0, 1, 2, 2, 37, 37, 8, 37, 0, 2.0f},
        {ATTN_APPROX_TOPK, 0, 1, 1, 1, 9, 13, 4, 1, 0, 1.0f},
    };
    int fails = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        fails += !check_case(&cases[i], 100 + i);
    assert_int_equal(fails, 0);
}

/* Top-k with k = S and every query: exact attention's probabilities,
 * whose received sums over a head come to T (each row sums to 1); linear
 * attention's also come to T. */
static void test_totals(void **state) {
    (void)state;
    at_rng r = at_rng_for(7);
    const int64_t T = 23, S = 31, D = 8;
    float q[T * D], k[S * D], v[S * 2], out[T * 2], got[S];
    fill(&r, q, T * D, 1.0f), fill(&r, k, S * D, 1.0f), fill(&r, v, S * 2, 1.0f);
    attn_approx_args a;
    memset(&a, 0, sizeof a);
    a.q = attn_tensor_make(q, ATTN_F32, 4, (int64_t[]){1, 1, T, D});
    a.k = attn_tensor_make(k, ATTN_F32, 4, (int64_t[]){1, 1, S, D});
    a.v = attn_tensor_make(v, ATTN_F32, 4, (int64_t[]){1, 1, S, 2});
    a.out = attn_tensor_make(out, ATTN_F32, 4, (int64_t[]){1, 1, T, 2});
    const attn_approx_method ms[2] = {ATTN_APPROX_TOPK, ATTN_APPROX_LINEAR};
    for (int m = 0; m < 2; m++) {
        a.method = ms[m], a.topk = m ? 0 : S;
        assert_int_equal(attn_approx_received(at_ctx, &a, got), ATTN_OK);
        double tot = 0.0;
        for (int64_t j = 0; j < S; j++) {
            assert_true(got[j] >= 0.0f);
            tot += got[j];
        }
        assert_true(fabs(tot - (double)T) < 1e-4);
    }
}

/* attn_approx_args.omega: features given once are the features the seed
 * draws (the same bits, forward, backward and received), and the checks. */
static void test_given_features(void **state) {
    (void)state;
    at_rng r = at_rng_for(11);
    enum { T = 19, S = 23, D = 8, M = 12 };
    float q[2 * T * D], k[S * D], v[S * 3], o1[2 * T * 3], o2[2 * T * 3];
    float r1[2 * S], r2[2 * S], om[M * D];
    fill(&r, q, 2 * T * D, 1.0f), fill(&r, k, S * D, 1.0f), fill(&r, v, S * 3, 1.0f);
    attn_approx_args a;
    memset(&a, 0, sizeof a);
    a.q = attn_tensor_make(q, ATTN_F32, 4, (int64_t[]){1, 2, T, D});
    a.k = attn_tensor_make(k, ATTN_F32, 4, (int64_t[]){1, 1, S, D});
    a.v = attn_tensor_make(v, ATTN_F32, 4, (int64_t[]){1, 1, S, 3});
    a.out = attn_tensor_make(o1, ATTN_F32, 4, (int64_t[]){1, 2, T, 3});
    a.method = ATTN_APPROX_PERFORMER, a.features = M, a.seed = 77;
    assert_int_equal(attn_approx_forward(at_ctx, &a), ATTN_OK);
    assert_int_equal(attn_approx_received(at_ctx, &a, r1), ATTN_OK);
    assert_int_equal(attn_performer_draw(at_ctx, D, M, 77, om), ATTN_OK);
    attn_approx_args b = a;
    b.seed = 0, b.omega = om, b.out = attn_tensor_make(o2, ATTN_F32, 4, (int64_t[]){1, 2, T, 3});
    assert_int_equal(attn_approx_forward(at_ctx, &b), ATTN_OK);
    assert_int_equal(attn_approx_received(at_ctx, &b, r2), ATTN_OK);
    assert_memory_equal(o1, o2, sizeof o1);
    assert_memory_equal(r1, r2, sizeof r1);
    b.seed = 5; /* both: which features? */
    assert_int_equal(attn_approx_forward(at_ctx, &b), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "seed"));
    b.seed = 0, b.method = ATTN_APPROX_LINEAR, b.features = 0; /* not the Performer's */
    assert_int_equal(attn_approx_forward(at_ctx, &b), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "omega"));
    /* the reference uses the given features too */
    b = a, b.seed = 0, b.omega = om;
    attn__approx_plan p;
    double ref[2 * T * 3];
    assert_int_equal(attn__approx_plan_make(at_ctx, &b, NULL, &p), ATTN_OK);
    assert_int_equal(attn__approx_ref64(at_ctx, &p, ref), ATTN_OK);
    for (int i = 0; i < 2 * T * 3; i++)
        assert_true(fabs(ref[i] - o1[i]) < 1e-4);
}

static void test_bad(void **state) {
    (void)state;
    float q[4 * 4], k[4 * 4], v[4 * 4], out[4 * 4], got[8];
    memset(q, 0, sizeof q), memset(k, 0, sizeof k), memset(v, 0, sizeof v);
    attn_approx_args a;
    memset(&a, 0, sizeof a);
    a.q = attn_tensor_make(q, ATTN_F32, 4, (int64_t[]){1, 1, 4, 4});
    a.k = attn_tensor_make(k, ATTN_F32, 4, (int64_t[]){1, 1, 4, 4});
    a.v = attn_tensor_make(v, ATTN_F32, 4, (int64_t[]){1, 1, 4, 4});
    a.out = attn_tensor_make(out, ATTN_F32, 4, (int64_t[]){1, 1, 4, 4});
    a.method = ATTN_APPROX_TOPK, a.topk = 5;
    for (int i = 0; i < 8; i++)
        got[i] = 7.0f;
    assert_int_equal(attn_approx_received(at_ctx, &a, got), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "topk"));
    a.topk = 2;
    assert_int_equal(attn_approx_received(at_ctx, &a, NULL), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "received"));
    a.method = ATTN_APPROX_NONE, a.topk = 0;
    assert_int_equal(attn_approx_received(at_ctx, &a, got), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "method"));
    for (int i = 0; i < 8; i++)
        assert_true(got[i] == 7.0f);
    assert_int_equal(attn_approx_received(NULL, &a, got), ATTN_E_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_totals),
        cmocka_unit_test(test_given_features),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
