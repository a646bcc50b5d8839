/* The nn element-wise kernels (kernels/nn_kernels.h): erf against erf in
 * double over a dense sweep of fp32 inputs, in ulps of the correctly rounded
 * value; special values; exact GELU against GELU in double with the rule of
 * the project (max error <= 2x that of plain fp32 with libm's erff, + 1e-6);
 * lengths that are not multiples of the vector width, in place and not.
 * Every family this CPU can run is checked, whatever ATTN_ARCH selects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the headers it needs */

#include "attn_test.h"
#include "kernels/arch.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Measured max 1.65 ulp (see nn_kernels.h); 2 leaves no room for a real
 * regression (a wrong coefficient costs hundreds of ulps). */
#define ERF_MAX_ULP 2.0

/* The nn tables of every family this CPU runs (scalar first). */
static int families(const attn_nn_kernels **k) {
    int n = 0;
    for (const char *name; (name = attn_arch_available(n)) != NULL; n++) {
        attn_status why;
        k[n] = &attn__arch_find(name, &why)->nn;
    }
    return n;
}

static float f_of(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* |y - e| in units of the spacing of fp32 at the rounded true value */
static double ulps(float y, double e) {
    float ef = (float)e;
    double ulp = (double)nextafterf(fabsf(ef), INFINITY) - fabsf(ef);
    return fabs((double)y - e) / ulp;
}

static void erf_sweep(void **state) {
    (void)state;
    const attn_nn_kernels *k[8];
    const int nk = families(k);
    /* every `step`-th fp32 in [2^-30, 4], and the same negated */
    const uint32_t lo = 0x30800000u, hi = 0x40800000u, step = at_quick() ? 1009 : 5;
    const size_t n = (hi - lo) / step + 1;
    float *x = malloc(2 * n * sizeof(float)), *y = malloc(2 * n * sizeof(float));
    assert_non_null(x);
    assert_non_null(y);
    for (size_t i = 0; i < n; i++) {
        x[i] = f_of(lo + (uint32_t)(i * step));
        x[n + i] = -x[i];
    }
    for (int f = 0; f < nk; f++) {
        k[f]->erf(x, y, (int64_t)(2 * n));
        double worst = 0.0;
        size_t at = 0;
        for (size_t i = 0; i < 2 * n; i++) {
            double u = ulps(y[i], erf((double)x[i]));
            if (!(u <= worst)) worst = u, at = i;
        }
        printf("erf %-6s: max %.3f ulp at x = %.9g over %zu inputs\n", k[f]->name, worst,
               (double)x[at], 2 * n);
        if (!(worst <= ERF_MAX_ULP))
            fail_msg("erf %s: x = %.9g gives %.9g, erf in double %.17g (%.3f ulp > %.1f)",
                     k[f]->name, (double)x[at], (double)y[at], erf((double)x[at]), worst,
                     ERF_MAX_ULP);
    }
    free(x);
    free(y);
}

static void erf_special(void **state) {
    (void)state;
    const attn_nn_kernels *k[8];
    const int nk = families(k);
    const float in[] = {0.0f,    -0.0f,   INFINITY, -INFINITY, NAN,   1e30f,    -1e30f,
                        3.9249f, 3.9251f, -3.9251f, 1.2499f,   1.25f, f_of(1u), f_of(0x80000001u),
                        1e-38f,  100.0f,  -FLT_MAX};
    const int n = (int)(sizeof in / sizeof in[0]);
    float out[sizeof in / sizeof in[0]];
    for (int f = 0; f < nk; f++) {
        k[f]->erf(in, out, n);
        for (int i = 0; i < n; i++) {
            double e = erf((double)in[i]);
            if (isnan(in[i])) {
                if (!isnan(out[i])) fail_msg("erf %s(NaN) = %g, not NaN", k[f]->name, out[i]);
            } else if (!(ulps(out[i], e) <= ERF_MAX_ULP) || signbit(out[i]) != signbit(in[i])) {
                fail_msg("erf %s(%.9g) = %.9g, erf in double %.17g", k[f]->name, (double)in[i],
                         (double)out[i], e);
            }
        }
    }
}

static double gelu_ref(double x) {
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

static void gelu_vs_double(void **state) {
    (void)state;
    const attn_nn_kernels *k[8];
    const int nk = families(k);
    at_rng r = at_rng_for(0x6e11);
    const int64_t n = at_quick() ? 20001 : 400003; /* odd: a vector tail */
    float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
    assert_non_null(x);
    assert_non_null(y);
    /* a uniform grid over [-12, 12] and random values of several scales */
    for (int64_t i = 0; i < n; i++) {
        if (i % 2 == 0) {
            x[i] = (float)(-12.0 + 24.0 * (double)i / (double)(n - 1));
        } else {
            double s = pow(10.0, (double)(i % 7) - 4.0);
            x[i] = (float)(s * (2.0 * at_rng_unit(&r) - 1.0));
        }
    }
    double naive = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float v = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        naive = fmax(naive, fabs((double)v - gelu_ref(x[i])));
    }
    for (int f = 0; f < nk; f++) {
        memcpy(y, x, (size_t)n * sizeof(float));
        k[f]->gelu(y, n);
        double worst = 0.0;
        int64_t at = 0;
        for (int64_t i = 0; i < n; i++) {
            double e = fabs((double)y[i] - gelu_ref(x[i]));
            if (!(e <= worst)) worst = e, at = i;
        }
        printf("gelu %-6s: max abs error %.3g (plain fp32 with erff: %.3g), seed 0x%llx\n",
               k[f]->name, worst, naive, (unsigned long long)r.seed);
        if (!(worst <= 2.0 * naive + 1e-6))
            fail_msg("gelu %s: x = %.9g gives %.9g, double %.17g", k[f]->name, (double)x[at],
                     (double)y[at], gelu_ref(x[at]));
    }
    free(x);
    free(y);
}

/* Every length 0..40 and offset: the tail must equal the vector body's
 * answer for the same input (element-wise kernels), nothing outside [0, n)
 * is touched, and erf may run in place. */
static void lengths_and_tails(void **state) {
    (void)state;
    const attn_nn_kernels *k[8];
    const int nk = families(k);
    float src[48], ref[48], buf[48 + 2];
    for (int i = 0; i < 48; i++)
        src[i] = (float)(i - 24) * 0.37f;
    for (int f = 0; f < nk; f++) {
        k[f]->erf(src, ref, 48);
        for (int n = 0; n <= 40; n++) {
            for (int off = 0; off < 8; off++) {
                buf[0] = buf[n + 1] = 12345.0f;
                memcpy(buf + 1, src + off, (size_t)n * sizeof(float));
                k[f]->erf(buf + 1, buf + 1, n);
                assert_true(buf[0] == 12345.0f && buf[n + 1] == 12345.0f);
                for (int i = 0; i < n; i++)
                    if (buf[1 + i] != ref[off + i])
                        fail_msg("erf %s n=%d off=%d: element %d %.9g != %.9g", k[f]->name, n, off,
                                 i, (double)buf[1 + i], (double)ref[off + i]);
                memcpy(buf + 1, src + off, (size_t)n * sizeof(float));
                k[f]->gelu(buf + 1, n);
                assert_true(buf[0] == 12345.0f && buf[n + 1] == 12345.0f);
                for (int i = 0; i < n; i++) {
                    float x = src[off + i];
                    double e = gelu_ref(x);
                    if (!(fabs(buf[1 + i] - e) <= 1e-6 + 4e-7 * fabs(e)))
                        fail_msg("gelu %s n=%d: x = %.9g gives %.9g, double %.17g", k[f]->name, n,
                                 (double)x, (double)buf[1 + i], e);
                }
            }
        }
    }
}

/* The scalar twin and the AVX2 family run the same algorithm: they agree to
 * a few ulps everywhere (bitwise where the compiler did not contract). */
static void families_agree(void **state) {
    (void)state;
    const attn_nn_kernels *k[8];
    if (families(k) < 2) skip();
    float x[4096], a[4096], b[4096];
    for (int i = 0; i < 4096; i++)
        x[i] = (float)(i - 2048) / 400.0f;
    k[0]->erf(x, a, 4096);
    k[1]->erf(x, b, 4096);
    for (int i = 0; i < 4096; i++)
        if (!(fabs((double)a[i] - b[i]) <= 2.0 * (nextafterf(fabsf(a[i]), INFINITY) - fabsf(a[i]))))
            fail_msg("erf at %.9g: scalar %.9g, avx2 %.9g", (double)x[i], (double)a[i],
                     (double)b[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(erf_sweep),      cmocka_unit_test(erf_special),
        cmocka_unit_test(gelu_vs_double), cmocka_unit_test(lengths_and_tails),
        cmocka_unit_test(families_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
