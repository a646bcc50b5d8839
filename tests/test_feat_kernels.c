/* The feature-map kernels of every family this CPU runs
 * (kernels/feat_kernels.h) against float64 computations of their
 * definitions: elu + 1 with its column sums, the Performer's exponent with
 * per-row and shared shifts, the ratio, the query side (apply) and the key
 * side's state (accum), the Performer's chain rule in float64 (perf_back);
 * linear attention's chain rule (elu1_back), the float64 backward GEMMs
 * (bwd_query, bwd_key; a NaN kept to the causal rows that see it) and
 * exponents (proj64);
 * odd sizes so every vector tail is taken, padding
 * between rows left untouched, NaN propagated, a zero denominator giving 0.
 * Tolerances are error bounds of the fp32 evaluation (a few units in the
 * last place per operation, n u sum|terms| for a sum of n terms), far below
 * what a wrong index or a missing term would give. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "attn_test.h"
#include "core/internal.h"
#include "kernels/arch.h"

#define U 1.1920929e-07 /* fp32 unit roundoff x 2 (one ulp at 1) */
#define PAD 999.0f      /* sentinel between rows */

static int g_fails;

static void expect_close(const char *fam, const char *what, int64_t at, double got, double ref,
                         double tol) {
    if (fabs(got - ref) <= tol || (isnan(got) && isnan(ref))) return;
    if (g_fails++ < 10)
        fprintf(stderr, "%s %s [%lld]: got %.9g, want %.9g (tol %.3g)\n", fam, what,
                (long long)at, got, ref, tol);
}

/* got is NaN exactly when want_nan. */
static void expect_nan(const char *fam, const char *what, int64_t at, double got, int want_nan) {
    if (!isnan(got) == !want_nan) return;
    if (g_fails++ < 10)
        fprintf(stderr, "%s %s [%lld]: got %.9g, want %s\n", fam, what, (long long)at, got,
                want_nan ? "NaN" : "a number");
}

static float *buf(at_rng *r, int64_t n, float lo, float hi) {
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++)
        x[i] = at_rng_uniform(r, lo, hi);
    return x;
}

static void check_elu1(const attn__arch *a, at_rng *r) {
    const int64_t n = at_rng_int(r, 1, 40), F = at_rng_int(r, 1, 70), ldx = F + at_rng_int(r, 0, 5);
    float *x = buf(r, n * ldx, -9.0f, 4.0f), *y = buf(r, n * F, 0, 0), *z = buf(r, F, -1, 1);
    if (at_rng_int(r, 0, 3) == 0) x[at_rng_int(r, 0, n - 1) * ldx + at_rng_int(r, 0, F - 1)] = NAN;
    double *z0 = malloc((size_t)F * sizeof *z0);
    for (int64_t d = 0; d < F; d++)
        z0[d] = z[d];
    a->feat.elu1(x, ldx, n, F, y, z);
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < F; d++) {
            const double v = x[i * ldx + d], ref = v > 0 ? v + 1.0 : exp(v);
            expect_close(a->name, "elu1", i * F + d, y[i * F + d], ref, 2.0 * U * fabs(ref));
        }
    for (int64_t d = 0; d < F; d++) { /* rows in order, in fp32: bound n u sum|y| */
        double s = z0[d], sa = fabs(z0[d]);
        for (int64_t i = 0; i < n; i++)
            s += y[i * F + d], sa += fabs((double)y[i * F + d]);
        expect_close(a->name, "elu1 colsum", d, z[d], s, (double)(n + 1) * U * sa);
    }
    free(x), free(y), free(z), free(z0);
}

/* Linear attention's chain rule: dphi, or dphi phi where x <= 0. */
static void check_elu1_back(const attn__arch *a, at_rng *r) {
    const int64_t n = at_rng_int(r, 1, 20), F = at_rng_int(r, 1, 70);
    const int64_t ldx = F + at_rng_int(r, 0, 3), ldd = F + at_rng_int(r, 1, 3);
    float *x = buf(r, n * ldx, -3.0f, 3.0f), *phi = buf(r, n * F, 0.0f, 4.0f);
    float *g = buf(r, n * F, -2.0f, 2.0f), *dx = buf(r, n * ldd, 0, 0);
    x[at_rng_int(r, 0, n - 1) * ldx + at_rng_int(r, 0, F - 1)] = 0.0f; /* the kink: exp side */
    const int64_t nan_at = at_rng_int(r, 0, n - 1) * F + at_rng_int(r, 0, F - 1);
    for (int64_t e = 0; e < n * ldd; e++)
        dx[e] = PAD;
    if (at_rng_int(r, 0, 1)) {
        x[nan_at / F * ldx + nan_at % F] = NAN, phi[nan_at] = NAN;
    }
    a->feat.elu1_back(x, ldx, n, F, phi, g, dx, ldd);
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < ldd; d++) {
            if (d >= F) {
                expect_close(a->name, "elu1_back padding", i * ldd + d, dx[i * ldd + d], PAD, 0);
                continue;
            }
            const float xv = x[i * ldx + d], gv = g[i * F + d];
            const double ref = xv > 0.0f ? gv : (double)(gv * phi[i * F + d]); /* one rounding */
            expect_close(a->name, "elu1_back", i * ldd + d, dx[i * ldd + d], ref, 0);
        }
    free(x), free(phi), free(g), free(dx);
}

static void check_perf_exp(const attn__arch *a, at_rng *r) {
    const int64_t n = at_rng_int(r, 1, 40), F = at_rng_int(r, 1, 70), D = at_rng_int(r, 1, 70);
    const int64_t ldx = D + at_rng_int(r, 0, 3);
    const int rowshift = (int)at_rng_int(r, 0, 1);
    const float hs = at_rng_uniform(r, 0.01f, 0.5f), norm = at_rng_uniform(r, 0.1f, 1.0f);
    float *x = buf(r, n * ldx, -1.5f, 1.5f), *u = buf(r, n * F, -6.0f, 6.0f);
    float *u0 = malloc((size_t)(n * F) * sizeof *u0), *z = buf(r, F, 0, 0);
    memcpy(u0, u, (size_t)(n * F) * sizeof *u);
    memset(z, 0, (size_t)F * sizeof *z);
    const float emax = a->feat.perf_exp(u, n, F, x, ldx, D, hs, rowshift, norm, z);
    double *h = malloc((size_t)n * sizeof *h), *e = malloc((size_t)n * sizeof *e), em = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double s = 0, m = -INFINITY;
        for (int64_t d = 0; d < D; d++)
            s += (double)x[i * ldx + d] * x[i * ldx + d];
        for (int64_t k = 0; k < F; k++)
            m = fmax(m, u0[i * F + k]);
        h[i] = hs * s, e[i] = m - h[i], em = fmax(em, e[i]);
    }
    /* the exponent's error: a few roundings of |u| + h + |c|, and D u h for h */
    for (int64_t i = 0; i < n; i++) {
        const double c = rowshift ? e[i] : em;
        for (int64_t k = 0; k < F; k++) {
            const double arg = u0[i * F + k] - h[i] - c, ref = exp(arg) * norm;
            const double aerr = 4.0 * U * (fabs(u0[i * F + k]) + h[i] + fabs(c)) + D * U * h[i];
            expect_close(a->name, rowshift ? "perf_exp row" : "perf_exp shared", i * F + k,
                         u[i * F + k], ref, ref * (aerr + 4.0 * U));
        }
    }
    expect_close(a->name, "perf_exp max", 0, emax, em, 8.0 * U * (fabs(em) + 1.0) + D * U);
    for (int64_t k = 0; k < F; k++) {
        double s = 0, sa = 0;
        for (int64_t i = 0; i < n; i++)
            s += u[i * F + k], sa += fabs((double)u[i * F + k]);
        expect_close(a->name, "perf_exp colsum", k, z[k], s, (double)n * U * sa);
    }
    /* a NaN in a projection stays NaN (the row's output then is NaN) */
    memcpy(u, u0, (size_t)(n * F) * sizeof *u);
    u[0] = NAN;
    a->feat.perf_exp(u, n, F, x, ldx, D, hs, 1, norm, NULL);
    if (!isnan(u[0]) && g_fails++ < 10) fprintf(stderr, "%s perf_exp: NaN lost\n", a->name);
    free(x), free(u), free(u0), free(z), free(h), free(e);
}

/* phi [n, F], S [F, lds], z [F] -> o [n, ldo] by ratio and by apply */
static void check_apply(const attn__arch *a, at_rng *r) {
    const int64_t n = at_rng_int(r, 1, 30), F = at_rng_int(r, 1, 70), Dv = at_rng_int(r, 1, 70);
    const int64_t lds = Dv + at_rng_int(r, 0, 3), ldo = Dv + at_rng_int(r, 1, 4);
    float *phi = buf(r, n * F, 0.0f, 2.0f), *S = buf(r, F * lds, -3.0f, 3.0f);
    float *z = buf(r, F, 0.1f, 5.0f), *o = buf(r, n * ldo, 0, 0), *o2 = buf(r, n * ldo, 0, 0);
    for (int64_t k = 0; k < F; k++) /* row 0: a zero denominator */
        phi[k] = 0.0f;
    for (int64_t e = 0; e < n * ldo; e++)
        o[e] = PAD;
    a->feat.apply(phi, n, F, S, lds, z, Dv, o, ldo);
    for (int64_t i = 0; i < n; i++) {
        double den = 0, dena = 0;
        for (int64_t k = 0; k < F; k++)
            den += (double)phi[i * F + k] * z[k], dena += fabs((double)phi[i * F + k] * z[k]);
        for (int64_t d = 0; d < ldo; d++) {
            if (d >= Dv) {
                expect_close(a->name, "apply padding", i * ldo + d, o[i * ldo + d], PAD, 0);
                continue;
            }
            double num = 0, numa = 0;
            for (int64_t k = 0; k < F; k++) {
                const double t = (double)phi[i * F + k] * S[k * lds + d];
                num += t, numa += fabs(t);
            }
            const double ref = den != 0 ? num / den : 0;
            const double tol = den != 0 ? (F + 2) * U * (numa + fabs(num) * dena / den) / den : 0;
            expect_close(a->name, "apply", i * ldo + d, o[i * ldo + d], ref, tol);
            o2[i * ldo + d] = (float)num;
        }
    }
    /* ratio: the same division over given numerators */
    for (int64_t e = 0; e < n * ldo; e++)
        o[e] = o2[e];
    a->feat.ratio(o, ldo, n, Dv, phi, F, z);
    for (int64_t i = 0; i < n; i++) {
        double den = 0, dena = 0;
        for (int64_t k = 0; k < F; k++)
            den += (double)phi[i * F + k] * z[k], dena += fabs((double)phi[i * F + k] * z[k]);
        for (int64_t d = 0; d < Dv; d++) {
            const double num = o2[i * ldo + d], ref = den != 0 ? num / den : 0;
            const double tol = den != 0 ? (F + 3) * U * fabs(num) * dena / (den * den) : 0;
            expect_close(a->name, "ratio", i * ldo + d, o[i * ldo + d], ref, tol);
        }
    }
    free(phi), free(S), free(z), free(o), free(o2);
}

static void check_accum(const attn__arch *a, at_rng *r) {
    const int64_t n = at_rng_int(r, 1, 90), F = at_rng_int(r, 1, 70), Dv = at_rng_int(r, 1, 70);
    const int64_t ldv = Dv + at_rng_int(r, 0, 3), lds = Dv + at_rng_int(r, 1, 3);
    float *phi = buf(r, n * F, 0.0f, 2.0f), *v = buf(r, n * ldv, -2.0f, 2.0f);
    float *S = buf(r, F * lds, 0, 0);
    for (int64_t e = 0; e < F * lds; e++)
        S[e] = PAD;
    a->feat.accum(phi, n, F, v, ldv, Dv, S, lds);
    for (int64_t k = 0; k < F; k++)
        for (int64_t d = 0; d < lds; d++) {
            if (d >= Dv) {
                expect_close(a->name, "accum padding", k * lds + d, S[k * lds + d], PAD, 0);
                continue;
            }
            double s = 0, sa = 0;
            for (int64_t j = 0; j < n; j++) {
                const double t = (double)phi[j * F + k] * v[j * ldv + d];
                s += t, sa += fabs(t);
            }
            expect_close(a->name, "accum", k * lds + d, S[k * lds + d], s, (n + 1) * U * sa);
        }
    free(phi), free(v), free(S);
}

static void check_perf_back(const attn__arch *a, at_rng *r) {
    /* n past 64: blocks of 64 rows */
    const int64_t n = at_rng_int(r, 1, 150), F = at_rng_int(r, 1, 70), D = at_rng_int(r, 1, 80);
    const int64_t ldx = D + at_rng_int(r, 0, 3), ldd = D + at_rng_int(r, 1, 3);
    const double s = at_rng_uniform(r, 0.1f, 1.0f);
    float *x = buf(r, n * ldx, -2.0f, 2.0f), *phi = buf(r, n * F, 0.0f, 1.0f);
    float *dphi = buf(r, n * F, -1.0f, 1.0f), *om = buf(r, F * D, -2.0f, 2.0f);
    float *dx = buf(r, n * ldd, 0, 0);
    for (int64_t e = 0; e < n * ldd; e++)
        dx[e] = PAD;
    /* the cancelling case: row 0's dominant feature w_0 = x'_0 (to fp32),
     * so dx_0 is a small difference of the two products */
    if (at_rng_int(r, 0, 1)) {
        for (int64_t d = 0; d < D; d++)
            om[d] = (float)(s * (double)x[d]);
        phi[0] = 50.0f, dphi[0] = 1.0f;
        for (int64_t k = 1; k < F; k++)
            phi[k] *= 1e-3f;
    }
    double *ws = malloc((size_t)attn__feat_perf_back_ws(F, D) * sizeof *ws);
    a->feat.perf_back(x, ldx, n, D, phi, dphi, F, om, s, dx, ldd, ws);
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < ldd; d++) {
            if (d >= D) {
                expect_close(a->name, "perf_back padding", i * ldd + d, dx[i * ldd + d], PAD, 0);
                continue;
            }
            double acc = 0, sa = 0;
            const double xs = s * (double)x[i * ldx + d];
            for (int64_t k = 0; k < F; k++) { /* term by term */
                const double t = (double)dphi[i * F + k] * phi[i * F + k];
                acc += t * ((double)om[k * D + d] - xs);
                sa += fabs(t) * (fabs((double)om[k * D + d]) + fabs(xs));
            }
            /* the final rounding to fp32 and the float64 sums' error (below
             * F 2^-53 sa; an fp32 evaluation's rounding of x' alone is
             * 2^-24 |x'| sum |t|) */
            expect_close(a->name, "perf_back", i * ldd + d, dx[i * ldd + d], s * acc,
                         U * fabs(s * acc) + 1e-12 * s * sa);
        }
    free(x), free(phi), free(dphi), free(om), free(dx), free(ws);
}

/* The causal chunk: prefix state plus the masked diagonal block, one pass. */
static void check_causal(const attn__arch *a, at_rng *r) {
    const int64_t n = at_rng_int(r, 1, 70), F = at_rng_int(r, 1, 70), Dv = at_rng_int(r, 1, 70);
    const int64_t lds = Dv + 1 + at_rng_int(r, 0, 3), ldv = Dv + at_rng_int(r, 0, 3);
    const int64_t ldo = Dv + at_rng_int(r, 1, 4);
    const float e = at_rng_uniform(r, 0.2f, 1.0f);
    float *q = buf(r, n * F, 0.0f, 2.0f), *k = buf(r, n * F, 0.0f, 2.0f);
    float *P = buf(r, F * lds, -3.0f, 3.0f), *v = buf(r, n * ldv, -2.0f, 2.0f);
    float *o = buf(r, n * ldo, 0, 0), *ws = buf(r, attn__feat_causal_ws(n, F), 0, 0);
    for (int64_t k0 = 0; k0 < F; k0++) { /* a positive normaliser column */
        P[k0 * lds + Dv] = fabsf(P[k0 * lds + Dv]) + 0.1f;
        q[k0] = 0.0f; /* row 0: a zero denominator (its own key aside) */
    }
    for (int64_t e0 = 0; e0 < n * ldo; e0++)
        o[e0] = PAD;
    /* rows asked for ahead (the next chunk's in the driver; here v and the
     * output's own rows): no effect on the results */
    attn_feat_ahead ah = {.ns = 2};
    ah.x[0] = v, ah.ld[0] = ldv, ah.n[0] = n, ah.w[0] = Dv;
    ah.x[1] = o, ah.ld[1] = ldo, ah.n[1] = n, ah.w[1] = Dv;
    a->feat.causal(q, k, n, F, e, P, lds, v, ldv, Dv, o, ldo, ws, at_rng_int(r, 0, 1) ? &ah : NULL);
    for (int64_t i = 0; i < n; i++) {
        double den = 0, dena = 0, *aij = malloc((size_t)n * sizeof *aij);
        for (int64_t k0 = 0; k0 < F; k0++) {
            const double t = (double)q[i * F + k0] * P[k0 * lds + Dv];
            den += t, dena += fabs(t);
        }
        for (int64_t j = 0; j <= i; j++) {
            double t = 0;
            for (int64_t k0 = 0; k0 < F; k0++)
                t += (double)q[i * F + k0] * k[j * F + k0];
            aij[j] = e * t;
            den += aij[j], dena += aij[j];
        }
        for (int64_t d = 0; d < ldo; d++) {
            if (d >= Dv) {
                expect_close(a->name, "causal padding", i * ldo + d, o[i * ldo + d], PAD, 0);
                continue;
            }
            double num = 0, numa = 0;
            for (int64_t k0 = 0; k0 < F; k0++) {
                const double t = (double)q[i * F + k0] * P[k0 * lds + d];
                num += t, numa += fabs(t);
            }
            for (int64_t j = 0; j <= i; j++) {
                const double t = aij[j] * v[j * ldv + d];
                num += t, numa += fabs(t);
            }
            const double ref = den != 0 ? num / den : 0;
            const double tol =
                den != 0 ? (F + n + 3) * U * (numa + fabs(num) * dena / fabs(den)) / fabs(den) : 0;
            expect_close(a->name, "causal", i * ldo + d, o[i * ldo + d], ref, tol);
        }
        free(aij);
    }
    free(q), free(k), free(P), free(v), free(o), free(ws);
}

/* The Performer's projection (fp32) and its float64 form with the shifts. */
static void check_proj(const attn__arch *a, at_rng *r) {
    /* n past 64: proj64 runs in blocks of 64 rows */
    const int64_t n = at_rng_int(r, 1, 150), F = at_rng_int(r, 1, 70), D = at_rng_int(r, 1, 70);
    const int64_t ldx = D + at_rng_int(r, 0, 3);
    const float s = at_rng_uniform(r, 0.1f, 1.0f);
    const int rowshift = (int)at_rng_int(r, 0, 1);
    float *x = buf(r, n * ldx, -2.0f, 2.0f), *wt = buf(r, D * F, -2.0f, 2.0f);
    float *u = buf(r, n * F, 0, 0), *u2 = buf(r, n * F, 0, 0);
    double *ws = malloc((size_t)attn__feat_proj64_ws(n, D, F) * sizeof *ws);
    double *ex = malloc((size_t)(n * F) * sizeof *ex);
    a->feat.proj(x, ldx, n, D, wt, F, s, u);
    const double top = a->feat.proj64(x, ldx, n, D, wt, F, s, rowshift, u2, ws);
    double mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double h = 0;
        for (int64_t d = 0; d < D; d++)
            h += (double)s * x[i * ldx + d] * (double)s * x[i * ldx + d];
        for (int64_t k = 0; k < F; k++) {
            double t = 0, ta = 0;
            for (int64_t d = 0; d < D; d++) {
                const double p = (double)x[i * ldx + d] * wt[d * F + k];
                t += p, ta += fabs(p);
            }
            expect_close(a->name, "proj", i * F + k, u[i * F + k], s * t, (D + 2) * U * s * ta);
            ex[i * F + k] = (double)s * t - h / 2;
            mx = fmax(mx, ex[i * F + k]);
        }
    }
    expect_close(a->name, "proj64 shift", 0, top, mx, 1e-12 * (fabs(mx) + 1));
    for (int64_t i = 0; i < n; i++) {
        double c = mx;
        if (rowshift) {
            c = -INFINITY;
            for (int64_t k = 0; k < F; k++)
                c = fmax(c, ex[i * F + k]);
        }
        for (int64_t k = 0; k < F; k++) { /* one rounding of the float64 exponent */
            const double ref = ex[i * F + k] - c;
            expect_close(a->name, "proj64", i * F + k, u2[i * F + k], ref,
                         U * fabs(ref) + 1e-12 * (fabs(ex[i * F + k]) + 1));
        }
    }
    free(x), free(wt), free(u), free(u2), free(ws), free(ex);
}

/* The running state: float64 += w * fp32, and its rounding. */
static void check_fold(const attn__arch *a, at_rng *r) {
    const int64_t n = at_rng_int(r, 1, 100);
    const double w = at_rng_uniform(r, 0.1f, 2.0f);
    float *st = buf(r, n, -5.0f, 5.0f), *P = buf(r, n, 0, 0);
    double *run = malloc((size_t)n * sizeof *run), *r0 = malloc((size_t)n * sizeof *r0);
    for (int64_t e = 0; e < n; e++)
        run[e] = r0[e] = at_rng_uniform(r, -5.0f, 5.0f);
    a->feat.fold(run, st, w, n, P);
    for (int64_t e = 0; e < n; e++) {
        const double ref = r0[e] + w * (double)st[e];
        expect_close(a->name, "fold", e, run[e], ref, 1e-15 * (fabs(r0[e]) + fabs(w * st[e])));
        expect_close(a->name, "fold P", e, P[e], (float)run[e], 0);
    }
    free(st), free(P), free(run), free(r0);
}

/* The causal forward's key side in one pass: the same bits as accum, the
 * column sums in column Dv, fold, and the rounding of pre + acc. */
static void check_accfold(const attn__arch *a, at_rng *r) {
    const int64_t n = at_rng_int(r, 1, 90), F = at_rng_int(r, 1, 70), Dv = at_rng_int(r, 1, 70);
    const int64_t Dv1 = Dv + 1, sz = F * Dv1, ldv = Dv + at_rng_int(r, 0, 3);
    const double w = at_rng_uniform(r, 0.1f, 2.0f);
    const int withp = at_rng_int(r, 0, 3) > 0;
    float *phi = buf(r, n * F, 0.0f, 2.0f), *v = buf(r, n * ldv, -2.0f, 2.0f);
    float *zs = buf(r, F, 0.0f, 9.0f), *st = buf(r, sz, 0, 0), *P = buf(r, sz, 0, 0);
    double *acc = malloc((size_t)sz * sizeof *acc), *acc2 = malloc((size_t)sz * sizeof *acc2);
    double *pre = malloc((size_t)sz * sizeof *pre);
    assert_true(acc && acc2 && pre);
    for (int64_t e = 0; e < sz; e++) {
        acc[e] = acc2[e] = at_rng_uniform(r, -50.0f, 50.0f);
        pre[e] = at_rng_uniform(r, -500.0f, 500.0f);
        P[e] = PAD;
    }
    a->feat.accfold(phi, n, F, v, ldv, Dv, zs, w, acc, pre, withp ? P : NULL, st);
    a->feat.accum(phi, n, F, v, ldv, Dv, st, Dv1); /* the unfused form */
    for (int64_t k = 0; k < F; k++)
        st[k * Dv1 + Dv] = zs[k];
    a->feat.fold(acc2, st, w, sz, NULL);
    for (int64_t e = 0; e < sz; e++) {
        expect_close(a->name, "accfold acc", e, acc[e], acc2[e], 0);
        expect_close(a->name, "accfold P", e, P[e], withp ? (float)(pre[e] + acc2[e]) : PAD, 0);
    }
    free(phi), free(v), free(zs), free(st), free(P), free(acc), free(acc2), free(pre);
}

/* The float64 backward of a query chunk and of key rows against the same
 * formulas summed plainly in float64 (only the order of the sums differs). */
static void check_bwd(const attn__arch *a, at_rng *r) {
    /* sizes on both sides of the register blocks (8 rows, 8/12/16 doubles)
     * and, non-causal, of the 64-row blocks */
    const int causal = (int)at_rng_int(r, 0, 1);
    const int64_t n = at_rng_int(r, 1, causal ? 70 : 150), F = at_rng_int(r, 1, 70);
    const int64_t Dv = at_rng_int(r, 1, 70);
    const int64_t Dv1 = Dv + 1, ldgo = Dv + at_rng_int(r, 0, 3);
    float *q = buf(r, n * F, 0.0f, 2.0f), *k = buf(r, n * F, 0.0f, 2.0f);
    float *P = buf(r, F * Dv1, -1.0f, 1.0f), *v1 = buf(r, n * Dv1, -2.0f, 2.0f);
    float *go = buf(r, n * ldgo, -1.0f, 1.0f), *dq = buf(r, n * F, 0, 0);
    for (int64_t k0 = 0; k0 < F; k0++)
        P[k0 * Dv1 + Dv] = fabsf(P[k0 * Dv1 + Dv]) + 0.1f;
    for (int64_t j = 0; j < n; j++)
        v1[j * Dv1 + Dv] = 1.0f;
    /* the key sums start from earlier contributions (ADD) or are set (SET) */
    const int qhow = (int)at_rng_int(r, 0, 1) ? ATTN_FEAT_SET : ATTN_FEAT_ADD;
    double *G = malloc((size_t)(F * Dv1) * sizeof *G), *ak = malloc((size_t)(n * F) * sizeof *ak);
    double *av = malloc((size_t)(n * Dv1) * sizeof *av), *ak0 = malloc((size_t)(n * F) * 8);
    double *av0 = malloc((size_t)(n * Dv1) * sizeof *av0);
    for (int64_t e = 0; e < n * F; e++)
        ak[e] = ak0[e] = qhow == ATTN_FEAT_ADD ? at_rng_uniform(r, -1.0f, 1.0f) : 0.0;
    for (int64_t e = 0; e < n * Dv1; e++)
        av[e] = av0[e] = qhow == ATTN_FEAT_ADD ? at_rng_uniform(r, -1.0f, 1.0f) : 0.0;
    if (qhow == ATTN_FEAT_SET && causal) /* garbage to be overwritten */
        for (int64_t e = 0; e < n * F; e++)
            ak[e] = 1e30;
    double *ws = malloc((size_t)attn__feat_bwd_ws(n, F, Dv1, causal) * sizeof *ws);
    const int gonly = at_rng_int(r, 0, 3) == 0; /* dphiq NULL: G alone */
    /* rows asked for ahead (the previous chunk's in the driver; here the
     * inputs' own rows): no effect on the results */
    attn_feat_ahead ah = {.ns = 3};
    ah.x[0] = q, ah.ld[0] = F, ah.n[0] = n, ah.w[0] = F;
    ah.x[1] = v1, ah.ld[1] = Dv1, ah.n[1] = n, ah.w[1] = Dv1;
    ah.x[2] = go, ah.ld[2] = ldgo, ah.n[2] = n, ah.w[2] = Dv;
    a->feat.bwd_query(q, n, F, P, causal ? k : NULL, v1, Dv1, go, ldgo, gonly ? NULL : dq, G, ak,
                      av, qhow, ws, at_rng_int(r, 0, 1) ? &ah : NULL);
    /* reference: a_ij, num1, dnum1 */
    double *A = calloc((size_t)(n * n), sizeof *A), *dn = calloc((size_t)(n * Dv1), sizeof *dn);
    for (int64_t i = 0; i < n; i++) {
        double num[72] = {0};
        for (int64_t d = 0; d < Dv1; d++) {
            for (int64_t k0 = 0; k0 < F; k0++)
                num[d] += (double)q[i * F + k0] * P[k0 * Dv1 + d];
        }
        for (int64_t j = 0; causal && j <= i; j++) {
            for (int64_t k0 = 0; k0 < F; k0++)
                A[i * n + j] += (double)q[i * F + k0] * k[j * F + k0];
            for (int64_t d = 0; d < Dv1; d++)
                num[d] += A[i * n + j] * v1[j * Dv1 + d];
        }
        double dd = 0;
        for (int64_t d = 0; d < Dv; d++)
            dd += (double)go[i * ldgo + d] * num[d] / num[Dv];
        for (int64_t d = 0; d < Dv; d++)
            dn[i * Dv1 + d] = (double)go[i * ldgo + d] / num[Dv];
        dn[i * Dv1 + Dv] = -dd / num[Dv];
    }
    const double tol = 1e-12;
    for (int64_t i = 0; !gonly && i < n; i++)
        for (int64_t k0 = 0; k0 < F; k0++) {
            double t = 0, ta = 0; /* the float64 sums' error: ~1e-16 sum |terms| a step */
            for (int64_t d = 0; d < Dv1; d++)
                t += dn[i * Dv1 + d] * P[k0 * Dv1 + d],
                    ta += fabs(dn[i * Dv1 + d] * P[k0 * Dv1 + d]);
            for (int64_t j = 0; causal && j <= i; j++) {
                double da = 0, daa = 0;
                for (int64_t d = 0; d < Dv1; d++)
                    da += dn[i * Dv1 + d] * v1[j * Dv1 + d],
                        daa += fabs(dn[i * Dv1 + d] * v1[j * Dv1 + d]);
                t += da * k[j * F + k0], ta += daa * k[j * F + k0];
            }
            expect_close(a->name, "bwd_query dphi_q", i * F + k0, dq[i * F + k0], (float)t,
                         U * fabs(t) + tol * ta);
        }
    for (int64_t k0 = 0; k0 < F; k0++)
        for (int64_t d = 0; d < Dv1; d++) {
            double t = 0, ta = 0;
            for (int64_t i = 0; i < n; i++)
                t += (double)q[i * F + k0] * dn[i * Dv1 + d],
                    ta += fabs((double)q[i * F + k0] * dn[i * Dv1 + d]);
            expect_close(a->name, "bwd_query G", k0 * Dv1 + d, G[k0 * Dv1 + d], t, tol * ta);
        }
    for (int64_t j = 0; causal && !gonly && j < n; j++) {
        for (int64_t k0 = 0; k0 < F; k0++) {
            double t = 0, ta = 0;
            for (int64_t i = j; i < n; i++) {
                double da = 0, daa = 0;
                for (int64_t d = 0; d < Dv1; d++)
                    da += dn[i * Dv1 + d] * v1[j * Dv1 + d],
                        daa += fabs(dn[i * Dv1 + d] * v1[j * Dv1 + d]);
                t += da * q[i * F + k0], ta += daa * q[i * F + k0];
            }
            expect_close(a->name, "bwd_query dphi_k", j * F + k0, ak[j * F + k0],
                         ak0[j * F + k0] + t, tol * (ta + fabs(ak0[j * F + k0])));
        }
        for (int64_t d = 0; d < Dv1; d++) {
            double t = 0, ta = 0;
            for (int64_t i = j; i < n; i++)
                t += A[i * n + j] * dn[i * Dv1 + d], ta += fabs(A[i * n + j] * dn[i * Dv1 + d]);
            expect_close(a->name, "bwd_query dV1", j * Dv1 + d, av[j * Dv1 + d],
                         av0[j * Dv1 + d] + t, tol * (ta + fabs(av0[j * Dv1 + d])));
        }
    }
    /* key rows against G (as given), each way of delivering the sums: into
     * float64 sums that hold earlier contributions (ADD) or none (SET), or
     * rounded into dphi_k and dv (OUT: with the sums, OUT_ONLY: alone) */
    const int khow = (int)at_rng_int(r, 0, 3), out = khow >= ATTN_FEAT_OUT;
    const int64_t lddv = Dv + at_rng_int(r, 0, 3);
    double *ak2 = malloc((size_t)(n * F) * sizeof *ak2), *av2 = malloc((size_t)(n * Dv1) * 8);
    double *ak2i = malloc((size_t)(n * F) * 8), *av2i = malloc((size_t)(n * Dv1) * 8);
    float *dk = buf(r, n * F, 0, 0), *dv = buf(r, n * lddv, 0, 0);
    for (int64_t e = 0; e < n * F; e++)
        ak2[e] = ak2i[e] = at_rng_uniform(r, -1.0f, 1.0f), dk[e] = PAD;
    for (int64_t e = 0; e < n * Dv1; e++)
        av2[e] = av2i[e] = at_rng_uniform(r, -1.0f, 1.0f);
    for (int64_t e = 0; e < n * lddv; e++)
        dv[e] = PAD;
    const double keep = khow == ATTN_FEAT_ADD || khow == ATTN_FEAT_OUT; /* the sums count */
    double *ws2 = malloc((size_t)attn__feat_bwdk_ws(F, Dv1) * sizeof *ws2);
    a->feat.bwd_key(k, v1, n, F, Dv1, G, ak2, av2, khow, dk, dv, lddv, ws2);
    for (int64_t j = 0; j < n; j++) {
        for (int64_t k0 = 0; k0 < F; k0++) {
            double t = keep * ak2i[j * F + k0], ta = fabs(t);
            for (int64_t d = 0; d < Dv1; d++)
                t += (double)v1[j * Dv1 + d] * G[k0 * Dv1 + d],
                    ta += fabs((double)v1[j * Dv1 + d] * G[k0 * Dv1 + d]);
            if (out)
                expect_close(a->name, "bwd_key dphi_k out", j * F + k0, dk[j * F + k0], (float)t,
                             U * fabs(t) + tol * ta);
            else
                expect_close(a->name, "bwd_key dphi_k", j * F + k0, ak2[j * F + k0], t, tol * ta);
        }
        for (int64_t d = 0; d < Dv1; d++) {
            double t = keep * av2i[j * Dv1 + d], ta = fabs(t);
            for (int64_t k0 = 0; k0 < F; k0++)
                t += (double)k[j * F + k0] * G[k0 * Dv1 + d],
                    ta += fabs((double)k[j * F + k0] * G[k0 * Dv1 + d]);
            if (!out)
                expect_close(a->name, "bwd_key dV1", j * Dv1 + d, av2[j * Dv1 + d], t, tol * ta);
            else if (d < Dv)
                expect_close(a->name, "bwd_key dv out", j * lddv + d, dv[j * lddv + d], (float)t,
                             U * fabs(t) + tol * ta);
        }
        for (int64_t d = Dv; d < lddv; d++) /* padding; and dv untouched unless out */
            expect_close(a->name, "bwd_key dv padding", j * lddv + d, dv[j * lddv + d], PAD, 0);
        for (int64_t d = 0; !out && d < Dv; d++)
            expect_close(a->name, "bwd_key dv unused", j * lddv + d, dv[j * lddv + d], PAD, 0);
    }
    free(q), free(k), free(P), free(v1), free(go), free(dq), free(G), free(ak), free(av), free(ws);
    free(A), free(dn), free(ak2), free(av2), free(ws2), free(ak0), free(av0), free(ak2i);
    free(av2i), free(dk), free(dv);
}

/* A NaN stays out of the causal rows that must not see it: a NaN in
 * phi_q row iq reaches dphi_q row iq only and none of the key sums of
 * later keys; a NaN in V row jn none of the query rows before jn. */
static void check_bwd_nan(const attn__arch *a, at_rng *r) {
    const int64_t n = at_rng_int(r, 2, 70), F = at_rng_int(r, 1, 40), Dv = at_rng_int(r, 1, 40);
    const int64_t Dv1 = Dv + 1, iq = at_rng_int(r, 0, n - 1), jn = at_rng_int(r, 0, n - 1);
    float *q = buf(r, n * F, 0.0f, 2.0f), *k = buf(r, n * F, 0.0f, 2.0f);
    float *P = buf(r, F * Dv1, 0.1f, 1.0f), *v1 = buf(r, n * Dv1, -2.0f, 2.0f);
    float *go = buf(r, n * Dv, -1.0f, 1.0f), *dq = buf(r, n * F, 0, 0);
    for (int64_t j = 0; j < n; j++)
        v1[j * Dv1 + Dv] = 1.0f;
    double *G = malloc((size_t)(F * Dv1) * sizeof *G), *ak = malloc((size_t)(n * F) * 8);
    double *av = malloc((size_t)(n * Dv1) * sizeof *av);
    double *ws = malloc((size_t)attn__feat_bwd_ws(n, F, Dv1, 1) * sizeof *ws);
    q[iq * F + at_rng_int(r, 0, F - 1)] = NAN;
    a->feat.bwd_query(q, n, F, P, k, v1, Dv1, go, Dv, dq, G, ak, av, ATTN_FEAT_SET, ws, NULL);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < F; c++)
            expect_nan(a->name, "bwd_query NaN q: dphi_q", i * F + c, dq[i * F + c], i == iq);
    for (int64_t j = iq + 1; j < n; j++) {
        for (int64_t c = 0; c < F; c++)
            expect_nan(a->name, "bwd_query NaN q: dphi_k", j * F + c, ak[j * F + c], 0);
        for (int64_t d = 0; d < Dv1; d++)
            expect_nan(a->name, "bwd_query NaN q: dV1", j * Dv1 + d, av[j * Dv1 + d], 0);
    }
    for (int64_t c = 0; c < F; c++)
        if (isnan(q[iq * F + c])) q[iq * F + c] = 1.0f;
    v1[jn * Dv1 + at_rng_int(r, 0, Dv - 1)] = NAN;
    a->feat.bwd_query(q, n, F, P, k, v1, Dv1, go, Dv, dq, G, ak, av, ATTN_FEAT_SET, ws, NULL);
    for (int64_t i = 0; i < jn; i++)
        for (int64_t c = 0; c < F; c++)
            expect_nan(a->name, "bwd_query NaN v: dphi_q", i * F + c, dq[i * F + c], 0);
    free(q), free(k), free(P), free(v1), free(go), free(dq), free(G), free(ak), free(av), free(ws);
}

static void test_feat_kernels(void **state) {
    (void)state;
    const char *name;
    for (int i = 0; (name = attn_arch_available(i)) != NULL; i++) {
        attn_status why;
        const attn__arch *a = attn__arch_find(name, &why);
        assert_non_null(a);
        for (int k = 0; k < (at_quick() ? 30 : 200); k++) {
            at_rng r = at_rng_for(0x17000 + (uint64_t)k * 8 + (uint64_t)i);
            check_elu1(a, &r);
            check_elu1_back(a, &r);
            check_perf_exp(a, &r);
            check_apply(a, &r);
            check_accum(a, &r);
            check_perf_back(a, &r);
            check_causal(a, &r);
            check_proj(a, &r);
            check_fold(a, &r);
            check_accfold(a, &r);
            check_bwd(a, &r);
            check_bwd_nan(a, &r);
        }
    }
    assert_int_equal(g_fails, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_feat_kernels),
    };
    printf("seed %llu\n", (unsigned long long)at_base_seed());
    return cmocka_run_group_tests(tests, NULL, NULL);
}
