/* attn compare: exact attention and every cheaper method on the same inputs
 * over a length sweep: time, peak memory, FLOPs done and error against exact
 * attention (max abs, relative Frobenius and, for the sparse and top-k
 * methods, the share of each row's exact probability mass their pattern
 * keeps).
 *
 * Each (method, length) runs in a child process (fork): its peak memory is
 * the child's high-water resident set minus its resident set at the start,
 * so it counts every byte the method touched (workspace, GEMM buffers, the
 * output), and a method that fails cannot disturb the others. The exact
 * output and log-sum-exp the errors are measured against are computed once
 * per length in the parent. Inputs [1, H, T, D] from --seed: q, k, v ~
 * N(0, 1), or (--inputs smooth) q and k varying smoothly along the sequence. */
#include "bert_methods.h"
#include "cli.h"
#include "cli_time.h"
#include "compare_model.h"
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXT 16
#define CMP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define NMETH 13

typedef struct method {
    const char *name;
    int kind; /* 0 exact, 1 block-sparse window, 2 bigbird, 3 approx */
    attn_approx_method am;
    int64_t param; /* m, landmarks, k */
} method;

static const method g_methods[NMETH] = {
    {"exact", 0, ATTN_APPROX_NONE, 0},
    {"window", 1, ATTN_APPROX_NONE, 0},
    {"bigbird", 2, ATTN_APPROX_NONE, 0},
    {"linear", 3, ATTN_APPROX_LINEAR, 0},
    {"performer-64", 3, ATTN_APPROX_PERFORMER, 64},
    {"performer-128", 3, ATTN_APPROX_PERFORMER, 128},
    {"performer-256", 3, ATTN_APPROX_PERFORMER, 256},
    {"nystrom-32", 3, ATTN_APPROX_NYSTROM, 32},
    {"nystrom-64", 3, ATTN_APPROX_NYSTROM, 64},
    {"nystrom-128", 3, ATTN_APPROX_NYSTROM, 128},
    {"topk-32", 3, ATTN_APPROX_TOPK, 32},
    {"topk-64", 3, ATTN_APPROX_TOPK, 64},
    {"", -1, ATTN_APPROX_NONE, 0},
};

typedef struct result {
    int ok;
    double time_s, flops, mem_mb, max_abs, rel_fro, coverage; /* NaN: not measured */
} result;

typedef struct opts {
    const char *tlist, *mlist, *plot, *inputs;
    int H, D, threads, reps, json, block, window, max_exact, cpu_time, smooth, causal;
    uint64_t seed;
    const char *model, *input; /* --model, --input: real inputs (compare_model.c) */
    int quality, layer;
    const char *draws; /* --draws (with --quality) */
} opts;

static void usage(FILE *f) {
    fprintf(f, "usage: attn compare [options]\n"
               "Exact attention and each cheaper method on the same random inputs over a\n"
               "length sweep: time (median), peak memory (child RSS high-water delta),\n"
               "FLOPs, and error against exact attention.\n"
               "  --T LIST         lengths, comma-separated (default 1024,2048,4096)\n"
               "  --H N            heads (default 8)   --D N  head dim (default 64)\n"
               "  --methods LIST   a subset of: exact, window, bigbird, linear,\n"
               "                   performer-64, performer-128, performer-256, nystrom-32,\n"
               "                   nystrom-64, nystrom-128, topk-32, topk-64 (default all)\n"
               "  --block N        block size of the block-sparse layouts (default 64)\n"
               "  --window N       window half-width in blocks (default 2; bigbird uses\n"
               "                   window 1, 1 global block, 2 random blocks)\n"
               "  --max-exact N    above this length, no exact reference: errors are not\n"
               "                   measured and exact is not timed (default 16384)\n"
               "  --reps N         timed runs per case after one warm-up run, median\n"
               "                   reported (default 3); a warm-up over 5 s is the time\n"
               "  --threads N      threads (default: ATTN_NUM_THREADS or all cores)\n"
               "  --seed N         input seed (default 1)\n"
               "  --cpu-time       time with the process's CPU clock (all its threads), not\n"
               "                   the wall clock: on a shared machine it counts only the\n"
               "                   time the method actually ran (use with --threads 1)\n"
               "  --inputs KIND    random: q, k, v ~ N(0, 1) (default); smooth: q and k\n"
               "                   low-frequency sinusoids per channel plus noise (nearby\n"
               "                   tokens alike, as in text), v ~ N(0, 1)\n"
               "  --causal         causal attention (exact, window, bigbird, linear and\n"
               "                   Performer; Nystrom and top-k are skipped)\n"
               "  --json           one JSON object per (method, length) instead of a table\n"
               "  --plot FILE      also write time vs N and error vs N charts, as SVG\n"
               "                   (FILE.svg) or PNG (FILE.png)\n"
               "Real inputs from a sentence model (all-MiniLM-L6-v2 by default):\n"
               "  --model DIR      a BERT model directory (default: the installed\n"
               "                   all-MiniLM-L6-v2; see attn embed --help)\n"
               "  --input TEXTS    one text per line. Without --quality: q, k, v are the\n"
               "                   model's own at --layer for every token of the texts,\n"
               "                   in order, tiled until N tokens (H and D are the\n"
               "                   model's: --H and --D are refused)\n"
               "  --layer L        the layer whose q, k, v are taken (from 0; default 0)\n"
               "  --quality        instead of timing attention: embed the texts with exact\n"
               "                   attention and with each method in every layer of the\n"
               "                   model; per method the mean and min cosine to the exact\n"
               "                   embeddings, the Spearman correlation of the pairwise\n"
               "                   similarities, FLOPs, token-layers and time (--reps,\n"
               "                   --cpu-time, --threads, --json apply; --seed seeds\n"
               "                   BigBird and Performer; --draws shared|layer|head\n"
               "                   gives them one draw for every layer and head (the\n"
               "                   default), one per layer, or per layer and head, unless\n"
               "                   a name says +draws-MODE; --plot\n"
               "                   FILE.svg charts mean cosine against FLOPs and time,\n"
               "                   each relative to exact's). --methods takes these\n"
               "                   names (default: several of each):\n");
    bert_method_help(f, 4);
}

/* Parse "a,b,c" into v (at most max), each in [lo, hi]. Returns the count, -1 on error. */
static int parse_list(const char *s, int64_t *v, int max, int64_t lo, int64_t hi) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long long x = strtoll(p, &end, 10);
        if (end == p || (*end && *end != ',') || x < lo || x > hi || n == max) return -1;
        v[n++] = x;
        p = *end ? end + 1 : end;
    }
    return n;
}

static double rss_mb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return NAN;
    char line[256];
    double v = NAN;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl)) {
            v = atof(line + fl + 1) / 1024.0;
            break;
        }
    fclose(f);
    return v;
}

/* Reset the high-water mark so the child's peak is its own (Linux 4.0+:
 * writing 5 to clear_refs resets VmHWM to the current RSS). */
static void reset_hwm(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static float *alloc_normal_raw(int64_t n, uint64_t seed);

/* "smooth" inputs: each of the D channels of each head a sinusoid of a
 * random low frequency (0.5 to 8 periods over the sequence), phase and
 * amplitude (up to 2), plus N(0, 0.3^2) noise, so that neighbouring tokens
 * are alike as in text's hidden states and attention has structure. */
static void smooth(float *x, int64_t H, int64_t T, int64_t D, uint64_t seed) {
    float *noise = alloc_normal_raw(H * T * D, seed ^ 0xabcdefull);
    uint64_t s = seed;
    for (int64_t h = 0; h < H; h++)
        for (int64_t d = 0; d < D; d++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const double f = 0.5 + 7.5 * (double)(s >> 11) / 9007199254740992.0;
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const double ph = 6.283185307179586 * (double)(s >> 11) / 9007199254740992.0;
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const double amp = 2.0 * (double)(s >> 11) / 9007199254740992.0;
            for (int64_t i = 0; i < T; i++)
                x[(h * T + i) * D + d] =
                    (float)(amp * sin(6.283185307179586 * f * (double)i / (double)T + ph)) +
                    (noise ? 0.3f * noise[(h * T + i) * D + d] : 0.0f);
        }
    free(noise);
}

static float *alloc_normal_raw(int64_t n, uint64_t seed) {
    float *x = malloc((size_t)n * sizeof *x);
    if (!x) return NULL;
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i += 2) {
        uint64_t a = (s += 0x9e3779b97f4a7c15ull), b = (s += 0x9e3779b97f4a7c15ull);
        a = (a ^ (a >> 30)) * 0xbf58476d1ce4e5b9ull, a ^= a >> 27;
        b = (b ^ (b >> 30)) * 0xbf58476d1ce4e5b9ull, b ^= b >> 27;
        double u1 = ((double)(a >> 11) + 0.5) / 9007199254740992.0;
        double u2 = (double)(b >> 11) / 9007199254740992.0;
        double r = sqrt(-2.0 * log(u1));
        x[i] = (float)(r * cos(6.283185307179586 * u2));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(6.283185307179586 * u2));
    }
    return x;
}

typedef struct problem {
    int64_t H, T, D;
    float *q, *k, *v, *ex_out, *ex_lse; /* exact results (NULL above --max-exact) */
} problem;

static attn_status build_layout(attn_ctx *ctx, const method *m, const opts *o, int64_t T,
                                attn_sdpa_layout *lay, uint8_t **blocks) {
    attn_sdpa_layout_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.use_window = 1;
    sp.causal = o->causal;
    if (m->kind == 1)
        sp.window = o->window;
    else
        sp.window = 1, sp.global = 1, sp.random = 2, sp.seed = o->seed;
    const int64_t nb = (T + o->block - 1) / o->block;
    *blocks = malloc((size_t)(nb * nb));
    if (!*blocks) return ATTN_E_NOMEM;
    memset(lay, 0, sizeof *lay);
    lay->blocks = *blocks, lay->bq = lay->bk = o->block, lay->nqb = lay->nkb = nb;
    return attn_sdpa_layout_build(ctx, &sp, T, T, o->block, o->block, *blocks);
}

static double layout_flops(const attn_sdpa_layout *l, int64_t T, int64_t H, int64_t D) {
    double pairs = 0.0;
    for (int64_t a = 0; a < l->nqb; a++)
        for (int64_t b = 0; b < l->nkb; b++)
            if (l->blocks[a * l->nkb + b])
                pairs += (double)(CMP_MIN(l->bq, T - a * l->bq) * CMP_MIN(l->bk, T - b * l->bk));
    return (double)H * pairs * 4.0 * (double)D;
}

/* The share of exact probability mass a pattern keeps, over sampled rows
 * (16 rows of heads 0 and H-1): window / bigbird keep their layout's keys,
 * top-k the k largest probabilities. */
static double coverage(attn_ctx *ctx, const method *m, const attn_sdpa_layout *lay,
                       const problem *pb, int causal) {
    if (!pb->ex_lse || (m->kind == 3 && m->am != ATTN_APPROX_TOPK) || m->kind == 0) return NAN;
    const int64_t T = pb->T;
    float *row = malloc((size_t)T * sizeof *row);
    if (!row) return NAN;
    attn_sdpa_args a;
    memset(&a, 0, sizeof a);
    a.q = attn_tensor_f32_4d(pb->q, 1, pb->H, T, pb->D);
    a.k = attn_tensor_f32_4d(pb->k, 1, pb->H, T, pb->D);
    a.v = attn_tensor_f32_4d(pb->v, 1, pb->H, T, pb->D);
    int64_t ls[3] = {1, pb->H, T}, ps[2] = {1, T};
    a.lse = attn_tensor_make(pb->ex_lse, ATTN_F32, 3, ls);
    a.causal = causal;
    double tot = 0.0;
    int n = 0;
    for (int hh = 0; hh < 2; hh++)
        for (int r = 0; r < 16; r++) {
            const int64_t h = hh ? pb->H - 1 : 0, i = (int64_t)r * (T - 1) / 15;
            if (attn_sdpa_probs(ctx, &a, 0, h, i, attn_tensor_make(row, ATTN_F32, 2, ps))) {
                free(row);
                return NAN;
            }
            double c = 0.0;
            if (m->kind == 1 || m->kind == 2) {
                for (int64_t j = 0; j < T; j++)
                    if (lay->blocks[(i / lay->bq) * lay->nkb + j / lay->bk]) c += row[j];
            } else { /* the k largest: partial selection by repeated max (k <= 64) */
                for (int64_t t = 0; t < m->param && t < T; t++) {
                    int64_t best = 0;
                    for (int64_t j = 1; j < T; j++)
                        if (row[j] > row[best]) best = j;
                    c += row[best];
                    row[best] = -1.0f;
                }
            }
            tot += c, n++;
        }
    free(row);
    return tot / n;
}

/* Run method m on pb in this (child) process: the result. */
static result run_method(const method *m, const opts *o, const problem *pb) {
    result res = {0, NAN, NAN, NAN, NAN, NAN, NAN};
    attn_ctx *ctx = NULL;
    if (attn_ctx_create(&ctx, o->threads)) return res;
    const int64_t H = pb->H, T = pb->T, D = pb->D, n = H * T * D;
    const double base = rss_mb("VmRSS:");
    float *out = malloc((size_t)n * sizeof *out);
    uint8_t *blocks = NULL;
    attn_sdpa_layout lay;
    memset(&lay, 0, sizeof lay);
    if (!out) goto done;
    attn_sdpa_args s;
    memset(&s, 0, sizeof s);
    s.q = attn_tensor_f32_4d(pb->q, 1, H, T, D);
    s.k = attn_tensor_f32_4d(pb->k, 1, H, T, D);
    s.v = attn_tensor_f32_4d(pb->v, 1, H, T, D);
    s.out = attn_tensor_f32_4d(out, 1, H, T, D);
    attn_approx_args a;
    memset(&a, 0, sizeof a);
    a.q = s.q, a.k = s.k, a.v = s.v, a.out = s.out, a.method = m->am;
    s.causal = a.causal = o->causal;
    if (m->am == ATTN_APPROX_PERFORMER) a.features = m->param, a.seed = o->seed;
    if (m->am == ATTN_APPROX_NYSTROM) a.landmarks = CMP_MIN(m->param, T);
    if (m->am == ATTN_APPROX_TOPK) a.topk = CMP_MIN(m->param, T);
    if (m->kind == 1 || m->kind == 2) {
        if (build_layout(ctx, m, o, T, &lay, &blocks)) goto done;
        s.layout = &lay;
    }
    res.flops = m->kind == 3   ? attn_approx_flops(&a, 0)
                : m->kind == 0 ? attn_sdpa_flops(&s)
                               : layout_flops(&lay, T, H, D);
    double times[64];
    int reps = o->reps;
    /* one warm-up call (GEMM kernels are generated on first use, pages
     * faulted in); a call longer than 5 s is its own measurement */
    {
        const double t0 =
            attn_cli_clock_s(o->cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC);
        attn_status st = m->kind == 3 ? attn_approx_forward(ctx, &a) : attn_sdpa_forward(ctx, &s);
        const double dt =
            attn_cli_clock_s(o->cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC) - t0;
        if (st) {
            fprintf(stderr, "attn: error: %s T=%lld: %s\n", m->name, (long long)T,
                    attn_ctx_last_error(ctx));
            goto done;
        }
        if (dt > 5.0) times[0] = dt, reps = 0;
    }
    for (int r = 0; r < reps; r++) {
        const double t0 =
            attn_cli_clock_s(o->cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC);
        attn_status st = m->kind == 3 ? attn_approx_forward(ctx, &a) : attn_sdpa_forward(ctx, &s);
        times[r] = attn_cli_clock_s(o->cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC) - t0;
        if (st) {
            fprintf(stderr, "attn: error: %s T=%lld: %s\n", m->name, (long long)T,
                    attn_ctx_last_error(ctx));
            goto done;
        }
    }
    res.time_s = attn_cli_median(times, (size_t)(reps ? reps : 1));
    res.mem_mb = rss_mb("VmHWM:") - base;
    if (pb->ex_out) {
        double num = 0.0, den = 0.0, mx = 0.0;
        for (int64_t i = 0; i < n; i++) {
            const double d = (double)out[i] - (double)pb->ex_out[i];
            num += d * d, den += (double)pb->ex_out[i] * pb->ex_out[i];
            mx = fmax(mx, fabs(d));
        }
        res.max_abs = mx, res.rel_fro = sqrt(num / (den > 0 ? den : 1.0));
        res.coverage = coverage(ctx, m, &lay, pb, o->causal);
    }
    res.ok = 1;
done:
    free(out), free(blocks);
    attn_ctx_free(ctx);
    return res;
}

/* Fork, run, read the result back through a pipe. */
static result run_child(const method *m, const opts *o, const problem *pb) {
    result res = {0, NAN, NAN, NAN, NAN, NAN, NAN};
    int fd[2];
    if (pipe(fd)) return res;
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]), close(fd[1]);
        return res;
    }
    if (pid == 0) {
        close(fd[0]);
        reset_hwm();
        result r = run_method(m, o, pb);
        ssize_t w = write(fd[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fd[1]);
    ssize_t got = read(fd[0], &res, sizeof res);
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (got != (ssize_t)sizeof res || !WIFEXITED(status) || WEXITSTATUS(status)) res.ok = 0;
    return res;
}

/* ---- output -------------------------------------------------------------- */
static void fmt(char *b, size_t n, const char *f, double x) {
    if (isnan(x))
        snprintf(b, n, "-");
    else
        snprintf(b, n, f, x);
}

static void json_num(FILE *f, const char *key, double x) {
    if (isnan(x))
        fprintf(f, ", \"%s\": null", key);
    else
        fprintf(f, ", \"%s\": %.6g", key, x);
}

/* ---- charts (plot.h draws them as SVG or PNG): polylines on log axes ------ */
static const char *g_colors[NMETH] = {"#000000", "#1f77b4", "#17becf", "#ff7f0e", "#d62728",
                                      "#e377c2", "#8c564b", "#2ca02c", "#98df8a", "#006400",
                                      "#9467bd", "#bcbd22", "#7f7f7f"};

typedef struct chart {
    double x0, y0, w, h;       /* panel in pixels */
    double lx0, lx1, ly0, ly1; /* log10 ranges */
} chart;

static double cx(const chart *c, double x) {
    return c->x0 + (log10(x) - c->lx0) / (c->lx1 - c->lx0) * c->w;
}
static double cy(const chart *c, double y) {
    return c->y0 + c->h - (log10(y) - c->ly0) / (c->ly1 - c->ly0) * c->h;
}

static void panel(plot *f, chart *c, const char *title, const char *ylab, int nT,
                  const int64_t *Ts, int nm, const int *mi, const result *res, int which) {
    double lo = INFINITY, hi = -INFINITY;
    for (int a = 0; a < nm; a++)
        for (int t = 0; t < nT; t++) {
            const result *r = &res[a * MAXT + t];
            double y = which ? r->rel_fro : r->time_s;
            if (r->ok && y > 0 && isfinite(y)) lo = fmin(lo, y), hi = fmax(hi, y);
        }
    if (!isfinite(lo)) lo = 1e-3, hi = 1.0;
    c->ly0 = floor(log10(lo)), c->ly1 = ceil(log10(hi));
    if (c->ly1 <= c->ly0) c->ly1 = c->ly0 + 1;
    c->lx0 = log10((double)Ts[0]) - 0.05, c->lx1 = log10((double)Ts[nT - 1]) + 0.05;
    char b[64];
    for (double e = c->ly0; e <= c->ly1 + 1e-9; e += 1.0) {
        const double y = cy(c, pow(10.0, e));
        plot_line(f, c->x0, y, c->x0 + c->w, y, "#dddddd", 1);
        snprintf(b, sizeof b, "1e%d", (int)e);
        plot_text(f, c->x0 - 4, y + 4, 11, PLOT_END, 0, b);
    }
    for (int t = 0; t < nT; t++) {
        const double x = cx(c, (double)Ts[t]);
        plot_line(f, x, c->y0, x, c->y0 + c->h, "#eeeeee", 1);
        snprintf(b, sizeof b, "%lld", (long long)Ts[t]);
        plot_text(f, x, c->y0 + c->h + 16, 11, PLOT_MIDDLE, 0, b);
    }
    plot_rect(f, c->x0, c->y0, c->w, c->h, "#444444");
    plot_text(f, c->x0 + c->w / 2, c->y0 - 8, 14, PLOT_MIDDLE, 0, title);
    plot_text(f, c->x0 - 48, c->y0 + c->h / 2, 12, PLOT_MIDDLE, 1, ylab);
    plot_text(f, c->x0 + c->w / 2, c->y0 + c->h + 34, 12, PLOT_MIDDLE, 0,
              "N (tokens, log scale)");
    double px[MAXT], py[MAXT];
    for (int a = 0; a < nm; a++) {
        int n = 0;
        for (int t = 0; t < nT; t++) {
            const result *r = &res[a * MAXT + t];
            double y = which ? r->rel_fro : r->time_s;
            if (!r->ok || !(y > 0) || !isfinite(y)) continue;
            px[n] = cx(c, (double)Ts[t]), py[n] = cy(c, y), n++;
        }
        plot_polyline(f, n, px, py, g_colors[mi[a]], 2);
    }
}

/* The chart as SVG or PNG, by the path's extension (checked at parse time). */
static int write_plot(const char *path, int nT, const int64_t *Ts, int nm, const int *mi,
                      const result *res, const opts *o) {
    const int W = 1000, Hh = 460;
    plot *f = plot_new(plot_kind_of(path), W, Hh);
    if (!f) return attn_cli_error(1, "%s: out of memory", path);
    char b[128];
    snprintf(b, sizeof b, "attn compare: H=%d D=%d, %d thread(s)", o->H, o->D, o->threads);
    plot_text(f, W / 2.0, 20, 15, PLOT_MIDDLE, 0, b);
    chart c1 = {70, 50, 330, 330, 0, 0, 0, 0}, c2 = {480, 50, 330, 330, 0, 0, 0, 0};
    panel(f, &c1, "forward time", "seconds (log scale)", nT, Ts, nm, mi, res, 0);
    panel(f, &c2, "error vs exact", "relative Frobenius error (log)", nT, Ts, nm, mi, res, 1);
    for (int a = 0; a < nm; a++) {
        const double y = 60 + 18 * a;
        plot_line(f, 830, y, 855, y, g_colors[mi[a]], 3);
        plot_text(f, 860, y + 4, 12, PLOT_START, 0, g_methods[mi[a]].name);
    }
    const int st = plot_write(f, path);
    plot_free(f);
    return st;
}

/* Was option `name` of the table given (the parser's seen[])? */
static int opt_given(const cli_opt *table, int n, const unsigned char *seen, const char *name) {
    for (int k = 0; k < n; k++)
        if (!strcmp(table[k].name, name)) return seen[k];
    return 0;
}

int attn_cmd_compare(int argc, char **argv) {
    opts o;
    memset(&o, 0, sizeof o);
    o.tlist = "1024,2048,4096", o.H = 8, o.D = 64, o.reps = 3, o.block = 64, o.window = 2;
    o.max_exact = 16384, o.seed = 1;
    const cli_opt table[] = {
        {"--T", CLI_STRING, &o.tlist, 0, 0, 0, NULL},
        {"--methods", CLI_STRING, &o.mlist, 0, 0, 0, NULL},
        {"--plot", CLI_STRING, &o.plot, 0, 0, 0, NULL},
        {"--inputs", CLI_STRING, &o.inputs, 0, 0, 0, NULL},
        {"--H", CLI_INT, &o.H, 1, 256, 0, NULL},
        {"--D", CLI_INT, &o.D, 1, 1024, 0, NULL},
        {"--block", CLI_INT, &o.block, 1, 4096, 0, NULL},
        {"--window", CLI_INT, &o.window, 0, 1 << 20, 0, NULL},
        {"--max-exact", CLI_INT, &o.max_exact, 0, 1 << 30, 0, NULL},
        {"--reps", CLI_INT, &o.reps, 1, 64, 0, NULL},
        {"--json", CLI_FLAG, &o.json, 0, 0, 0, NULL},
        {"--cpu-time", CLI_FLAG, &o.cpu_time, 0, 0, 0, NULL},
        {"--causal", CLI_FLAG, &o.causal, 0, 0, 0, NULL},
        CLI_OPT_THREADS(&o.threads),
        CLI_OPT_SEED(&o.seed),
        {"--model", CLI_STRING, &o.model, 0, 0, 0, NULL},
        {"--input", CLI_STRING, &o.input, 0, 0, 0, NULL},
        {"--quality", CLI_FLAG, &o.quality, 0, 0, 0, NULL},
        {"--layer", CLI_INT, &o.layer, 0, 1 << 20, 0, NULL},
        {"--draws", CLI_STRING, &o.draws, 0, 0, 0, NULL},
    };
    enum { NOPT = (int)(sizeof table / sizeof table[0]) };
    unsigned char seen[NOPT] = {0};
    const cli_spec spec = {"compare", table, NOPT, usage, CLI_POS_ANYWHERE, 0};
    int npos = 0;
    int rc = attn_cli_parse_seen(&spec, argc, argv, NULL, &npos, seen);
    if (rc >= 0) return rc;
    /* real inputs (compare_model.c): decided before anything else runs */
    const int explicit_hd = opt_given(table, NOPT, seen, "--H") || opt_given(table, NOPT, seen, "--D");
    if ((o.model || o.quality || opt_given(table, NOPT, seen, "--layer")) && !o.input)
        return attn_cli_error(2, "compare: --model, --layer and --quality need --input TEXTS");
    if (o.input && !o.input[0]) return attn_cli_error(2, "compare: --input: empty path");
    if (o.input && (explicit_hd || o.inputs))
        return attn_cli_error(2, "compare: with --input the model gives the inputs, H and D "
                                 "(no --H, --D or --inputs)");
    if (o.draws && !o.quality)
        return attn_cli_error(2, "compare: --draws goes with --quality (the encoder's layers)");
    if (o.quality) {
        const char *timing_only[] = {"--T", "--layer", "--block", "--window", "--max-exact"};
        for (size_t i = 0; i < sizeof timing_only / sizeof *timing_only; i++)
            if (opt_given(table, NOPT, seen, timing_only[i]))
                return attn_cli_error(2, "compare: --quality embeds whole texts: %s does not "
                                         "apply",
                                      timing_only[i]);
        if (o.causal)
            return attn_cli_error(2, "compare: --quality embeds whole texts: --causal does not "
                                     "apply");
        const cmp_quality_opts q = {o.model, o.input, o.mlist,    o.plot, o.threads,
                                    o.reps,  o.json,  o.cpu_time, o.seed, o.draws};
        return cmp_quality(&q);
    }
    int64_t Ts[MAXT];
    const int nT = parse_list(o.tlist, Ts, MAXT, 1, (int64_t)1 << 24);
    if (nT < 1)
        return attn_cli_error(2,
                              "compare: --T: expected up to %d lengths in [1, 16777216], "
                              "comma-separated, got '%s'",
                              MAXT, o.tlist);
    for (int t = 1; t < nT; t++)
        if (Ts[t] <= Ts[t - 1]) return attn_cli_error(2, "compare: --T: lengths must increase");
    int mi[NMETH], nm = 0;
    if (!o.mlist) {
        for (int i = 0; g_methods[i].kind >= 0; i++)
            mi[nm++] = i;
    } else {
        const char *p = o.mlist;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            int found = -1;
            for (int i = 0; g_methods[i].kind >= 0; i++)
                if (strlen(g_methods[i].name) == len && !strncmp(g_methods[i].name, p, len))
                    found = i;
            if (found < 0 || nm == NMETH)
                return attn_cli_error(2, "compare: --methods: unknown method '%.*s'", (int)len, p);
            mi[nm++] = found;
            p = e ? e + 1 : p + len;
        }
    }
    if (o.plot && !o.plot[0]) return attn_cli_error(2, "compare: --plot: empty path");
    if (o.plot && plot_kind_of(o.plot) < 0)
        return attn_cli_error(2, "compare: --plot: '%s': the name must end in .svg or .png", o.plot);
    if (o.inputs && strcmp(o.inputs, "random") && strcmp(o.inputs, "smooth"))
        return attn_cli_error(2, "compare: --inputs: '%s', expected random or smooth", o.inputs);
    o.smooth = o.inputs && !strcmp(o.inputs, "smooth");
    /* --input: the model's q, k, v (one thread, before any fork) */
    cmp_model cm;
    memset(&cm, 0, sizeof cm);
    if (o.input) {
        if ((rc = cmp_model_open(&cm, o.model, o.input, o.layer))) return rc;
        o.H = (int)cm.H, o.D = (int)cm.Dh;
    }
    /* The parent runs on one thread: an OpenMP team started before fork()
     * would hang the children's OpenMP (libgomp is not fork-safe). */
    attn_ctx *ctx = NULL;
    if ((rc = attn_cli_ctx(&ctx, o.threads))) {
        cmp_model_free(&cm);
        return rc;
    }
    o.threads = attn_ctx_threads(ctx);
    if (attn_ctx_set_threads(ctx, 1)) {
        attn_ctx_free(ctx);
        cmp_model_free(&cm);
        return attn_cli_error(1, "compare: cannot set the thread count");
    }
    result *res = calloc((size_t)(NMETH * MAXT), sizeof *res);
    if (!res) {
        attn_ctx_free(ctx);
        cmp_model_free(&cm);
        return attn_cli_error(1, "out of memory");
    }
    char inputs_name[96];
    if (cm.rows)
        snprintf(inputs_name, sizeof inputs_name, "model layer %d q,k,v (%lld texts, %lld tokens)",
                 o.layer, (long long)cm.texts, (long long)cm.R);
    else
        snprintf(inputs_name, sizeof inputs_name, "%s", o.smooth ? "smooth" : "random N(0,1)");
    if (!o.json)
        printf("attn compare: H=%d D=%d%s threads=%d arch=%s, median of %d (%s), %s inputs, seed "
               "%llu\n"
               "%-14s %7s %10s %9s %8s %9s %10s %10s %8s %8s\n",
               o.H, o.D, o.causal ? " causal" : "", o.threads, attn_ctx_arch(ctx), o.reps,
               o.cpu_time ? "CPU time" : "wall time", inputs_name, (unsigned long long)o.seed,
               "method", "N", "time_s", "GFLOP", "GFLOP/s", "mem_MB", "max_abs", "rel_fro", "mass",
               "speedup");
    int fail = 0;
    for (int t = 0; t < nT; t++) {
        problem pb = {o.H, Ts[t], o.D, NULL, NULL, NULL, NULL, NULL};
        const int64_t n = pb.H * pb.T * pb.D;
        pb.q = alloc_normal_raw(n, o.seed * 3 + 1), pb.k = alloc_normal_raw(n, o.seed * 3 + 2);
        pb.v = alloc_normal_raw(n, o.seed * 3 + 3);
        if (o.smooth && pb.q && pb.k) {
            smooth(pb.q, pb.H, pb.T, pb.D, o.seed * 3 + 1);
            smooth(pb.k, pb.H, pb.T, pb.D, o.seed * 3 + 2);
        }
        if (cm.rows && pb.q && pb.k && pb.v) cmp_model_fill(&cm, pb.T, pb.q, pb.k, pb.v);
        if (!pb.q || !pb.k || !pb.v) {
            fail = attn_cli_error(1, "out of memory for N=%lld", (long long)Ts[t]);
            free(pb.q), free(pb.k), free(pb.v);
            break;
        }
        if (Ts[t] <= o.max_exact) {
            pb.ex_out = malloc((size_t)n * sizeof(float));
            pb.ex_lse = malloc((size_t)(pb.H * pb.T) * sizeof(float));
            attn_sdpa_args s;
            memset(&s, 0, sizeof s);
            s.q = attn_tensor_f32_4d(pb.q, 1, pb.H, pb.T, pb.D);
            s.k = attn_tensor_f32_4d(pb.k, 1, pb.H, pb.T, pb.D);
            s.v = attn_tensor_f32_4d(pb.v, 1, pb.H, pb.T, pb.D);
            s.out = attn_tensor_f32_4d(pb.ex_out, 1, pb.H, pb.T, pb.D);
            s.causal = o.causal;
            int64_t ls[3] = {1, pb.H, pb.T};
            s.lse = attn_tensor_make(pb.ex_lse, ATTN_F32, 3, ls);
            if (!pb.ex_out || !pb.ex_lse || attn_sdpa_forward(ctx, &s)) {
                fail = attn_cli_error(1, "exact reference at N=%lld failed", (long long)Ts[t]);
                free(pb.q), free(pb.k), free(pb.v), free(pb.ex_out), free(pb.ex_lse);
                break;
            }
        }
        double exact_time = NAN;
        for (int a = 0; a < nm; a++) {
            const method *m = &g_methods[mi[a]];
            result *r = &res[a * MAXT + t];
            /* Nystrom and top-k are non-causal methods: no row under --causal */
            const int nocausal = m->am == ATTN_APPROX_NYSTROM || m->am == ATTN_APPROX_TOPK;
            if ((m->kind == 0 && Ts[t] > o.max_exact) || (o.causal && nocausal)) {
                *r = (result){0, NAN, NAN, NAN, NAN, NAN, NAN};
                continue;
            }
            *r = run_child(m, &o, &pb);
            if (!r->ok) {
                fail = 1;
                fprintf(stderr, "attn: error: %s at N=%lld failed\n", m->name, (long long)Ts[t]);
                continue;
            }
            if (m->kind == 0) exact_time = r->time_s;
            const double sp = exact_time / r->time_s;
            if (o.json) {
                printf("{\"method\": \"%s\", \"N\": %lld, \"H\": %d, \"D\": %d, \"causal\": %d, "
                       "\"threads\": %d",
                       m->name, (long long)Ts[t], o.H, o.D, o.causal, o.threads);
                json_num(stdout, "time_s", r->time_s);
                json_num(stdout, "flops", r->flops);
                json_num(stdout, "gflops_per_s", r->flops / r->time_s * 1e-9);
                json_num(stdout, "peak_mem_mb", r->mem_mb);
                json_num(stdout, "max_abs_err", r->max_abs);
                json_num(stdout, "rel_fro_err", r->rel_fro);
                json_num(stdout, "mass_covered", r->coverage);
                json_num(stdout, "speedup_vs_exact", sp);
                printf("}\n");
            } else {
                char c[6][32];
                fmt(c[0], 32, "%.3e", r->max_abs), fmt(c[1], 32, "%.3e", r->rel_fro);
                fmt(c[2], 32, "%.4f", r->coverage), fmt(c[3], 32, "%.2fx", sp);
                printf("%-14s %7lld %10.4f %9.2f %8.1f %9.1f %10s %10s %8s %8s\n", m->name,
                       (long long)Ts[t], r->time_s, r->flops * 1e-9, r->flops / r->time_s * 1e-9,
                       r->mem_mb, c[0], c[1], c[2], c[3]);
            }
            fflush(stdout);
        }
        free(pb.q), free(pb.k), free(pb.v), free(pb.ex_out), free(pb.ex_lse);
    }
    if (!fail && o.plot) fail = write_plot(o.plot, nT, Ts, nm, mi, res, &o);
    cmp_model_free(&cm);
    free(res);
    attn_ctx_free(ctx);
    return fail ? 1 : 0;
}
