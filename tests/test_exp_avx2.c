/* The AVX2 exponential shared by the forward and backward kernels
 * (src/kernels/avx2/vmath_avx2.h) against double exp: at most 0.9 ulp over
 * the floats of [-87.3, 0] (every STRIDE-th one: 7 by default, 61 under
 * ATTN_TEST_QUICK; ATTN_TEST_EXP_STRIDE=1 checks every float, ~1.1e9 of
 * them), exactly 0 below -87.33654 and for -inf, NaN for NaN, 1 for 0.
 * Without AVX2+FMA on the CPU the kernels are never selected and the test
 * says so and passes (the scalar kernels use libm's expf). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_test.h"

/* This file is not built with -mavx2 -mfma: only the code in the header and
 * exp8 is, through these pragmas (GCC's and Clang's spellings). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#include "kernels/avx2/vmath_avx2.h"

static void exp8(const float *x, float *y) {
    _mm256_storeu_ps(y, exp_avx2(_mm256_loadu_ps(x)));
}
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#define HAVE_EXP8 1
#endif

#ifdef HAVE_EXP8
static int have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* |y - e| in units of the float spacing at e (e normal here: e >= 1.2e-38). */
static double ulp_err(float y, double e) {
    int ex;
    frexp(e, &ex); /* e = m * 2^ex, 0.5 <= m < 1: spacing 2^(ex - 24) */
    return fabs((double)y - e) / ldexp(1.0, ex - 24);
}
#endif

static void test_accuracy(void **state) {
    (void)state;
#ifdef HAVE_EXP8
    if (!have_avx2()) {
        printf("no AVX2+FMA on this CPU: the AVX2 exp cannot run here\n");
        skip(); /* reported as skipped, never as passed */
    }
    long stride = at_quick() ? 61 : 7;
    const char *s = getenv("ATTN_TEST_EXP_STRIDE");
    if (s && atol(s) > 0) stride = atol(s);
    /* negative floats have increasing bit patterns from -0 down to -87.3 */
    const uint32_t lo = bits(-0.0f), hi = bits(-87.3f);
    double worst = 0.0;
    float worst_x = 0.0f;
    float x[8], y[8];
    int k = 0;
    uint64_t n = 0;
    for (uint64_t u = lo; u <= hi; u += (uint64_t)stride) {
        x[k++] = from_bits((uint32_t)u);
        if (k < 8 && u + (uint64_t)stride <= hi) continue;
        exp8(x, y);
        for (int i = 0; i < k; i++) {
            double e = exp((double)x[i]), err = ulp_err(y[i], e);
            if (!(err <= worst)) worst = err, worst_x = x[i];
        }
        n += (uint64_t)k;
        k = 0;
    }
    printf("exp_avx2: %llu floats in [-87.3, 0] (stride %ld), max error %.3f ulp at x = %.9g\n",
           (unsigned long long)n, stride, worst, (double)worst_x);
    if (!(worst <= 0.9)) {
        fprintf(stderr, "exp_avx2(%.9g): %.3f ulp from double exp, more than 0.9\n",
                (double)worst_x, worst);
        fail();
    }
#else
    printf("not an x86-64 GCC/Clang build: no AVX2 kernels to check\n");
    skip();
#endif
}

static void test_special_values(void **state) {
    (void)state;
#ifdef HAVE_EXP8
    if (!have_avx2()) skip();
    float x[8] = {0.0f, -0.0f, -INFINITY, -87.3366f, -100.0f, -1e30f, NAN, -1.0f}, y[8];
    exp8(x, y);
    assert_true(y[0] == 1.0f && y[1] == 1.0f);
    for (int i = 2; i < 6; i++)
        if (y[i] != 0.0f || signbit(y[i])) {
            fprintf(stderr, "exp_avx2(%g) = %g, want exactly +0\n", (double)x[i], (double)y[i]);
            fail();
        }
    assert_true(isnan(y[6]));
    assert_true(ulp_err(y[7], exp(-1.0)) <= 0.9);
#else
    skip();
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accuracy),
        cmocka_unit_test(test_special_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
