/* What attn embed, attn similarity and the attention display share (embed.h). */
#include "cli_time.h"
#include "embed.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int embed_push(texts *t, char *s, size_t len, const char *where_fmt, const char *a, long b) {
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

void embed_texts_free(texts *t) {
    for (int64_t i = 0; i < t->n; i++)
        free(t->where[i]);
    free(t->s), free(t->len), free(t->where), free(t->file);
}

/* Read FILE ('-' = stdin) whole and split it into lines (a final newline
 * ends the last line; '\r' before '\n' is dropped). */
int embed_read_lines(texts *t, const char *path) {
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
        if (embed_push(t, buf + i, len, "%s:%ld", path, ++line))
            return attn_cli_error(1, "out of memory");
        i = j + 1;
    }
    return 0;
}

/* Offset of the first byte that breaks UTF-8 (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), or -1 if s is valid. */
long embed_utf8_error(const unsigned char *s, size_t n) {
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

void embed_session_free(session *s, int64_t n) {
    if (s->ids)
        for (int64_t i = 0; i < n; i++)
            free(s->ids[i]);
    free(s->ids), free(s->len);
    attn_model_free(s->model);
    attn_ctx_free(s->ctx);
}

int embed_open_model(session *s, const char *model, long threads) {
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
int embed_tokenize_all(session *s, const texts *t) {
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
/* attn_bert_embed, or attn_bert_embed_with s->opt (stats summed). */
static attn_status embed_call(session *s, const texts *t, float *out) {
    if (!s->opt)
        return attn_bert_embed(s->ctx, s->bert, t->n, (const int32_t *const *)s->ids, s->len, out);
    attn_bert_stats st;
    attn_status rc = attn_bert_embed_with(s->ctx, s->bert, s->opt, t->n,
                                          (const int32_t *const *)s->ids, s->len, out, &st);
    s->stats.flops += st.flops, s->stats.token_layers += st.token_layers;
    return rc;
}

int embed_all(session *s, const texts *t, float *out, long bench) {
    int rc = embed_tokenize_all(s, t);
    if (rc) return rc;
    if (embed_call(s, t, out)) return attn_cli_error(1, "%s", attn_ctx_last_error(s->ctx));
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
        rc = embed_tokenize_all(s, t);
        if (!rc && embed_call(s, t, out)) rc = attn_cli_error(1, "%s", attn_ctx_last_error(s->ctx));
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
        if (s->opt) /* per run: the first call and the bench runs are alike */
            fprintf(stderr, "attn embed: per run %.3f GFLOP, %lld token-layers\n",
                    s->stats.flops / (double)(bench + 1) * 1e-9,
                    (long long)(s->stats.token_layers / (bench + 1)));
    }
    free(ts);
    return rc;
}

int embed_all_blocks(session *s, const texts *t, float *out) {
    const int64_t E = attn_model_get_info(s->model)->hidden_size;
    int rc = 0;
    for (int64_t b0 = 0; !rc && b0 < t->n; b0 += EMBED_BATCH) {
        texts part = *t;
        part.s += b0, part.len += b0, part.where += b0;
        part.n = t->n - b0 < EMBED_BATCH ? t->n - b0 : EMBED_BATCH;
        rc = embed_all(s, &part, out + b0 * E, 0);
        /* the token ids are per block (embed_tokenize_all sizes them by the first) */
        if (s->ids)
            for (int64_t i = 0; i < part.n; i++)
                free(s->ids[i]);
        free(s->ids), free(s->len);
        s->ids = NULL, s->len = NULL;
    }
    return rc;
}

/* Print at most `cols` columns of UTF-8 s, padded to cols when pad. */
void embed_put_label(FILE *f, const char *s, size_t n, int cols, int pad) {
    int w = 0;
    size_t i = 0;
    while (i < n && w < cols) {
        size_t k = 1;
        while (i + k < n && ((unsigned char)s[i + k] & 0xc0) == 0x80)
            k++;
        if (w == cols - 1 && i + k < n) {
            fputs("…", f); /* more follows */
            w++;
            break;
        }
        fwrite(s + i, 1, k, f);
        i += k, w++;
    }
    for (; pad && w < cols; w++)
        putc(' ', f);
}

int embed_gather(texts *t, int argc, char **argv, int first, const char *input, const char *cmd,
                 void (*usage)(FILE *)) {
    for (int i = first; i < argc; i++)
        if (embed_push(t, argv[i], strlen(argv[i]), "%sargument %ld", "", (long)(i - first + 1)))
            return attn_cli_error(1, "out of memory");
    int rc = input ? embed_read_lines(t, input) : 0;
    if (rc) return rc;
    if (t->n == 0) {
        usage(stderr);
        return attn_cli_error(2, "%s: no TEXT given (as arguments or with --input FILE)", cmd);
    }
    for (int64_t i = 0; i < t->n; i++) {
        long bad = embed_utf8_error((const unsigned char *)t->s[i], t->len[i]);
        if (bad >= 0) return attn_cli_error(1, "%s: invalid UTF-8 at byte %ld", t->where[i], bad);
    }
    return 0;
}
