/* The causal feature kernels alone (kernels/feat_kernels.h): one chunk of
 * n rows (64: what the causal forward uses), F features, Dv = F, read again
 * and again from L1/L2, each kernel family this CPU runs, CPU time, best of
 * 7 trials. Figures are the counted flops (attn_approx_flops' per-chunk
 * terms) over the time, as a share of the family's own FMA peak and of the
 * best family's (the CPU's best ISA). Lines:
 *   causal        the causal kernel, nothing asked for ahead
 *   causal+ahead  the same, asking for 4 streams x n rows of a 64 MiB
 *                 buffer (the next chunk's q, k, v, output from DRAM)
 *   causal+hot    the same 4 x n rows every call (cache-hot: the cost of
 *                 the requests themselves)
 *   proj          the Performer's projection of n rows (2 n F F flops)
 *   perf_exp      its exponent, one shift for the n rows (ns per element)
 *
 *   bench_feat_kernel [--n 64] [--f 64]
 */
#include "kernels/arch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *amalloc(size_t n) {
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!p) exit(1);
    return p;
}

static double peak_of(const char *fam) {
    double peak = 0;
    for (int t = 0; t < 7; t++) {
        const double c0 = cpu_s(), fl = attn_arch_peak_probe(fam, 20000000);
        const double r = fl / (cpu_s() - c0);
        peak = r > peak ? r : peak;
    }
    return peak;
}

enum { CAUSAL, CAUSAL_AHEAD, CAUSAL_HOT, PROJ, PEXP, NKIND };

int main(int argc, char **argv) {
    int64_t n = 64, F = 64;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--n"))
            n = atoll(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--f"))
            F = atoll(argv[++i]);
        else {
            fprintf(stderr, "bench_feat_kernel: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (n < 1 || n > 1024 || F < 1 || F > 1024) {
        fprintf(stderr, "bench_feat_kernel: bad sizes (1 <= n, F <= 1024)\n");
        return 2;
    }
    const int64_t Dv = F, lds = Dv + 1, big = (64 << 20) / (int64_t)sizeof(float);
    float *q = amalloc((size_t)(n * F)), *k = amalloc((size_t)(n * F));
    float *P = amalloc((size_t)(F * lds)), *v = amalloc((size_t)(n * Dv));
    float *o = amalloc((size_t)(n * Dv)), *ws = amalloc((size_t)attn__feat_causal_ws(n, F));
    float *x = amalloc((size_t)(n * F)), *wt = amalloc((size_t)(F * F)),
          *u = amalloc((size_t)(n * F));
    float *z = amalloc((size_t)F), *far = amalloc((size_t)big);
    uint64_t s = 88172645463325252ull;
    for (int64_t i = 0; i < n * F; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        q[i] = (float)(s >> 40) / 16777216.0f, k[i] = (float)((s >> 16) & 0xffffff) / 16777216.0f;
        x[i] = q[i] - 0.5f;
    }
    for (int64_t i = 0; i < F * lds; i++)
        P[i] = 0.5f + (float)(i % 7) / 7.0f;
    for (int64_t i = 0; i < n * Dv; i++)
        v[i] = (float)(i % 11) / 11.0f - 0.5f;
    for (int64_t i = 0; i < F * F; i++)
        wt[i] = (float)(i % 13) / 13.0f - 0.5f;
    for (int64_t i = 0; i < big; i++)
        far[i] = 1.0f;
    const char *fam;
    double peak[8] = {0}, best = 0;
    for (int fi = 0; (fam = attn_arch_available(fi)) != NULL && fi < 8; fi++) {
        peak[fi] = peak_of(fam);
        best = peak[fi] > best ? peak[fi] : best;
    }
    static const char *names[NKIND] = {"causal", "causal+ahead", "causal+hot", "proj", "perf_exp"};
    const double fl_causal = 2.0 * n * F * (Dv + 1) + (double)n * (n + 1.0) * (F + Dv + 1);
    const double fl_proj = 2.0 * n * F * F;
    printf("n=%lld F=Dv=%lld, best FMA peak %.1f GFLOP/s (1 thread, CPU time)\n", (long long)n,
           (long long)F, best / 1e9);
    for (int fi = 0; (fam = attn_arch_available(fi)) != NULL && fi < 8; fi++) {
        attn_status why;
        const attn__arch *a = attn__arch_find(fam, &why);
        if (!a) continue;
        for (int kind = 0; kind < NKIND; kind++) {
            int64_t reps = 1; /* doubled until a trial takes 20 ms (t = -1, untimed) */
            double t_best = 1e30;
            int64_t off = 0;
            for (int t = -1; t < 7; t++) {
                const double c0 = cpu_s();
                for (int64_t r = 0; r < reps; r++) {
                    attn_feat_ahead ah = {.ns = 4};
                    if (kind == CAUSAL_AHEAD || kind == CAUSAL_HOT) {
                        const int64_t o4 = kind == CAUSAL_HOT ? 0 : off;
                        for (int st = 0; st < 4; st++) {
                            ah.x[st] = far + o4 + st * n * F;
                            ah.ld[st] = F, ah.n[st] = n, ah.w[st] = F;
                        }
                        off = (off + 4 * n * F) % (big - 4 * n * F);
                    }
                    if (kind <= CAUSAL_HOT)
                        a->feat.causal(q, k, n, F, 1.0f, P, lds, v, Dv, Dv, o, Dv, ws,
                                       kind == CAUSAL ? NULL : &ah);
                    else if (kind == PROJ)
                        a->feat.proj(x, F, n, F, wt, F, 0.35f, u);
                    else
                        a->feat.perf_exp(u, n, F, x, F, F, 0.0625f, 0, 0.125f, z);
                }
                const double dt = (cpu_s() - c0) / (double)reps;
                if (t < 0) {
                    if (dt * (double)reps < 0.02 && reps < (1 << 20)) reps *= 2, t--;
                    continue;
                }
                t_best = dt < t_best ? dt : t_best;
            }
            if (kind == PEXP) {
                printf("%-7s %-13s %8.3f us/call, %.3f ns per element\n", fam, names[kind],
                       t_best * 1e6, t_best / (double)(n * F) * 1e9);
                continue;
            }
            const double g = (kind == PROJ ? fl_proj : fl_causal) / t_best;
            printf("%-7s %-13s %8.3f us/call, %6.1f GFLOP/s = %5.1f%% of this family's peak, "
                   "%5.1f%% of the best\n",
                   fam, names[kind], t_best * 1e6, g / 1e9, 100.0 * g / peak[fi], 100.0 * g / best);
        }
    }
    free(q), free(k), free(P), free(v), free(o), free(ws), free(x), free(wt), free(u), free(z);
    free(far);
    return 0;
}
