/* attn bench: this machine's fp32 FMA peak, then attention speed as % of it.
 *
 * The peak is measured with the kernel family in use (independent FMA chains
 * in registers, per thread), once for each thread count the run needs. Each
 * case is timed `reps` times after one warm-up call; the median is reported.
 * FLOPs follow the FlashAttention convention (attn_sdpa_flops: unmasked area
 * only; the backward counts 2.5x the forward). */
#include "cli.h"
#include "cli_time.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_MAX(a, b) ((a) > (b) ? (a) : (b))

typedef struct bench_opts {
    int json, causal, backward, grid, cpu_time;
    int threads; /* 0: the default grid's 1 and all */
    int B, H, T, S, D, Dv, reps;
    float density; /* > 0: a random block-sparse layout of this density */
    int block;     /* its block size */
} bench_opts;

typedef struct peak_entry {
    const char *arch;
    int threads;
    double gflops;
} peak_entry;

/* Wall clock, or with --cpu-time the process's CPU time: on a shared
 * machine that counts only the time this process's threads actually ran
 * (divided by the thread count where it matters). */
static int g_cpu_clock;

static double now_s(void) {
    return attn_cli_clock_s(g_cpu_clock ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC);
}

/* FMA peak of `nth` threads running the probe at once, in GFLOP/s: the best
 * of 15 trials of ~40 ms (the best, because a shared machine only ever slows
 * the probe down; it makes "% of peak" conservative). */
static double measure_peak(const char *arch, int nth) {
    /* size the trial: about 40 ms on one thread */
    int64_t iters = 1 << 16;
    for (;;) {
        double t0 = now_s();
        attn_arch_peak_probe(arch, iters);
        double dt = now_s() - t0;
        if (dt > 0.02 || iters > ((int64_t)1 << 40)) {
            iters = (int64_t)((double)iters * 0.04 / (dt > 1e-9 ? dt : 1e-9)) + 1;
            break;
        }
        iters *= 4;
    }
    double best = 0.0;
    for (int trial = 0; trial < 15; trial++) {
        double flops = 0.0;
        double t0 = now_s();
#pragma omp parallel num_threads(nth) reduction(+ : flops)
        { flops += attn_arch_peak_probe(arch, iters); }
        double dt = now_s() - t0;
        if (g_cpu_clock) dt /= nth;
        double g = flops / dt * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

static double peak_for(peak_entry *tab, int *ntab, const char *arch, int threads) {
    for (int i = 0; i < *ntab; i++)
        if (tab[i].threads == threads && !strcmp(tab[i].arch, arch)) return tab[i].gflops;
    double g = measure_peak(arch, threads);
    tab[*ntab].arch = arch;
    tab[*ntab].threads = threads;
    tab[*ntab].gflops = g;
    (*ntab)++;
    return g;
}

/* Deterministic uniform [-1, 1) fill (xorshift32). */
static void fill(float *x, size_t n, uint32_t seed) {
    uint32_t s = seed ? seed : 1u;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        x[i] = (float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

typedef struct bench_case {
    long B, H, T, S, D, Dv;
    int causal, threads, backward;
    float density; /* > 0: a random block-sparse layout (--density) */
    int block;     /* its block size (--block) */
} bench_case;

static void *xcalloc(size_t n) {
    return calloc(n ? n : 1, sizeof(float));
}

/* Time one case; returns 0, 1 on a runtime failure, or 3 when the pass is
 * not available in this build (reported, then skipped). */
static int run_case(attn_ctx *ctx, const bench_case *c, long reps, double *ms_out, double *gf_out,
                    long *reps_out) {
    size_t nq = (size_t)(c->B * c->H * c->T * c->D), nk = (size_t)(c->B * c->H * c->S * c->D);
    size_t nv = (size_t)(c->B * c->H * c->S * c->Dv), no = (size_t)(c->B * c->H * c->T * c->Dv);
    float *q = xcalloc(nq), *k = xcalloc(nk), *v = xcalloc(nv), *o = xcalloc(no);
    float *lse = xcalloc((size_t)(c->B * c->H * c->T));
    float *dout = NULL, *dq = NULL, *dk = NULL, *dv = NULL;
    int rc = 0;
    double *times = NULL;
    uint8_t *blocks = NULL;
    if (!q || !k || !v || !o || !lse) {
        rc = attn_cli_error(1, "out of memory for the benchmark tensors");
        goto done;
    }
    fill(q, nq, 1), fill(k, nk, 2), fill(v, nv, 3);
    attn_sdpa_args a;
    memset(&a, 0, sizeof a);
    a.q = attn_tensor_f32_4d(q, c->B, c->H, c->T, c->D);
    a.k = attn_tensor_f32_4d(k, c->B, c->H, c->S, c->D);
    a.v = attn_tensor_f32_4d(v, c->B, c->H, c->S, c->Dv);
    a.out = attn_tensor_f32_4d(o, c->B, c->H, c->T, c->Dv);
    int64_t lshape[3] = {c->B, c->H, c->T};
    a.lse = attn_tensor_make(lse, ATTN_F32, 3, lshape);
    a.causal = c->causal;
    /* a random block layout (fixed seed) of the requested density */
    attn_sdpa_layout lay = {0};
    if (c->density > 0.0f) {
        lay.bq = lay.bk = c->block;
        lay.nqb = (c->T + c->block - 1) / c->block, lay.nkb = (c->S + c->block - 1) / c->block;
        blocks = malloc((size_t)(lay.nqb * lay.nkb));
        if (!blocks) {
            rc = attn_cli_error(1, "out of memory for the layout");
            goto done;
        }
        uint32_t x = 12345u;
        for (int64_t e = 0; e < lay.nqb * lay.nkb; e++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            blocks[e] = (double)x / 4294967296.0 < (double)c->density;
        }
        lay.blocks = blocks;
        a.layout = &lay;
    }
    if (attn_ctx_set_threads(ctx, c->threads) != ATTN_OK) {
        rc = attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    attn_sdpa_grads g;
    memset(&g, 0, sizeof g);
    if (c->backward) {
        dout = xcalloc(no), dq = xcalloc(nq), dk = xcalloc(nk), dv = xcalloc(nv);
        if (!dout || !dq || !dk || !dv) {
            rc = attn_cli_error(1, "out of memory for the benchmark gradients");
            goto done;
        }
        fill(dout, no, 4);
        g.dout = attn_tensor_f32_4d(dout, c->B, c->H, c->T, c->Dv);
        g.dq = attn_tensor_f32_4d(dq, c->B, c->H, c->T, c->D);
        g.dk = attn_tensor_f32_4d(dk, c->B, c->H, c->S, c->D);
        g.dv = attn_tensor_f32_4d(dv, c->B, c->H, c->S, c->Dv);
    }
    /* warm-up (and, for the backward, the forward's out and lse) */
    attn_status st = attn_sdpa_forward(ctx, &a);
    if (st == ATTN_OK && c->backward) st = attn_sdpa_backward(ctx, &a, &g);
    if (st == ATTN_E_UNSUPPORTED) {
        fprintf(stderr, "attn: note: %s pass not available in this build (%s); skipped\n",
                c->backward ? "backward" : "forward", attn_ctx_last_error(ctx));
        rc = 3;
        goto done;
    }
    if (st != ATTN_OK) {
        rc = attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    /* reps 0: at least 3 runs, more while the total stays under ~1 s */
    long maxreps = reps > 0 ? reps : 50;
    times = malloc((size_t)maxreps * sizeof *times);
    if (!times) {
        rc = attn_cli_error(1, "out of memory");
        goto done;
    }
    long n = 0;
    double total = 0.0;
    while (n < maxreps && (reps > 0 || n < 3 || total < 1.0)) {
        double t0 = now_s();
        st = c->backward ? attn_sdpa_backward(ctx, &a, &g) : attn_sdpa_forward(ctx, &a);
        double dt = now_s() - t0;
        if (g_cpu_clock) dt /= c->threads;
        if (st != ATTN_OK) {
            rc = attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
            goto done;
        }
        times[n++] = dt;
        total += dt;
    }
    double med = attn_cli_median(times, (size_t)n);
    double flops = attn_sdpa_flops(&a) * (c->backward ? 2.5 : 1.0);
    *ms_out = med * 1e3;
    *gf_out = flops / med * 1e-9;
    *reps_out = n;
done:
    free(blocks);
    free(times);
    free(q), free(k), free(v), free(o), free(lse);
    free(dout), free(dq), free(dk), free(dv);
    return rc;
}

static void usage(FILE *f) {
    fprintf(f, "usage: attn bench [options]\n"
               "\n"
               "Measures this machine's fp32 FMA peak with the kernels in use (independent\n"
               "FMA chains in registers; best of 15 trials, once per thread count), then the\n"
               "median time of each attention case, its GFLOP/s and its %% of that peak.\n"
               "FLOPs: forward 2*B*H*T*S*(D+Dv) over the unmasked area only (causal counts\n"
               "about half); backward 2.5x the forward. Inputs are uniform in [-1, 1).\n"
               "\n"
               "options:\n"
               "  --json         one JSON object per case (pass, arch, clock, B, H, T, S,\n"
               "                 D, Dv, causal, threads, reps, ms, gflops, peak_gflops,\n"
               "                 pct_peak) instead of a table\n"
               "  --threads N    threads (0, the default: the grid runs 1 and all; a single\n"
               "                 case runs all; ATTN_NUM_THREADS sets 'all')\n"
               "  --causal       causal mask (top-left); with the grid, only its causal cases\n"
               "  --B b --H h --T t --S s --D d --Dv dv\n"
               "                 one case of this shape (defaults B=1 H=8 T=S=1024 D=Dv=64;\n"
               "                 S defaults to T, Dv to D)\n"
               "  --reps n       timed runs per case (default: at least 3, more up to\n"
               "                 ~1 s per case, at most 50)\n"
               "  --backward     time attn_sdpa_backward instead of the forward\n"
               "  --density F    block-sparse: a random layout computing this fraction of\n"
               "                 the (query block, key block) pairs (FLOPs count only those)\n"
               "  --block N      its block size (default 128)\n"
               "  --cpu-time     time with the process's CPU time divided by the thread\n"
               "                 count instead of the wall clock (peak and cases alike):\n"
               "                 on a shared machine it leaves out the time other\n"
               "                 processes held the cores; idle or spinning threads still\n"
               "                 count\n"
               "  -h, --help     this text\n"
               "\n"
               "Without shape options the default grid runs T=S in {512, 1024, 2048, 4096},\n"
               "D=Dv in {64, 128}, causal and not, on 1 thread and on all threads, B=1 H=8.\n"
               "The kernel family can be forced with ATTN_ARCH=scalar|avx2 (the scalar\n"
               "kernels run at a few GFLOP/s: give them a small shape, not the grid).\n"
               "Exit status: 0 ok, 1 runtime failure, 2 bad usage.\n");
}

/* Returns -1 to continue, else the exit status (0 for --help, 2 bad usage). */
static int parse_args(int argc, char **argv, bench_opts *o) {
    memset(o, 0, sizeof *o);
    /* shape options: 0 = not given (their range starts at 1) */
    const cli_opt opts[] = {
        {"--json", CLI_FLAG, &o->json, 0, 0, 0, NULL},
        {"--causal", CLI_FLAG, &o->causal, 0, 0, 0, NULL},
        {"--backward", CLI_FLAG, &o->backward, 0, 0, 0, NULL},
        {"--cpu-time", CLI_FLAG, &o->cpu_time, 0, 0, 0, NULL},
        CLI_OPT_THREADS(&o->threads),
        {"--B", CLI_INT, &o->B, 1, 1 << 24, 0, NULL},
        {"--H", CLI_INT, &o->H, 1, 1 << 24, 0, NULL},
        {"--T", CLI_INT, &o->T, 1, 1 << 24, 0, NULL},
        {"--S", CLI_INT, &o->S, 1, 1 << 24, 0, NULL},
        {"--D", CLI_INT, &o->D, 1, 1 << 24, 0, NULL},
        {"--Dv", CLI_INT, &o->Dv, 1, 1 << 24, 0, NULL},
        {"--reps", CLI_INT, &o->reps, 1, 1 << 24, 0, NULL},
        {"--density", CLI_FLOAT, &o->density, 0, 1, CLI_LO_OPEN, NULL},
        {"--block", CLI_INT, &o->block, 1, 1 << 20, 0, NULL},
    };
    const cli_spec spec = {"bench", opts, sizeof opts / sizeof opts[0], usage, CLI_POS_ANYWHERE, 0};
    int npos;
    int rc = attn_cli_parse(&spec, argc, argv, NULL, &npos);
    if (rc >= 0) return rc;
    o->grid = !(o->B || o->H || o->T || o->S || o->D || o->Dv);
    if (!o->B) o->B = 1;
    if (!o->H) o->H = 8;
    if (!o->T) o->T = 1024;
    if (!o->D) o->D = 64;
    if (!o->S) o->S = o->T;
    if (!o->Dv) o->Dv = o->D;
    if (!o->grid) {
        double elems = (double)o->B * (double)o->H * (double)BENCH_MAX(o->T, o->S) *
                       (double)BENCH_MAX(o->D, o->Dv);
        if (elems > 4e9)
            return attn_cli_error(
                2, "bench: case too large: B*H*max(T,S)*max(D,Dv) = %.0f elements", elems);
    }
    return -1;
}

int attn_cmd_bench(int argc, char **argv) {
    bench_opts o;
    int prc = parse_args(argc, argv, &o);
    if (prc >= 0) return prc;
    g_cpu_clock = o.cpu_time;
    const int block = o.block ? o.block : 128;

    attn_ctx *ctx = NULL;
    int rc_ctx = attn_cli_ctx(&ctx, 0);
    if (rc_ctx) return rc_ctx;
    int all = attn_ctx_threads(ctx);

    bench_case cases[64];
    int ncase = 0;
    if (o.grid) {
        static const long Ts[] = {512, 1024, 2048, 4096}, Ds[] = {64, 128};
        int tl[2] = {1, all}, ntl = all > 1 ? 2 : 1;
        if (o.threads) tl[0] = o.threads, ntl = 1;
        for (int ti = 0; ti < ntl; ti++)
            for (int di = 0; di < 2; di++)
                for (int c = o.causal; c < 2; c++) /* --causal: causal cases only */
                    for (int t = 0; t < 4; t++)
                        cases[ncase++] =
                            (bench_case){o.B, o.H,    Ts[t],      Ts[t],     Ds[di], Ds[di],
                                         c,   tl[ti], o.backward, o.density, block};
    } else {
        cases[ncase++] = (bench_case){o.B,        o.H,       o.T,      o.S,
                                      o.D,        o.Dv,      o.causal, o.threads ? o.threads : all,
                                      o.backward, o.density, block};
    }

    peak_entry peaks[128];
    int npeak = 0;
    const char *arch = attn_ctx_arch(ctx), *best = arch;
    for (int i = 0; attn_arch_available(i); i++)
        best = attn_arch_available(i);
    /* the peaks first, before any case heats the machine differently */
    for (int i = 0; i < ncase; i++) {
        peak_for(peaks, &npeak, arch, cases[i].threads);
        peak_for(peaks, &npeak, best, cases[i].threads);
    }
    if (!o.json) {
        printf("kernels: %s   best family here: %s   threads available: %d   clock: %s\n", arch,
               best, all, o.cpu_time ? "process CPU time / threads" : "wall");
        for (int i = 0; i < npeak; i++)
            printf("fp32 FMA peak, %s, %d thread%s: %.1f GFLOP/s\n", peaks[i].arch,
                   peaks[i].threads, peaks[i].threads > 1 ? "s" : "", peaks[i].gflops);
        printf("\n%-8s %3s %3s %6s %6s %4s %4s %-6s %3s %5s %10s %9s %7s %7s\n", "pass", "B", "H",
               "T", "S", "D", "Dv", "causal", "thr", "reps", "median_ms", "GFLOP/s", "%peak",
               "%best");
    }
    int rc = 0;
    for (int i = 0; i < ncase; i++) {
        const bench_case *c = &cases[i];
        double ms = 0, gf = 0;
        long n = 0;
        int r = run_case(ctx, c, o.reps, &ms, &gf, &n);
        if (r == 3) break; /* pass unavailable: reported once */
        if (r) {
            rc = r;
            break;
        }
        double pk = peak_for(peaks, &npeak, arch, c->threads);
        double pb = peak_for(peaks, &npeak, best, c->threads);
        const char *pass = c->backward ? "backward" : "forward";
        if (o.json)
            printf("{\"pass\":\"%s\",\"arch\":\"%s\",\"clock\":\"%s\",\"B\":%ld,\"H\":%ld,\"T\":%"
                   "ld,\"S\":%ld,"
                   "\"D\":%ld,\"Dv\":%ld,\"causal\":%s,\"threads\":%d,\"reps\":%ld,\"ms\":%.3f,"
                   "\"gflops\":%.2f,\"peak_gflops\":%.2f,\"pct_peak\":%.1f,\"best_arch\":\"%s\","
                   "\"best_peak_gflops\":%.2f,\"pct_best_peak\":%.1f}\n",
                   pass, arch, o.cpu_time ? "cpu" : "wall", c->B, c->H, c->T, c->S, c->D, c->Dv,
                   c->causal ? "true" : "false", c->threads, n, ms, gf, pk, 100.0 * gf / pk, best,
                   pb, 100.0 * gf / pb);
        else
            printf(
                "%-8s %3ld %3ld %6ld %6ld %4ld %4ld %-6s %3d %5ld %10.2f %9.1f %6.1f%% %6.1f%%\n",
                pass, c->B, c->H, c->T, c->S, c->D, c->Dv, c->causal ? "yes" : "no", c->threads, n,
                ms, gf, 100.0 * gf / pk, 100.0 * gf / pb);
        fflush(stdout);
    }
    attn_ctx_free(ctx);
    return rc;
}
