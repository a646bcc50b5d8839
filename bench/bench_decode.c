/* Decode attention through the paged KV cache against the machine's
 * streaming read bandwidth, measured side by side in one run.
 *
 * One sequence of --ctx positions in a cache of Hkv heads x D (Dv = D),
 * blocks of --bs, storage --dtype; one new query token of H heads. A decode
 * step must read every cached K and V byte once: ctx * Hkv * 2D * elem
 * bytes. The probe reads a buffer far larger than the caches (--probe-mib)
 * with the same thread count, summing its 64-bit words (every byte read,
 * nothing written). Rounds alternate probe and decode; medians are printed,
 * and decode's rate as % of the probe's, by the wall clock and by CPU time
 * (per thread), and the median of each round's decode/probe ratio (paired:
 * less moved by load that changes between rounds). A second probe, the
 * same read with 512-bit loads and four sums (on CPUs with AVX-512), checks
 * the first: on the Zen 5 of docs/PERFORMANCE.md it reads 13-20% faster,
 * so it is the fairer ceiling and both ratios are printed.
 *
 *   bench_decode [--ctx 32768] [--hkv 8] [--h 32] [--d 128] [--bs 16]
 *                [--dtype f32|f16|bf16] [--threads N] [--reps R] [--probe-mib M]
 *                [--thp 0|1]
 *
 * The cache's pools and the probe's buffer both ask for transparent huge
 * pages (madvise); --thp 0 turns them off for the process (prctl
 * PR_SET_THP_DISABLE), so both sides run on 4 KiB pages.
 */
#define _DEFAULT_SOURCE 1 /* madvise, MADV_HUGEPAGE */

#include <attn/attn.h>

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the whole process (all threads). */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Streaming read of n words by nth threads, each a contiguous share; the
 * sums go to *sink so nothing is elided. Returns seconds. */
static double probe(const uint64_t *buf, size_t n, int nth, uint64_t *sink) {
    uint64_t tot = 0;
    double t0 = now_s();
#pragma omp parallel num_threads(nth) reduction(+ : tot)
    {
        const int t = omp_get_thread_num(), k = omp_get_num_threads();
        const size_t a = n / (size_t)k * (size_t)t, e = t == k - 1 ? n : n / (size_t)k * (size_t)(t + 1);
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        for (size_t i = a; i + 8 <= e; i += 8) {
            s0 += buf[i], s1 += buf[i + 1], s2 += buf[i + 2], s3 += buf[i + 3];
            s4 += buf[i + 4], s5 += buf[i + 5], s6 += buf[i + 6], s7 += buf[i + 7];
        }
        tot += s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
    }
    double dt = now_s() - t0;
    *sink += tot;
    return dt;
}

/* The same read with 512-bit loads (AVX-512 when the CPU has it, else
 * nothing is measured): a check that the scalar probe is not limited by
 * its own instructions rather than by memory. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static double probe512(const uint64_t *buf, size_t n, int nth,
                                                          uint64_t *sink) {
    uint64_t tot = 0;
    double t0 = now_s();
#pragma omp parallel num_threads(nth) reduction(+ : tot)
    {
        const int t = omp_get_thread_num(), k = omp_get_num_threads();
        const size_t a = n / (size_t)k * (size_t)t, e = t == k - 1 ? n : n / (size_t)k * (size_t)(t + 1);
        __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
        for (size_t i = a; i + 32 <= e; i += 32) {
            s0 = _mm512_add_epi64(s0, _mm512_loadu_si512(buf + i));
            s1 = _mm512_add_epi64(s1, _mm512_loadu_si512(buf + i + 8));
            s2 = _mm512_add_epi64(s2, _mm512_loadu_si512(buf + i + 16));
            s3 = _mm512_add_epi64(s3, _mm512_loadu_si512(buf + i + 24));
        }
        tot += (uint64_t)_mm512_reduce_add_epi64(
            _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
    }
    double dt = now_s() - t0;
    *sink += tot;
    return dt;
}
static int have512(void) {
    return __builtin_cpu_supports("avx512f");
}
#else
static double probe512(const uint64_t *buf, size_t n, int nth, uint64_t *sink) {
    return probe(buf, n, nth, sink);
}
static int have512(void) {
    return 0;
}
#endif

static int fail(attn_ctx *ctx, const char *what) {
    fprintf(stderr, "bench_decode: %s: %s\n", what, attn_ctx_last_error(ctx));
    return 1;
}

int main(int argc, char **argv) {
    int64_t ctxlen = 32768, Hkv = 8, H = 32, D = 128, bs = 16, probe_mib = 1024;
    int threads = 1, reps = 15, thp = 1;
    attn_dtype dt = ATTN_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_decode: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--ctx")) ctxlen = atoll(v);
        else if (!strcmp(a, "--hkv")) Hkv = atoll(v);
        else if (!strcmp(a, "--h")) H = atoll(v);
        else if (!strcmp(a, "--d")) D = atoll(v);
        else if (!strcmp(a, "--bs")) bs = atoll(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--reps")) reps = atoi(v);
        else if (!strcmp(a, "--probe-mib")) probe_mib = atoll(v);
        else if (!strcmp(a, "--thp")) thp = atoi(v);
        else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "f32")) dt = ATTN_F32;
            else if (!strcmp(v, "f16")) dt = ATTN_F16;
            else if (!strcmp(v, "bf16")) dt = ATTN_BF16;
            else {
                fprintf(stderr, "bench_decode: --dtype must be f32, f16 or bf16\n");
                return 2;
            }
        } else {
            fprintf(stderr, "bench_decode: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (ctxlen < 1 || Hkv < 1 || H < Hkv || H % Hkv || D < 1 || bs < 1 || threads < 1 ||
        reps < 1 || probe_mib < 1) {
        fprintf(stderr, "bench_decode: bad sizes\n");
        return 2;
    }
#if defined(__linux__) && defined(PR_SET_THP_DISABLE)
    if (!thp && prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "bench_decode: --thp 0: prctl(PR_SET_THP_DISABLE) failed\n");
        return 1;
    }
#else
    if (!thp) {
        fprintf(stderr, "bench_decode: --thp 0 needs Linux\n");
        return 2;
    }
#endif
    attn_ctx *ctx;
    if (attn_ctx_create(&ctx, threads)) return fail(ctx, "context");
    attn_kvcache_config cfg = {Hkv, D, D, bs, (ctxlen + bs - 1) / bs, dt, 1};
    attn_kvcache *c;
    if (attn_kvcache_create(ctx, &cfg, &c)) return fail(ctx, "cache");
    int32_t seq;
    if (attn_kvcache_seq_new(ctx, c, &seq)) return fail(ctx, "seq");
    const int64_t piece = 1024;
    float *kx = malloc((size_t)(Hkv * piece * D) * sizeof *kx);
    float *vx = malloc((size_t)(Hkv * piece * D) * sizeof *vx);
    float *qx = malloc((size_t)(H * D) * sizeof *qx), *ox = malloc((size_t)(H * D) * sizeof *ox);
    size_t nw = (size_t)probe_mib << 17; /* 64-bit words */
    /* the probe's buffer as the cache's pools: 2 MiB aligned, huge pages
     * advised, so both sides get the same pages */
    uint64_t *buf = aligned_alloc((size_t)2 << 20, nw * sizeof *buf);
#ifdef MADV_HUGEPAGE
    if (buf) (void)madvise(buf, nw * sizeof *buf, MADV_HUGEPAGE);
#endif
    if (!kx || !vx || !qx || !ox || !buf) {
        fprintf(stderr, "bench_decode: out of memory\n");
        return 1;
    }
    uint64_t x = 88172645463325252ull;
    for (int64_t i = 0; i < Hkv * piece * D; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        kx[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
        vx[i] = (float)((double)(x >> 13 & 0xffff) / 65536.0 - 0.5);
    }
    for (int64_t i = 0; i < H * D; i++)
        qx[i] = kx[i] * 2.0f;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < nw; i++)
        buf[i] = i * 0x9e3779b97f4a7c15ull;
    for (int64_t done = 0; done < ctxlen; done += piece) {
        int64_t n = ctxlen - done < piece ? ctxlen - done : piece;
        int64_t sh[3] = {Hkv, n, D};
        attn_tensor k = attn_tensor_make(kx, ATTN_F32, 3, sh), v = attn_tensor_make(vx, ATTN_F32, 3, sh);
        k.stride[0] = v.stride[0] = piece * D;
        if (attn_kvcache_append(ctx, c, seq, k, v, NULL)) return fail(ctx, "append");
    }
    attn_kvcache_attend_args a = {attn_tensor_f32_4d(qx, 1, H, 1, D),
                                  attn_tensor_f32_4d(ox, 1, H, 1, D),
                                  {0},
                                  &seq,
                                  0.0f,
                                  1,
                                  {0}};
    const double esz = dt == ATTN_F32 ? 4.0 : 2.0;
    const double kvbytes = (double)ctxlen * (double)Hkv * 2.0 * (double)D * esz;
    double *tp = malloc((size_t)reps * sizeof *tp), *td = malloc((size_t)reps * sizeof *td);
    double *cp = malloc((size_t)reps * sizeof *cp), *cd = malloc((size_t)reps * sizeof *cd);
    double *c5 = malloc((size_t)reps * sizeof *c5), *rr = malloc((size_t)reps * sizeof *rr);
    const int v512 = have512();
    uint64_t sink = 0;
    if (attn_kvcache_attend(ctx, c, &a)) return fail(ctx, "attend"); /* warm-up */
    probe(buf, nw, threads, &sink);
    for (int r = 0; r < reps; r++) {
        double c0 = cpu_s();
        tp[r] = probe(buf, nw, threads, &sink);
        double c1 = cpu_s(), t0 = now_s();
        if (attn_kvcache_attend(ctx, c, &a)) return fail(ctx, "attend");
        td[r] = now_s() - t0;
        cd[r] = (cpu_s() - c1) / threads; /* per thread: busy threads share the work */
        cp[r] = (c1 - c0) / threads;
        rr[r] = cp[r] / cd[r] * kvbytes / ((double)nw * 8.0); /* this round's decode / probe */
        if (v512) {
            double c2 = cpu_s();
            probe512(buf, nw, threads, &sink);
            c5[r] = (cpu_s() - c2) / threads;
        }
    }
    const double bw = (double)nw * 8.0 / median(tp, reps) / 1e9;
    const double dmed = median(td, reps), dbw = kvbytes / dmed / 1e9;
    const double bwc = (double)nw * 8.0 / median(cp, reps) / 1e9;
    const double dbwc = kvbytes / median(cd, reps) / 1e9;
    printf("decode ctx=%lld Hkv=%lld H=%lld D=%lld bs=%lld dtype=%s threads=%d arch=%s reps=%d "
           "thp=%d\n",
           (long long)ctxlen, (long long)Hkv, (long long)H, (long long)D, (long long)bs,
           attn_dtype_name(dt), threads, attn_arch_name(), reps, thp);
    printf("  streaming read probe: %.2f GB/s (median, %lld MiB buffer)\n", bw,
           (long long)probe_mib);
    printf("  decode step: %.3f ms median, K/V %.1f MiB -> %.2f GB/s = %.1f%% of the probe\n",
           dmed * 1e3, kvbytes / 1048576.0, dbw, 100.0 * dbw / bw);
    printf("  by CPU time (per thread): probe %.2f GB/s, decode %.2f GB/s = %.1f%% of the probe\n",
           bwc, dbwc, 100.0 * dbwc / bwc);
    printf("  by CPU time, median of the rounds' decode/probe ratios: %.1f%%\n",
           100.0 * median(rr, reps));
    if (v512) {
        const double b5 = (double)nw * 8.0 / median(c5, reps) / 1e9;
        printf("  by CPU time: the probe with 512-bit loads %.2f GB/s (decode = %.1f%% of it)\n", b5,
               100.0 * dbwc / b5);
    }
    if (sink == 42) printf(" \n");
    free(c5), free(rr);
    free(tp), free(td), free(cp), free(cd), free(kx), free(vx), free(qx), free(ox), free(buf);
    attn_kvcache_free(c);
    attn_ctx_free(ctx);
    return 0;
}
