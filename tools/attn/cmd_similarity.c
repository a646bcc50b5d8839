/* attn similarity: cosine similarities of sentence embeddings, as a table
 * or JSON; with --query, search a corpus (the texts) for the K closest. */
#include "cli_out.h"
#include "embed.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LABEL_COLS 72 /* texts longer than this are cut ("…") in tables */

static void help(FILE *f) {
    fprintf(f,
            "usage: attn similarity [--model DIR] [--input FILE] [--json] [--threads N] TEXT...\n"
            "       attn similarity --query TEXT [--top-k K] [--model DIR] [--input FILE]\n"
            "                       [--json] [--threads N] [TEXT...]\n\n"
            "Cosine similarity of the texts' sentence embeddings: the matrix, as a table\n"
            "(texts longer than %d columns are cut with '…') or, with --json, as\n"
            "{\"texts\": [...], \"similarity\": [[...]]}. With --query: the K texts (default\n"
            "10) most similar to the query, best first, with their scores and numbers (from\n"
            "1, in input order: lines of --input FILE when no TEXT is given); with --json\n"
            "{\"query\": ..., \"results\": [{\"rank\", \"line\", \"score\", \"text\"}]}. For a\n"
            "corpus of thousands of lines: --input FILE --query TEXT --top-k K.\n\n"
            "  --query TEXT   search the texts for TEXT instead of printing the matrix\n"
            "  --top-k K      how many results of --query (default 10; fewer if fewer texts)\n"
            "  --json         machine-readable output\n",
            LABEL_COLS);
    embed_help_model(f);
}

static double cosine(const float *a, const float *b, int64_t E) {
    double d = 0, na = 0, nb = 0;
    for (int64_t k = 0; k < E; k++) {
        d += (double)a[k] * b[k];
        na += (double)a[k] * a[k];
        nb += (double)b[k] * b[k];
    }
    return na > 0 && nb > 0 ? d / sqrt(na * nb) : 0.0;
}

static void matrix_table(const texts *t, const float *e, int64_t E) {
    printf("cosine similarity of %lld texts\n\n", (long long)t->n);
    for (int64_t i = 0; i < t->n; i++) {
        printf("  [%lld] ", (long long)(i + 1));
        embed_put_label(stdout, t->s[i], t->len[i], LABEL_COLS, 0);
        putchar('\n');
    }
    printf("\n%6s", "");
    for (int64_t j = 0; j < t->n; j++) {
        char lab[32];
        snprintf(lab, sizeof lab, "[%lld]", (long long)(j + 1));
        printf(" %6s", lab);
    }
    putchar('\n');
    for (int64_t i = 0; i < t->n; i++) {
        char lab[32];
        snprintf(lab, sizeof lab, "[%lld]", (long long)(i + 1));
        printf("%6s", lab);
        for (int64_t j = 0; j < t->n; j++)
            printf(" %6.3f", cosine(e + i * E, e + j * E, E));
        putchar('\n');
    }
}

static void matrix_json(const texts *t, const float *e, int64_t E) {
    fputs("{\"texts\": [", stdout);
    for (int64_t i = 0; i < t->n; i++) {
        if (i) fputs(", ", stdout);
        attn_cli_json_str(stdout, t->s[i], t->len[i]);
    }
    fputs("],\n \"similarity\": [", stdout);
    for (int64_t i = 0; i < t->n; i++) {
        fputs(i ? ",\n  [" : "\n  [", stdout);
        for (int64_t j = 0; j < t->n; j++)
            printf(j ? ", %.7f" : "%.7f", cosine(e + i * E, e + j * E, E));
        putchar(']');
    }
    fputs("]}\n", stdout);
}

typedef struct hit {
    int64_t i;
    double score;
} hit;

static int hit_cmp(const void *x, const void *y) { /* best first, then input order */
    const hit *a = x, *b = y;
    if (a->score != b->score) return a->score < b->score ? 1 : -1;
    return a->i < b->i ? -1 : a->i > b->i;
}

/* e[0] is the query, e[1..] the corpus texts t->s[0..]. */
static int search(const texts *t, const char *query, const float *e, int64_t E, int64_t k,
                  int json) {
    const int64_t n = t->n;
    hit *h = malloc((size_t)(n + 1) * sizeof *h);
    if (!h) return attn_cli_error(1, "out of memory");
    for (int64_t i = 0; i < n; i++)
        h[i] = (hit){i, cosine(e, e + (i + 1) * E, E)};
    qsort(h, (size_t)n, sizeof *h, hit_cmp);
    if (k > n) k = n;
    if (json) {
        fputs("{\"query\": ", stdout);
        attn_cli_json_str(stdout, query, strlen(query));
        fputs(", \"results\": [", stdout);
        for (int64_t r = 0; r < k; r++) {
            printf("%s\n  {\"rank\": %lld, \"line\": %lld, \"score\": %.7f, \"text\": ",
                   r ? "," : "", (long long)(r + 1), (long long)(h[r].i + 1), h[r].score);
            attn_cli_json_str(stdout, t->s[h[r].i], t->len[h[r].i]);
            putchar('}');
        }
        fputs("]}\n", stdout);
    } else {
        printf("the %lld of %lld texts most similar to: ", (long long)k, (long long)n);
        embed_put_label(stdout, query, strlen(query), LABEL_COLS, 0);
        printf("\n\n%4s  %6s  %6s  %s\n", "rank", "score", "line", "text");
        for (int64_t r = 0; r < k; r++) {
            printf("%4lld  %6.3f  %6lld  ", (long long)(r + 1), h[r].score,
                   (long long)(h[r].i + 1));
            embed_put_label(stdout, t->s[h[r].i], t->len[h[r].i], LABEL_COLS, 0);
            putchar('\n');
        }
    }
    free(h);
    return 0;
}

int attn_cmd_similarity(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *query = NULL;
    int threads = 0, json = 0, topk = 0, first;
    const cli_opt opts[] = {
        {"--model", CLI_STRING, &model, 0, 0, 0, NULL},
        {"--input", CLI_STRING, &input, 0, 0, 0, NULL},
        CLI_OPT_THREADS(&threads),
        {"--json", CLI_FLAG, &json, 0, 0, 0, NULL},
        {"--query", CLI_STRING, &query, 0, 0, 0, NULL},
        {"--top-k", CLI_INT, &topk, 1, INT_MAX, 0, NULL},
    };
    const cli_spec spec = {"similarity", opts, sizeof opts / sizeof opts[0], help, CLI_POS_REST, 0};
    int prc = attn_cli_parse(&spec, argc, argv, NULL, &first);
    if (prc >= 0) return prc;
    if (topk && !query) return attn_cli_error(2, "similarity: --top-k goes with --query TEXT");

    texts t;
    memset(&t, 0, sizeof t);
    session s;
    memset(&s, 0, sizeof s);
    int rc = 0;
    /* the query is text 0, embedded with the corpus */
    if (query && embed_push(&t, (char *)query, strlen(query), "%s--query", "", 0))
        rc = attn_cli_error(1, "out of memory");
    if (!rc) rc = embed_gather(&t, argc, argv, first, input, "similarity", help);
    if (!rc && query && t.n == 1) {
        help(stderr);
        rc = attn_cli_error(2, "similarity: --query needs texts to search (TEXT or --input FILE)");
    }
    if (!rc) rc = embed_open_model(&s, model, threads);
    if (!rc) {
        const int64_t E = attn_model_get_info(s.model)->hidden_size;
        float *e = malloc((size_t)(t.n * E + 1) * sizeof *e);
        rc = e ? embed_all(&s, &t, e, 0) : attn_cli_error(1, "out of memory");
        if (!rc && query) {
            texts corpus = t; /* the texts after the query */
            corpus.s++, corpus.len++, corpus.where++, corpus.n--;
            rc = search(&corpus, query, e, E, topk ? topk : 10, json);
        } else if (!rc) {
            if (json)
                matrix_json(&t, e, E);
            else
                matrix_table(&t, e, E);
        }
        free(e);
    }
    embed_session_free(&s, t.n);
    embed_texts_free(&t);
    return rc;
}
