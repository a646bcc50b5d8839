/* Every kernel family this CPU runs, in one process, against the scalar
 * reference (as ggml's test-backend-ops runs every backend against the
 * CPU's): each table's kernels on random tiles (bitwise where the contract
 * fixes the order of the fused multiply-adds, within a few ulp where an
 * exponential differs), then the whole forward and backward of each family
 * against the float64 oracle on random problems, with the tolerance rule.
 * Families this CPU lacks are reported as skipped; the whole-suite
 * ATTN_ARCH=scalar run covers scalar's drivers on their own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "at_sdpa_bwd.h"
#include "core/internal.h"
#include "kernels/arch.h"
#include "kernels/half.h"

static const attn__arch *family(const char *name) {
    attn_status why;
    return attn__arch_find(name, &why);
}

static float *rnd(at_rng *r, size_t n, float lo, float hi) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = at_rng_uniform(r, lo, hi);
    return x;
}

/* |a - b| <= ulps * spacing at b (both finite), identical bits, or both NaN */
static int close_ulps(float a, float b, float ulps) {
    if (memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b))) return 1;
    if (!isfinite(a) || !isfinite(b)) return 0;
    float sp = nextafterf(fabsf(b), INFINITY) - fabsf(b);
    return fabsf(a - b) <= ulps * sp + 1e-30f;
}

/* identical bits, or both NaN (payloads may differ) */
static void expect_bitwise(const char *fam, const char *what, const float *x, const float *y,
                           size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&x[i], &y[i], sizeof(float)) && !(isnan(x[i]) && isnan(y[i]))) {
            fail_msg("%s %s: element %zu is %.9g, scalar %.9g", fam, what, i, (double)x[i],
                     (double)y[i]);
        }
}

static void expect_ulps(const char *fam, const char *what, const float *x, const float *y, size_t n,
                        float ulps) {
    for (size_t i = 0; i < n; i++)
        if (!close_ulps(x[i], y[i], ulps))
            fail_msg("%s %s: element %zu is %.9g, scalar %.9g", fam, what, i, (double)x[i],
                     (double)y[i]);
}

/* Forward table on random tiles of one of the family's strip heights (a
 * multiple of mrq up to mr: the short strips too). */
static void forward_kernels(const attn__arch *f, const attn__arch *sc, at_rng *r) {
    const int R = f->mrq * (int)at_rng_int(r, 1, f->mr / f->mrq), D = (int)at_rng_int(r, 1, 140),
              Dv = (int)at_rng_int(r, 1, 140);
    const int n = (int)at_rng_int(r, 1, f->bk), mr = (int)at_rng_int(r, 1, R);
    const int64_t ks = D + at_rng_int(r, 0, 9), vs = Dv + at_rng_int(r, 0, 9);
    float *q = rnd(r, (size_t)R * D, -2, 2), *k = rnd(r, (size_t)n * ks, -2, 2);
    float *v = rnd(r, (size_t)n * vs, -1, 1);
    float *qt[2], *s[2], *ot[2], *m[2], *l[2], *al[2];
    const attn__arch *ab[2] = {f, sc};
    float *ot0 = rnd(r, (size_t)Dv * R, -1, 1), *m0 = rnd(r, (size_t)R, -1, 3);
    for (int t = 0; t < 2; t++) {
        qt[t] = attn__malloc((size_t)D * R * sizeof(float));
        s[t] = attn__malloc((size_t)n * R * sizeof(float));
        ot[t] = attn__malloc((size_t)Dv * R * sizeof(float));
        m[t] = malloc((size_t)R * sizeof(float));
        l[t] = malloc((size_t)R * sizeof(float));
        al[t] = malloc((size_t)R * sizeof(float));
        memcpy(ot[t], ot0, (size_t)Dv * R * sizeof(float));
        memcpy(m[t], m0, (size_t)R * sizeof(float));
        for (int i = 0; i < R; i++)
            l[t][i] = 1.5f;
        m[t][0] = -INFINITY; /* an empty column so far */
        l[t][0] = 0.0f;
        ab[t]->fwd.pack_q(q, D, mr, R, D, 0.125f, qt[t]);
        ab[t]->fwd.qk(qt[t], R, k, ks, n, D, s[t]);
    }
    expect_bitwise(f->name, "pack_q", qt[0], qt[1], (size_t)D * R);
    expect_bitwise(f->name, "qk", s[0], s[1], (size_t)n * R);
    /* a masked column and a masked key: the softmax's -inf rules; a NaN in
     * a column of finite scores and one in a column of -inf (it must poison
     * its row either way, whatever order a max meets it in) */
    const int cn = R > 4 ? R - 2 : 0, cm = R > 4 ? R - 3 : 0;
    for (int t = 0; t < 2; t++) {
        for (int j = 0; j < n; j++)
            s[t][(size_t)j * R + (R - 1)] = -INFINITY;
        for (int i = 0; i < R; i++)
            s[t][i] = i % 3 ? s[t][i] : -INFINITY;
        if (R > 4) {
            s[t][(size_t)(n / 2) * R + cn] = NAN;
            for (int j = 0; j < n; j++)
                s[t][(size_t)j * R + cm] = j == n / 2 ? NAN : -INFINITY;
        }
        ab[t]->fwd.softmax(s[t], R, n, m[t], l[t], al[t]);
    }
    if (R > 4)
        for (int t = 0; t < 2; t++)
            if (!isnan(l[t][cn]) || !isnan(l[t][cm]))
                fail_msg("%s softmax: a NaN score did not poison its column's l",
                         t ? "scalar" : f->name);
    for (int i = 0; i < R; i++) /* a NaN column's m is NaN in some families, not all */
        if (!isnan(l[1][i])) expect_bitwise(f->name, "softmax m", &m[0][i], &m[1][i], 1);
    for (int j = 0; j < n; j++) /* a NaN column's p: some NaN, or all (either poisons the row) */
        for (int i = 0; i < R; i++)
            if (!isnan(l[1][i]))
                expect_ulps(f->name, "softmax p", &s[0][(size_t)j * R + i],
                            &s[1][(size_t)j * R + i], 1, 2.0f);
    expect_ulps(f->name, "softmax alpha", al[0], al[1], (size_t)R, 2.0f);
    /* l sums n exponentials, each within 2 ulp, in another rounding order */
    expect_ulps(f->name, "softmax l", l[0], l[1], (size_t)R, 4.0f + (float)n);
    /* pv on the same probabilities: one FMA chain per element in key order */
    memcpy(s[0], s[1], (size_t)n * R * sizeof(float));
    memcpy(al[0], al[1], (size_t)R * sizeof(float));
    for (int t = 0; t < 2; t++)
        ab[t]->fwd.pv(s[t], R, n, v, vs, Dv, al[t], ot[t]);
    expect_bitwise(f->name, "pv", ot[0], ot[1], (size_t)Dv * R);
    for (int t = 0; t < 2; t++) {
        attn__free(qt[t]), attn__free(s[t]), attn__free(ot[t]);
        free(m[t]), free(l[t]), free(al[t]);
    }
    free(q), free(k), free(v), free(ot0), free(m0);
}

/* Backward table on random tiles of the family's strip height. */
static void backward_kernels(const attn__arch *f, const attn__arch *sc, at_rng *r) {
    const int R = f->bmr, D = (int)at_rng_int(r, 1, 140), n = (int)at_rng_int(r, 1, f->bbk);
    const int mr = (int)at_rng_int(r, 1, R);
    const int64_t xs = D + at_rng_int(r, 0, 5), ys = D + at_rng_int(r, 0, 5);
    const int N = D, ldo = (int)((D + 15) / 16 * 16);
    float *x = rnd(r, (size_t)R * xs, -2, 2), *y = rnd(r, (size_t)n * ys, -2, 2);
    float *lse = rnd(r, (size_t)R, 0, 3), *di = rnd(r, (size_t)R, -1, 1);
    lse[1 % mr] = INFINITY; /* a dead row */
    float *dp0 = rnd(r, (size_t)n * R, -1, 1), *acc0 = rnd(r, (size_t)n * N, -1, 1);
    float *o0 = rnd(r, (size_t)R * ldo, -1, 1);
    const attn__arch *ab[2] = {f, sc};
    float *xt[2], *s[2], *dp[2], *acc[2], *o[2];
    for (int t = 0; t < 2; t++) {
        xt[t] = attn__malloc((size_t)D * R * sizeof(float));
        s[t] = attn__malloc((size_t)n * R * sizeof(float));
        dp[t] = attn__malloc((size_t)n * R * sizeof(float));
        acc[t] = malloc((size_t)n * N * sizeof(float));
        o[t] = attn__malloc((size_t)R * ldo * sizeof(float));
        memcpy(dp[t], dp0, (size_t)n * R * sizeof(float));
        memcpy(acc[t], acc0, (size_t)n * N * sizeof(float));
        memcpy(o[t], o0, (size_t)R * ldo * sizeof(float));
        ab[t]->bwd.pack_t(x, xs, mr, R, D, 0.5f, xt[t]);
        ab[t]->bwd.dot_t(xt[t], R, y, ys, n, D, mr, s[t]);
    }
    expect_bitwise(f->name, "pack_t", xt[0], xt[1], (size_t)D * R);
    for (int j = 0; j < n; j++) /* rows < mr are the contract */
        expect_bitwise(f->name, "dot_t", s[0] + (size_t)j * R, s[1] + (size_t)j * R, (size_t)mr);
    memcpy(s[0], s[1], (size_t)n * R * sizeof(float));
    for (int t = 0; t < 2; t++) {
        s[t][0] = -INFINITY;
        ab[t]->bwd.softmax_bwd(s[t], dp[t], R, n, mr, lse, di);
    }
    for (int j = 0; j < n; j++) {
        expect_ulps(f->name, "softmax_bwd p", s[0] + (size_t)j * R, s[1] + (size_t)j * R,
                    (size_t)mr, 2.0f);
        expect_ulps(f->name, "softmax_bwd ds", dp[0] + (size_t)j * R, dp[1] + (size_t)j * R,
                    (size_t)mr, 4.0f);
    }
    memcpy(dp[0], dp[1], (size_t)n * R * sizeof(float));
    for (int t = 0; t < 2; t++) {
        ab[t]->bwd.acc_tn(dp[t], R, mr, n, x, xs, N, acc[t], N);
        ab[t]->bwd.acc_nn(dp[t], R, mr, n, y, ys, N, o[t], ldo);
    }
    expect_bitwise(f->name, "acc_tn", acc[0], acc[1], (size_t)n * N);
    for (int i = 0; i < mr; i++)
        expect_bitwise(f->name, "acc_nn", o[0] + (size_t)i * ldo, o[1] + (size_t)i * ldo,
                       (size_t)N);
    for (int t = 0; t < 2; t++) {
        attn__free(xt[t]), attn__free(s[t]), attn__free(dp[t]), free(acc[t]), attn__free(o[t]);
    }
    free(x), free(y), free(lse), free(di), free(dp0), free(acc0), free(o0);
}

static void nn_kernels(const attn__arch *f, const attn__arch *sc, at_rng *r) {
    const int64_t n = at_rng_int(r, 1, 300);
    float *x = rnd(r, (size_t)n, -6, 6);
    float *y0 = malloc((size_t)n * sizeof *y0), *y1 = malloc((size_t)n * sizeof *y1);
    f->nn.erf(x, y0, n);
    sc->nn.erf(x, y1, n);
    expect_bitwise(f->name, "erf", y0, y1, (size_t)n); /* the same steps and FMAs */
    memcpy(y0, x, (size_t)n * sizeof *x);
    memcpy(y1, x, (size_t)n * sizeof *x);
    f->nn.gelu(y0, n);
    sc->nn.gelu(y1, n);
    expect_bitwise(f->name, "gelu", y0, y1, (size_t)n);
    memcpy(y0, x, (size_t)n * sizeof *x);
    memcpy(y1, x, (size_t)n * sizeof *x);
    f->nn.gelu_tanh(y0, n);
    sc->nn.gelu_tanh(y1, n);
    expect_bitwise(f->name, "gelu_tanh", y0, y1, (size_t)n);
    float *g = rnd(r, (size_t)n, -2, 2);
    f->nn.gelu_bwd(x, g, y0, n);
    sc->nn.gelu_bwd(x, g, y1, n);
    expect_bitwise(f->name, "gelu_bwd", y0, y1, (size_t)n);
    f->nn.gelu_tanh_bwd(x, g, y0, n);
    sc->nn.gelu_tanh_bwd(x, g, y1, n);
    expect_bitwise(f->name, "gelu_tanh_bwd", y0, y1, (size_t)n);
    memcpy(y0, g, (size_t)n * sizeof *g); /* in place over dy */
    f->nn.gelu_tanh_bwd(x, y0, y0, n);
    expect_bitwise(f->name, "gelu_tanh_bwd in place", y0, y1, (size_t)n);
    free(x), free(y0), free(y1), free(g);
}

/* The decode kernel (kernels/decode.h): the family's own (not scalar's
 * left in place), on random rows in each storage type, row counts 1..16,
 * any D and Dv (tails), per-row key limits (0 included), two runs
 * accumulated into one state. Block-wise online softmax and lane sums
 * reorder the arithmetic, so the normalised output and lse are compared
 * within a few float32 roundings of the scores' size. */
static void decode_kernels(const attn__arch *f, const attn__arch *sc, at_rng *r) {
    assert_string_equal(f->dec.name, f->name);
    const int R = (int)at_rng_int(r, 1, ATTN__DEC_MAXR), D = (int)at_rng_int(r, 1, 160);
    const int Dv = (int)at_rng_int(r, 1, 160), dt = (int)at_rng_int(r, 0, 2);
    const int64_t ks = D + at_rng_int(r, 0, 3), vs = Dv + at_rng_int(r, 0, 3);
    const int nmax = 70;
    const size_t es = dt == ATTN__KV_F32 ? 4 : 2;
    float *q = rnd(r, (size_t)(R * D), -1, 1);
    for (int i = 0; i < R * D; i++)
        q[i] /= sqrtf((float)D); /* pre-scaled, as the driver passes it */
    float *kf = rnd(r, (size_t)(nmax * ks), -1, 1), *vf = rnd(r, (size_t)(nmax * vs), -1, 1);
    void *kb = malloc((size_t)(nmax * ks) * es), *vb = malloc((size_t)(nmax * vs) * es);
    assert_non_null(kb), assert_non_null(vb);
    for (int64_t i = 0; i < nmax * ks; i++) {
        if (dt == ATTN__KV_F32) ((float *)kb)[i] = kf[i];
        else ((uint16_t *)kb)[i] = dt == ATTN__KV_F16 ? attn__f2h(kf[i]) : attn__f2bf(kf[i]);
    }
    for (int64_t i = 0; i < nmax * vs; i++) {
        if (dt == ATTN__KV_F32) ((float *)vb)[i] = vf[i];
        else ((uint16_t *)vb)[i] = dt == ATTN__KV_F16 ? attn__f2h(vf[i]) : attn__f2bf(vf[i]);
    }
    float m[2][ATTN__DEC_MAXR], l[2][ATTN__DEC_MAXR];
    float *acc[2], *s = malloc((size_t)ATTN__DEC_SCRATCH(R, nmax) * sizeof *s);
    assert_non_null(s);
    for (int w = 0; w < 2; w++) {
        acc[w] = calloc((size_t)(R * Dv), sizeof(float));
        assert_non_null(acc[w]);
        for (int i = 0; i < R; i++)
            m[w][i] = -INFINITY, l[w][i] = 0.0f;
    }
    /* two runs: keys [0, n1) then [n1, n1 + n2) */
    const int n1 = (int)at_rng_int(r, 1, 40), n2 = (int)at_rng_int(r, 1, nmax - n1);
    for (int run = 0; run < 2; run++) {
        const int n = run ? n2 : n1, off = run ? n1 : 0;
        int lim[ATTN__DEC_MAXR];
        for (int i = 0; i < R; i++)
            lim[i] = at_rng_int(r, 0, 4) == 0 ? (int)at_rng_int(r, 0, n) : n;
        const void *kp = (const char *)kb + (size_t)(off * ks) * es;
        const void *vp = (const char *)vb + (size_t)(off * vs) * es;
        f->dec.attend(q, R, D, kp, ks, vp, vs, Dv, dt, n, lim, m[0], l[0], acc[0], s);
        sc->dec.attend(q, R, D, kp, ks, vp, vs, Dv, dt, n, lim, m[1], l[1], acc[1], s);
    }
    for (int i = 0; i < R; i++) {
        if (m[1][i] == -INFINITY) { /* no key seen: the empty state, exactly */
            if (m[0][i] != -INFINITY || l[0][i] != 0.0f)
                fail_msg("%s decode R=%d D=%d Dv=%d dt=%d row %d: m %g l %g, not empty",
                         f->name, R, D, Dv, dt, i, (double)m[0][i], (double)l[0][i]);
            for (int c = 0; c < Dv; c++)
                if (acc[0][i * Dv + c] != 0.0f) fail_msg("%s decode row %d: acc not 0", f->name, i);
            continue;
        }
        /* scores are at most |q|_1 max|k| <= sqrt(D); each moves by a few
         * float32 roundings of that */
        const double tol = 16.0 * D * 0x1p-24 * sqrt((double)D) + 1e-6;
        const double lse0 = m[0][i] + log(l[0][i]), lse1 = m[1][i] + log(l[1][i]);
        if (!(fabs(lse0 - lse1) <= tol * (1 + fabs(lse1))))
            fail_msg("%s decode R=%d D=%d Dv=%d dt=%d row %d: lse %.9g, scalar %.9g", f->name, R,
                     D, Dv, dt, i, lse0, lse1);
        for (int c = 0; c < Dv; c++) {
            const double o0 = acc[0][i * Dv + c] / l[0][i], o1 = acc[1][i * Dv + c] / l[1][i];
            if (!(fabs(o0 - o1) <= 2 * tol))
                fail_msg("%s decode R=%d D=%d Dv=%d dt=%d row %d col %d: %.9g, scalar %.9g",
                         f->name, R, D, Dv, dt, i, c, o0, o1);
        }
    }
    free(q), free(kf), free(vf), free(kb), free(vb), free(s), free(acc[0]), free(acc[1]);
}

/* The families under test: every one the CPU runs, or only the one named
 * on the command line (ctest registers test_arch_<family> for each family
 * the build has, so a family this CPU lacks shows up as skipped). */
static const char *g_only;

static int selected(const char *name) {
    return !g_only || strcmp(g_only, name) == 0;
}

static void test_kernel_tables(void **state) {
    (void)state;
    const attn__arch *sc = family("scalar");
    assert_non_null(sc);
    int tested = 0;
    for (int i = 1; attn_arch_available(i); i++) {
        if (!selected(attn_arch_available(i))) continue;
        tested++;
        const attn__arch *f = family(attn_arch_available(i));
        assert_non_null(f);
        for (int k = 0; k < (at_quick() ? 20 : 200); k++) {
            at_rng r = at_rng_for(81000 + (uint64_t)k * 16 + (uint64_t)i);
            forward_kernels(f, sc, &r);
            backward_kernels(f, sc, &r);
            nn_kernels(f, sc, &r);
            decode_kernels(f, sc, &r);
        }
    }
    if (!tested) skip(); /* the family is not one this CPU runs, or only scalar is */
}

/* The whole forward and backward of every family against the oracle. */
static void test_drivers_per_family(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    int fails = 0;
    const char *name;
    int tested = 0;
    for (int i = 0; (name = attn_arch_available(i)) != NULL; i++) {
        if (!selected(name)) continue;
        tested++;
        assert_int_equal(attn_ctx_set_arch(ctx, name), ATTN_OK);
        assert_string_equal(attn_ctx_arch(ctx), name);
        for (int k = 0; k < (at_quick() ? 8 : 40); k++) {
            at_rng r = at_rng_for(82000 + (uint64_t)k);
            at_case c = {0};
            c.B = at_rng_int(&r, 1, 2);
            c.Hkv = at_rng_int(&r, 1, 2);
            c.H = c.Hkv * at_rng_int(&r, 1, 2);
            c.T = at_rng_int(&r, 1, 200);
            c.S = at_rng_int(&r, 1, 300);
            c.D = at_rng_int(&r, 1, 80);
            c.Dv = at_rng_int(&r, 1, 80);
            c.causal = (int)at_rng_int(&r, 0, 1);
            c.align = (attn_align)at_rng_int(&r, 0, 1);
            c.window = at_rng_int(&r, 0, 2) == 0;
            c.wl = at_rng_int(&r, -1, 50);
            c.wr = at_rng_int(&r, -1, 50);
            c.kv_len = (int)at_rng_int(&r, 0, 1);
            c.mask_bcast = (int)at_rng_int(&r, AT_MASK_NONE, AT_MASK_BHTS);
            c.mask_dtype = at_rng_int(&r, 0, 1) ? ATTN_F32 : ATTN_BOOL;
            c.alibi = (int)at_rng_int(&r, 0, 1);
            c.softcap = at_rng_int(&r, 0, 2) == 0 ? 5.0f : 0.0f;
            c.dropout_p = at_rng_int(&r, 0, 3) == 0 ? 0.2f : 0.0f;
            c.dropout_seed = (uint64_t)k;
            char label[64];
            snprintf(label, sizeof label, "family %s case %d", name, k);
            fails += !at_sdpa_run_forward(ctx, &c, 83000 + (uint64_t)k, label);
            fails += !at_sdpa_run_backward(ctx, &c, 1, 84000 + (uint64_t)k, label);
        }
    }
    attn_ctx_free(ctx);
    assert_int_equal(fails, 0);
    if (!tested) skip();
}

static void test_set_arch(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    const char *def = attn_ctx_arch(ctx);
    assert_non_null(def);
    assert_string_equal(def, attn_arch_name());
    assert_int_equal(attn_ctx_set_arch(ctx, "avx9000"), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "avx9000"));
    assert_string_equal(attn_ctx_arch(ctx), def); /* kept */
    assert_int_equal(attn_ctx_set_arch(ctx, "scalar"), ATTN_OK);
    assert_string_equal(attn_ctx_arch(ctx), "scalar");
    assert_int_equal(attn_ctx_set_arch(ctx, NULL), ATTN_OK);
    assert_string_equal(attn_ctx_arch(ctx), def);
    assert_int_equal(attn_ctx_set_arch(NULL, "scalar"), ATTN_E_ARG);
    assert_string_equal(attn_arch_available(0), "scalar");
    assert_true(attn_arch_peak_probe("scalar", 1000) > 0.0);
    assert_true(attn_arch_peak_probe("avx9000", 1000) == 0.0);
    attn_ctx_free(ctx);
}

int main(int argc, char **argv) {
    if (argc > 1) {
        g_only = argv[1];
        attn_status why;
        if (!attn__arch_find(g_only, &why)) {
            /* a family this build has but the CPU lacks: skipped, not passed */
            if (why != ATTN_E_UNSUPPORTED) {
                fprintf(stderr, "test_arch: unknown family '%s'\n", g_only);
                return 1;
            }
            printf("[  SKIPPED ] family %s: this CPU cannot run it\n", g_only);
            return 0;
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_arch),
        cmocka_unit_test(test_kernel_tables),
        cmocka_unit_test(test_drivers_per_family),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
