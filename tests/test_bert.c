/* BERT encoder on synthetic weights against a naive encoder written here
 * twice: in float64 (the oracle) and in plain float32 (the error yardstick).
 * Rule: max |attn - f64| <= 2 * max |naive f32 - f64| + 1e-6, for hidden
 * states of a padded batch of mixed lengths, pooled embeddings across
 * several batches, and one head's attention probabilities. */
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

static attn_bert *make_model(attn_ctx *ctx, int64_t E, int64_t H, int64_t I, int64_t layers,
                             attn_pooling pool, int normalize) {
    attn_bert *m = at_bert_synthetic(ctx, E, H, I, layers, pool, normalize, fill);
    assert_non_null(m);
    return m;
}

/* The naive encoder for one text, in type R: hidden [T, E], and the
 * probabilities [T, T] of (pl, ph) when probs is not NULL. */
#define DEFINE_NAIVE(R, NAME, SQRT, EXP, ERF)                                                      \
    AT_DEFINE_LN_LIN(R, NAME, SQRT)                                                                \
    static void NAME(const attn_bert *m, const int32_t *ids, int64_t T, R *x, int64_t pl,          \
                     int64_t ph, R *probs) {                                                       \
        const attn_bert_config *c = &m->cfg;                                                       \
        const int64_t E = c->hidden_size, H = c->num_heads, Dh = E / H, I = c->intermediate_size;  \
        const R eps = (R)c->layer_norm_eps;                                                        \
        R *qkv = malloc(sizeof(R) * T * 3 * E), *a = malloc(sizeof(R) * T * E);                    \
        R *y = malloc(sizeof(R) * T * E), *h = malloc(sizeof(R) * T * I),                          \
          *s = malloc(sizeof(R) * T);                                                              \
        for (int64_t t = 0; t < T; t++) {                                                          \
            for (int64_t k = 0; k < E; k++)                                                        \
                x[t * E + k] = (R)m->word[ids[t] * E + k] + (R)m->pos[t * E + k] + (R)m->type[k];  \
            NAME##_ln(x + t * E, E, m->emb_ln_g, m->emb_ln_b, eps);                                \
        }                                                                                          \
        for (int64_t l = 0; l < c->num_layers; l++) {                                              \
            const attn__bert_layer *L = &m->layers[l];                                             \
            NAME##_lin(x, T, E, L->wqkv, L->bqkv, 3 * E, qkv);                                     \
            for (int64_t hh = 0; hh < H; hh++)                                                     \
                for (int64_t i = 0; i < T; i++) {                                                  \
                    R mx = -INFINITY, sum = 0;                                                     \
                    for (int64_t j = 0; j < T; j++) {                                              \
                        R d = 0;                                                                   \
                        for (int64_t e = 0; e < Dh; e++)                                           \
                            d += qkv[i * 3 * E + hh * Dh + e] * qkv[j * 3 * E + E + hh * Dh + e];  \
                        s[j] = d / SQRT((R)Dh);                                                    \
                        if (s[j] > mx) mx = s[j];                                                  \
                    }                                                                              \
                    for (int64_t j = 0; j < T; j++)                                                \
                        sum += (s[j] = EXP(s[j] - mx));                                            \
                    for (int64_t e = 0; e < Dh; e++)                                               \
                        a[i * E + hh * Dh + e] = 0;                                                \
                    for (int64_t j = 0; j < T; j++) {                                              \
                        R p = s[j] / sum;                                                          \
                        if (probs && l == pl && hh == ph) probs[i * T + j] = p;                    \
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
        }                                                                                          \
        free(qkv), free(a), free(y), free(h), free(s);                                             \
    }

DEFINE_NAIVE(double, naive64, sqrt, exp, erf)
DEFINE_NAIVE(float, naive32, sqrtf, expf, erff)

/* Pool and normalise as the model says, in the naive type. */
#define DEFINE_POOL(R, NAME, SQRT)                                                                 \
    static void NAME(const attn_bert_config *c, const R *x, int64_t T, R *out) {                   \
        const int64_t E = c->hidden_size;                                                          \
        R norm = 0;                                                                                \
        for (int64_t k = 0; k < E; k++) {                                                          \
            R v = x[k];                                                                            \
            for (int64_t t = 1; t < T; t++) {                                                      \
                if (c->pooling == ATTN_POOL_MEAN) v += x[t * E + k];                               \
                if (c->pooling == ATTN_POOL_MAX && x[t * E + k] > v) v = x[t * E + k];             \
            }                                                                                      \
            if (c->pooling == ATTN_POOL_MEAN) v /= (R)T;                                           \
            out[k] = v;                                                                            \
            norm += v * v;                                                                         \
        }                                                                                          \
        if (c->normalize)                                                                          \
            for (int64_t k = 0; k < E; k++)                                                        \
                out[k] /= SQRT(norm);                                                              \
    }
DEFINE_POOL(double, pool64, sqrt)
DEFINE_POOL(float, pool32, sqrtf)

static int quick(void) {
    return getenv("ATTN_TEST_QUICK") != NULL;
}

/* Random ids for n texts of the given lengths ([CLS]=1 first, [SEP]=2 last). */
static int32_t **make_ids(int64_t n, const int64_t *len) {
    int32_t **ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++) {
        ids[i] = malloc((size_t)len[i] * sizeof **ids);
        for (int64_t t = 0; t < len[i]; t++)
            ids[i][t] = (int32_t)((urand() + 1.0) * 26.0) % 53;
        ids[i][0] = 1;
        if (len[i] > 1) ids[i][len[i] - 1] = 2;
    }
    return ids;
}
static void free_ids(int32_t **ids, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

/* the 2x-plain-f32 rule on arrays (tests/support) */
#define check_close(what, got, ref, f32, n, seed)                                                  \
    do {                                                                                           \
        if (!at_check_f64(what, got, ref, f32, n, seed)) fail();                                   \
    } while (0)

static void run_encode_case(int64_t E, int64_t H, int64_t I, int64_t layers, const int64_t *len,
                            int64_t n, uint64_t seed) {
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    rng_state = seed;
    attn_bert *m = make_model(ctx, E, H, I, layers, ATTN_POOL_MEAN, 1);
    int32_t **ids = make_ids(n, len);
    int64_t T = 0;
    for (int64_t i = 0; i < n; i++)
        T = ATTN_MAX(T, len[i]);
    float *hid = malloc(sizeof(float) * n * T * E);
    assert_int_equal(attn_bert_encode(ctx, m, n, (const int32_t *const *)ids, len, hid), ATTN_OK);
    double *x64 = malloc(sizeof(double) * T * E);
    float *x32 = malloc(sizeof(float) * T * E);
    for (int64_t b = 0; b < n; b++) {
        naive64(m, ids[b], len[b], x64, -1, -1, NULL);
        naive32(m, ids[b], len[b], x32, -1, -1, NULL);
        char what[96];
        snprintf(what, sizeof what, "hidden E=%lld H=%lld text %lld (len %lld)", (long long)E,
                 (long long)H, (long long)b, (long long)len[b]);
        check_close(what, hid + b * T * E, x64, x32, len[b] * E, seed);
        for (int64_t k = len[b] * E; k < T * E; k++)
            assert_true(hid[b * T * E + k] == 0.0f);
    }
    free(x64), free(x32), free(hid);
    free_ids(ids, n);
    attn_bert_free(m);
    attn_ctx_free(ctx);
}

/* Padded batches of mixed lengths; Dh odd and even; one head and several. */
static void test_encode_mixed_lengths(void **state) {
    (void)state;
    const int64_t len1[] = {1, 7, 2, 65, 30};
    run_encode_case(36, 4, 50, 2, len1, 5, 11);
    const int64_t len2[] = {63, 64, 3};
    run_encode_case(64, 2, 96, 2, len2, 3, 12);
    const int64_t len3[] = {1};
    run_encode_case(8, 1, 8, 1, len3, 1, 13);
    if (!quick()) {
        const int64_t len4[] = {257, 100, 1};
        run_encode_case(40, 5, 60, 2, len4, 3, 14);
    }
}

/* More texts than one batch, in an order that is not sorted by length:
 * every embedding must land at its text's index. */
static void test_embed_batches(void **state) {
    (void)state;
    const attn_pooling pools[] = {ATTN_POOL_MEAN, ATTN_POOL_CLS, ATTN_POOL_MAX};
    for (int pi = 0; pi < 3; pi++) {
        const uint64_t seed = 21 + (uint64_t)pi;
        attn_ctx *ctx;
        assert_int_equal(attn_ctx_create(&ctx, 0), ATTN_OK);
        rng_state = seed;
        attn_bert *m = make_model(ctx, 24, 3, 40, 2, pools[pi], pi != 1);
        const int64_t n = quick() ? 35 : 70, E = 24;
        int64_t *len = malloc(sizeof(int64_t) * n);
        for (int64_t i = 0; i < n; i++)
            len[i] = 1 + (int64_t)((urand() + 1.0) * 20.0);
        int32_t **ids = make_ids(n, len);
        float *out = malloc(sizeof(float) * n * E), *p32 = malloc(sizeof(float) * E);
        assert_int_equal(attn_bert_embed(ctx, m, n, (const int32_t *const *)ids, len, out),
                         ATTN_OK);
        double *x64 = malloc(sizeof(double) * 41 * E), p64[24];
        float *x32 = malloc(sizeof(float) * 41 * E);
        for (int64_t i = 0; i < n; i++) {
            naive64(m, ids[i], len[i], x64, -1, -1, NULL);
            naive32(m, ids[i], len[i], x32, -1, -1, NULL);
            pool64(&m->cfg, x64, len[i], p64);
            pool32(&m->cfg, x32, len[i], p32);
            char what[64];
            snprintf(what, sizeof what, "embedding pool %d text %lld", pi, (long long)i);
            check_close(what, out + i * E, p64, p32, E, seed);
        }
        free(x64), free(x32), free(out), free(p32), free(len);
        free_ids(ids, n);
        attn_bert_free(m);
        attn_ctx_free(ctx);
    }
}

static void test_attention_probs(void **state) {
    (void)state;
    const uint64_t seed = 31;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    rng_state = seed;
    const int64_t E = 36, H = 4, T = 19;
    attn_bert *m = make_model(ctx, E, H, 48, 3, ATTN_POOL_MEAN, 1);
    const int64_t len[] = {T};
    int32_t **ids = make_ids(1, len);
    float *pr = malloc(sizeof(float) * T * T), *p32 = malloc(sizeof(float) * T * T);
    double *p64 = malloc(sizeof(double) * T * T), *x64 = malloc(sizeof(double) * T * E);
    float *x32 = malloc(sizeof(float) * T * E);
    for (int64_t l = 0; l < 3; l++)
        for (int64_t h = 0; h < H; h += 3) {
            assert_int_equal(attn_bert_explain(ctx, m, ids[0], T, l, h, pr), ATTN_OK);
            naive64(m, ids[0], T, x64, l, h, p64);
            naive32(m, ids[0], T, x32, l, h, p32);
            check_close("attention probabilities", pr, p64, p32, T * T, seed);
        }
    assert_int_equal(attn_bert_explain(ctx, m, ids[0], T, 3, 0, pr), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "layer 3"));
    assert_int_equal(attn_bert_explain(ctx, m, ids[0], T, 0, -1, pr), ATTN_E_ARG);
    free(pr), free(p32), free(p64), free(x64), free(x32);
    free_ids(ids, 1);
    attn_bert_free(m);
    attn_ctx_free(ctx);
}

/* Bad ids and lengths: clear errors naming the text and token, no output. */
static void test_bad_inputs(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    rng_state = 41;
    attn_bert *m = make_model(ctx, 8, 2, 8, 1, ATTN_POOL_MEAN, 1);
    int32_t good[] = {1, 5, 2}, bad[] = {1, 53, 2}, neg[] = {1, -1, 2};
    const int32_t *ids[] = {good, bad};
    int64_t len[] = {3, 3};
    float out[16] = {0};
    assert_int_equal(attn_bert_embed(ctx, m, 2, ids, len, out), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "text 1, token 1: id 53"));
    ids[1] = neg;
    assert_int_equal(attn_bert_embed(ctx, m, 2, ids, len, out), ATTN_E_ARG);
    len[1] = 0;
    ids[1] = good;
    assert_int_equal(attn_bert_embed(ctx, m, 2, ids, len, out), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "text 1: 0 tokens"));
    len[1] = 301;
    assert_int_equal(attn_bert_encode(ctx, m, 2, ids, len, out), ATTN_E_ARG);
    assert_int_equal(attn_bert_embed(ctx, m, -1, ids, len, out), ATTN_E_ARG);
    assert_int_equal(attn_bert_embed(ctx, m, 1, ids, len, NULL), ATTN_E_ARG);
    for (int i = 0; i < 16; i++)
        assert_true(out[i] == 0.0f);
    assert_int_equal(attn_bert_embed(ctx, m, 0, NULL, NULL, NULL), ATTN_OK);
    attn_bert_config c = m->cfg;
    c.num_heads = 3; /* does not divide E = 8 */
    attn_bert *m2;
    assert_int_equal(attn__bert_alloc(ctx, &c, &m2), ATTN_E_SHAPE);
    assert_null(m2);
    attn_bert_free(NULL);
    attn_bert_free(m);
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_mixed_lengths),
        cmocka_unit_test(test_embed_batches),
        cmocka_unit_test(test_attention_probs),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
