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
typedef struct naive_opts {
    int64_t window; /* < 0: every key */
    int cls;        /* window: token 0 global */
    int64_t prune_after;
    double keep;
    double margin; /* out: the smallest gap between a kept and a pruned token's score */
} naive_opts;

static int visible(const naive_opts *o, int64_t i, int64_t j) {
    if (o->window < 0) return 1;
    if (o->cls && (i == 0 || j == 0)) return 1;
    return (i > j ? i - j : j - i) <= o->window;
}

/* The naive encoder for one text (mean pooling, normalised), in type R. */
#define DEFINE_NAIVE(R, NAME, SQRT, EXP, ERF)                                                      \
    AT_DEFINE_LN_LIN(R, NAME, SQRT)                                                                \
    static void NAME(const attn_bert *m, const int32_t *ids, int64_t T0, naive_opts *no, R *emb) { \
        const attn_bert_config *c = &m->cfg;                                                       \
        const int64_t E = c->hidden_size, H = c->num_heads, Dh = E / H, I = c->intermediate_size;  \
        const R eps = (R)c->layer_norm_eps;                                                        \
        int64_t T = T0;                                                                            \
        R *x = malloc(sizeof(R) * T * E), *qkv = malloc(sizeof(R) * T * 3 * E);                    \
        R *a = malloc(sizeof(R) * T * E), *y = malloc(sizeof(R) * T * E);                          \
        R *h = malloc(sizeof(R) * T * I), *s = malloc(sizeof(R) * T);                              \
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
            for (int64_t hh = 0; hh < H; hh++)                                                     \
                for (int64_t i = 0; i < T; i++) {                                                  \
                    R mx = -INFINITY, sum = 0;                                                     \
                    for (int64_t j = 0; j < T; j++) {                                              \
                        R d = 0;                                                                   \
                        for (int64_t e = 0; e < Dh; e++)                                           \
                            d += qkv[i * 3 * E + hh * Dh + e] * qkv[j * 3 * E + E + hh * Dh + e];  \
                        s[j] = visible(no, i, j) ? d / SQRT((R)Dh) : (R)-INFINITY;                 \
                        if (s[j] > mx) mx = s[j];                                                  \
                    }                                                                              \
                    for (int64_t j = 0; j < T; j++)                                                \
                        sum += (s[j] = EXP(s[j] - mx));                                            \
                    for (int64_t e = 0; e < Dh; e++)                                               \
                        a[i * E + hh * Dh + e] = 0;                                                \
                    for (int64_t j = 0; j < T; j++) {                                              \
                        R p = s[j] / sum;                                                          \
                        recv[j] += (double)p;                                                      \
                        for (int64_t e = 0; e < Dh; e++)                                           \
                            a[i * E + hh * Dh + e] += p * qkv[j * 3 * E + 2 * E + hh * Dh + e];    \
                    }                                                                              \
                }                                                                                  \
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
                        if (kept[j] && !kept[j2] && recv[j] - recv[j2] < no->margin)               \
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

DEFINE_NAIVE(double, naive64, sqrt, exp, erf)
DEFINE_NAIVE(float, naive32, sqrtf, expf, erff)

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
            check_against_naive(&f, &o, (naive_opts){windows[w], cls, 0, 0, 0}, what);
        }
    const double keeps[] = {0.25, 0.5, 0.8};
    for (int after = 1; after < LAYERS; after++)
        for (int k = 0; k < 3; k++) {
            memset(&o, 0, sizeof o);
            o.prune_after = after, o.keep = keeps[k];
            char what[64];
            snprintf(what, sizeof what, "prune after %d keep %.2f", after, keeps[k]);
            check_against_naive(&f, &o, (naive_opts){-1, 0, after, keeps[k], 0}, what);
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
    BAD((o.prune_after = 1, o.keep = 0.5, o.attention = ATTN_BERT_APPROX,
         o.approx = ATTN_APPROX_TOPK, o.topk = 2),
        ATTN_E_UNSUPPORTED, "exact attention only");
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
        cmocka_unit_test(test_against_naive),
        cmocka_unit_test(test_identities),
        cmocka_unit_test(test_padding),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
