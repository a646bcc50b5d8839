/* The decode kernel alone (kernels/decode.h), its keys and values in cache:
 * what it costs per key when memory is not the limit, against the FMA peak
 * of its family measured the same way (CPU time, one thread).
 *
 * R query rows (4: a GQA group of 4, one new token), D = Dv, runs of --n
 * keys read again and again (--n 64: 64 KiB of fp32 K/V, in L1/L2), each
 * storage type, each kernel family this CPU runs. The FMA work per key is
 * 2 R (D + Dv) flops (the score and the P V products); the share of the
 * peak is that over the family's peak_fma rate. Best of 7 trials.
 *
 *   bench_decode_kernel [--n 64] [--d 128] [--r 4]
 */
#include "kernels/arch.h"
#include "kernels/half.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *amalloc(size_t bytes) {
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

int main(int argc, char **argv) {
    int n = 64, D = 128, R = 4;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--d"))
            D = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--r"))
            R = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_decode_kernel: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (n < 1 || D < 1 || R < 1 || R > ATTN__DEC_MAXR) {
        fprintf(stderr, "bench_decode_kernel: bad sizes\n");
        return 2;
    }
    /* 64-byte aligned, as the cache's pools and the workspace are (with
     * malloc's 16-byte alignment every 64-byte load splits two lines) */
    float *q = amalloc((size_t)(R * D) * sizeof *q), *acc = amalloc((size_t)(R * D) * sizeof *acc);
    float *s = amalloc((size_t)ATTN__DEC_SCRATCH(R, n) * sizeof *s);
    float *kf = amalloc((size_t)n * D * sizeof *kf), *vf = amalloc((size_t)n * D * sizeof *vf);
    uint16_t *kh = amalloc((size_t)n * D * 2), *vh = amalloc((size_t)n * D * 2);
    uint16_t *kb = amalloc((size_t)n * D * 2), *vb = amalloc((size_t)n * D * 2);
    if (!q || !acc || !s || !kf || !vf || !kh || !vh || !kb || !vb) return 1;
    uint64_t x = 88172645463325252ull;
    for (int64_t i = 0; i < (int64_t)n * D; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        kf[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
        vf[i] = (float)((double)(x >> 40) / 16777216.0 - 0.5);
        kh[i] = attn__f2h(kf[i]), vh[i] = attn__f2h(vf[i]);
        kb[i] = attn__f2bf(kf[i]), vb[i] = attn__f2bf(vf[i]);
    }
    for (int i = 0; i < R * D; i++)
        q[i] = kf[i] * 0.5f;
    int lim[ATTN__DEC_MAXR];
    for (int r = 0; r < R; r++)
        lim[r] = n;
    const char *fam;
    static const char *dts[] = {"f32", "f16", "bf16"};
    for (int fi = 0; (fam = attn_arch_available(fi)) != NULL; fi++) {
        attn_status why;
        const attn__arch *a = attn__arch_find(fam, &why);
        if (!a) continue;
        /* the family's FMA peak by CPU time, best of 7 */
        double peak = 0;
        for (int t = 0; t < 7; t++) {
            double c0 = cpu_s();
            double fl = attn_arch_peak_probe(fam, 20000000);
            double r = fl / (cpu_s() - c0);
            peak = r > peak ? r : peak;
        }
        for (int dt = 0; dt < 3; dt++) {
            const void *k = dt == 0 ? (const void *)kf : dt == 1 ? (const void *)kh : kb;
            const void *v = dt == 0 ? (const void *)vf : dt == 1 ? (const void *)vh : vb;
            /* calls per trial: doubled until a trial takes 20 ms */
            int calls = 1;
            for (;;) {
                float m[ATTN__DEC_MAXR], l[ATTN__DEC_MAXR];
                for (int r = 0; r < R; r++)
                    m[r] = -INFINITY, l[r] = 0.0f;
                double c0 = cpu_s();
                for (int c = 0; c < calls; c++)
                    a->dec.attend(q, R, D, k, D, v, D, D, dt, n, lim, m, l, acc, s);
                if (cpu_s() - c0 >= 0.02 || calls > (1 << 24)) break;
                calls *= 2;
            }
            double best = 1e30;
            for (int t = 0; t < 7; t++) {
                float m[ATTN__DEC_MAXR], l[ATTN__DEC_MAXR];
                for (int r = 0; r < R; r++)
                    m[r] = -INFINITY, l[r] = 0.0f;
                memset(acc, 0, (size_t)(R * D) * sizeof *acc);
                double c0 = cpu_s();
                for (int c = 0; c < calls; c++)
                    a->dec.attend(q, R, D, k, D, v, D, D, dt, n, lim, m, l, acc, s);
                double ns = (cpu_s() - c0) / ((double)calls * n) * 1e9;
                if (!(l[0] > 0)) return 1; /* keep the work observable */
                best = ns < best ? ns : best;
            }
            const double flops = 4.0 * R * D; /* 2 R D for q.k, 2 R Dv for p v */
            printf("%-7s %-7s %-4s R=%d D=%d n=%d: %6.2f ns/key, %6.1f GFLOP/s = %5.1f%% of "
                   "the FMA peak (%.1f GFLOP/s)\n",
                   fam, a->dec.name, dts[dt], R, D, n, best, flops / best,
                   100.0 * flops / best / (peak / 1e9), peak / 1e9);
        }
    }
    free(q), free(acc), free(s), free(kf), free(vf), free(kh), free(vh), free(kb), free(vb);
    return 0;
}
