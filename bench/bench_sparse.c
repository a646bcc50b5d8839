/* Sparse exact attention against dense, side by side in one run: a
 * Longformer pattern (a token-level window plus global tokens) and/or a
 * random block-sparse layout, forward or backward, against the dense kernel
 * on the same tensors. Rounds alternate sparse and dense (so a busy machine
 * slows both alike); medians are printed, with
 *   visible  the fraction of (query, key) pairs the rules keep (FLOPs)
 *   tiles    the fraction the kernels compute: the query strips' key
 *            segments from the tile classifier (ops/sdpa_mask), which
 *            include the masked keys of partial tiles (strips of the
 *            family's forward or backward heights)
 *   GFLOP/s  of the visible pairs, as % of the dense run's and of the
 *            family's FMA peak (measured here, best of 15 probes)
 *
 *   bench_sparse [--T 16384] [--H 8] [--D 64] [--window W] [--globals G]
 *                [--density F --block N] [--backward] [--reps R]
 *                [--threads 1] [--cpu-time] [--tiles-only]
 * --window W: keys within W of the query on each side; --globals G: the
 * first G tokens global (Longformer's [CLS]-like tokens); --density F: a
 * random block layout of that density (fixed seed, as `attn bench`).
 * Links the internal library only to count the classifier's tiles. */
#include <attn/attn.h>

#include "core/internal.h"
#include "kernels/arch.h"
#include "ops/sdpa_mask.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_cpu;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(g_cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
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

static void fill(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (float)(s >> 40) * (2.0f / 16777216.0f) - 1.0f;
    }
}

/* Start of the next strip: the forward's attn__fwd_strip_next (up to mr
 * rows, heights in multiples of the family's mrq), the backward's
 * attn__bwd_strip_next (up to bmr rows, multiples of bmrq). */
static int64_t next_strip(const attn__sdpa_plan *p, int mr, int mrq, int64_t i0, int backward) {
    if (backward) return attn__bwd_strip_next(p, mr, mrq, i0);
    return attn__fwd_strip_next(p, mr, mrq, i0);
}

/* Pairs the strips compute (a strip's kernel rows x its segments' keys):
 * a forward strip computes its rows rounded up to the family's mrq, a
 * backward strip (up to bmr rows) its rows rounded up to bmrq. */
static double tile_pairs(attn_ctx *ctx, const attn_sdpa_args *a, int mr, int backward) {
    attn__sdpa_plan p;
    attn__glob glob;
    if (attn__sdpa_plan_make(ctx, a, 0, &p) || attn__mask_glob_build(ctx, &p, &glob)) return -1;
    attn__seg *seg = malloc((size_t)attn__mask_seg_cap(&p) * sizeof *seg);
    int64_t lo[512], hi[512];
    double n = 0;
    const int64_t nh = p.lay && p.lhs ? p.H : 1;
    const int mrq = backward ? ctx->arch->bmrq : ctx->arch->mrq;
    for (int64_t h = 0; h < nh; h++)
        for (int64_t i0 = 0; i0 < p.T; i0 = next_strip(&p, mr, mrq, i0, backward)) {
            attn__strip_mask sm = {.lo = lo, .hi = hi, .seg = seg};
            const int rows = (int)(next_strip(&p, mr, mrq, i0, backward) - i0);
            /* the kernels' row group */
            const int unit = mrq;
            const int tall = (rows + unit - 1) / unit * unit;
            attn__mask_strip(&p, 0, h, i0, rows, &sm);
            for (int k = 0; k < sm.nseg; k++)
                n += (double)tall * (double)(sm.seg[k].b - sm.seg[k].a);
        }
    free(seg);
    attn__mask_glob_free(&glob);
    return n * (double)(p.H / nh) * (double)p.B;
}

int main(int argc, char **argv) {
    long T = 16384, H = 8, D = 64, window = -1, globals = 0, block = 128, reps = 3, threads = 1;
    double density = 0;
    int backward = 0, tiles_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : "0";
        if (!strcmp(o, "--backward"))
            backward = 1;
        else if (!strcmp(o, "--cpu-time"))
            g_cpu = 1;
        else if (!strcmp(o, "--tiles-only"))
            tiles_only = 1;
        else if (!strcmp(o, "--T"))
            T = atol(v), i++;
        else if (!strcmp(o, "--H"))
            H = atol(v), i++;
        else if (!strcmp(o, "--D"))
            D = atol(v), i++;
        else if (!strcmp(o, "--window"))
            window = atol(v), i++;
        else if (!strcmp(o, "--globals"))
            globals = atol(v), i++;
        else if (!strcmp(o, "--density"))
            density = atof(v), i++;
        else if (!strcmp(o, "--block"))
            block = atol(v), i++;
        else if (!strcmp(o, "--reps"))
            reps = atol(v), i++;
        else if (!strcmp(o, "--threads"))
            threads = atol(v), i++;
        else {
            fprintf(stderr, "bench_sparse: unknown option %s (see the source's header)\n", o);
            return 2;
        }
    }
    if (T < 1 || H < 1 || D < 1 || reps < 1 || threads < 1 || block < 1 || globals < 0 ||
        globals > T || density < 0 || density > 1) {
        fprintf(stderr, "bench_sparse: bad sizes\n");
        return 2;
    }
    attn_ctx *ctx;
    if (attn_ctx_create(&ctx, (int)threads)) return 1;
    const size_t n = (size_t)(H * T * D), nl = (size_t)(H * T);
    float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *o = malloc(n * 4);
    float *lse = malloc(nl * 4), *dout = malloc(n * 4), *dq = malloc(n * 4), *dk = malloc(n * 4),
          *dv = malloc(n * 4);
    uint8_t *gt = calloc((size_t)T, 1);
    if (!q || !k || !v || !o || !lse || !dout || !dq || !dk || !dv || !gt) return 1;
    fill(q, n, 1), fill(k, n, 2), fill(v, n, 3), fill(dout, n, 4);
    attn_sdpa_args dense;
    memset(&dense, 0, sizeof dense);
    dense.q = attn_tensor_f32_4d(q, 1, H, T, D);
    dense.k = attn_tensor_f32_4d(k, 1, H, T, D);
    dense.v = attn_tensor_f32_4d(v, 1, H, T, D);
    dense.out = attn_tensor_f32_4d(o, 1, H, T, D);
    dense.lse = attn_tensor_make(lse, ATTN_F32, 3, (int64_t[]){1, H, T});
    attn_sdpa_args sp = dense;
    if (window >= 0) sp.window = 1, sp.window_left = sp.window_right = window;
    for (long j = 0; j < globals; j++)
        gt[j] = 1;
    if (globals) sp.global_tokens = attn_tensor_make(gt, ATTN_U8, 1, (int64_t[]){T});
    attn_sdpa_layout lay = {0};
    uint8_t *blocks = NULL;
    if (density > 0) { /* the random layout of `attn bench --density` */
        lay.bq = lay.bk = block;
        lay.nqb = lay.nkb = (T + block - 1) / block;
        blocks = malloc((size_t)(lay.nqb * lay.nkb));
        uint32_t x = 12345u;
        for (int64_t e = 0; e < lay.nqb * lay.nkb; e++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            blocks[e] = (double)x / 4294967296.0 < density;
        }
        lay.blocks = blocks;
        sp.layout = &lay;
    }
    attn_sdpa_grads g = {.dout = attn_tensor_f32_4d(dout, 1, H, T, D),
                         .dq = attn_tensor_f32_4d(dq, 1, H, T, D),
                         .dk = attn_tensor_f32_4d(dk, 1, H, T, D),
                         .dv = attn_tensor_f32_4d(dv, 1, H, T, D)};
    const double fd = attn_sdpa_flops(&dense) * (backward ? 2.5 : 1.0);
    const double fs = attn_sdpa_flops(&sp) * (backward ? 2.5 : 1.0);
    const int mr = backward ? ctx->arch->bmr : ctx->arch->mr;
    const double tiles = tile_pairs(ctx, &sp, mr, backward) / ((double)H * (double)T * (double)T);
    if (tiles_only) { /* the fractions alone, no timing */
        printf("%s strips of up to %d rows: visible %.4f tiles %.4f\n",
               backward ? "backward" : "forward", mr, fs / fd, tiles);
        return 0;
    }
    /* the peak: best of 15 probes of ~40 ms on each of the threads */
    const char *arch = attn_ctx_arch(ctx);
    int64_t iters = 1 << 16;
    for (;;) {
        double t0 = now_s();
        attn_arch_peak_probe(arch, iters);
        double dt = now_s() - t0;
        if (dt > 0.02) {
            iters = (int64_t)((double)iters * 0.04 / dt) + 1;
            break;
        }
        iters *= 4;
    }
    double peak = 0;
    for (int t = 0; t < 15; t++) {
        double t0 = now_s(), fl = attn_arch_peak_probe(arch, iters), dt = now_s() - t0;
        if (fl / dt * 1e-9 > peak) peak = fl / dt * 1e-9;
    }
    peak *= (double)threads; /* per-thread probe, the threads run apart */
    double *ts = malloc((size_t)reps * sizeof *ts), *td = malloc((size_t)reps * sizeof *td);
    /* forward outputs for the backward: each pass's own, computed once */
    for (long r = -1; r < reps; r++) { /* round -1: warm-up */
        for (int which = 0; which < 2; which++) {
            attn_sdpa_args *a = which ? &dense : &sp;
            attn_status st = attn_sdpa_forward(ctx, a);
            double t0 = now_s();
            if (backward && !st) st = attn_sdpa_backward(ctx, a, &g);
            if (!backward && !st) {
                t0 = now_s();
                st = attn_sdpa_forward(ctx, a);
            }
            double dt = (now_s() - t0) / (g_cpu ? (double)threads : 1.0);
            if (st) {
                fprintf(stderr, "bench_sparse: %s\n", attn_ctx_last_error(ctx));
                return 1;
            }
            if (r >= 0) (which ? td : ts)[r] = dt;
        }
    }
    const double ms = median(ts, (int)reps) * 1e3, md = median(td, (int)reps) * 1e3;
    const double gs = fs / ms * 1e-6, gd = fd / md * 1e-6;
    printf("%s T=S=%ld H=%ld D=%ld threads=%ld arch=%s window=%ld globals=%ld density=%g block=%ld "
           "reps=%ld %s, strips of up to %d rows\n",
           backward ? "backward" : "forward", T, H, D, threads, arch, window, globals, density,
           block, reps, g_cpu ? "cpu-time" : "wall", mr);
    printf("  peak %.1f GFLOP/s\n", peak);
    printf("  dense   %9.1f ms  %6.1f GFLOP/s  %5.1f%% of peak\n", md, gd, 100 * gd / peak);
    printf("  sparse  %9.1f ms  %6.1f GFLOP/s  %5.1f%% of peak  %5.1f%% of dense's GFLOP/s\n", ms,
           gs, 100 * gs / peak, 100 * gs / gd);
    printf("  visible %.4f  tiles %.4f  time/dense %.4f  (target 1.25 x visible = %.4f)\n", fs / fd,
           tiles, ms / md, 1.25 * fs / fd);
    free(q), free(k), free(v), free(o), free(lse), free(dout), free(dq), free(dk), free(dv);
    free(gt), free(blocks), free(ts), free(td);
    attn_ctx_free(ctx);
    return 0;
}
