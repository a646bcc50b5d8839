/* Attention backward against the float64 oracle (DESIGN.md tolerance rule:
 * 2x the error of a plain fp32 backward + 1e-6), the oracle itself against
 * central finite differences of its float64 forward, exact zeros where the
 * semantics demand them, determinism, and argument errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the headers it needs */

#include "at_sdpa_bwd.h"
#include "ops/sdpa_bwd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double work(const at_case *c) {
    return (double)c->B * c->H * c->T * c->S * (c->D + (c->Dv ? c->Dv : c->D));
}

static int run(const at_case *c, int dmask, uint64_t id, const char *label) {
    if (at_quick() && work(c) > 1e6) return 1; /* skipped only in the sanitizer run */
    return at_sdpa_run_backward(at_ctx, c, dmask, id, label);
}

static const int64_t lens[] = {1, 7, 63, 65, 257};
static const int64_t dims[] = {1, 8, 59, 64, 80};

/* Every T against every S (T < S and T > S), with and without causal, fused
 * and split. */
static void test_lengths(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 1000;
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++) {
            /* Hkv = 1 on 2 threads takes the split path (key chunks, dQ strips) */
            at_case c = {.B = 1,
                         .H = 2,
                         .Hkv = b & 1 ? 1 : 2,
                         .T = lens[a],
                         .S = lens[b],
                         .D = 24,
                         .Dv = 16,
                         .causal = (a + b) & 1,
                         .align = (attn_align)(a & 1)};
            fails += !run(&c, 0, id++, "lengths");
        }
    assert_int_equal(fails, 0);
}

/* Every D, with Dv == D and Dv != D (both ways). */
static void test_head_dims(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 2000;
    for (int a = 0; a < 5; a++)
        for (int k = 0; k < 3; k++) {
            int64_t Dv = k == 0 ? dims[a] : dims[(a + 2 * k) % 5];
            at_case c = {.B = 2,
                         .H = 2,
                         .T = lens[(a + k) % 5] % 100 + 9,
                         .S = 65,
                         .D = dims[a],
                         .Dv = Dv,
                         .causal = k == 2};
            fails += !run(&c, 0, id++, "head dims");
        }
    at_case big = {.B = 1, .H = 1, .T = 70, .S = 90, .D = 128, .Dv = 256};
    fails += !run(&big, 0, id++, "head dims");
    assert_int_equal(fails, 0);
}

/* Causal, windows and kv_len in both alignments, T < S and T > S. */
static void test_structural_masks(void **state) {
    (void)state;
    static const int64_t win[][2] = {{-1, 0}, {0, -1}, {5, 3}, {0, 0}, {40, -1}, {70, 70}};
    int fails = 0;
    uint64_t id = 3000;
    for (int al = 0; al < 2; al++)
        for (int ts = 0; ts < 2; ts++) {
            int64_t T = ts ? 100 : 57, S = ts ? 57 : 100;
            at_case c = {
                .B = 3, .H = 2, .T = T, .S = S, .D = 32, .Dv = 20, .align = (attn_align)al};
            c.causal = 1;
            fails += !run(&c, 0, id++, "causal");
            c.causal = 0;
            for (int w = 0; w < 6; w++) {
                c.window = 1, c.wl = win[w][0], c.wr = win[w][1];
                c.causal = w == 2;
                fails += !run(&c, 0, id++, "window");
            }
            c.window = 0, c.causal = 0, c.kv_len = 1;
            fails += !run(&c, 0, id++, "kv_len");
            c.causal = 1;
            fails += !run(&c, 0, id++, "kv_len causal");
        }
    assert_int_equal(fails, 0);
}

/* Float masks (with -inf entries) and boolean masks in every broadcast
 * shape; dmask summed over the broadcast dims. */
static void test_masks_and_dmask(void **state) {
    (void)state;
    static const int bc[] = {AT_MASK_TS, AT_MASK_1HTS, AT_MASK_B1TS, AT_MASK_BHTS};
    int fails = 0;
    uint64_t id = 4000;
    for (int k = 0; k < 4; k++)
        for (int hkv = 1; hkv <= 3; hkv += 2) {
            at_case c = {.B = 2,
                         .H = 3,
                         .Hkv = hkv,
                         .T = 37,
                         .S = 70,
                         .D = 16,
                         .Dv = 24,
                         .mask_dtype = ATTN_F32,
                         .mask_bcast = bc[k],
                         .mask_ninf = 0.1f};
            fails += !run(&c, 1, id++, "float mask");
            c.causal = 1, c.align = ATTN_ALIGN_BOTTOM_RIGHT, c.layout = AT_BTHD_PAD;
            fails += !run(&c, 1, id++, "float mask");
            at_case bm = {.B = 2,
                          .H = 3,
                          .Hkv = hkv,
                          .T = 37,
                          .S = 70,
                          .D = 16,
                          .mask_dtype = ATTN_BOOL,
                          .mask_bcast = bc[k],
                          .mask_keep = 0.3f};
            fails += !run(&bm, 0, id++, "bool mask");
            bm.mask_dtype = ATTN_U8, bm.window = 1, bm.wl = 9, bm.wr = 9;
            fails += !run(&bm, 0, id++, "u8 mask");
        }
    assert_int_equal(fails, 0);
}

/* Softcap, ALiBi, explicit scale, large logits, and all together. */
static void test_score_mods(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 5000;
    at_case c = {.B = 2, .H = 4, .Hkv = 2, .T = 65, .S = 63, .D = 40, .Dv = 24};
    at_case v = c;
    v.softcap = 5.0f, v.logit_mul = 4.0f;
    fails += !run(&v, 0, id++, "softcap");
    v = c, v.alibi = 1, v.causal = 1;
    fails += !run(&v, 0, id++, "alibi");
    v = c, v.scale = 0.37f;
    fails += !run(&v, 0, id++, "scale");
    v = c, v.logit_mul = 100.0f;
    fails += !run(&v, 0, id++, "logits x100");
    v = c, v.softcap = 2.0f, v.alibi = 1, v.mask_dtype = ATTN_F32, v.mask_bcast = AT_MASK_B1TS;
    v.window = 1, v.wl = 20, v.wr = 4, v.kv_len = 1, v.align = ATTN_ALIGN_BOTTOM_RIGHT;
    fails += !run(&v, 1, id++, "everything");
    v.dropout_p = 0.3f, v.dropout_seed = 77;
    fails += !run(&v, 1, id++, "everything + dropout");
    assert_int_equal(fails, 0);
}

/* GQA and MQA, strided and permuted views. */
static void test_gqa_layouts(void **state) {
    (void)state;
    static const int64_t hkv[] = {8, 4, 2, 1};
    int fails = 0;
    uint64_t id = 6000;
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 4; l++) {
            at_case c = {.B = 2,
                         .H = 8,
                         .Hkv = hkv[g],
                         .T = 33,
                         .S = 41,
                         .D = 24,
                         .Dv = 16,
                         .layout = (at_layout)l,
                         .causal = l & 1};
            fails += !run(&c, 0, id++, "gqa/layout");
        }
    assert_int_equal(fails, 0);
}

/* Rows without a visible key get exactly zero dq; keys beyond kv_len get
 * exactly zero dk and dv; kv_len 0 gives all-zero gradients. */
static void test_exact_zeros(void **state) {
    (void)state;
    at_rng r = at_rng_for(7000);
    /* T > S bottom-right causal: the first T - S rows see nothing; batch 1
     * has kv_len 0, batch 2 a random kv_len */
    at_case c = {.B = 3,
                 .H = 2,
                 .Hkv = 1,
                 .T = 50,
                 .S = 30,
                 .D = 16,
                 .Dv = 8,
                 .causal = 1,
                 .align = ATTN_ALIGN_BOTTOM_RIGHT,
                 .kv_len = 1,
                 .mask_dtype = ATTN_BOOL,
                 .mask_bcast = AT_MASK_BHTS,
                 .mask_keep = 0.8f};
    at_sdpa x;
    at_grads gr;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    assert_int_equal(at_grads_alloc(&gr, &x.a, AT_BHTD, 0, &r), 0);
    /* make row 40 of (b0,h1) fully masked by the boolean mask */
    for (int64_t j = 0; j < c.S; j++)
        *(uint8_t *)at_ptr(&x.mask.t, (int64_t[]){0, 1, 40, j}) = 0;
    assert_int_equal(at_sdpa_check_backward(at_ctx, &x.a, &gr, "exact zeros", r.seed), 1);
    int bad = 0;
    for (int64_t b = 0; b < c.B; b++)
        for (int64_t h = 0; h < c.H; h++)
            for (int64_t i = 0; i < c.T; i++) {
                int dead = i < c.T - c.S || x.kv_len[b] == 0 || (b == 0 && h == 1 && i == 40);
                if (x.kv_len[b] > 0 && i + c.S - c.T >= 0) {
                    int any = 0;
                    for (int64_t j = 0; j <= i + c.S - c.T && j < x.kv_len[b]; j++)
                        any |= *(uint8_t *)at_ptr(&x.mask.t, (int64_t[]){b, h, i, j});
                    dead |= !any;
                }
                for (int64_t d = 0; dead && d < c.D; d++)
                    if (*at_f32(&gr.g.dq, b, h, i, d) != 0.0f) bad++;
            }
    for (int64_t b = 0; b < c.B; b++)
        for (int64_t j = x.kv_len[b]; j < c.S; j++) {
            for (int64_t d = 0; d < c.D; d++)
                bad += *at_f32(&gr.g.dk, b, 0, j, d) != 0.0f;
            for (int64_t d = 0; d < c.Dv; d++)
                bad += *at_f32(&gr.g.dv, b, 0, j, d) != 0.0f;
        }
    if (bad)
        fprintf(stderr, "%d gradient entries should be exactly 0 (seed %llu)\n", bad,
                (unsigned long long)r.seed);
    assert_int_equal(bad, 0);
    at_grads_free(&gr);
    at_sdpa_free(&x);

    /* S = 0 and T = 0 */
    at_case e = {.B = 1, .H = 2, .T = 5, .S = 0, .D = 8};
    assert_int_equal(run(&e, 0, 7001, "S=0"), 1);
    e.T = 0, e.S = 5;
    assert_int_equal(run(&e, 0, 7002, "T=0"), 1);
}

/* NaN policy (as the forward's): a NaN in q_i makes dq_i and the dk, dv of
 * every key row i sees NaN; the other rows' dq stay finite. Checked against
 * the oracle, which must agree on where the non-finite values are. */
static void test_nan_row(void **state) {
    (void)state;
    at_rng r = at_rng_for(7500);
    at_case c = {.B = 1, .H = 2, .Hkv = 1, .T = 20, .S = 130, .D = 16, .Dv = 8};
    at_sdpa x;
    at_grads gr;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    assert_int_equal(at_grads_alloc(&gr, &x.a, AT_BHTD, 0, &r), 0);
    *at_f32(&x.a.q, 0, 1, 3, 5) = NAN;
    assert_int_equal(at_sdpa_check_backward(at_ctx, &x.a, &gr, "NaN in q", r.seed), 1);
    assert_true(isnan(*at_f32(&gr.g.dq, 0, 1, 3, 0)));
    assert_true(isfinite(*at_f32(&gr.g.dq, 0, 1, 4, 0)));
    assert_true(isnan(*at_f32(&gr.g.dk, 0, 0, 129, 0)));
    at_grads_free(&gr);
    at_sdpa_free(&x);
}

/* Central finite differences of the oracle's float64 forward loss
 * L = sum(dout * out) against the oracle backward, for q, k, v and the
 * float mask. Steps of ~1e-3 on O(1) inputs: the truncation error is
 * O(h^2 * |L'''|) ~ 1e-6 * (derivative scale), so 1e-4 * (1 + |g|) is a
 * tolerance no wrong formula (errors of the size of g) can meet. */
static int fd_case(const at_case *c, uint64_t id, const char *label) {
    at_rng r = at_rng_for(id);
    at_sdpa x;
    at_grads gr;
    if (at_sdpa_build(&x, c, &r)) return 0;
    if (at_grads_alloc(&gr, &x.a, c->layout, 1, &r)) {
        at_sdpa_free(&x);
        return 0;
    }
    int ok = 1;
    attn__sdpa_plan p;
    if (attn_sdpa_forward_ref(at_ctx, &x.a) || attn__sdpa_plan_make(at_ctx, &x.a, ATTN__PLAN_NEED_LSE, &p) ||
        attn_sdpa_backward_ref(at_ctx, &x.a, &gr.g)) {
        fprintf(stderr, "oracle failed: %s\n", attn_ctx_last_error(at_ctx));
        ok = 0;
        goto done;
    }
    const double L0 = attn__sdpa_ref_loss(&p, gr.g.dout.data, gr.g.dout.stride);
    /* the loss is the oracle forward's: compare with its fp32 output */
    double Lf = 0.0, Ls = 0.0;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < c->H; h++)
            for (int64_t i = 0; i < c->T; i++)
                for (int64_t e = 0; e < x.a.v.shape[3]; e++) {
                    double t = (double)*at_f32(&x.a.out, b, h, i, e) *
                               (double)*at_f32(&gr.g.dout, b, h, i, e);
                    Lf += t, Ls += fabs(t);
                }
    if (!(fabs(L0 - Lf) <= 1e-6 * (Ls + 1.0))) {
        fprintf(stderr, "%s: float64 loss %.12g != sum(dout*out) of the oracle forward %.12g\n",
                label, L0, Lf);
        ok = 0;
    }
    struct {
        const char *name;
        const attn_tensor *x, *g;
    } ts[4] = {{"q", &x.a.q, &gr.g.dq},
               {"k", &x.a.k, &gr.g.dk},
               {"v", &x.a.v, &gr.g.dv},
               {"mask", &x.a.mask, &gr.g.dmask}};
    for (int t = 0; t < 4 && ok; t++) {
        if (!ts[t].g->data) continue;
        const attn_tensor *X = ts[t].x, *G = ts[t].g;
        int64_t n = attn_tensor_numel(X), idx[4];
        for (int64_t e = 0; e < n && ok; e++) {
            for (int d = X->ndim - 1, m = (int)e; d >= 0; d--) {
                idx[d] = m % X->shape[d];
                m /= (int)X->shape[d];
            }
            float *xp = at_ptr(X, idx), x0 = *xp;
            if (!isfinite(x0)) continue; /* -inf mask entries have no gradient */
            const float h = 0x1p-10f;
            float xp1 = x0 + h, xm1 = x0 - h;
            *xp = xp1;
            double Lp = attn__sdpa_ref_loss(&p, gr.g.dout.data, gr.g.dout.stride);
            *xp = xm1;
            double Lm = attn__sdpa_ref_loss(&p, gr.g.dout.data, gr.g.dout.stride);
            *xp = x0;
            double fd = (Lp - Lm) / ((double)xp1 - (double)xm1);
            double g = *(float *)at_ptr(G, idx);
            if (!(fabs(fd - g) <= 1e-4 * (1.0 + fabs(g)))) {
                fprintf(stderr,
                        "FINITE DIFFERENCE %s: d%s at element %lld: oracle %.9g, central "
                        "difference %.9g (seed %llu)\n",
                        label, ts[t].name, (long long)e, g, fd, (unsigned long long)r.seed);
                ok = 0;
            }
        }
    }
done:
    at_grads_free(&gr);
    at_sdpa_free(&x);
    return ok;
}

static void test_oracle_finite_difference(void **state) {
    (void)state;
    int fails = 0;
    uint64_t id = 8000;
    at_case c = {.B = 2,
                 .H = 2,
                 .Hkv = 1,
                 .T = 3,
                 .S = 5,
                 .D = 3,
                 .Dv = 2,
                 .mask_dtype = ATTN_F32,
                 .mask_bcast = AT_MASK_1HTS};
    fails += !fd_case(&c, id++, "plain + float mask over H");
    at_case v = c;
    v.causal = 1, v.align = ATTN_ALIGN_BOTTOM_RIGHT, v.softcap = 1.5f, v.logit_mul = 3.0f;
    fails += !fd_case(&v, id++, "causal softcap");
    v = c, v.alibi = 1, v.kv_len = 1, v.B = 3, v.mask_bcast = AT_MASK_TS, v.scale = 0.8f;
    fails += !fd_case(&v, id++, "alibi kv_len, [T,S] mask");
    v = c, v.dropout_p = 0.4f, v.dropout_seed = 5, v.window = 1, v.wl = 1, v.wr = 1;
    v.H = 4, v.Hkv = 2, v.mask_bcast = AT_MASK_B1TS, v.layout = AT_BTHD_PAD;
    fails += !fd_case(&v, id++, "dropout window gqa strided");
    assert_int_equal(fails, 0);
}

/* Bitwise-equal gradients run to run and across thread counts 1 and 2 (the
 * backward's tasks own disjoint outputs and always run the same arithmetic,
 * so the thread count cannot matter). */
static void test_determinism(void **state) {
    (void)state;
    static const at_case cases[] = {
        {.B = 2, .H = 4, .Hkv = 2, .T = 130, .S = 100, .D = 40, .Dv = 24, .causal = 1},
        {.B = 2,
         .H = 3,
         .T = 70,
         .S = 90,
         .D = 16,
         .mask_dtype = ATTN_F32,
         .mask_bcast = AT_MASK_1HTS,
         .dropout_p = 0.2f,
         .dropout_seed = 3},
        {.B = 3,
         .H = 2,
         .Hkv = 1,
         .T = 64,
         .S = 64,
         .D = 64,
         .mask_dtype = ATTN_F32,
         .mask_bcast = AT_MASK_TS,
         .softcap = 3.0f,
         .kv_len = 1},
        /* one (batch, kv head): split into key chunks and dQ strips on 2
         * threads, fused on 1 */
        {.B = 1,
         .H = 4,
         .Hkv = 1,
         .T = 230,
         .S = 1000,
         .D = 40,
         .Dv = 24,
         .causal = 1,
         .align = ATTN_ALIGN_BOTTOM_RIGHT,
         .window = 1,
         .wl = 600,
         .wr = -1,
         .dropout_p = 0.1f,
         .dropout_seed = 4,
         .mask_dtype = ATTN_F32,
         .mask_bcast = AT_MASK_BHTS,
         .alibi = 1},
        {.B = 1, .H = 1, .T = 300, .S = 777, .D = 59, .Dv = 8, .softcap = 2.0f, .kv_len = 1},
    };
    for (int k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
        at_rng r = at_rng_for(9000 + (uint64_t)k);
        at_sdpa x;
        at_grads g[3];
        assert_int_equal(at_sdpa_build(&x, &cases[k], &r), 0);
        for (int t = 0; t < 3; t++) {
            at_rng rr = r; /* the same dout each time */
            assert_int_equal(at_grads_alloc(&g[t], &x.a, AT_BHTD, 1, &rr), 0);
        }
        assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_OK);
        for (int t = 0; t < 3; t++) {
            assert_int_equal(attn_ctx_set_threads(at_ctx, t == 2 ? 1 : 2), ATTN_OK);
            assert_int_equal(attn_sdpa_backward(at_ctx, &x.a, &g[t].g), ATTN_OK);
        }
        assert_int_equal(attn_ctx_set_threads(at_ctx, 2), ATTN_OK);
        const char *lab[2] = {"run to run", "1 vs 2 threads"};
        for (int t = 1; t < 3; t++) {
            assert_true(at_bitwise_equal("dq", lab[t - 1], &g[0].g.dq, &g[t].g.dq));
            assert_true(at_bitwise_equal("dk", lab[t - 1], &g[0].g.dk, &g[t].g.dk));
            assert_true(at_bitwise_equal("dv", lab[t - 1], &g[0].g.dv, &g[t].g.dv));
            if (g[0].g.dmask.data)
                assert_true(at_bitwise_equal("dmask", lab[t - 1], &g[0].g.dmask, &g[t].g.dmask));
        }
        for (int t = 0; t < 3; t++)
            at_grads_free(&g[t]);
        at_sdpa_free(&x);
    }
}

/* Bad arguments: a clear error naming the culprit, the same from the fast
 * path and the oracle, and no output written. */
static void expect_error(at_grads *gr, const attn_sdpa_args *a, const attn_sdpa_grads *g,
                         attn_status want, const char *word) {
    at_buf *outs[4] = {&gr->dq, &gr->dk, &gr->dv, &gr->dmask};
    for (int k = 0; k < 4; k++)
        at_buf_fill_sentinel(outs[k]);
    for (int ref = 0; ref < 2; ref++) {
        attn_status st =
            ref ? attn_sdpa_backward_ref(at_ctx, a, g) : attn_sdpa_backward(at_ctx, a, g);
        const char *msg = attn_ctx_last_error(at_ctx);
        if (st != want || !strstr(msg, word))
            fprintf(stderr, "expected %s naming '%s', got %s: '%s'\n", attn_status_str(want), word,
                    attn_status_str(st), msg);
        assert_int_equal(st, want);
        assert_non_null(strstr(msg, word));
        for (int k = 0; k < 4; k++)
            assert_true(at_buf_untouched(outs[k]));
    }
}

static void test_bad_input(void **state) {
    (void)state;
    at_rng r = at_rng_for(10000);
    at_case c = {.B = 2,
                 .H = 4,
                 .Hkv = 2,
                 .T = 9,
                 .S = 11,
                 .D = 8,
                 .Dv = 6,
                 .mask_dtype = ATTN_F32,
                 .mask_bcast = AT_MASK_1HTS};
    at_sdpa x;
    at_grads gr;
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    assert_int_equal(at_grads_alloc(&gr, &x.a, AT_BHTD, 1, &r), 0);
    assert_int_equal(attn_sdpa_forward(at_ctx, &x.a), ATTN_OK);
    attn_sdpa_args a = x.a;
    attn_sdpa_grads g = gr.g;
    float spare[4096];

    a.lse = (attn_tensor){0};
    expect_error(&gr, &a, &g, ATTN_E_ARG, "lse");
    a = x.a;
    expect_error(&gr, &a, NULL, ATTN_E_ARG, "grads");
    g.dout = attn_tensor_f32_4d(spare, 2, 4, 9, 7);
    expect_error(&gr, &a, &g, ATTN_E_SHAPE, "dout");
    g = gr.g, g.dout.data = NULL;
    expect_error(&gr, &a, &g, ATTN_E_ARG, "dout");
    g = gr.g, g.dq = attn_tensor_f32_4d(spare, 2, 4, 9, 6);
    expect_error(&gr, &a, &g, ATTN_E_SHAPE, "dq");
    g = gr.g, g.dk = attn_tensor_f32_4d(spare, 2, 4, 11, 8); /* H heads instead of Hkv */
    expect_error(&gr, &a, &g, ATTN_E_SHAPE, "dk");
    g = gr.g, g.dv = attn_tensor_f32_4d(spare, 2, 2, 11, 8);
    expect_error(&gr, &a, &g, ATTN_E_SHAPE, "dv");
    g = gr.g, g.dq.dtype = ATTN_F64;
    expect_error(&gr, &a, &g, ATTN_E_DTYPE, "dq");
    g = gr.g, g.dv.stride[3] = 2;
    expect_error(&gr, &a, &g, ATTN_E_LAYOUT, "dv");
    g = gr.g, g.dk.stride[1] = 0;
    expect_error(&gr, &a, &g, ATTN_E_LAYOUT, "dk");
    g = gr.g, g.dmask = attn_tensor_f32_4d(spare, 2, 4, 9, 11); /* mask is [1,4,9,11] */
    expect_error(&gr, &a, &g, ATTN_E_SHAPE, "dmask");
    g = gr.g, a.mask = (attn_tensor){0};
    expect_error(&gr, &a, &g, ATTN_E_ARG, "dmask");
    uint8_t keep[9 * 11];
    memset(keep, 1, sizeof keep);
    a.mask = attn_tensor_make(keep, ATTN_BOOL, 2, (int64_t[]){9, 11});
    g.dmask = attn_tensor_make(spare, ATTN_F32, 2, (int64_t[]){9, 11});
    expect_error(&gr, &a, &g, ATTN_E_ARG, "dmask");
    a = x.a, g = gr.g, a.dropout_p = 1.0f;
    expect_error(&gr, &a, &g, ATTN_E_ARG, "dropout");
    assert_int_equal(attn_sdpa_backward(NULL, &a, &g), ATTN_E_ARG);
    at_grads_free(&gr);
    at_sdpa_free(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_head_dims),
        cmocka_unit_test(test_structural_masks),
        cmocka_unit_test(test_masks_and_dmask),
        cmocka_unit_test(test_score_mods),
        cmocka_unit_test(test_gqa_layouts),
        cmocka_unit_test(test_exact_zeros),
        cmocka_unit_test(test_nan_row),
        cmocka_unit_test(test_oracle_finite_difference),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
