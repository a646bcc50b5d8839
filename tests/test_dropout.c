/* Dropout: the counter-based generator keyed by (seed, b, h, i, j) keeps
 * each probability with rate 1 - p, independently across coordinates and
 * seeds; the forward and backward with dropout match the float64 oracle; the
 * kept probabilities are scaled by 1/(1-p) (checked on the output's mean and
 * variance); and nothing depends on the thread count.
 * Statistical bounds are 6 standard deviations of the exact sampling
 * distribution under the null hypothesis: with fixed seeds they either pass
 * or fail deterministically, and a sound generator fails one with probability
 * about 2e-9 per check, while a biased or correlated one (a shift of a few
 * percent) is far outside them at these sample sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the headers it needs */

#include "at_sdpa_bwd.h"
#include "core/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int keep(uint64_t seed, uint32_t thr, int64_t b, int64_t h, int64_t i, int64_t j) {
    return attn__rng_u32(seed, (uint64_t)b, (uint64_t)h, (uint64_t)i, (uint64_t)j) >= thr;
}

/* |count - n*q| <= 6 sigma of Binomial(n, q); prints on failure. */
static int binom_ok(const char *what, double count, double n, double q) {
    double sd = sqrt(n * q * (1.0 - q));
    int ok = fabs(count - n * q) <= 6.0 * sd;
    if (!ok || at_verbose())
        fprintf(stderr, "%s %s: %.0f of %.0f, expected %.1f +- %.1f (6 sd)\n", ok ? "ok" : "FAIL",
                what, count, n, n * q, 6.0 * sd);
    return ok;
}

static int64_t grid(void) {
    return at_quick() ? 128 : 512;
}

/* Keep rate 1 - p over a (b, h, i, j) grid, several p and seeds; the
 * threshold maps p to exactly floor(p * 2^32). */
static void test_keep_rate(void **state) {
    (void)state;
    static const float ps[] = {0.05f, 0.1f, 0.5f, 0.9f};
    static const uint64_t seeds[] = {0, 1, 0xdeadbeefcafef00dull};
    const int64_t n = grid();
    int fails = 0;
    for (int a = 0; a < 4; a++) {
        uint32_t thr = attn__dropout_threshold(ps[a]);
        assert_true(fabs((double)thr - floor((double)ps[a] * 4294967296.0)) < 1.0);
        double q = 1.0 - (double)thr / 4294967296.0; /* exact keep probability */
        for (int s = 0; s < 3; s++) {
            double kept = 0.0;
            for (int64_t b = 0; b < 2; b++)
                for (int64_t h = 0; h < 2; h++)
                    for (int64_t i = 0; i < n; i++)
                        for (int64_t j = 0; j < n; j++)
                            kept += keep(seeds[s], thr, b, h, i, j);
            char what[64];
            snprintf(what, sizeof what, "keep rate p=%g seed=%d", (double)ps[a], s);
            fails += !binom_ok(what, kept, 4.0 * (double)(n * n), q);
        }
    }
    assert_int_equal(attn__dropout_threshold(0.0f), 0u);
    assert_int_equal(fails, 0);
}

/* Pairs of neighbouring coordinates (along j, i, h, b, the seed, and the
 * diagonals a linear mix could confuse) are kept together with rate
 * (1-p)^2, and the raw 32-bit draws are uncorrelated. */
static void test_independence(void **state) {
    (void)state;
    static const int64_t step[][5] = {
        /* db, dh, di, dj, dseed */
        {0, 0, 0, 1, 0},  {0, 0, 1, 0, 0},  {0, 1, 0, 0, 0},  {1, 0, 0, 0, 0}, {0, 0, 0, 0, 1},
        {0, 0, 1, -1, 0}, {0, 1, -1, 0, 0}, {1, -1, 0, 0, 0}, {0, 1, 0, 1, 0}, {0, 0, 2, 2, 0},
    };
    const uint32_t thr = attn__dropout_threshold(0.5f);
    const int64_t n = grid();
    int fails = 0;
    for (int k = 0; k < 10; k++) {
        const int64_t *d = step[k];
        double both = 0.0, cnt = 0.0, sx = 0.0, sy = 0.0, sxy = 0.0, sxx = 0.0, syy = 0.0;
        for (int64_t b = 1; b < 3; b++)
            for (int64_t h = 1; h < 3; h++)
                for (int64_t i = 2; i < n; i++)
                    for (int64_t j = 2; j < n; j++) {
                        uint64_t seed = 12345;
                        uint32_t u = attn__rng_u32(seed, b, h, i, j);
                        uint32_t w =
                            attn__rng_u32(seed + d[4], b + d[0], h + d[1], i + d[2], j + d[3]);
                        both += (u >= thr) && (w >= thr);
                        double x = u * 0x1p-32, y = w * 0x1p-32;
                        sx += x, sy += y, sxy += x * y, sxx += x * x, syy += y * y;
                        cnt += 1.0;
                    }
        char what[96];
        snprintf(what, sizeof what, "joint keep, step (b%+lld h%+lld i%+lld j%+lld seed%+lld)",
                 (long long)d[0], (long long)d[1], (long long)d[2], (long long)d[3],
                 (long long)d[4]);
        fails += !binom_ok(what, both, cnt, (1.0 - thr * 0x1p-32) * (1.0 - thr * 0x1p-32));
        double cov = sxy / cnt - (sx / cnt) * (sy / cnt);
        double r = cov / sqrt((sxx / cnt - (sx / cnt) * (sx / cnt)) *
                              (syy / cnt - (sy / cnt) * (sy / cnt)));
        if (!(fabs(r) <= 6.0 / sqrt(cnt))) { /* sd of r is 1/sqrt(n) for independent draws */
            fprintf(stderr, "FAIL %s: correlation %.5f beyond %.5f\n", what, r, 6.0 / sqrt(cnt));
            fails++;
        }
    }
    assert_int_equal(fails, 0);
}

/* Every bit of the draw is balanced, and the top byte is uniform (chi-square
 * with 255 degrees of freedom: mean 255, sd sqrt(510)). */
static void test_uniformity(void **state) {
    (void)state;
    const int64_t n = grid();
    double bits[32] = {0}, bins[256] = {0}, cnt = 0.0;
    for (int64_t h = 0; h < 4; h++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                uint32_t u = attn__rng_u32(99, 0, h, i, j);
                for (int k = 0; k < 32; k++)
                    bits[k] += (u >> k) & 1u;
                bins[u >> 24] += 1.0;
                cnt += 1.0;
            }
    int fails = 0;
    for (int k = 0; k < 32; k++) {
        char what[32];
        snprintf(what, sizeof what, "bit %d", k);
        fails += !binom_ok(what, bits[k], cnt, 0.5);
    }
    double chi2 = 0.0, e = cnt / 256.0;
    for (int k = 0; k < 256; k++)
        chi2 += (bins[k] - e) * (bins[k] - e) / e;
    if (!(fabs(chi2 - 255.0) <= 6.0 * sqrt(510.0))) {
        fprintf(stderr, "FAIL top-byte chi-square %.1f (expected 255 +- %.1f)\n", chi2,
                6.0 * sqrt(510.0));
        fails++;
    }
    assert_int_equal(fails, 0);
}

/* Forward and backward with dropout against the oracle (which applies the
 * same factors from the same generator). */
static void test_against_oracle(void **state) {
    (void)state;
    static const float ps[] = {0.1f, 0.5f, 0.9f};
    int fails = 0;
    uint64_t id = 500;
    for (int a = 0; a < 3; a++)
        for (int k = 0; k < 3; k++) {
            at_case c = {.B = 2,
                         .H = 4,
                         .Hkv = k == 2 ? 1 : 2,
                         .T = 65,
                         .S = 63,
                         .D = 24,
                         .Dv = 16,
                         .dropout_p = ps[a],
                         .dropout_seed = 1000 + (uint64_t)k,
                         .causal = k == 1,
                         .layout = k == 2 ? AT_BTHD_PAD : AT_BHTD};
            if (k == 2) c.mask_dtype = ATTN_F32, c.mask_bcast = AT_MASK_B1TS;
            fails += !at_sdpa_run_forward(at_ctx, &c, id, "dropout forward");
            fails += !at_sdpa_run_backward(at_ctx, &c, 1, id, "dropout backward");
            id++;
        }
    assert_int_equal(fails, 0);
}

/* q = 0 makes P uniform (1/S) and v = 1 (Dv = 1) makes out_i = mean_j Z_ij:
 * over R rows the mean of out is 1 +- sqrt(p / ((1-p) S R)) and its variance
 * p / ((1-p) S) (to within a few percent at R = 2048). This pins the keep
 * rate and the 1/(1-p) scale on the forward path as users see it. */
static void test_scaling(void **state) {
    (void)state;
    const int64_t B = 1, H = 4, T = at_quick() ? 128 : 512, S = 512;
    float *q = calloc((size_t)(B * H * T * 8), sizeof *q), *k = malloc((size_t)(S * 8) * 4);
    float *v = malloc((size_t)S * 4), *o = malloc((size_t)(B * H * T) * 4);
    assert_non_null(q), assert_non_null(k), assert_non_null(v), assert_non_null(o);
    at_rng r = at_rng_for(600);
    for (int64_t e = 0; e < S * 8; e++)
        k[e] = at_rng_uniform(&r, -1.0f, 1.0f);
    for (int64_t e = 0; e < S; e++)
        v[e] = 1.0f;
    static const float ps[] = {0.2f, 0.5f, 0.8f};
    for (int a = 0; a < 3; a++) {
        attn_sdpa_args x;
        memset(&x, 0, sizeof x);
        x.q = attn_tensor_f32_4d(q, B, H, T, 8);
        x.k = attn_tensor_f32_4d(k, B, 1, S, 8);
        x.v = attn_tensor_f32_4d(v, B, 1, S, 1);
        x.out = attn_tensor_f32_4d(o, B, H, T, 1);
        x.dropout_p = ps[a];
        x.seed = 42;
        assert_int_equal(attn_sdpa_forward(at_ctx, &x), ATTN_OK);
        double R = (double)(B * H * T), m = 0.0, m2 = 0.0, p = ps[a];
        for (int64_t e = 0; e < B * H * T; e++)
            m += o[e], m2 += (double)o[e] * o[e];
        m /= R;
        double var = m2 / R - m * m, want = p / ((1.0 - p) * (double)S);
        double sd = sqrt(want / R);
        if (!(fabs(m - 1.0) <= 6.0 * sd) || !(fabs(var / want - 1.0) <= 6.0 * sqrt(2.0 / R)))
            fprintf(stderr, "p=%g: mean %.6f (want 1 +- %.6f), variance %.6g (want %.6g)\n", p, m,
                    6.0 * sd, var, want);
        assert_true(fabs(m - 1.0) <= 6.0 * sd);
        assert_true(fabs(var / want - 1.0) <= 6.0 * sqrt(2.0 / R));
    }
    free(q), free(k), free(v), free(o);
}

/* Forward and backward with dropout are bitwise the same with 1 and 2
 * threads; another seed gives another result. */
static void test_threads_and_seeds(void **state) {
    (void)state;
    at_case c = {.B = 2,
                 .H = 4,
                 .Hkv = 2,
                 .T = 100,
                 .S = 90,
                 .D = 32,
                 .Dv = 16,
                 .causal = 1,
                 .dropout_p = 0.3f,
                 .dropout_seed = 9};
    at_rng r = at_rng_for(700);
    at_sdpa x;
    at_grads g[3];
    assert_int_equal(at_sdpa_build(&x, &c, &r), 0);
    at_buf outs[3];
    for (int t = 0; t < 3; t++) {
        at_rng rr = r;
        assert_int_equal(at_grads_alloc(&g[t], &x.a, AT_BHTD, 0, &rr), 0);
        assert_int_equal(at_buf_f32(&outs[t], 2, 4, 100, 16), 0);
    }
    for (int t = 0; t < 3; t++) {
        attn_sdpa_args a = x.a;
        a.out = outs[t].t;
        a.seed = t == 2 ? 10 : 9;
        assert_int_equal(attn_ctx_set_threads(at_ctx, t == 0 ? 1 : 2), ATTN_OK);
        assert_int_equal(attn_sdpa_forward(at_ctx, &a), ATTN_OK);
        assert_int_equal(attn_sdpa_backward(at_ctx, &a, &g[t].g), ATTN_OK);
    }
    assert_int_equal(attn_ctx_set_threads(at_ctx, 2), ATTN_OK);
    assert_true(at_bitwise_equal("out", "dropout 1 vs 2 threads", &outs[0].t, &outs[1].t));
    assert_true(at_bitwise_equal("dq", "dropout 1 vs 2 threads", &g[0].g.dq, &g[1].g.dq));
    assert_true(at_bitwise_equal("dk", "dropout 1 vs 2 threads", &g[0].g.dk, &g[1].g.dk));
    assert_true(at_bitwise_equal("dv", "dropout 1 vs 2 threads", &g[0].g.dv, &g[1].g.dv));
    int differ = 0;
    for (int64_t e = 0; e < 2 * 4 * 100 * 16; e++)
        differ += ((float *)outs[0].mem)[e] != ((float *)outs[2].mem)[e];
    assert_true(differ > 0);
    for (int t = 0; t < 3; t++)
        at_grads_free(&g[t]), at_buf_free(&outs[t]);
    at_sdpa_free(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_rate),  cmocka_unit_test(test_independence),
        cmocka_unit_test(test_uniformity), cmocka_unit_test(test_against_oracle),
        cmocka_unit_test(test_scaling),    cmocka_unit_test(test_threads_and_seeds),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
