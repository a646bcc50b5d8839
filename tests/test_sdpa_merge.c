/* attn_sdpa_merge against the float64 oracle: the keys of a problem are cut
 * into 1-4 disjoint chunks (some empty, some that leave rows with no
 * visible key through sparse boolean masks or kv_len), each chunk runs
 * through the fast forward on views of K, V, the mask and kv_len, and the
 * merged (out, lse) must meet the forward's tolerance rule against the
 * oracle on all the keys. Also: in place (out = a part) and any thread
 * count give the same bits, one part is returned exactly, and bad
 * arguments get their statuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "attn_test.h"

#define MAXP 4

static const int64_t lens[] = {1, 2, 7, 24, 25, 63, 64, 65, 129, 200, 300};
#define NLENS (int)(sizeof lens / sizeof lens[0])

/* The rules that depend on a key's absolute index (causal, window, ALiBi,
 * dropout) do not survive slicing the keys; masks and kv_len do. The merge
 * needs lse; large logits one time in four. */
static at_case random_case(at_rng *r, uint64_t k) {
    at_case c = at_case_random(r, k, lens, NLENS);
    c.causal = c.window = c.alibi = 0;
    c.dropout_p = 0.0f;
    c.no_lse = 0;
    c.logit_mul = at_rng_int(r, 0, 3) == 0 ? 10.0f : 0.0f;
    return c;
}

static int64_t clamp64(int64_t x, int64_t lo, int64_t hi) {
    return x < lo ? lo : x > hi ? hi : x;
}

typedef struct parts {
    int n;
    at_buf out[MAXP], lse[MAXP];
    attn_tensor outs[MAXP], lses[MAXP];
} parts;

static void parts_free(parts *p) {
    for (int k = 0; k < MAXP; k++) {
        at_buf_free(&p->out[k]);
        at_buf_free(&p->lse[k]);
    }
}

/* Run the forward of a on keys [s0, s1) into part k. */
static int run_chunk(attn_ctx *ctx, const attn_sdpa_args *a, int64_t s0, int64_t s1, parts *p,
                     int k) {
    const int64_t B = a->q.shape[0], H = a->q.shape[1], T = a->q.shape[2], Dv = a->v.shape[3];
    int64_t ls[3] = {B, H, T};
    if (at_buf_f32(&p->out[k], B, H, T, Dv) || at_buf_alloc(&p->lse[k], ATTN_F32, 3, ls, NULL, 0))
        return 0;
    attn_sdpa_args c = *a;
    c.k.data = (float *)a->k.data + s0 * a->k.stride[2];
    c.k.shape[2] = s1 - s0;
    c.v.data = (float *)a->v.data + s0 * a->v.stride[2];
    c.v.shape[2] = s1 - s0;
    if (a->mask.data) {
        int last = a->mask.ndim - 1;
        c.mask.data = (char *)a->mask.data + s0 * (int64_t)attn_dtype_size(a->mask.dtype);
        c.mask.shape[last] = s1 - s0;
    }
    int32_t kl[8];
    if (a->kv_len) {
        for (int64_t b = 0; b < B; b++)
            kl[b] = (int32_t)clamp64((int64_t)a->kv_len[b] - s0, 0, s1 - s0);
        c.kv_len = kl;
    }
    c.out = p->out[k].t;
    c.lse = p->lse[k].t;
    if (attn_sdpa_forward(ctx, &c)) {
        fprintf(stderr, "chunk forward failed: %s\n", attn_ctx_last_error(ctx));
        return 0;
    }
    p->outs[k] = c.out;
    p->lses[k] = c.lse;
    return 1;
}

static int run_case(attn_ctx *ctx, const at_case *c, uint64_t id, const char *label) {
    at_rng r = at_rng_for(id);
    at_sdpa x;
    if (at_sdpa_build(&x, c, &r)) return 0;
    char desc[512], full[700];
    at_sdpa_describe(&x.a, desc, sizeof desc);
    parts p;
    memset(&p, 0, sizeof p);
    p.n = (int)at_rng_int(&r, 1, MAXP);
    int64_t cut[MAXP + 1];
    cut[0] = 0, cut[p.n] = c->S;
    for (int k = 1; k < p.n; k++)
        cut[k] = at_rng_int(&r, 0, c->S);
    for (int k = 1; k < p.n; k++) /* sort the cuts (a few: insertion) */
        for (int m = k; m > 1 && cut[m] < cut[m - 1]; m--) {
            int64_t t = cut[m];
            cut[m] = cut[m - 1], cut[m - 1] = t;
        }
    int u = snprintf(full, sizeof full, "%s: %s cuts", label, desc);
    for (int k = 0; k <= p.n && u < (int)sizeof full; k++)
        u += snprintf(full + u, sizeof full - (size_t)u, " %lld", (long long)cut[k]);
    int ok = 0;
    const int64_t B = c->B, H = c->H, T = c->T, Dv = c->Dv ? c->Dv : c->D;
    int64_t ls[3] = {B, H, T};
    at_buf mo = {0}, ml = {0}, ro = {0}, rl = {0}, no[AT_NAIVE_ORDERS] = {{0}};
    at_buf nl[AT_NAIVE_ORDERS] = {{0}};
    for (int k = 0; k < p.n; k++)
        if (!run_chunk(ctx, &x.a, cut[k], cut[k + 1], &p, k)) goto done;
    if (at_buf_f32(&mo, B, H, T, Dv) || at_buf_alloc(&ml, ATTN_F32, 3, ls, NULL, 0) ||
        at_buf_f32(&ro, B, H, T, Dv) || at_buf_alloc(&rl, ATTN_F32, 3, ls, NULL, 0))
        goto done;
    if (attn_sdpa_merge(ctx, p.n, p.outs, p.lses, mo.t, ml.t)) {
        fprintf(stderr, "merge failed: %s (%s)\n", attn_ctx_last_error(ctx), full);
        goto done;
    }
    attn_sdpa_args ra = x.a;
    ra.out = ro.t, ra.lse = rl.t;
    if (attn_sdpa_forward_ref(ctx, &ra)) goto done;
    const attn_tensor *nop[AT_NAIVE_ORDERS], *nlp[AT_NAIVE_ORDERS];
    for (int k = 0; k < AT_NAIVE_ORDERS; k++) {
        if (at_buf_f32(&no[k], B, H, T, Dv) || at_buf_alloc(&nl[k], ATTN_F32, 3, ls, NULL, 0))
            goto done;
        ra.out = no[k].t, ra.lse = nl[k].t;
        if (at_naive32_forward_order(ctx, &ra, k)) goto done;
        nop[k] = &no[k].t, nlp[k] = &nl[k].t;
    }
    ok = at_check_n("out", full, r.seed, &mo.t, &ro.t, nop, AT_NAIVE_ORDERS, NULL) &&
         at_check_n("lse", full, r.seed, &ml.t, &rl.t, nlp, AT_NAIVE_ORDERS, NULL);
    /* in place into the last part, on another thread count: the same bits */
    if (ok) {
        int th = attn_ctx_threads(ctx);
        if (attn_ctx_set_threads(ctx, th == 1 ? 3 : 1) ||
            attn_sdpa_merge(ctx, p.n, p.outs, p.lses, p.outs[p.n - 1], p.lses[p.n - 1]) ||
            attn_ctx_set_threads(ctx, th))
            ok = 0;
        ok = ok && at_bitwise_equal("out in place", full, &p.outs[p.n - 1], &mo.t) &&
             at_bitwise_equal("lse in place", full, &p.lses[p.n - 1], &ml.t);
    }
done:
    for (int k = 0; k < AT_NAIVE_ORDERS; k++) {
        at_buf_free(&no[k]);
        at_buf_free(&nl[k]);
    }
    at_buf_free(&mo);
    at_buf_free(&ml);
    at_buf_free(&ro);
    at_buf_free(&rl);
    parts_free(&p);
    at_sdpa_free(&x);
    return ok;
}

static void test_random_against_oracle(void **state) {
    (void)state;
    int fails = at_run_random_cases(at_quick() ? 40 : 250, 71000, 72000, "merge case", random_case,
                                    run_case);
    assert_int_equal(fails, 0);
}

/* One part comes back exactly; rows that no part saw give 0 and -inf. */
static void test_one_part_and_empty_rows(void **state) {
    (void)state;
    at_case c = {.B = 2, .H = 3, .T = 30, .S = 40, .D = 16, .Dv = 8, .kv_len = 1};
    at_rng r = at_rng_for(73000);
    at_sdpa x;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_OK);
    at_buf o, l;
    int64_t ls[3] = {2, 3, 30};
    assert_int_equal(at_buf_f32(&o, 2, 3, 30, 8), 0);
    assert_int_equal(at_buf_alloc(&l, ATTN_F32, 3, ls, NULL, 0), 0);
    assert_int_equal(attn_sdpa_merge(at_ctx, 1, &x.a.out, &x.a.lse, o.t, l.t), ATTN_OK);
    assert_true(at_bitwise_equal("out", "one part", &o.t, &x.a.out));
    assert_true(at_bitwise_equal("lse", "one part", &l.t, &x.a.lse));
    /* two parts that saw nothing */
    at_fill_value(&x.a.out, 0.0f);
    at_fill_value(&x.a.lse, -INFINITY);
    attn_tensor outs[2] = {x.a.out, x.a.out}, lses[2] = {x.a.lse, x.a.lse};
    at_fill_value(&o.t, 5.0f);
    assert_int_equal(attn_sdpa_merge(at_ctx, 2, outs, lses, o.t, l.t), ATTN_OK);
    for (int64_t e = 0; e < 2 * 3 * 30; e++) {
        assert_true(((float *)l.t.data)[e] == -INFINITY);
        for (int cc = 0; cc < 8; cc++)
            assert_true(((float *)o.t.data)[e * 8 + cc] == 0.0f);
    }
    at_buf_free(&o);
    at_buf_free(&l);
    at_sdpa_free(&x);
}

static void test_bad_arguments(void **state) {
    (void)state;
    float od[2 * 3 * 4 * 5], ld[2 * 3 * 4];
    attn_tensor o = attn_tensor_f32_4d(od, 2, 3, 4, 5);
    attn_tensor l = attn_tensor_make(ld, ATTN_F32, 3, (int64_t[]){2, 3, 4});
    attn_tensor outs[2] = {o, o}, lses[2] = {l, l};
    assert_int_equal(attn_sdpa_merge(at_ctx, 0, outs, lses, o, l), ATTN_E_ARG);
    assert_int_equal(attn_sdpa_merge(at_ctx, 2, NULL, lses, o, l), ATTN_E_ARG);
    assert_int_equal(attn_sdpa_merge(NULL, 2, outs, lses, o, l), ATTN_E_ARG);
    attn_tensor bad = o;
    bad.shape[3] = 4;
    outs[1] = bad;
    assert_int_equal(attn_sdpa_merge(at_ctx, 2, outs, lses, o, l), ATTN_E_SHAPE);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "outs[1]"));
    outs[1] = o;
    bad = l;
    bad.dtype = ATTN_F16;
    lses[0] = bad;
    assert_int_equal(attn_sdpa_merge(at_ctx, 2, outs, lses, o, l), ATTN_E_DTYPE);
    lses[0] = l;
    bad = o;
    bad.stride[3] = 2;
    assert_int_equal(attn_sdpa_merge(at_ctx, 2, outs, lses, bad, l), ATTN_E_LAYOUT);
    bad = l;
    bad.ndim = 4;
    assert_int_equal(attn_sdpa_merge(at_ctx, 2, outs, lses, o, bad), ATTN_E_SHAPE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_against_oracle),
        cmocka_unit_test(test_one_part_and_empty_rows),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
