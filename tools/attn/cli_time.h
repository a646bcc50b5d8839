/* Timing helpers shared by attn bench, attn embed --bench, attn train and
 * bench/bench_mha.c (header-only, so the bench programs compile it with a
 * plain `cc`): a clock in seconds, and the median of a set of times. */
#ifndef ATTN_CLI_TIME_H
#define ATTN_CLI_TIME_H

#include <stddef.h>
#include <stdlib.h>
#include <time.h>

/* Seconds on clock id: CLOCK_MONOTONIC (wall) or CLOCK_PROCESS_CPUTIME_ID
 * (CPU time of all the process's threads). */
static inline double attn_cli_clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int attn_cli_cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The median of v[0..n) (sorts v; the mean of the middle two for even n;
 * 0 for n = 0). */
static inline double attn_cli_median(double *v, size_t n) {
    if (n == 0) return 0.0;
    qsort(v, n, sizeof *v, attn_cli_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif /* ATTN_CLI_TIME_H */
