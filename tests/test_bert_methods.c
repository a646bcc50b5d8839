/* attn_bert_embed_with: the encoder with another attention in every layer
 * and with token pruning, on synthetic weights, against a naive encoder
 * written here in float64 (the oracle) and plain float32 (the yardstick),
 * which applies the same token-level pattern (window W, with or without
 * global [CLS]) and the same pruning rule. Rule: max |attn - f64| <= 2 *
 * max |naive f32 - f64| + 1e-6 on pooled embeddings of a batch of mixed
 * lengths. Also: zero options and keep = 1 give attn_bert_embed's bits,
 * top-k with k >= length and a window wider than the text are exact
 * attention, a text's embedding does not depend on its batch mates'
 * padding, the statistics, and every bad option. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "at_bert.h"
#include "attn_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;
static double urand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}
static void fill(float *p, size_t n, double scale, double offset) {
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(offset + scale * urand());
}

/* What the naive encoder does besides exact attention. */
typedef enum naive_kind {
    NAIVE_SOFTMAX = 0, /* exact softmax over a token window or a block layout */
    NAIVE_TOPK,
    NAIVE_LINEAR,
    NAIVE_PERFORMER,
    NAIVE_NYSTROM,
} naive_kind;

typedef struct naive_opts {
    naive_kind kind;
    int64_t window; /* SOFTMAX: < 0 every key (unless block) */
    int cls;        /* window: token 0 global */
    int64_t block;  /* SOFTMAX: > 0 a block layout of spec, built by attn_sdpa_layout_build */
    attn_sdpa_layout_spec spec;
    attn_ctx *ctx;
    int64_t count; /* TOPK: k, PERFORMER: m, NYSTROM: L */
    uint64_t seed; /* PERFORMER's features, the layout's random blocks */
    attn_bert_draws draws;
    int64_t prune_after;
    double keep;
    double margin; /* out: the smallest gap between a kept and a pruned token's score */
} naive_opts;

static int visible(const naive_opts *o, int64_t i, int64_t j) {
    if (o->window < 0) return 1;
    if (o->cls && (i == 0 || j == 0)) return 1;
    return (i > j ? i - j : j - i) <= o->window;
}

/* The seed of a layer's (and head's) random parts (attn_bert_draw_seed). */
static uint64_t naive_seed(const naive_opts *o, int64_t layer, int64_t head) {
    if (o->draws == ATTN_BERT_DRAWS_SHARED) return o->seed;
    return attn_bert_draw_seed(o->seed, layer, o->draws == ATTN_BERT_DRAWS_HEAD ? head : -1);
}

#define R double
#define PROBS probs64
#define SQRT sqrt
#define EXP exp
#include "test_bert_methods_probs.inc"
#undef R
#undef PROBS
#undef SQRT
#undef EXP
#define R float
#define PROBS probs32
#define SQRT sqrtf
#define EXP expf
#include "test_bert_methods_probs.inc"
#undef R
#undef PROBS
#undef SQRT
#undef EXP

/* The naive encoder for one text (mean pooling, normalised), in type R. */
#define DEFINE_NAIVE(R, NAME, PROBS, SQRT, EXP, ERF)                                               \
    AT_DEFINE_LN_LIN(R, NAME, SQRT)                                                                \
    static void NAME(const attn_bert *m, const int32_t *ids, int64_t T0, naive_opts *no, R *emb) { \
        const attn_bert_config *c = &m->cfg;                                                       \
        const int64_t E = c->hidden_size, H = c->num_heads, Dh = E / H, I = c->intermediate_size;  \
        const R eps = (R)c->layer_norm_eps;                                                        \
        int64_t T = T0;                                                                            \
        R *x = malloc(sizeof(R) * T * E), *qkv = malloc(sizeof(R) * T * 3 * E);                    \
        R *a = malloc(sizeof(R) * T * E), *y = malloc(sizeof(R) * T * E);                          \
        R *h = malloc(sizeof(R) * T * I), *s = malloc(sizeof(R) * T * T);                          \
        double *recv = malloc(sizeof(double) * T);                                                 \
        for (int64_t t = 0; t < T; t++) {                                                          \
            for (int64_t k = 0; k < E; k++)                                                        \
                x[t * E + k] = (R)m->word[ids[t] * E + k] + (R)m->pos[t * E + k] + (R)m->type[k];  \
            NAME##_ln(x + t * E, E, m->emb_ln_g, m->emb_ln_b, eps);                                \
        }                                                                                          \
        no->margin = INFINITY;                                                                     \
        for (int64_t l = 0; l < c->num_layers; l++) {                                              \
            const attn__bert_layer *L = &m->layers[l];                                             \
            for (int64_t j = 0; j < T; j++)                                                        \
                recv[j] = 0;                                                                       \
            NAME##_lin(x, T, E, L->wqkv, L->bqkv, 3 * E, qkv);                                     \
            for (int64_t hh = 0; hh < H; hh++) {                                                   \
                PROBS(no, l, qkv, T, E, hh, Dh, s);                                                \
                for (int64_t i = 0; i < T; i++)                                                    \
                    for (int64_t e = 0; e < Dh; e++) {                                             \
                        R acc = 0;                                                                 \
                        for (int64_t j = 0; j < T; j++)                                            \
                            acc += s[i * T + j] * qkv[j * 3 * E + 2 * E + hh * Dh + e];            \
                        a[i * E + hh * Dh + e] = acc;                                              \
                    }                                                                              \
                for (int64_t i = 0; i < T; i++)                                                    \
                    for (int64_t j = 0; j < T; j++)                                                \
                        recv[j] += (double)s[i * T + j];                                           \
            }                                                                                      \
            NAME##_lin(a, T, E, L->wo, L->bo, E, y);                                               \
            for (int64_t t = 0; t < T; t++) {                                                      \
                for (int64_t k = 0; k < E; k++)                                                    \
                    x[t * E + k] += y[t * E + k];                                                  \
                NAME##_ln(x + t * E, E, L->ln1_g, L->ln1_b, eps);                                  \
            }                                                                                      \
            NAME##_lin(x, T, E, L->wi, L->bi, I, h);                                               \
            for (int64_t k = 0; k < T * I; k++)                                                    \
                h[k] = h[k] * (R)0.5 * ((R)1 + ERF(h[k] / SQRT((R)2)));                            \
            NAME##_lin(h, T, I, L->wf, L->bf, E, y);                                               \
            for (int64_t t = 0; t < T; t++) {                                                      \
                for (int64_t k = 0; k < E; k++)                                                    \
                    x[t * E + k] += y[t * E + k];                                                  \
                NAME##_ln(x + t * E, E, L->ln2_g, L->ln2_b, eps);                                  \
            }                                                                                      \
            if (no->prune_after == l + 1) { /* keep ceil(keep T): ends, then most received */      \
                int64_t k = (int64_t)ceil(no->keep * (double)T - 1e-9);                            \
                k = k < 2 ? (T < 2 ? T : 2) : k;                                                   \
                k = k > T ? T : k;                                                                 \
                char *kept = calloc((size_t)T + 1, 1);                                             \
                kept[0] = kept[T - 1] = 1;                                                         \
                for (int64_t got = T > 1 ? 2 : 1; got < k; got++) {                                \
                    int64_t best = -1;                                                             \
                    for (int64_t j = 1; j < T - 1; j++)                                            \
                        if (!kept[j] && (best < 0 || recv[j] > recv[best])) best = j;              \
                    if (best >= 0) kept[best] = 1;                                                 \
                }                                                                                  \
                for (int64_t j = 1; j < T - 1; j++)                                                \
                    for (int64_t j2 = 1; j2 < T - 1; j2++)                                         \
                        if (kept[j] && !kept[j2] && recv[j] - recv[j2] < no->margin &&             \
                            !(recv[j] == 0 && recv[j2] == 0)) /* top-k: both never chosen */       \
                            no->margin = recv[j] - recv[j2];                                       \
                int64_t t2 = 0;                                                                    \
                for (int64_t t = 0; t < T; t++)                                                    \
                    if (kept[t]) memmove(x + t2++ * E, x + t * E, sizeof(R) * E);                  \
                T = t2;                                                                            \
                free(kept);                                                                        \
            }                                                                                      \
        }                                                                                          \
        R norm = 0;                                                                                \
        for (int64_t k = 0; k < E; k++) {                                                          \
            R v = 0;                                                                               \
            for (int64_t t = 0; t < T; t++)                                                        \
                v += x[t * E + k];                                                                 \
            emb[k] = v / (R)T;                                                                     \
            norm += emb[k] * emb[k];                                                               \
        }                                                                                          \
        for (int64_t k = 0; k < E; k++)                                                            \
            emb[k] /= SQRT(norm);                                                                  \
        free(x), free(qkv), free(a), free(y), free(h), free(s), free(recv);                        \
    }

DEFINE_NAIVE(double, naive64, probs64, sqrt, exp, erf)
DEFINE_NAIVE(float, naive32, probs32, sqrtf, expf, erff)

enum { NT = 5, E_ = 16, H_ = 2, I_ = 24, LAYERS = 3 };
static const int64_t g_len[NT] = {7, 19, 2, 12, 33};

typedef struct fixture {
    attn_ctx *ctx;
    attn_bert *m;
    int32_t *ids[NT];
} fixture;

static void fixture_make(fixture *f, uint64_t seed) {
    assert_int_equal(attn_ctx_create(&f->ctx, 2), ATTN_OK);
    rng_state = seed;
    f->m = at_bert_synthetic(f->ctx, E_, H_, I_, LAYERS, ATTN_POOL_MEAN, 1, fill);
    assert_non_null(f->m);
    for (int i = 0; i < NT; i++) {
        f->ids[i] = malloc((size_t)g_len[i] * sizeof(int32_t));
        for (int64_t t = 0; t < g_len[i]; t++)
            f->ids[i][t] = (int32_t)((urand() + 1.0) * 26.0) % 53;
        f->ids[i][0] = 1, f->ids[i][g_len[i] - 1] = 2;
    }
}

static void fixture_free(fixture *f) {
    for (int i = 0; i < NT; i++)
        free(f->ids[i]);
    attn_bert_free(f->m);
    attn_ctx_free(f->ctx);
}

static double max_diff(const float *a, const float *b, int64_t n);

static attn_status run(fixture *f, const attn_bert_options *o, float *out, attn_bert_stats *st) {
    return attn_bert_embed_with(f->ctx, f->m, o, NT, (const int32_t *const *)f->ids, g_len, out,
                                st);
}

/* Every text against the naive encoder with the same options. */
static void check_against_naive(fixture *f, const attn_bert_options *o, naive_opts no,
                                const char *what) {
    float got[NT * E_];
    assert_int_equal(run(f, o, got, NULL), ATTN_OK);
    for (int i = 0; i < NT; i++) {
        double e64[E_];
        float e32[E_];
        naive64(f->m, f->ids[i], g_len[i], &no, e64);
        if (no.prune_after) /* the oracle's choice must not hang on a near tie */
            assert_true(no.margin > 1e-4 || isinf(no.margin));
        naive32(f->m, f->ids[i], g_len[i], &no, e32);
        char w[96];
        snprintf(w, sizeof w, "%s, text %d (%lld tokens)", what, i, (long long)g_len[i]);
        if (!at_check_f64(w, got + i * E_, e64, e32, E_, 0)) fail();
    }
}

static void test_against_naive(void **state) {
    (void)state;
    fixture f;
    fixture_make(&f, 7);
    attn_bert_options o;
    const int64_t windows[] = {0, 1, 3};
    for (int w = 0; w < 3; w++)
        for (int cls = 0; cls < 2; cls++) {
            memset(&o, 0, sizeof o);
            o.attention = ATTN_BERT_LAYOUT, o.block = 1;
            o.layout.use_window = 1, o.layout.window = windows[w], o.layout.global = cls;
            char what[64];
            snprintf(what, sizeof what, "window %lld%s", (long long)windows[w], cls ? "+cls" : "");
            check_against_naive(&f, &o, (naive_opts){.window = windows[w], .cls = cls}, what);
        }
    const double keeps[] = {0.25, 0.5, 0.8};
    for (int after = 1; after < LAYERS; after++)
        for (int k = 0; k < 3; k++) {
            memset(&o, 0, sizeof o);
            o.prune_after = after, o.keep = keeps[k];
            char what[64];
            snprintf(what, sizeof what, "prune after %d keep %.2f", after, keeps[k]);
            check_against_naive(
                &f, &o, (naive_opts){.window = -1, .prune_after = after, .keep = keeps[k]}, what);
        }
    fixture_free(&f);
}

/* Each method family of attn_bert_options, as the library runs it and as
 * the naive encoder does, with its random parts drawn from `seed`. */
typedef struct family {
    const char *name;
    attn_bert_options o;
    naive_opts no;
} family;

static int families(fixture *f, uint64_t seed, family *fa) {
    int n = 0;
    memset(fa, 0, 6 * sizeof *fa);
    fa[n].name = "window 1 + cls";
    fa[n].o.attention = ATTN_BERT_LAYOUT, fa[n].o.block = 1;
    fa[n].o.layout.use_window = 1, fa[n].o.layout.window = 1, fa[n].o.layout.global = 1;
    fa[n++].no = (naive_opts){.window = 1, .cls = 1};
    fa[n].name = "bigbird, blocks of 3";
    fa[n].o.attention = ATTN_BERT_LAYOUT, fa[n].o.block = 3;
    fa[n].o.layout.use_window = 1, fa[n].o.layout.window = 1, fa[n].o.layout.global = 1;
    fa[n].o.layout.random = 2, fa[n].o.layout.seed = seed;
    fa[n].no = (naive_opts){.block = 3, .spec = fa[n].o.layout, .ctx = f->ctx, .seed = seed};
    n++;
    fa[n].name = "top-4";
    fa[n].o.attention = ATTN_BERT_APPROX, fa[n].o.approx = ATTN_APPROX_TOPK, fa[n].o.topk = 4;
    fa[n++].no = (naive_opts){.kind = NAIVE_TOPK, .window = -1, .count = 4};
    fa[n].name = "linear";
    fa[n].o.attention = ATTN_BERT_APPROX, fa[n].o.approx = ATTN_APPROX_LINEAR;
    fa[n++].no = (naive_opts){.kind = NAIVE_LINEAR};
    fa[n].name = "performer-16";
    fa[n].o.attention = ATTN_BERT_APPROX, fa[n].o.approx = ATTN_APPROX_PERFORMER;
    fa[n].o.features = 16, fa[n].o.seed = seed;
    fa[n++].no = (naive_opts){.kind = NAIVE_PERFORMER, .count = 16, .ctx = f->ctx, .seed = seed};
    fa[n].name = "nystrom-4";
    fa[n].o.attention = ATTN_BERT_APPROX, fa[n].o.approx = ATTN_APPROX_NYSTROM;
    fa[n].o.landmarks = 4;
    fa[n++].no = (naive_opts){.kind = NAIVE_NYSTROM, .count = 4};
    return n;
}

/* Every method alone and with token pruning after each layer: the tokens
 * kept are those receiving the most of the method's own attention. */
static void test_methods_pruned(void **state) {
    (void)state;
    fixture f;
    fixture_make(&f, 7);
    family fa[6];
    const int nf = families(&f, 5, fa);
    const double keeps[] = {0.5, 0.3};
    for (int i = 0; i < nf; i++) {
        check_against_naive(&f, &fa[i].o, fa[i].no, fa[i].name);
        for (int after = 1; after < LAYERS; after++)
            for (int k = 0; k < 2; k++) {
                attn_bert_options o = fa[i].o;
                naive_opts no = fa[i].no;
                o.prune_after = no.prune_after = after;
                o.keep = no.keep = keeps[k];
                char what[96];
                snprintf(what, sizeof what, "%s, pruned after %d to %.2f", fa[i].name, after,
                         keeps[k]);
                check_against_naive(&f, &o, no, what);
                /* pruning changes the result, and keep 1 does not */
                float a[NT * E_], b[NT * E_];
                assert_int_equal(run(&f, &o, a, NULL), ATTN_OK);
                assert_int_equal(run(&f, &fa[i].o, b, NULL), ATTN_OK);
                if (k == 1) assert_true(max_diff(a, b, NT * E_) > 1e-4);
                o.keep = 1.0;
                assert_int_equal(run(&f, &o, a, NULL), ATTN_OK);
                assert_memory_equal(a, b, sizeof a);
            }
    }
    fixture_free(&f);
}

/* Per-layer and per-head draws of BigBird's random blocks and of the
 * Performer's features: the naive encoder with each layer's (head's) seed;
 * layers and heads get different seeds; the same seed gives the same bits,
 * another seed other numbers, and the shared draw is what it was. */
static void test_draws(void **state) {
    (void)state;
    fixture f;
    fixture_make(&f, 23);
    family fa[6];
    families(&f, 9, fa);
    const int random_ones[2] = {1, 4}; /* bigbird, performer */
    for (int64_t l = 0; l < 4; l++)
        for (int64_t h = -1; h < 4; h++) {
            const uint64_t s = attn_bert_draw_seed(9, l, h);
            assert_true(s != 9);
            for (int64_t l2 = 0; l2 < 4; l2++)
                for (int64_t h2 = -1; h2 < 4; h2++)
                    if (l2 != l || h2 != h) assert_true(attn_bert_draw_seed(9, l2, h2) != s);
        }
    assert_true(attn_bert_draw_seed(9, 0, -1) != attn_bert_draw_seed(10, 0, -1));
    for (int r = 0; r < 2; r++) {
        const family *fm = &fa[random_ones[r]];
        float shared[NT * E_], got[NT * E_], again[NT * E_];
        assert_int_equal(run(&f, &fm->o, shared, NULL), ATTN_OK);
        for (int d = 1; d <= 2; d++) {
            attn_bert_options o = fm->o;
            naive_opts no = fm->no;
            o.draws = no.draws = (attn_bert_draws)d;
            char what[96];
            snprintf(what, sizeof what, "%s, draws per %s", fm->name, d == 1 ? "layer" : "head");
            check_against_naive(&f, &o, no, what);
            assert_int_equal(run(&f, &o, got, NULL), ATTN_OK);
            assert_int_equal(run(&f, &o, again, NULL), ATTN_OK);
            assert_memory_equal(got, again, sizeof got);
            if (max_diff(got, shared, NT * E_) < 1e-4) {
                print_error("%s: the same as one shared draw\n", what);
                fail();
            }
            o.seed += 1, o.layout.seed += 1; /* another seed: another draw */
            assert_int_equal(run(&f, &o, again, NULL), ATTN_OK);
            assert_true(max_diff(got, again, NT * E_) > 1e-4);
            o.seed -= 1, o.layout.seed -= 1; /* with pruning */
            o.prune_after = no.prune_after = 1, o.keep = no.keep = 0.5;
            check_against_naive(&f, &o, no, what);
        }
        /* the shared draw: every layer and head with the seed itself */
        naive_opts no = fm->no;
        no.draws = ATTN_BERT_DRAWS_SHARED;
        check_against_naive(&f, &fm->o, no, fm->name);
    }
    fixture_free(&f);
}

static double max_diff(const float *a, const float *b, int64_t n) {
    double d = 0;
    for (int64_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* Options that change nothing: the same bits as attn_bert_embed; options
 * that change nothing in exact arithmetic: the same numbers closely. */
static void test_identities(void **state) {
    (void)state;
    fixture f;
    fixture_make(&f, 11);
    float ref[NT * E_], got[NT * E_];
    assert_int_equal(attn_bert_embed(f.ctx, f.m, NT, (const int32_t *const *)f.ids, g_len, ref),
                     ATTN_OK);
    attn_bert_options o;
    memset(&o, 0, sizeof o);
    attn_bert_stats st, st1;
    assert_int_equal(run(&f, NULL, got, &st), ATTN_OK);
    assert_memory_equal(got, ref, sizeof ref);
    assert_int_equal(run(&f, &o, got, &st), ATTN_OK);
    assert_memory_equal(got, ref, sizeof ref);
    int64_t tokens = 0;
    for (int i = 0; i < NT; i++)
        tokens += g_len[i];
    assert_int_equal(st.token_layers, tokens * LAYERS);
    assert_true(st.flops > 0);
    for (int after = 1; after < LAYERS; after++) { /* keep 1: every token, the same bits */
        o.prune_after = after, o.keep = 1.0;
        assert_int_equal(run(&f, &o, got, &st1), ATTN_OK);
        assert_memory_equal(got, ref, sizeof ref);
        assert_int_equal(st1.token_layers, st.token_layers);
    }
    o.prune_after = 1, o.keep = 0.3; /* fewer tokens later: less work */
    assert_int_equal(run(&f, &o, got, &st1), ATTN_OK);
    assert_true(st1.token_layers < st.token_layers && st1.flops < st.flops);
    assert_true(max_diff(got, ref, NT * E_) > 1e-3);
    /* a window wider than every text, top-k with k >= every length, Nystrom
     * and Performer are not exact; per-text runs match the batch closely */
    memset(&o, 0, sizeof o);
    o.attention = ATTN_BERT_LAYOUT, o.block = 1, o.layout.use_window = 1, o.layout.window = 40;
    assert_int_equal(run(&f, &o, got, NULL), ATTN_OK);
    assert_true(max_diff(got, ref, NT * E_) < 2e-6);
    memset(&o, 0, sizeof o);
    o.attention = ATTN_BERT_LAYOUT, o.block = 4, o.layout.global = 9; /* every block global */
    assert_int_equal(run(&f, &o, got, NULL), ATTN_OK);
    assert_true(max_diff(got, ref, NT * E_) < 2e-6);
    memset(&o, 0, sizeof o);
    o.attention = ATTN_BERT_APPROX, o.approx = ATTN_APPROX_TOPK, o.topk = 33;
    assert_int_equal(run(&f, &o, got, NULL), ATTN_OK);
    assert_true(max_diff(got, ref, NT * E_) < 2e-6);
    o.topk = 3; /* fewer keys: another result */
    assert_int_equal(run(&f, &o, got, NULL), ATTN_OK);
    assert_true(max_diff(got, ref, NT * E_) > 1e-3);
    fixture_free(&f);
}

/* Per-text methods: a text's embedding in a padded batch equals the text
 * embedded alone (padding keys are never attended). */
static void test_padding(void **state) {
    (void)state;
    fixture f;
    fixture_make(&f, 13);
    attn_bert_options opts[4];
    memset(opts, 0, sizeof opts);
    opts[0].attention = ATTN_BERT_APPROX, opts[0].approx = ATTN_APPROX_PERFORMER;
    opts[0].features = 16, opts[0].seed = 5;
    opts[1].attention = ATTN_BERT_APPROX, opts[1].approx = ATTN_APPROX_NYSTROM;
    opts[1].landmarks = 4;
    opts[2].attention = ATTN_BERT_LAYOUT, opts[2].block = 2, opts[2].layout.use_window = 1;
    opts[2].layout.window = 1, opts[2].layout.global = 1, opts[2].layout.random = 2;
    opts[2].layout.seed = 3;
    opts[3].attention = ATTN_BERT_APPROX, opts[3].approx = ATTN_APPROX_LINEAR;
    for (int k = 0; k < 4; k++) {
        float all[NT * E_], one[E_];
        assert_int_equal(run(&f, &opts[k], all, NULL), ATTN_OK);
        for (int i = 0; i < NT; i++) {
            const int32_t *ids = f.ids[i];
            assert_int_equal(
                attn_bert_embed_with(f.ctx, f.m, &opts[k], 1, &ids, &g_len[i], one, NULL), ATTN_OK);
            for (int e = 0; e < E_; e++)
                assert_true(isfinite(one[e]));
            if (max_diff(one, all + i * E_, E_) > 2e-6) {
                print_error("method %d text %d: batch vs alone differ by %g\n", k, i,
                            max_diff(one, all + i * E_, E_));
                fail();
            }
        }
    }
    fixture_free(&f);
}

static void expect_bad(fixture *f, const attn_bert_options *o, attn_status want,
                       const char *needle) {
    float out[NT * E_];
    for (int i = 0; i < NT * E_; i++)
        out[i] = 7.0f;
    attn_bert_stats st = {1.0, 1};
    assert_int_equal(run(f, o, out, &st), want);
    if (!strstr(attn_ctx_last_error(f->ctx), needle)) {
        print_error("message '%s' lacks '%s'\n", attn_ctx_last_error(f->ctx), needle);
        fail();
    }
    for (int i = 0; i < NT * E_; i++)
        assert_true(out[i] == 7.0f);
}

static void test_bad_options(void **state) {
    (void)state;
    fixture f;
    fixture_make(&f, 17);
    attn_bert_options o;
#define BAD(set, want, needle)                                                                     \
    do {                                                                                           \
        memset(&o, 0, sizeof o);                                                                   \
        set;                                                                                       \
        expect_bad(&f, &o, want, needle);                                                          \
    } while (0)
    BAD(o.attention = (attn_bert_attention)7, ATTN_E_ARG, "attention 7");
    BAD(o.attention = ATTN_BERT_LAYOUT, ATTN_E_ARG, "block 0");
    BAD((o.attention = ATTN_BERT_LAYOUT, o.block = 301), ATTN_E_ARG, "block 301");
    BAD(o.block = 2, ATTN_E_ARG, "only a LAYOUT");
    BAD((o.attention = ATTN_BERT_LAYOUT, o.block = 1, o.layout.causal = 1), ATTN_E_ARG, "causal");
    BAD((o.attention = ATTN_BERT_LAYOUT, o.block = 1, o.layout.window = -1,
         o.layout.use_window = 1),
        ATTN_E_ARG, "window");
    BAD(o.attention = ATTN_BERT_APPROX, ATTN_E_ARG, "approx 0");
    BAD(o.approx = ATTN_APPROX_TOPK, ATTN_E_ARG, "approx");
    BAD((o.attention = ATTN_BERT_APPROX, o.approx = ATTN_APPROX_TOPK), ATTN_E_ARG, "topk 0");
    BAD((o.attention = ATTN_BERT_APPROX, o.approx = ATTN_APPROX_PERFORMER), ATTN_E_ARG,
        "features 0");
    BAD((o.attention = ATTN_BERT_APPROX, o.approx = ATTN_APPROX_NYSTROM, o.landmarks = -2),
        ATTN_E_ARG, "landmarks -2");
    BAD((o.attention = ATTN_BERT_APPROX, o.approx = ATTN_APPROX_TOPK, o.topk = 2, o.features = 3),
        ATTN_E_ARG, "features 3");
    BAD(o.topk = 2, ATTN_E_ARG, "topk 2");
    BAD((o.prune_after = LAYERS, o.keep = 0.5), ATTN_E_ARG, "prune_after 3");
    BAD((o.prune_after = -1, o.keep = 0.5), ATTN_E_ARG, "prune_after -1");
    BAD((o.prune_after = 1, o.keep = 0.0), ATTN_E_ARG, "keep 0");
    BAD((o.prune_after = 1, o.keep = 1.5), ATTN_E_ARG, "keep 1.5");
    BAD((o.prune_after = 1, o.keep = NAN), ATTN_E_ARG, "keep nan");
    BAD(o.keep = 0.5, ATTN_E_ARG, "goes with prune_after");
    BAD(o.draws = (attn_bert_draws)3, ATTN_E_ARG, "draws 3");
    BAD(o.draws = ATTN_BERT_DRAWS_LAYER, ATTN_E_ARG, "draws 1: per-layer");
    BAD((o.attention = ATTN_BERT_APPROX, o.approx = ATTN_APPROX_TOPK, o.topk = 2,
         o.draws = ATTN_BERT_DRAWS_HEAD),
        ATTN_E_ARG, "draws 2");
    BAD((o.attention = ATTN_BERT_LAYOUT, o.block = 1, o.layout.use_window = 1,
         o.draws = ATTN_BERT_DRAWS_LAYER),
        ATTN_E_ARG, "random parts");
    BAD((o.prune_after = 1, o.keep = 0.0, o.attention = ATTN_BERT_APPROX,
         o.approx = ATTN_APPROX_TOPK, o.topk = 2),
        ATTN_E_ARG, "keep 0");
#undef BAD
    float out[E_];
    const int32_t *ids = f.ids[0];
    int64_t len = 0;
    assert_int_equal(attn_bert_embed_with(f.ctx, f.m, NULL, 1, &ids, &len, out, NULL), ATTN_E_ARG);
    assert_int_equal(attn_bert_embed_with(f.ctx, NULL, NULL, 1, &ids, &g_len[0], out, NULL),
                     ATTN_E_ARG);
    /* attn_bert_layer_qkv: layer range, and layer 0's q | k | v */
    float *qkv = malloc(sizeof(float) * (size_t)(g_len[0] * 3 * E_));
    assert_int_equal(attn_bert_layer_qkv(f.ctx, f.m, ids, g_len[0], LAYERS, qkv), ATTN_E_ARG);
    assert_int_equal(attn_bert_layer_qkv(f.ctx, f.m, ids, g_len[0], -1, qkv), ATTN_E_ARG);
    assert_int_equal(attn_bert_layer_qkv(f.ctx, f.m, ids, g_len[0], 1, NULL), ATTN_E_ARG);
    assert_int_equal(attn_bert_layer_qkv(f.ctx, f.m, ids, g_len[0], 0, qkv), ATTN_OK);
    for (int64_t k = 0; k < g_len[0] * 3 * E_; k++)
        assert_true(isfinite(qkv[k]));
    free(qkv);
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_naive), cmocka_unit_test(test_identities),
        cmocka_unit_test(test_padding),       cmocka_unit_test(test_methods_pruned),
        cmocka_unit_test(test_draws),         cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
