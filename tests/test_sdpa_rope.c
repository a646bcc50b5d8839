/* Rotary position embedding as an attention option (attn_sdpa_args.rope):
 * random combinations with every other option (causal in both alignments,
 * windows, GQA, masks, kv_len, ALiBi, softcap, dropout, strided layouts),
 * forward and backward, against the float64 oracle with the tolerance rule
 * (the plain fp32 references rotate copies of q and k with float cos/sin
 * tables); bitwise equality with attention on q and k pre-rotated by
 * attn_rope_apply, rope off (forward and attn_sdpa_probs); a KV cache's
 * convention (keys stored rotated, queries at the cache's positions); the
 * frequency tables against Hugging Face's; and the argument checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "at_sdpa_bwd.h"
#include "attn_test.h"

static const int64_t lens[] = {1, 2, 5, 7, 23, 24, 25, 48, 49, 63, 65, 127, 129, 200};
#define NLENS (int)(sizeof lens / sizeof lens[0])

/* The arrays a case's rope points to (a case is generated, then run, one at a time). */
static float g_freq[1024];
static int32_t g_qpos_b[8], g_kpos_b[8];

static attn_rope random_rope(at_rng *r, int64_t D, int64_t B) {
    attn_rope ro;
    memset(&ro, 0, sizeof ro);
    int64_t half = D / 2;
    if (half < 1) return ro; /* D = 1: no pair to rotate */
    int64_t k = at_rng_int(r, 0, 3);
    ro.rot_dim = 2 * (k == 0 ? at_rng_int(r, 1, half) : half); /* partial one time in four */
    ro.style = at_rng_int(r, 0, 2) == 0 ? ATTN_ROPE_INTERLEAVED : ATTN_ROPE_HALF;
    static const double thetas[] = {10000.0, 500000.0, 10.0, 1.0e6};
    ro.theta = thetas[at_rng_int(r, 0, 3)];
    if (at_rng_int(r, 0, 3) == 0) { /* a scaled table */
        attn_rope_scaling sc = {ATTN_ROPE_SCALING_LLAMA3, 8.0, 1.0, 4.0, 64.0};
        if (at_rng_int(r, 0, 1)) sc = (attn_rope_scaling){ATTN_ROPE_SCALING_LINEAR, 4.0, 0, 0, 0};
        if (attn_rope_inv_freq(NULL, ro.rot_dim, ro.theta, &sc, g_freq) == ATTN_OK)
            ro.inv_freq = g_freq;
    }
    ro.q_pos = at_rng_int(r, 0, 2) == 0 ? 0 : at_rng_int(r, -50, 5000);
    ro.k_pos = at_rng_int(r, 0, 2) == 0 ? 0 : at_rng_int(r, -50, 5000);
    if (B <= 8 && at_rng_int(r, 0, 3) == 0) {
        for (int64_t b = 0; b < B; b++)
            g_qpos_b[b] = (int32_t)at_rng_int(r, 0, 300), g_kpos_b[b] = (int32_t)at_rng_int(r, 0, 300);
        ro.q_pos_b = g_qpos_b;
        ro.k_pos_b = at_rng_int(r, 0, 1) ? g_kpos_b : NULL;
    }
    ro.k_rotated = at_rng_int(r, 0, 5) == 0;
    return ro;
}

static at_case fwd_case(at_rng *r, uint64_t k) {
    at_case c = at_case_random(r, k, lens, NLENS);
    c.rope = random_rope(r, c.D, c.B);
    return c;
}

static int run_fwd(attn_ctx *ctx, const at_case *c, uint64_t id, const char *label) {
    return at_sdpa_run_forward(ctx, c, id, label);
}

static void test_forward_random(void **state) {
    (void)state;
    int n = at_quick() ? 25 : 150;
    assert_int_equal(at_run_random_cases(n, 0x50e1000, 0x50e2000, "rope fwd", fwd_case, run_fwd), 0);
}

static at_case bwd_case(at_rng *r, uint64_t k) {
    static const int64_t bl[] = {1, 2, 7, 24, 25, 49, 63, 97, 130};
    at_case c = at_case_random(r, k, bl, (int)(sizeof bl / sizeof bl[0]));
    c.no_lse = 0;
    c.rope = random_rope(r, c.D, c.B);
    return c;
}

static int run_bwd(attn_ctx *ctx, const at_case *c, uint64_t id, const char *label) {
    return at_sdpa_run_backward(ctx, c, c->mask_dtype == ATTN_F32, id, label);
}

static void test_backward_random(void **state) {
    (void)state;
    int n = at_quick() ? 12 : 80;
    assert_int_equal(at_run_random_cases(n, 0x50e3000, 0x50e4000, "rope bwd", bwd_case, run_bwd), 0);
}

/* x rotated by attn_rope_apply as q (positions q_pos + q_pos_b) or as k. */
static void pre_rotate(attn_ctx *ctx, const attn_rope *ro, attn_tensor x, int is_q) {
    attn_rope r = *ro;
    if (is_q) r.k_pos = ro->q_pos, r.k_pos_b = ro->q_pos_b;
    assert_int_equal(attn_rope_apply(ctx, &r, x), ATTN_OK);
}

/* The fast path rotates inside its tiles; attn_rope_apply rotates in
 * memory with the same per-position rotation: the results must be the same
 * bits, forward and attn_sdpa_probs, for any thread count. */
static void test_equals_prerotated(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    int n = at_quick() ? 8 : 40;
    for (int k = 0; k < n; k++) {
        at_rng r = at_rng_for(0x50e5000 + (uint64_t)k);
        at_case c = at_case_random(&r, (uint64_t)k, lens, NLENS);
        c.dropout_p = 0.0f; /* probs below compare rows: keep it simple */
        c.no_lse = 0;
        c.rope = random_rope(&r, c.D, c.B);
        if (!c.rope.rot_dim || c.S == 0) continue;
        assert_int_equal(attn_ctx_set_threads(ctx, (int)at_rng_int(&r, 1, 3)), ATTN_OK);
        at_rng ri = at_rng_for(0x50e6000 + (uint64_t)k);
        at_sdpa x, y;
        assert_int_equal(at_sdpa_build(&x, &c, &ri), 0);
        ri = at_rng_for(0x50e6000 + (uint64_t)k);
        at_case c2 = c;
        memset(&c2.rope, 0, sizeof c2.rope);
        assert_int_equal(at_sdpa_build(&y, &c2, &ri), 0);
        pre_rotate(ctx, &c.rope, y.q.t, 1);
        if (!c.rope.k_rotated) pre_rotate(ctx, &c.rope, y.k.t, 0);
        assert_int_equal(attn_sdpa_forward(ctx, &x.a), ATTN_OK);
        assert_int_equal(attn_sdpa_forward(ctx, &y.a), ATTN_OK);
        assert_true(at_bitwise_equal("out", "rope vs pre-rotated", &x.a.out, &y.a.out));
        assert_true(at_bitwise_equal("lse", "rope vs pre-rotated", &x.a.lse, &y.a.lse));
        int64_t b = at_rng_int(&r, 0, c.B - 1), h = at_rng_int(&r, 0, c.H - 1);
        at_buf p1, p2;
        assert_int_equal(at_buf_f32(&p1, 1, 1, c.T, c.S), 0);
        assert_int_equal(at_buf_f32(&p2, 1, 1, c.T, c.S), 0);
        attn_tensor t1 = attn_tensor_make(p1.mem, ATTN_F32, 2, (int64_t[]){c.T, c.S});
        attn_tensor t2 = attn_tensor_make(p2.mem, ATTN_F32, 2, (int64_t[]){c.T, c.S});
        assert_int_equal(attn_sdpa_probs(ctx, &x.a, b, h, 0, t1), ATTN_OK);
        assert_int_equal(attn_sdpa_probs(ctx, &y.a, b, h, 0, t2), ATTN_OK);
        assert_true(at_bitwise_equal("probs", "rope vs pre-rotated", &p1.t, &p2.t));
        at_buf_free(&p1), at_buf_free(&p2);
        at_sdpa_free(&x), at_sdpa_free(&y);
    }
    attn_ctx_free(ctx);
}

/* Decoding with a KV cache: keys rotated once when written (at their
 * positions 0..S-1), the new queries at positions past = S - T, bottom-right
 * causal: the same as attention over the whole sequence with rope on both,
 * rows past.. of it (within the tolerance: different tiles). */
static void test_kv_cache_convention(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    const int64_t H = 8, Hkv = 2, S = 77, D = 64, T = 3, past = S - T;
    at_rng r = at_rng_for(0x50e7000);
    at_buf qf, k, v, kc, of, oc;
    assert_int_equal(at_buf_f32(&qf, 1, H, S, D), 0);
    assert_int_equal(at_buf_f32(&k, 1, Hkv, S, D), 0);
    assert_int_equal(at_buf_f32(&v, 1, Hkv, S, D), 0);
    assert_int_equal(at_buf_f32(&of, 1, H, S, D), 0);
    assert_int_equal(at_buf_f32(&oc, 1, H, T, D), 0);
    at_fill_uniform(&qf.t, &r, -1, 1), at_fill_uniform(&k.t, &r, -1, 1);
    at_fill_uniform(&v.t, &r, -1, 1);
    assert_int_equal(at_buf_copy_of(&kc, &k.t), 0);
    attn_rope ro = {.rot_dim = 48, .theta = 10000.0, .style = ATTN_ROPE_HALF};
    assert_int_equal(attn_rope_apply(ctx, &ro, kc.t), ATTN_OK); /* the cache's keys */
    attn_sdpa_args full = {.q = qf.t, .k = k.t, .v = v.t, .out = of.t, .causal = 1, .rope = ro};
    assert_int_equal(attn_sdpa_forward(ctx, &full), ATTN_OK);
    attn_tensor qn = qf.t; /* the last T queries */
    qn.data = at_f32(&qf.t, 0, 0, past, 0);
    qn.shape[2] = T;
    attn_rope rc = ro;
    rc.q_pos = past;
    rc.k_rotated = 1;
    attn_sdpa_args dec = {.q = qn, .k = kc.t, .v = v.t, .out = oc.t, .causal = 1,
                          .align = ATTN_ALIGN_BOTTOM_RIGHT, .rope = rc};
    assert_int_equal(attn_sdpa_forward(ctx, &dec), ATTN_OK);
    double mx = 0;
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < T; i++)
            for (int64_t d = 0; d < D; d++)
                mx = fmax(mx, fabs(*at_f32(&oc.t, 0, h, i, d) - *at_f32(&of.t, 0, h, past + i, d)));
    assert_true(mx < 1e-5);
    /* and against the oracle, with the tolerance rule */
    assert_true(at_sdpa_check_forward(ctx, &dec, NULL, NULL, "kv cache rope", 0x50e7000));
    at_buf_free(&qf), at_buf_free(&k), at_buf_free(&v), at_buf_free(&kc);
    at_buf_free(&of), at_buf_free(&oc);
    attn_ctx_free(ctx);
}

/* Hugging Face's tables (transformers' ROPE_INIT_FUNCTIONS, float32), made by
 *   LlamaConfig(hidden_size=256, num_attention_heads=4, rope_theta=500000,
 *     rope_scaling={rope_type: llama3, factor: 8, low_freq_factor: 1,
 *     high_freq_factor: 4, original_max_position_embeddings: 256})
 * and rope_theta=10000, rope_scaling={rope_type: linear, factor: 4}:
 * rot_dim 64. HF raises theta to float32 powers, this library to float64
 * ones: a few ulp apart. */
static const float hf_llama3[32] = {
    1, 0.663601279, 0.440366626, 0.292227834, 0.193922758, 0.128687382, 0.072430037,
    0.0287185013, 0.0105382307, 0.0032415248, 0.00207005511, 0.00137369114, 0.000911583134,
    0.000604927656, 0.000401430763, 0.00026638995, 0.000176776681, 0.000117309231,
    7.78465546e-05, 5.16590699e-05, 3.42810235e-05, 2.2748929e-05, 1.50962178e-05,
    1.00178686e-05, 6.64786967e-06, 4.41153452e-06, 2.92749974e-06, 1.94269251e-06,
    1.28917316e-06, 8.55496921e-07, 5.6770881e-07, 3.7673226e-07};
static const float hf_linear[32] = {
    0.25, 0.18747355, 0.140585333, 0.105424128, 0.079056941, 0.0592843406, 0.0444569848,
    0.0333380364, 0.0250000004, 0.0187473539, 0.0140585322, 0.0105424123, 0.00790569466,
    0.00592843397, 0.00444569858, 0.00333380373, 0.00249999994, 0.00187473558, 0.00140585331,
    0.00105424121, 0.000790569466, 0.000592843455, 0.000444569858, 0.000333380362,
    0.000250000012, 0.000187473546, 0.000140585325, 0.000105424122, 7.90569466e-05,
    5.92843462e-05, 4.44569851e-05, 3.33380376e-05};

static void test_inv_freq_tables(void **state) {
    (void)state;
    float f[32];
    attn_rope_scaling l3 = {ATTN_ROPE_SCALING_LLAMA3, 8.0, 1.0, 4.0, 256.0};
    assert_int_equal(attn_rope_inv_freq(NULL, 64, 500000.0, &l3, f), ATTN_OK);
    for (int i = 0; i < 32; i++)
        assert_true(fabs(f[i] - hf_llama3[i]) <= 1e-6 * fabs(hf_llama3[i]));
    attn_rope_scaling li = {ATTN_ROPE_SCALING_LINEAR, 4.0, 0, 0, 0};
    assert_int_equal(attn_rope_inv_freq(NULL, 64, 10000.0, &li, f), ATTN_OK);
    for (int i = 0; i < 32; i++)
        assert_true(fabs(f[i] - hf_linear[i]) <= 1e-6 * fabs(hf_linear[i]));
    assert_int_equal(attn_rope_inv_freq(NULL, 64, 10000.0, NULL, f), ATTN_OK);
    for (int i = 0; i < 32; i++)
        assert_true(fabs(f[i] - 4.0 * hf_linear[i]) <= 1e-6 * fabs(f[i]));
}

static void expect_err(attn_ctx *ctx, const attn_sdpa_args *a, const char *needle) {
    attn_status st = attn_sdpa_forward(ctx, a);
    if (st != ATTN_E_ARG || !strstr(attn_ctx_last_error(ctx), needle)) {
        fprintf(stderr, "expected ATTN_E_ARG naming '%s', got %s: %s\n", needle,
                attn_status_str(st), attn_ctx_last_error(ctx));
        fail();
    }
    assert_int_equal(attn_sdpa_forward_ref(ctx, a), ATTN_E_ARG);
}

static void test_bad_arguments(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    at_rng r = at_rng_for(0x50e8000);
    at_sdpa x;
    assert_int_equal(at_sdpa_alloc(&x, 1, 2, 2, 5, 6, 8, 8, AT_BHTD, &r), 0);
    attn_sdpa_args a = x.a;
    a.rope = (attn_rope){.rot_dim = 3, .theta = 10000};
    expect_err(ctx, &a, "rope.rot_dim");
    a.rope.rot_dim = -2;
    expect_err(ctx, &a, "rope.rot_dim");
    a.rope.rot_dim = 10; /* > D = 8 */
    expect_err(ctx, &a, "rope.rot_dim");
    a.rope.rot_dim = 8;
    a.rope.theta = 0;
    expect_err(ctx, &a, "rope.theta");
    a.rope.theta = NAN;
    expect_err(ctx, &a, "rope.theta");
    a.rope.theta = -5;
    expect_err(ctx, &a, "rope.theta");
    a.rope.theta = 10000;
    a.rope.style = (attn_rope_style)7;
    expect_err(ctx, &a, "rope.style");
    a.rope.style = ATTN_ROPE_HALF;
    float bad[4] = {1, 0.5f, NAN, 0.1f};
    a.rope.inv_freq = bad;
    expect_err(ctx, &a, "rope.inv_freq[2]");
    a.rope.inv_freq = NULL;
    a.rope.q_pos = (int64_t)1 << 41;
    expect_err(ctx, &a, "rope.q_pos");
    a.rope.q_pos = 0;
    assert_int_equal(attn_sdpa_forward(ctx, &a), ATTN_OK); /* and fixed, it runs */
    /* attn_rope_apply and attn_rope_inv_freq */
    attn_rope ro = {.rot_dim = 5, .theta = 100};
    assert_int_equal(attn_rope_apply(ctx, &ro, x.k.t), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "rope.rot_dim"));
    ro.rot_dim = 0;
    assert_int_equal(attn_rope_apply(ctx, &ro, x.k.t), ATTN_E_ARG);
    ro.rot_dim = 4;
    assert_int_equal(attn_rope_apply(ctx, NULL, x.k.t), ATTN_E_ARG);
    attn_tensor t3 = x.k.t;
    t3.ndim = 3;
    assert_int_equal(attn_rope_apply(ctx, &ro, t3), ATTN_E_SHAPE);
    float f[8];
    assert_int_equal(attn_rope_inv_freq(ctx, 7, 100, NULL, f), ATTN_E_ARG);
    assert_int_equal(attn_rope_inv_freq(ctx, 8, -1, NULL, f), ATTN_E_ARG);
    assert_int_equal(attn_rope_inv_freq(ctx, 8, 100, NULL, NULL), ATTN_E_ARG);
    attn_rope_scaling sc = {ATTN_ROPE_SCALING_LLAMA3, 8, 4, 1, 256}; /* low > high */
    assert_int_equal(attn_rope_inv_freq(ctx, 8, 100, &sc, f), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "high_freq_factor"));
    sc = (attn_rope_scaling){ATTN_ROPE_SCALING_LINEAR, 0, 0, 0, 0};
    assert_int_equal(attn_rope_inv_freq(ctx, 8, 100, &sc, f), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "factor"));
    at_sdpa_free(&x);
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_random),     cmocka_unit_test(test_backward_random),
        cmocka_unit_test(test_equals_prerotated),  cmocka_unit_test(test_kv_cache_convention),
        cmocka_unit_test(test_inv_freq_tables),    cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
