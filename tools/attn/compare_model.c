/* attn compare --model DIR --input TEXTS: real inputs and the embedding
 * quality of cheaper attention inside all-MiniLM-L6-v2 (compare_model.h).
 *
 * Timing inputs: the texts run through the model one by one up to the
 * chosen layer; that layer's q, k, v of every token of every text, in text
 * order, are the rows of one long sequence, tiled (repeated from the first
 * text) until it has N rows. A sentence model never sees more than 256
 * tokens at once, so a long sequence of real states is necessarily made of
 * many texts side by side: the states are real (their norms, their spread,
 * the heads' preferences such as [CLS] and [SEP]), the long-range structure
 * across text boundaries is not.
 *
 * Quality: every text embedded with exact attention, then with each method
 * in every layer (attn_bert_embed_with); per method the cosine of each
 * text's embedding to its exact one (mean and min over the texts), and the
 * Spearman rank correlation between the method's pairwise cosine
 * similarities over all pairs of texts and the exact ones (does a search
 * with the cheaper model rank the texts as the real one does?). */
#include "compare_model.h"
#include "bert_methods.h"
#include "cli_time.h"
#include "embed.h"
#include "plot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const cmp_quality_default =
    "exact,window-1,window-2,window-4,window-8,window-1+cls,window-2+cls,window-4+cls,"
    "window-8+cls,bigbird-2,bigbird-4,linear,performer-16,performer-64,performer-256,"
    "nystrom-4,nystrom-8,nystrom-16,topk-2,topk-4,topk-8,topk-16,prune-1-0.75,prune-1-0.5,"
    "prune-1-0.25,prune-3-0.75,prune-3-0.5,prune-3-0.25,window-8+cls+prune-1-0.5,"
    "bigbird-4+prune-1-0.5,performer-64+prune-1-0.5,nystrom-16+prune-1-0.5,topk-8+prune-1-0.5,"
    "linear+prune-1-0.5,bigbird-4+draws-layer,performer-64+draws-layer,performer-64+draws-head";

/* Texts of `input` tokenized by the model in s (opened with `threads`). */
static int open_texts(session *s, texts *t, const char *dir, const char *input, int threads) {
    if (!input) return attn_cli_error(2, "compare: --model needs --input TEXTS (one per line)");
    int rc = embed_read_lines(t, input);
    if (!rc && t->n == 0) rc = attn_cli_error(1, "%s: no texts", input);
    for (int64_t i = 0; !rc && i < t->n; i++) {
        long bad = embed_utf8_error((const unsigned char *)t->s[i], t->len[i]);
        if (bad >= 0) rc = attn_cli_error(1, "%s: invalid UTF-8 at byte %ld", t->where[i], bad);
    }
    if (!rc) rc = embed_open_model(s, dir, threads);
    if (!rc) rc = embed_tokenize_all(s, t);
    return rc;
}

int cmp_model_open(cmp_model *m, const char *dir, const char *input, int layer) {
    memset(m, 0, sizeof *m);
    session s;
    memset(&s, 0, sizeof s);
    texts t;
    memset(&t, 0, sizeof t);
    int rc = open_texts(&s, &t, dir, input, 1);
    const attn_model_info *mi = rc ? NULL : attn_model_get_info(s.model);
    if (!rc && layer >= mi->num_layers)
        rc = attn_cli_error(1, "compare: --layer %d: the model has %lld layers (from 0)", layer,
                            (long long)mi->num_layers);
    if (!rc) {
        m->E = mi->hidden_size, m->H = mi->num_heads, m->Dh = m->E / m->H, m->texts = t.n;
        for (int64_t i = 0; i < t.n; i++)
            m->R += s.len[i];
        m->rows = malloc((size_t)(m->R * 3 * m->E) * sizeof(float));
        if (!m->rows) rc = attn_cli_error(1, "out of memory");
    }
    for (int64_t i = 0, r = 0; !rc && i < t.n; r += s.len[i++])
        if (attn_bert_layer_qkv(s.ctx, s.bert, s.ids[i], s.len[i], layer, m->rows + r * 3 * m->E))
            rc = attn_cli_error(1, "%s: %s", t.where[i], attn_ctx_last_error(s.ctx));
    embed_session_free(&s, t.n);
    embed_texts_free(&t);
    if (rc) cmp_model_free(m);
    return rc;
}

void cmp_model_free(cmp_model *m) {
    free(m->rows);
    memset(m, 0, sizeof *m);
}

void cmp_model_fill(const cmp_model *m, int64_t T, float *q, float *k, float *v) {
    const int64_t E = m->E, Dh = m->Dh;
    for (int64_t h = 0; h < m->H; h++)
        for (int64_t i = 0; i < T; i++) {
            const float *row = m->rows + (i % m->R) * 3 * E + h * Dh;
            const size_t dst = (size_t)((h * T + i) * Dh), nb = (size_t)Dh * sizeof(float);
            memcpy(q + dst, row, nb);
            memcpy(k + dst, row + E, nb);
            memcpy(v + dst, row + 2 * E, nb);
        }
}

/* ---- quality ------------------------------------------------------------ */

static double cosine(const float *a, const float *b, int64_t E) {
    double d = 0, na = 0, nb = 0;
    for (int64_t k = 0; k < E; k++)
        d += (double)a[k] * b[k], na += (double)a[k] * a[k], nb += (double)b[k] * b[k];
    return na > 0 && nb > 0 ? d / sqrt(na * nb) : 0.0;
}

/* The n (n - 1) / 2 pairwise cosines of e [n, E], pairs (i < j) in order. */
static void pair_cosines(const float *e, int64_t n, int64_t E, double *out) {
    int64_t p = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++)
            out[p++] = cosine(e + i * E, e + j * E, E);
}

typedef struct ranked {
    double v;
    int64_t i;
} ranked;

static int ranked_cmp(const void *x, const void *y) {
    const ranked *a = x, *b = y;
    if (a->v != b->v) return a->v < b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* Ranks of v[0..n) from 1, ties sharing their mean rank. */
static int ranks(const double *v, int64_t n, double *r) {
    ranked *s = malloc((size_t)n * sizeof *s + 1);
    if (!s) return -1;
    for (int64_t i = 0; i < n; i++)
        s[i].v = v[i], s[i].i = i;
    qsort(s, (size_t)n, sizeof *s, ranked_cmp);
    for (int64_t a = 0; a < n;) {
        int64_t b = a;
        while (b + 1 < n && s[b + 1].v == s[a].v)
            b++;
        for (int64_t k = a; k <= b; k++)
            r[s[k].i] = 0.5 * (double)(a + b) + 1.0;
        a = b + 1;
    }
    free(s);
    return 0;
}

/* Spearman's rho: Pearson's correlation of the ranks (NaN when a side is
 * constant or n < 2). */
static double spearman(const double *ra, const double *rb, int64_t n) {
    double ma = 0, mb = 0;
    for (int64_t i = 0; i < n; i++)
        ma += ra[i], mb += rb[i];
    ma /= (double)n, mb /= (double)n;
    double sab = 0, saa = 0, sbb = 0;
    for (int64_t i = 0; i < n; i++) {
        const double a = ra[i] - ma, b = rb[i] - mb;
        sab += a * b, saa += a * a, sbb += b * b;
    }
    return n > 1 && saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : NAN;
}

static void jnum(const char *key, double x) {
    if (isnan(x))
        printf(", \"%s\": null", key);
    else
        printf(", \"%s\": %.9g", key, x);
}

/* ---- quality vs speed chart (plot.h: SVG or PNG) --------------------------------------- */

typedef struct qpoint {
    char name[96];
    double cos_mean, work, time_rel;
} qpoint;

/* A method's family colour: the part of its name before the first '-'. */
static const char *family_color(const char *name) {
    static const struct {
        const char *prefix, *color;
    } fam[] = {{"exact", "#000000"},     {"window-", "#1f77b4"}, {"bigbird", "#17becf"},
               {"linear", "#ff7f0e"},    {"performer", "#d62728"}, {"nystrom", "#2ca02c"},
               {"topk", "#9467bd"},      {"prune", "#8c564b"}};
    for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++)
        if (!strncmp(name, fam[i].prefix, strlen(fam[i].prefix)))
            return strstr(name, "+cls") ? "#aec7e8" : fam[i].color;
    return "#7f7f7f";
}

/* One panel: mean cosine (y, linear, [y0, 1]) against x (linear, [0, x1]). */
static void qpanel(plot *f, double px, double py, double w, double h, const char *title,
                   const char *xlab, const qpoint *pt, int n, int by_time) {
    double x1 = 1.0, y0 = 1.0;
    for (int i = 0; i < n; i++) {
        x1 = fmax(x1, by_time ? pt[i].time_rel : pt[i].work);
        y0 = fmin(y0, pt[i].cos_mean);
    }
    x1 = ceil(x1 * 5.0) / 5.0, y0 = floor(fmax(y0, -1.0) * 10.0) / 10.0;
    if (y0 >= 1.0) y0 = 0.9;
    char b[32];
    for (int k = 0; k <= 5; k++) {
        const double xv = x1 * k / 5.0, yv = y0 + (1.0 - y0) * k / 5.0;
        const double X = px + w * k / 5.0, Y = py + h - h * k / 5.0;
        plot_line(f, X, py, X, py + h, "#eeeeee", 1);
        plot_line(f, px, Y, px + w, Y, "#eeeeee", 1);
        snprintf(b, sizeof b, "%.2g", xv);
        plot_text(f, X, py + h + 16, 11, PLOT_MIDDLE, 0, b);
        snprintf(b, sizeof b, "%.2f", yv);
        plot_text(f, px - 4, Y + 4, 11, PLOT_END, 0, b);
    }
    plot_rect(f, px, py, w, h, "#444444");
    plot_text(f, px + w / 2, py - 8, 14, PLOT_MIDDLE, 0, title);
    plot_text(f, px + w / 2, py + h + 34, 12, PLOT_MIDDLE, 0, xlab);
    plot_text(f, px - 44, py + h / 2, 12, PLOT_MIDDLE, 1, "mean cosine to exact embeddings");
    for (int i = 0; i < n; i++) {
        const double xv = by_time ? pt[i].time_rel : pt[i].work;
        const double X = px + w * xv / x1, Y = py + h - h * (pt[i].cos_mean - y0) / (1.0 - y0);
        if (!isfinite(X) || !isfinite(Y)) continue;
        plot_polyline(f, 1, &X, &Y, family_color(pt[i].name), 0); /* one point: its marker */
        plot_text(f, X + 5, Y - 3, 9, PLOT_START, 0, pt[i].name);
    }
}

/* The chart, as SVG or PNG by the path's extension (checked before any work). */
static int write_quality_plot(const char *path, const qpoint *pt, int n, int64_t texts,
                              int cpu_time) {
    plot *f = plot_new(plot_kind_of(path), 1000, 480);
    if (!f) return attn_cli_error(1, "out of memory drawing %s", path);
    char b[128];
    snprintf(b, sizeof b, "attn compare --quality: %lld texts, each method in every layer",
             (long long)texts);
    plot_text(f, 500, 20, 15, PLOT_MIDDLE, 0, b);
    qpanel(f, 70, 50, 380, 360, "quality vs work", "encoder FLOPs / exact's", pt, n, 0);
    qpanel(f, 570, 50, 380, 360, "quality vs time",
           cpu_time ? "CPU time / exact's" : "wall time / exact's", pt, n, 1);
    const int st = plot_write(f, path);
    plot_free(f);
    return st;
}

/* One --methods name into *bo, with --draws applied to a method with
 * random parts that names no draws of its own; label: the name, with
 * "+draws-MODE" when --draws was applied. Returns bert_method_parse's. */
static int row_parse(const cmp_quality_opts *o, attn_bert_draws draws, const char *name,
                     attn_bert_options *bo, char *label, size_t cap) {
    const int rc = bert_method_parse(name, o->seed, bo);
    snprintf(label, cap, "%s", name);
    if (rc || draws == ATTN_BERT_DRAWS_SHARED || !bert_method_random(bo) || strstr(name, "+draws-"))
        return rc;
    bo->draws = draws;
    snprintf(label, cap, "%s+draws-%s", name, draws == ATTN_BERT_DRAWS_LAYER ? "layer" : "head");
    return 0;
}

int cmp_quality(const cmp_quality_opts *o) {
    const char *list = o->methods ? o->methods : cmp_quality_default;
    attn_bert_draws draws = ATTN_BERT_DRAWS_SHARED;
    if (o->draws && bert_draws_parse(o->draws, &draws))
        return attn_cli_error(2, "compare: --draws must be shared, layer or head, got '%s'",
                              o->draws);
    int nrandom = 0;
    char label[96];
    /* bad usage first: every name must parse, before any file is opened */
    if (o->plot && plot_kind_of(o->plot) < 0)
        return attn_cli_error(2, "compare: --plot: '%s': the name must end in .svg or .png", o->plot);
    int nm = 0;
    if (!*list) return attn_cli_error(2, "compare: --methods: unknown method '' for --quality");
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        char name[64];
        attn_bert_options bo;
        if (len == 0 || len >= sizeof name)
            return attn_cli_error(2, "compare: --methods: unknown method '%.*s' for --quality",
                                  (int)len, p);
        memcpy(name, p, len), name[len] = '\0';
        const int prc = row_parse(o, draws, name, &bo, label, sizeof label);
        if (prc == -2)
            return attn_cli_error(2,
                                  "compare: --methods: %s: +draws- needs a method with random "
                                  "parts (bigbird-B or performer-M)",
                                  name);
        if (prc)
            return attn_cli_error(2, "compare: --methods: unknown method '%s' for --quality", name);
        nrandom += bert_method_random(&bo);
        nm++;
        p = e ? e + 1 : p + len;
    }
    if (draws != ATTN_BERT_DRAWS_SHARED && !nrandom)
        return attn_cli_error(2,
                              "compare: --draws %s: no method of --methods has random parts "
                              "(bigbird-B or performer-M)",
                              o->draws);
    session s;
    memset(&s, 0, sizeof s);
    texts t;
    memset(&t, 0, sizeof t);
    int rc = open_texts(&s, &t, o->model, o->input, o->threads);
    if (rc) {
        embed_session_free(&s, t.n);
        embed_texts_free(&t);
        return rc;
    }
    const attn_model_info *mi = attn_model_get_info(s.model);
    for (const char *p = list; !rc && *p;) { /* what the model decides, before any output */
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        char name[64];
        memcpy(name, p, len), name[len] = '\0';
        p = e ? e + 1 : p + len;
        attn_bert_options bo;
        (void)bert_method_parse(name, o->seed, &bo);
        if (bo.prune_after >= mi->num_layers)
            rc = attn_cli_error(1, "compare: %s: the model has %lld layers, prune after 1..%lld",
                                name, (long long)mi->num_layers, (long long)mi->num_layers - 1);
    }
    const int64_t n = t.n, E = mi->hidden_size, P = n * (n - 1) / 2;
    float *e0 = malloc((size_t)(n * E) * sizeof *e0), *e1 = malloc((size_t)(n * E) * sizeof *e1);
    double *c0 = malloc((size_t)(P + 1) * sizeof *c0), *c1 = malloc((size_t)(P + 1) * sizeof *c1);
    double *r0 = malloc((size_t)(P + 1) * sizeof *r0), *r1 = malloc((size_t)(P + 1) * sizeof *r1);
    double *times = malloc((size_t)o->reps * sizeof *times);
    qpoint *pts = calloc((size_t)nm, sizeof *pts);
    int npt = 0;
    double exact_time = NAN;
    if (!e0 || !e1 || !c0 || !c1 || !r0 || !r1 || !times || !pts)
        rc = attn_cli_error(1, "out of memory");
    int64_t tokens = 0;
    for (int64_t i = 0; i < n; i++)
        tokens += s.len[i];
    const clockid_t clk = o->cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC;
    attn_bert_options none;
    memset(&none, 0, sizeof none);
    attn_bert_stats st0;
    if (!rc && attn_bert_embed_with(s.ctx, s.bert, &none, n, (const int32_t *const *)s.ids, s.len,
                                    e0, &st0))
        rc = attn_cli_error(1, "%s", attn_ctx_last_error(s.ctx));
    if (!rc) {
        pair_cosines(e0, n, E, c0);
        if (ranks(c0, P, r0)) rc = attn_cli_error(1, "out of memory");
    }
    if (!rc && !o->json)
        printf("attn compare --quality: %s, %lld texts (%lld tokens, %lld pairs), threads=%d, "
               "%s of %d (median)\n"
               "%-26s %9s %9s %9s %9s %8s %8s %9s\n",
               mi->dir, (long long)n, (long long)tokens, (long long)P, attn_ctx_threads(s.ctx),
               o->cpu_time ? "CPU time" : "wall time", o->reps, "method", "cos_mean", "cos_min",
               "spearman", "GFLOP", "work", "tok_lay", "time_s");
    for (const char *p = list; !rc && *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        char name[64];
        memcpy(name, p, len), name[len] = '\0';
        p = e ? e + 1 : p + len;
        attn_bert_options bo;
        (void)row_parse(o, draws, name, &bo, label, sizeof label);
        attn_bert_stats st;
        for (int r = 0; !rc && r < o->reps; r++) {
            const double t0 = attn_cli_clock_s(clk);
            if (attn_bert_embed_with(s.ctx, s.bert, &bo, n, (const int32_t *const *)s.ids, s.len,
                                     e1, &st))
                rc = attn_cli_error(1, "%s: %s", name, attn_ctx_last_error(s.ctx));
            times[r] = attn_cli_clock_s(clk) - t0;
        }
        if (rc) break;
        double cmean = 0, cmin = INFINITY;
        for (int64_t i = 0; i < n; i++) {
            const double c = cosine(e0 + i * E, e1 + i * E, E);
            cmean += c, cmin = fmin(cmin, c);
        }
        cmean /= (double)n;
        pair_cosines(e1, n, E, c1);
        if (ranks(c1, P, r1)) {
            rc = attn_cli_error(1, "out of memory");
            break;
        }
        const double rho = spearman(r0, r1, P), time_s = attn_cli_median(times, (size_t)o->reps);
        const double work = st.flops / st0.flops;
        const double tl = (double)st.token_layers / (double)st0.token_layers;
        if (!strcmp(name, "exact")) exact_time = time_s;
        snprintf(pts[npt].name, sizeof pts[npt].name, "%s", label);
        pts[npt].cos_mean = cmean, pts[npt].work = work, pts[npt++].time_rel = time_s;
        if (o->json) {
            printf("{\"method\": \"%s\", \"texts\": %lld, \"pairs\": %lld", label, (long long)n,
                   (long long)P);
            jnum("cos_mean", cmean), jnum("cos_min", cmin), jnum("spearman", rho);
            jnum("flops", st.flops), jnum("work_vs_exact", work);
            printf(", \"token_layers\": %lld", (long long)st.token_layers);
            jnum("token_layers_vs_exact", tl), jnum("time_s", time_s);
            printf("}\n");
        } else {
            char rs[32];
            if (isnan(rho))
                snprintf(rs, sizeof rs, "-");
            else
                snprintf(rs, sizeof rs, "%.4f", rho);
            printf("%-26s %9.5f %9.5f %9s %9.3f %8.3f %8.3f %9.4f\n", label, cmean, cmin, rs,
                   st.flops * 1e-9, work, tl, time_s);
        }
        fflush(stdout);
    }
    if (!rc && o->plot) {
        /* times relative to exact's (the first exact row; without one, to the
         * fastest method's) */
        double ref = exact_time;
        for (int i = 0; isnan(ref) && i < npt; i++)
            ref = fmin(isnan(ref) ? INFINITY : ref, pts[i].time_rel);
        for (int i = 0; i < npt; i++)
            pts[i].time_rel /= ref;
        rc = write_quality_plot(o->plot, pts, npt, n, o->cpu_time);
    }
    free(e0), free(e1), free(c0), free(c1), free(r0), free(r1), free(times), free(pts);
    embed_session_free(&s, t.n);
    embed_texts_free(&t);
    return rc;
}
