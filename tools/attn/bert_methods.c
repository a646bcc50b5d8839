/* Method names of the BERT attention study (bert_methods.h). */
#include "bert_methods.h"

#include <stdlib.h>
#include <string.h>

/* A whole decimal count >= lo after prefix p in s; -1 when s is not that. */
static long long count_after(const char *s, const char *p, long long lo, const char **rest) {
    const size_t n = strlen(p);
    if (strncmp(s, p, n) || s[n] < '0' || s[n] > '9') return -1;
    char *end;
    long long v = strtoll(s + n, &end, 10);
    if (v < lo || v > (1LL << 30)) return -1;
    if (rest)
        *rest = end;
    else if (*end)
        return -1;
    return v;
}

int bert_method_random(const attn_bert_options *o) {
    return (o->attention == ATTN_BERT_APPROX && o->approx == ATTN_APPROX_PERFORMER) ||
           (o->attention == ATTN_BERT_LAYOUT && o->layout.random > 0);
}

int bert_draws_parse(const char *s, attn_bert_draws *d) {
    if (!strcmp(s, "shared")) *d = ATTN_BERT_DRAWS_SHARED;
    else if (!strcmp(s, "layer")) *d = ATTN_BERT_DRAWS_LAYER;
    else if (!strcmp(s, "head")) *d = ATTN_BERT_DRAWS_HEAD;
    else return -1;
    return 0;
}

static int method_parse(const char *name, uint64_t seed, attn_bert_options *o);

int bert_method_parse(const char *name, uint64_t seed, attn_bert_options *o) {
    char buf[128];
    memset(o, 0, sizeof *o);
    if (strlen(name) >= sizeof buf) return -1;
    strcpy(buf, name);
    /* suffixes, last first: +prune-L-F (once), +draws-MODE (once) */
    int64_t prune_after = 0;
    double keep = 0.0;
    int draws = -1;
    for (char *p; (p = strrchr(buf, '+'));) {
        if (!strncmp(p, "+draws-", 7)) {
            attn_bert_draws d;
            if (draws >= 0 || bert_draws_parse(p + 7, &d)) return -1;
            draws = (int)d;
        } else if (!strncmp(p, "+prune-", 7)) {
            attn_bert_options pr;
            if (prune_after || method_parse(p + 1, seed, &pr) || !pr.prune_after) return -1;
            prune_after = pr.prune_after, keep = pr.keep;
        } else {
            break;
        }
        *p = '\0';
    }
    if (method_parse(buf, seed, o)) return -1;
    if (prune_after) {
        if (o->prune_after) return -1; /* pruned twice */
        o->prune_after = prune_after, o->keep = keep;
    }
    if (draws >= 0) {
        if (!bert_method_random(o)) {
            memset(o, 0, sizeof *o);
            return -2;
        }
        o->draws = (attn_bert_draws)draws;
    }
    return 0;
}

static int method_parse(const char *name, uint64_t seed, attn_bert_options *o) {
    memset(o, 0, sizeof *o);
    const char *rest = NULL;
    long long v;
    if (!strcmp(name, "exact")) return 0;
    if (!strcmp(name, "linear")) {
        o->attention = ATTN_BERT_APPROX, o->approx = ATTN_APPROX_LINEAR;
        return 0;
    }
    if ((v = count_after(name, "window-", 0, &rest)) >= 0) {
        if (*rest && strcmp(rest, "+cls")) return -1;
        o->attention = ATTN_BERT_LAYOUT, o->block = 1;
        o->layout.use_window = 1, o->layout.window = v, o->layout.global = *rest ? 1 : 0;
        return 0;
    }
    if ((v = count_after(name, "bigbird-", 1, NULL)) >= 0) {
        o->attention = ATTN_BERT_LAYOUT, o->block = v;
        o->layout.use_window = 1, o->layout.window = 1, o->layout.global = 1;
        o->layout.random = 2, o->layout.seed = seed;
        return 0;
    }
    if ((v = count_after(name, "performer-", 1, NULL)) >= 0) {
        o->attention = ATTN_BERT_APPROX, o->approx = ATTN_APPROX_PERFORMER;
        o->features = v, o->seed = seed;
        return 0;
    }
    if ((v = count_after(name, "nystrom-", 1, NULL)) >= 0) {
        o->attention = ATTN_BERT_APPROX, o->approx = ATTN_APPROX_NYSTROM, o->landmarks = v;
        return 0;
    }
    if ((v = count_after(name, "topk-", 1, NULL)) >= 0) {
        o->attention = ATTN_BERT_APPROX, o->approx = ATTN_APPROX_TOPK, o->topk = v;
        return 0;
    }
    if ((v = count_after(name, "prune-", 1, &rest)) >= 0 && rest[0] == '-') {
        char *end;
        double f = strtod(rest + 1, &end);
        if (end == rest + 1 || *end || !(f > 0.0 && f <= 1.0)) return -1;
        o->prune_after = v, o->keep = f;
        return 0;
    }
    memset(o, 0, sizeof *o);
    return -1;
}

void bert_method_help(FILE *f, int in) {
    fprintf(f,
            "%*sexact          the model's own attention\n"
            "%*swindow-W       token i sees keys |i - j| <= W\n"
            "%*swindow-W+cls   and [CLS] sees every token and is seen by every token\n"
            "%*sbigbird-B      BigBird over blocks of B tokens: window 1 block each side,\n"
            "%*s               1 global block, 2 random blocks (seeded)\n"
            "%*slinear         elu + 1 kernelized linear attention\n"
            "%*sperformer-M    Performer FAVOR+, M random features (seeded)\n"
            "%*snystrom-L      Nystrom, L landmarks (clipped to the text's length)\n"
            "%*stopk-K         top-k, K keys per query (K >= length: exact)\n"
            "%*sprune-L-F      exact attention, tokens pruned after layer L to a fraction F\n"
            "%*sNAME+prune-L-F any of the above with pruning: tokens ranked by the attention\n"
            "%*s               they receive under that method (docs/EFFICIENT.md)\n"
            "%*sNAME+draws-layer, NAME+draws-head   bigbird-B or performer-M with a draw\n"
            "%*s               per layer or per layer and head (as --draws)\n",
            in, "", in, "", in, "", in, "", in, "", in, "", in, "", in, "", in, "", in, "", in,
            "", in, "", in, "", in, "");
}
