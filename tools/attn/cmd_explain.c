/* attn explain: what attention does in the model for given texts. Raw
 * attention of every layer and head (rebuilt from the fast path's lse),
 * per-head statistics, rollout and flow, head importance and pruning
 * (--heads), deletion-curve faithfulness (--faithfulness); as text, JSON
 * (--json), a self-contained interactive page (--html) and a heat map
 * (--png). Only the public API (attn/explain.h). */
#include "cli_out.h"
#include "explain_cli.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FLOW_ALL_MAX 64 /* texts up to this many tokens get flow for every row */

const char *const explain_method_names[EX_METHODS] = {"attention", "rollout", "flow", "relevance",
                                                      "random"};

static void help(FILE *f) {
    fprintf(f,
            "usage: attn explain [--model DIR] [--input FILE] [--threads N] [--layer L]\n"
            "                    [--head H] [--json FILE] [--html FILE] [--png FILE]\n"
            "                    [--png-map head|rollout] [--flow all|cls] [--heads]\n"
            "                    [--relevance similarity|dim:K] [--faithfulness]\n"
            "                    [--steps K] TEXT...\n\n"
            "What the model's attention does for the texts (BERT encoders):\n"
            "  - raw attention of every layer and head, rebuilt from the forward's lse;\n"
            "  - per head: the mean entropy of each query's distribution (nats), the mean\n"
            "    attention distance (tokens), the share of attention on [CLS], [SEP] and\n"
            "    punctuation, and the strongest link;\n"
            "  - attention rollout and attention flow (Abnar and Zuidema, 2020; residual\n"
            "    as 0.5 A + 0.5 I); flow costs T^2 max-flows, so texts longer than %d\n"
            "    tokens get the [CLS] row only unless --flow all;\n"
            "  - token scores: each map's rows averaged as the model pools (mean: all\n"
            "    rows; CLS pooling: row 0); 'attention' is the last layer's mean head.\n"
            "Layers and heads count from 0. Without an output file, a summary is printed.\n\n"
            "  --layer L, --head H   the head shown first in --html and drawn by --png\n"
            "                        (default 0, 0)\n"
            "  --json FILE           every number the page shows ('-': stdout)\n"
            "  --html FILE           a self-contained interactive page (no network): head,\n"
            "                        model, rollout, flow and entropy views; text 1 vs 2\n"
            "  --png FILE            heat map of one head's attention (or the rollout's,\n"
            "                        --png-map rollout) of the first text, token labels\n"
            "  --heads               head importance (Michel et al., 2019): for each head,\n"
            "                        1 - cos(embedding with the head masked, embedding),\n"
            "                        mean over the texts; then the pruning curve\n"
            "  --faithfulness        deletion curves: content tokens removed in order of\n"
            "                        each method's score (and in random order), the\n"
            "                        embedding's cosine to the full text's after each of\n"
            "                        K steps (--steps, default 10); the area (mean) is\n"
            "                        lower for a more faithful method\n"
            "  --relevance OUT       gradient-weighted attention relevance (Chefer et al.,\n"
            "                        2021) for the output OUT: 'similarity' (the cosine\n"
            "                        of text 1 to text 2, of every other text to text 1)\n"
            "                        or 'dim:K' (embedding dimension K); then also a\n"
            "                        method of --faithfulness, whose output becomes OUT\n",
            FLOW_ALL_MAX);
    embed_help_model(f);
}

static void free_run(ex_run *r) {
    if (r->x)
        for (int64_t i = 0; i < r->n; i++) {
            ex_text *x = &r->x[i];
            free(x->probs), free(x->emb), free(x->stats), free(x->row_entropy), free(x->cls);
            free(x->rollout), free(x->flow), free(x->relevance), free(x->w);
            for (int k = 0; k <= EX_RELEVANCE; k++)
                free(x->score[k]);
            for (int k = 0; k < EX_METHODS; k++)
                free(x->curve[k]);
        }
    free(r->x), free(r->importance), free(r->prune), free(r->order), free(r->token_similarity);
    free(r->json);
}

static uint8_t token_class(const char *tk) {
    if (!strcmp(tk, "[CLS]")) return ATTN_TOKEN_CLS;
    if (!strcmp(tk, "[SEP]")) return ATTN_TOKEN_SEP;
    if (!*tk) return 0;
    for (const char *c = tk; *c; c++)
        if (!ispunct((unsigned char)*c)) return 0;
    return ATTN_TOKEN_PUNCT;
}

/* Token scores of map m [rows, T] as the model pools: CLS pooling uses row
 * 0, mean and max pooling the mean of the rows. */
static void pool_scores(attn_pooling pool, const float *m, int64_t rows, int64_t T, float *out) {
    const int64_t n = pool == ATTN_POOL_CLS ? 1 : rows;
    for (int64_t j = 0; j < T; j++) {
        double s = 0;
        for (int64_t i = 0; i < n; i++)
            s += m[i * T + j];
        out[j] = (float)(s / (double)n);
    }
}

static int fail(session *s) {
    return attn_cli_error(1, "%s", attn_ctx_last_error(s->ctx));
}

/* flow: 0 auto (every row up to FLOW_ALL_MAX tokens), 1 all rows, 2 [CLS] only */
static int analyse_text(ex_run *r, int64_t i, int flow) {
    session *s = r->s;
    ex_text *x = &r->x[i];
    const int64_t L = r->L, H = r->H, T = s->len[i];
    x->T = T, x->ids = s->ids[i];
    x->probs = malloc((size_t)(L * H * T * T) * sizeof(float));
    x->emb = malloc((size_t)r->E * sizeof(float));
    x->stats = malloc((size_t)(L * H) * sizeof *x->stats);
    x->row_entropy = malloc((size_t)(L * H * T) * sizeof(float));
    x->cls = malloc((size_t)T);
    x->rollout = malloc((size_t)(T * T) * sizeof(float));
    x->flow_rows = flow == 1 || (flow == 0 && T <= FLOW_ALL_MAX) ? T : 1;
    x->flow = malloc((size_t)(x->flow_rows * T) * sizeof(float));
    int ok = x->probs && x->emb && x->stats && x->row_entropy && x->cls && x->rollout && x->flow;
    for (int k = 0; k <= EX_FLOW; k++)
        ok = ok && (x->score[k] = malloc((size_t)T * sizeof(float)));
    if (!ok)
        return attn_cli_error(1, "out of memory for the attention of %lld tokens", (long long)T);
    for (int64_t t = 0; t < T; t++)
        x->cls[t] = token_class(attn_tokenizer_token(s->tok, x->ids[t]));
    if (attn_bert_run_explained(s->ctx, s->bert, x->ids, T, NULL, x->probs, x->emb)) return fail(s);
    for (int64_t k = 0; k < L * H; k++)
        if (attn_attention_stats(s->ctx, T, x->probs + k * T * T, x->cls, &x->stats[k],
                                 x->row_entropy + k * T))
            return fail(s);
    if (attn_attention_rollout(s->ctx, L, H, T, x->probs, x->rollout) ||
        attn_attention_flow(s->ctx, L, H, T, x->probs, 0, x->flow_rows, x->flow))
        return fail(s);
    const attn_pooling pool = attn_bert_get_config(s->bert)->pooling;
    float *last = malloc((size_t)(T * T) * sizeof(float)); /* last layer, mean head */
    if (!last) return attn_cli_error(1, "out of memory");
    for (int64_t k = 0; k < T * T; k++) {
        double v = 0;
        for (int64_t h = 0; h < H; h++)
            v += x->probs[((L - 1) * H + h) * T * T + k];
        last[k] = (float)(v / (double)H);
    }
    pool_scores(pool, last, T, T, x->score[EX_ATTENTION]);
    pool_scores(pool, x->rollout, T, T, x->score[EX_ROLLOUT]);
    pool_scores(pool, x->flow, x->flow_rows, T, x->score[EX_FLOW]);
    free(last);
    return 0;
}

static int faithfulness(ex_run *r) {
    session *s = r->s;
    const int64_t K = r->steps;
    for (int m = 0; m < EX_METHODS; m++)
        r->area[m] = 0;
    for (int64_t i = 0; i < r->n; i++) {
        ex_text *x = &r->x[i];
        for (int m = 0; m < EX_METHODS; m++) {
            if (m != EX_RANDOM && !x->score[m]) continue;
            if (!(x->curve[m] = malloc((size_t)(K + 1) * sizeof(float))))
                return attn_cli_error(1, "out of memory");
            const float *score = m == EX_RANDOM ? NULL : x->score[m];
            if (attn_bert_deletion_curve(s->ctx, s->bert, x->ids, x->T, score, K, r->random_orders,
                                         1000 + (uint64_t)i, x->w, x->curve[m]))
                return fail(s);
            double a = 0;
            for (int64_t k = 1; k <= K; k++)
                a += x->curve[m][k];
            r->area[m] += a / (double)K / (double)r->n;
        }
    }
    return 0;
}

/* --relevance: w = the other text's normalised embedding (similarity) or
 * unit vector K (dim:K); the output y = w . embedding. */
static int relevance(ex_run *r) {
    session *s = r->s;
    for (int64_t i = 0; i < r->n; i++) {
        ex_text *x = &r->x[i];
        float *w = x->w = calloc((size_t)r->E, sizeof *w);
        x->relevance = malloc((size_t)(x->T * x->T) * sizeof(float));
        x->score[EX_RELEVANCE] = malloc((size_t)x->T * sizeof(float));
        if (!w || !x->relevance || !x->score[EX_RELEVANCE])
            return attn_cli_error(1, "out of memory");
        if (r->relevance_dim >= 0) {
            w[r->relevance_dim] = 1;
        } else {
            const float *o = r->x[i == 0 ? 1 : 0].emb;
            double nn = 0;
            for (int64_t k = 0; k < r->E; k++)
                nn += (double)o[k] * o[k];
            nn = nn > 0 ? sqrt(nn) : 1;
            for (int64_t k = 0; k < r->E; k++)
                w[k] = (float)(o[k] / nn);
        }
        float y = 0;
        if (attn_bert_relevance(s->ctx, s->bert, x->ids, x->T, w, x->relevance, &y)) return fail(s);
        x->relevance_output = y;
        /* the scores of R - I: the identity adds the same to every token
         * (mean pooling) or to [CLS] alone (CLS pooling) and would hide the rest */
        const attn_pooling pool = attn_bert_get_config(s->bert)->pooling;
        pool_scores(pool, x->relevance, x->T, x->T, x->score[EX_RELEVANCE]);
        for (int64_t t = 0; t < x->T; t++)
            x->score[EX_RELEVANCE][t] -= pool == ATTN_POOL_CLS ? (t == 0) : 1.0f / (float)x->T;
    }
    return 0;
}

static int head_importance(ex_run *r) {
    session *s = r->s;
    const int64_t NH = r->L * r->H;
    r->importance = malloc((size_t)NH * sizeof(float));
    r->prune = malloc((size_t)(NH + 1) * sizeof(float));
    r->order = malloc((size_t)NH * sizeof(int64_t));
    if (!r->importance || !r->prune || !r->order) return attn_cli_error(1, "out of memory");
    r->heads_texts = r->n;
    const int32_t *const *ids = (const int32_t *const *)s->ids;
    if (attn_bert_head_importance(s->ctx, s->bert, r->n, ids, s->len, r->importance) ||
        attn_bert_prune_curve(s->ctx, s->bert, r->n, ids, s->len, r->importance, r->prune,
                              r->order))
        return fail(s);
    return 0;
}

/* Text 0 against text 1: embedding cosine and the cosine of each pair of
 * their tokens' last hidden states. */
static int compare_texts(ex_run *r) {
    session *s = r->s;
    const int64_t T0 = r->x[0].T, T1 = r->x[1].T, E = r->E, Tm = T0 > T1 ? T0 : T1;
    float *hdn = malloc((size_t)(2 * Tm * E) * sizeof(float));
    r->token_similarity = malloc((size_t)(T0 * T1) * sizeof(float));
    if (!hdn || !r->token_similarity) {
        free(hdn);
        return attn_cli_error(1, "out of memory");
    }
    if (attn_bert_encode(s->ctx, s->bert, 2, (const int32_t *const *)s->ids, s->len, hdn)) {
        free(hdn);
        return fail(s);
    }
    for (int64_t i = 0; i < T0; i++)
        for (int64_t j = 0; j < T1; j++) {
            const float *a = hdn + i * E, *b = hdn + (Tm + j) * E;
            double d = 0, na = 0, nb = 0;
            for (int64_t k = 0; k < E; k++)
                d += (double)a[k] * b[k], na += (double)a[k] * a[k], nb += (double)b[k] * b[k];
            r->token_similarity[i * T1 + j] = (float)(na > 0 && nb > 0 ? d / sqrt(na * nb) : 0);
        }
    free(hdn);
    const float *a = r->x[0].emb, *b = r->x[1].emb;
    double d = 0, na = 0, nb = 0;
    for (int64_t k = 0; k < E; k++)
        d += (double)a[k] * b[k], na += (double)a[k] * a[k], nb += (double)b[k] * b[k];
    r->similarity = na > 0 && nb > 0 ? d / sqrt(na * nb) : 0;
    return 0;
}

static void put_token(const session *s, int32_t id, int cols) {
    const char *tk = attn_tokenizer_token(s->tok, id);
    embed_put_label(stdout, tk, strlen(tk), cols, 1);
}

static void print_summary(const ex_run *r) {
    const session *s = r->s;
    for (int64_t i = 0; i < r->n; i++) {
        const ex_text *x = &r->x[i];
        printf("text %lld (%lld tokens): ", (long long)(i + 1), (long long)x->T);
        embed_put_label(stdout, r->t->s[i], r->t->len[i], 60, 0);
        printf("\n\nper head: mean entropy (nats), mean distance (tokens), share on [CLS] / "
               "[SEP] / punctuation, strongest link\n");
        printf("%5s %4s %8s %8s %6s %6s %6s  %s\n", "layer", "head", "entropy", "distance", "cls",
               "sep", "punct", "link");
        for (int64_t l = 0; l < r->L; l++)
            for (int64_t h = 0; h < r->H; h++) {
                const attn_head_stats *st = &x->stats[l * r->H + h];
                printf("%5lld %4lld %8.3f %8.3f %6.3f %6.3f %6.3f  ", (long long)l, (long long)h,
                       st->entropy, st->distance, st->share_cls, st->share_sep, st->share_punct);
                printf("%s -> ", attn_tokenizer_token(s->tok, x->ids[st->top_i]));
                printf("%s %.3f\n", attn_tokenizer_token(s->tok, x->ids[st->top_j]), st->top_p);
            }
        printf("\ntoken scores (rows averaged as the model pools): last-layer attention, "
               "rollout, flow%s%s\n",
               x->flow_rows < x->T ? " ([CLS] row only: --flow all for every row)" : "",
               x->relevance ? ", relevance" : "");
        if (x->relevance) printf("relevance explains the output %.6f\n", x->relevance_output);
        for (int64_t t = 0; t < x->T; t++) {
            printf("%4lld  ", (long long)t);
            put_token(s, x->ids[t], 16);
            printf(" %7.4f %7.4f %7.4f", x->score[EX_ATTENTION][t], x->score[EX_ROLLOUT][t],
                   x->score[EX_FLOW][t]);
            if (x->score[EX_RELEVANCE]) printf(" %7.4f", x->score[EX_RELEVANCE][t]);
            putchar('\n');
        }
        putchar('\n');
    }
    if (r->token_similarity) printf("cosine similarity of texts 1 and 2: %.4f\n\n", r->similarity);
}

static void print_heads(const ex_run *r) {
    printf("head importance (Michel et al., 2019): 1 - cos(embedding with the head masked, "
           "embedding), mean over %lld texts\n%5s",
           (long long)r->heads_texts, "layer");
    for (int64_t h = 0; h < r->H; h++)
        printf(" %7lld", (long long)h);
    putchar('\n');
    for (int64_t l = 0; l < r->L; l++) {
        printf("%5lld", (long long)l);
        for (int64_t h = 0; h < r->H; h++)
            printf(" %7.4f", r->importance[l * r->H + h]);
        putchar('\n');
    }
    printf("\npruning the least important heads first: mean cos(embedding pruned, embedding)\n");
    const int64_t NH = r->L * r->H;
    for (int64_t k = 0; k <= NH; k++)
        if (k % (NH / 12 > 0 ? NH / 12 : 1) == 0 || k == NH)
            printf("  %3lld heads pruned: %.4f\n", (long long)k, r->prune[k]);
    putchar('\n');
}

static void print_faithfulness(const ex_run *r) {
    const char *what = !r->relevance ? "the embedding's cosine to the full text's"
                       : r->relevance_dim >= 0
                           ? "the embedding dimension --relevance explains"
                           : "the cosine to the other text (text 1 to 2, the others to 1)";
    printf("faithfulness on %lld texts: content tokens removed in order of each method's score,\n"
           "%lld steps; the output: %s\n(random: mean of %lld orders). Lower area = the output\n"
           "falls faster = a more faithful attribution.\n\n",
           (long long)r->n, (long long)r->steps, what, (long long)r->random_orders);
    printf("%-10s %6s   mean curve, 0%% .. 100%% removed\n", "method", "area");
    for (int m = 0; m < EX_METHODS; m++) {
        if (!r->x[0].curve[m]) continue;
        printf("%-10s %6.4f  ", explain_method_names[m], r->area[m]);
        for (int64_t k = 0; k <= r->steps; k++) {
            double c = 0;
            for (int64_t i = 0; i < r->n; i++)
                c += r->x[i].curve[m][k];
            printf(" %.3f", c / (double)r->n);
        }
        putchar('\n');
    }
    int best = 0;
    for (int m = 1; m < EX_RANDOM; m++)
        if (r->x[0].curve[m] && r->area[m] < r->area[best]) best = m;
    printf("\nmost faithful here: %s\n", explain_method_names[best]);
}

/* Fail early (before minutes of work) when an output cannot be created. */
static int check_output(const char *opt, const char *path) {
    if (!path || !strcmp(path, "-")) return 0;
    char *dir = strdup(path);
    if (!dir) return attn_cli_error(1, "out of memory");
    char *slash = strrchr(dir, '/');
    const char *d = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
    int ok = access(d, W_OK | X_OK) == 0;
    int e = errno;
    free(dir);
    if (!ok) return attn_cli_error(1, "%s %s: cannot write there: %s", opt, path, strerror(e));
    return 0;
}

int attn_cmd_explain(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *json = NULL, *html = NULL, *png = NULL;
    const char *png_map = "head", *flow = "auto", *rel = NULL;
    int threads = 0, layer = 0, head = 0, heads = 0, faith = 0, steps = 10, first;
    const cli_opt opts[] = {
        {"--model", CLI_STRING, &model, 0, 0, 0, NULL},
        {"--input", CLI_STRING, &input, 0, 0, 0, NULL},
        CLI_OPT_THREADS(&threads),
        {"--layer", CLI_INT, &layer, 0, INT_MAX, 0, NULL},
        {"--head", CLI_INT, &head, 0, INT_MAX, 0, NULL},
        {"--json", CLI_STRING, &json, 0, 0, 0, NULL},
        {"--html", CLI_STRING, &html, 0, 0, 0, NULL},
        {"--png", CLI_STRING, &png, 0, 0, 0, NULL},
        {"--png-map", CLI_STRING, &png_map, 0, 0, 0, NULL},
        {"--flow", CLI_STRING, &flow, 0, 0, 0, NULL},
        {"--heads", CLI_FLAG, &heads, 0, 0, 0, NULL},
        {"--faithfulness", CLI_FLAG, &faith, 0, 0, 0, NULL},
        {"--relevance", CLI_STRING, &rel, 0, 0, 0, NULL},
        {"--steps", CLI_INT, &steps, 1, 1000, 0, NULL},
    };
    const cli_spec spec = {"explain", opts, sizeof opts / sizeof opts[0], help, CLI_POS_REST, 0};
    int prc = attn_cli_parse(&spec, argc, argv, NULL, &first);
    if (prc >= 0) return prc;
    if (strcmp(png_map, "head") && strcmp(png_map, "rollout"))
        return attn_cli_error(2, "explain: --png-map must be head or rollout, got '%s'", png_map);
    if (strcmp(flow, "auto") && strcmp(flow, "all") && strcmp(flow, "cls"))
        return attn_cli_error(2, "explain: --flow must be all or cls, got '%s'", flow);
    long rel_dim = -1;
    if (rel && strcmp(rel, "similarity") &&
        (strncmp(rel, "dim:", 4) || attn_cli_parse_long(rel + 4, &rel_dim) || rel_dim < 0))
        return attn_cli_error(
            2, "explain: --relevance must be similarity or dim:K (K >= 0), got '%s'", rel);
    if (png && !strcmp(png, "-"))
        return attn_cli_error(2, "explain: --png writes binary: give a FILE");
    if (html && json && !strcmp(html, "-") && !strcmp(json, "-"))
        return attn_cli_error(2, "explain: --json and --html cannot both go to stdout");
    int rc = check_output("--json", json);
    if (!rc) rc = check_output("--html", html);
    if (!rc) rc = check_output("--png", png);
    if (rc) return rc;

    texts t;
    memset(&t, 0, sizeof t);
    session s;
    memset(&s, 0, sizeof s);
    ex_run r;
    memset(&r, 0, sizeof r);
    rc = embed_gather(&t, argc, argv, first, input, "explain", help);
    if (!rc) rc = embed_open_model(&s, model, threads);
    if (!rc) rc = embed_tokenize_all(&s, &t);
    if (!rc) {
        const attn_model_info *mi = attn_model_get_info(s.model);
        r.s = &s, r.t = &t, r.L = mi->num_layers, r.H = mi->num_heads, r.E = mi->hidden_size;
        r.n = t.n, r.layer = layer, r.head = head, r.png_rollout = !strcmp(png_map, "rollout");
        r.relevance = rel, r.relevance_dim = rel_dim;
        if (rel && rel_dim >= r.E)
            rc =
                attn_cli_error(1, "explain: --relevance dim:%ld: the embedding has %lld dimensions",
                               rel_dim, (long long)r.E);
        if (rel && rel_dim < 0 && t.n < 2)
            rc = attn_cli_error(2, "explain: --relevance similarity needs two or more texts");
        if (!rc && (layer >= r.L || head >= r.H))
            rc = attn_cli_error(1,
                                "explain: layer %d / head %d out of range (the model has %lld "
                                "layers of %lld heads, counted from 0)",
                                layer, head, (long long)r.L, (long long)r.H);
    }
    for (int64_t i = 0; !rc && i < t.n; i++)
        if (s.len[i] <= 2)
            rc = attn_cli_error(1, "%s: the text tokenizes to no tokens (only [CLS] [SEP])",
                                t.where[i]);
    if (!rc && !(r.x = calloc((size_t)t.n, sizeof *r.x))) rc = attn_cli_error(1, "out of memory");
    for (int64_t i = 0; !rc && i < t.n; i++)
        rc = analyse_text(&r, i, !strcmp(flow, "all") ? 1 : !strcmp(flow, "cls") ? 2 : 0);
    if (!rc && t.n >= 2) rc = compare_texts(&r);
    if (!rc && rel) rc = relevance(&r);
    if (!rc && heads) rc = head_importance(&r);
    if (!rc && faith) {
        r.steps = steps, r.random_orders = 5;
        rc = faithfulness(&r);
    }
    if (!rc && png) rc = explain_write_png(png, &r);
    if (!rc && (json || html)) rc = explain_format_json(&r);
    if (!rc && json) rc = attn_cli_write_to(json, explain_write_json_cached, &r);
    if (!rc && html) rc = attn_cli_write_to(html, explain_write_html, &r);
    if (!rc && !json && !html && !png) print_summary(&r);
    int quiet = (json && !strcmp(json, "-")) || (html && !strcmp(html, "-"));
    if (!rc && heads && !quiet) print_heads(&r);
    if (!rc && faith && !quiet) print_faithfulness(&r);
    free_run(&r);
    embed_session_free(&s, t.n);
    embed_texts_free(&t);
    return rc;
}
