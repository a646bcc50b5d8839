/* Explaining attention (attn/explain.h) on synthetic BERT weights.
 * Raw attention and rollout against a float64 reference built from each
 * layer's inputs (the q | k | v rows the fast path attended through), under
 * the rule max |attn - f64| <= 2 * max |plain f32 - f64| + 1e-6; flow
 * against a dense Edmonds-Karp written here; the head gate against zeroed
 * output-projection columns; statistics, deletion curves, head importance
 * and pruning on their definitions; bad arguments. */
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

static attn_bert *make_model(attn_ctx *ctx, int64_t E, int64_t H, int64_t I, int64_t layers) {
    attn_bert *m = at_bert_synthetic(ctx, E, H, I, layers, ATTN_POOL_MEAN, 1, fill);
    assert_non_null(m);
    return m;
}

static int32_t *make_ids(int64_t T) { /* [CLS] = 1 first, [SEP] = 2 last */
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int64_t t = 0; t < T; t++)
        ids[t] = 3 + (int32_t)((urand() + 1.0) * 25.0);
    ids[0] = 1;
    if (T > 1) ids[T - 1] = 2;
    return ids;
}

/* the 2x-plain-f32 rule on arrays (tests/support) */
#define check_close(what, got, ref, f32, n, seed)                                                  \
    do {                                                                                           \
        if (!at_check_f64(what, got, ref, f32, n, seed)) fail();                                   \
    } while (0)

/* Head h's probabilities from layer qkv rows [T, 3E]: float64 and plain f32. */
static void probs_ref(const float *qkv, int64_t T, int64_t E, int64_t H, int64_t h, double *p64,
                      float *p32) {
    const int64_t Dh = E / H;
    const double sc = 1.0 / sqrt((double)Dh);
    const float sc32 = 1.0f / sqrtf((float)Dh);
    for (int64_t i = 0; i < T; i++) {
        const float *q = qkv + i * 3 * E + h * Dh;
        double mx = -INFINITY, s = 0;
        float mx32 = -INFINITY, s32 = 0;
        for (int64_t j = 0; j < T; j++) {
            const float *k = qkv + j * 3 * E + E + h * Dh;
            double d = 0;
            float d32 = 0;
            for (int64_t c = 0; c < Dh; c++)
                d += (double)q[c] * k[c], d32 += q[c] * k[c];
            p64[i * T + j] = d * sc, p32[i * T + j] = d32 * sc32;
            mx = fmax(mx, p64[i * T + j]), mx32 = fmaxf(mx32, p32[i * T + j]);
        }
        for (int64_t j = 0; j < T; j++) {
            p64[i * T + j] = exp(p64[i * T + j] - mx), s += p64[i * T + j];
            p32[i * T + j] = expf(p32[i * T + j] - mx32), s32 += p32[i * T + j];
        }
        for (int64_t j = 0; j < T; j++)
            p64[i * T + j] /= s, p32[i * T + j] /= s32;
    }
}

/* Rollout by its definition, float64, from probs [L, H, T, T] (double). */
static void rollout_ref(int64_t L, int64_t H, int64_t T, const double *p, double *r) {
    double *a = malloc(sizeof(double) * T * T), *t = malloc(sizeof(double) * T * T);
    for (int64_t l = 0; l < L; l++) {
        for (int64_t i = 0; i < T; i++) {
            double s = 0;
            for (int64_t j = 0; j < T; j++) {
                double v = 0;
                for (int64_t h = 0; h < H; h++)
                    v += p[((l * H + h) * T + i) * T + j];
                a[i * T + j] = 0.5 * v / H + 0.5 * (i == j), s += a[i * T + j];
            }
            for (int64_t j = 0; j < T; j++)
                a[i * T + j] /= s;
        }
        if (l == 0) {
            memcpy(r, a, sizeof(double) * T * T);
            continue;
        }
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < T; j++) {
                double v = 0;
                for (int64_t k = 0; k < T; k++)
                    v += a[i * T + k] * r[k * T + j];
                t[i * T + j] = v;
            }
        memcpy(r, t, sizeof(double) * T * T);
    }
    free(a), free(t);
}

static void test_probs_and_rollout(void **state) {
    (void)state;
    const uint64_t seed = 7;
    rng_state = seed;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    const int64_t E = 32, H = 4, L = 3, T = 23;
    attn_bert *m = make_model(ctx, E, H, 40, L);
    int32_t *ids = make_ids(T);
    float *probs = malloc(sizeof(float) * L * H * T * T);
    float *qkv = malloc(sizeof(float) * L * T * 3 * E);
    double *p64 = malloc(sizeof(double) * L * H * T * T);
    float *p32 = malloc(sizeof(float) * L * H * T * T);
    float *emb = malloc(sizeof(float) * E), *emb2 = malloc(sizeof(float) * E);
    assert_int_equal(attn__bert_run_trace(ctx, m, ids, T, NULL, probs, emb, qkv), ATTN_OK);
    for (int64_t l = 0; l < L; l++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t o = (l * H + h) * T * T;
            probs_ref(qkv + l * T * 3 * E, T, E, H, h, p64 + o, p32 + o);
        }
    check_close("raw attention, every layer and head", probs, p64, p32, L * H * T * T, seed);
    /* the public entry gives the same numbers, and attn_bert_explain's */
    float *pp = malloc(sizeof(float) * L * H * T * T);
    assert_int_equal(attn_bert_run_explained(ctx, m, ids, T, NULL, pp, emb2), ATTN_OK);
    assert_memory_equal(pp, probs, sizeof(float) * L * H * T * T);
    assert_int_equal(attn_bert_explain(ctx, m, ids, T, 2, 3, pp), ATTN_OK);
    assert_memory_equal(pp, probs + (2 * H + 3) * T * T, sizeof(float) * T * T);
    /* the embedding is attn_bert_embed's, bit for bit */
    const int32_t *idp = ids;
    assert_int_equal(attn_bert_embed(ctx, m, 1, &idp, &T, emb2), ATTN_OK);
    assert_memory_equal(emb, emb2, sizeof(float) * E);

    /* rollout of the fast probabilities vs the float64 rollout */
    float *r = malloc(sizeof(float) * T * T), *r32 = malloc(sizeof(float) * T * T);
    double *r64 = malloc(sizeof(double) * T * T);
    assert_int_equal(attn_attention_rollout(ctx, L, H, T, probs, r), ATTN_OK);
    assert_int_equal(attn_attention_rollout(ctx, L, H, T, p32, r32), ATTN_OK);
    rollout_ref(L, H, T, p64, r64);
    check_close("rollout", r, r64, r32, T * T, seed);
    for (int64_t i = 0; i < T; i++) { /* rows stay distributions */
        double s = 0;
        for (int64_t j = 0; j < T; j++)
            s += r[i * T + j];
        assert_true(fabs(s - 1.0) < 1e-5);
    }
    free(r), free(r32), free(r64), free(pp);
    free(probs), free(qkv), free(p64), free(p32), free(emb), free(emb2), free(ids);
    attn_bert_free(m);
    attn_ctx_free(ctx);
}

/* Max flow by Edmonds-Karp on a dense capacity matrix (n nodes). */
static double ek(int n, const double *cap, int s, int t) {
    double *res = malloc(sizeof(double) * n * n), total = 0;
    int *prev = malloc(sizeof(int) * n), *q = malloc(sizeof(int) * n);
    memcpy(res, cap, sizeof(double) * n * n);
    for (;;) {
        for (int v = 0; v < n; v++)
            prev[v] = -1;
        int qh = 0, qt = 0;
        q[qt++] = s, prev[s] = s;
        while (qh < qt && prev[t] < 0) {
            int u = q[qh++];
            for (int v = 0; v < n; v++)
                if (prev[v] < 0 && res[u * n + v] > 1e-13) prev[v] = u, q[qt++] = v;
        }
        if (prev[t] < 0) break;
        double f = INFINITY;
        for (int v = t; v != s; v = prev[v])
            f = fmin(f, res[prev[v] * n + v]);
        for (int v = t; v != s; v = prev[v])
            res[prev[v] * n + v] -= f, res[v * n + prev[v]] += f;
        total += f;
    }
    free(res), free(prev), free(q);
    return total;
}

static void test_flow(void **state) {
    (void)state;
    rng_state = 11;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    const int64_t L = 3, H = 2, T = 6;
    float *p = malloc(sizeof(float) * L * H * T * T);
    for (int64_t r = 0; r < L * H * T; r++) { /* random distributions, some zeros */
        double s = 0;
        for (int64_t j = 0; j < T; j++) {
            double v = urand() + 0.6;
            p[r * T + j] = (float)(v > 0 ? v : 0.0), s += p[r * T + j];
        }
        for (int64_t j = 0; j < T; j++)
            p[r * T + j] = (float)(p[r * T + j] / s);
    }
    /* one layer: the only path from j to i is the edge, so flow = rollout */
    float *f = malloc(sizeof(float) * T * T), *r = malloc(sizeof(float) * T * T);
    assert_int_equal(attn_attention_flow(ctx, 1, H, T, p, 0, T, f), ATTN_OK);
    assert_int_equal(attn_attention_rollout(ctx, 1, H, T, p, r), ATTN_OK);
    for (int64_t k = 0; k < T * T; k++)
        assert_true(fabs(f[k] - r[k]) < 1e-6);
    /* three layers against a dense Edmonds-Karp on the same graph */
    const int n = (int)((L + 1) * T);
    double *cap = calloc((size_t)n * n, sizeof *cap);
    for (int64_t l = 0; l < L; l++)
        for (int64_t i = 0; i < T; i++) {
            double a[16], s = 0;
            for (int64_t j = 0; j < T; j++) {
                double v = 0;
                for (int64_t h = 0; h < H; h++)
                    v += p[((l * H + h) * T + i) * T + j];
                a[j] = 0.5 * v / H + 0.5 * (i == j), s += a[j];
            }
            for (int64_t j = 0; j < T; j++)
                cap[(l * T + j) * n + (l + 1) * T + i] = a[j] / s;
        }
    assert_int_equal(attn_attention_flow(ctx, L, H, T, p, 2, 3, f), ATTN_OK);
    for (int64_t i = 2; i < 5; i++) {
        double fl[16], s = 0;
        for (int64_t j = 0; j < T; j++)
            s += fl[j] = ek(n, cap, (int)j, (int)(L * T + i));
        for (int64_t j = 0; j < T; j++)
            assert_true(fabs(f[(i - 2) * T + j] - fl[j] / s) < 1e-6);
    }
    assert_int_equal(attn_attention_flow(ctx, L, H, T, p, 4, 3, f), ATTN_E_ARG);
    assert_int_equal(attn_attention_flow(ctx, 0, H, T, p, 0, 1, f), ATTN_E_ARG);
    assert_int_equal(attn_attention_rollout(ctx, L, H, 0, p, r), ATTN_E_ARG);
    free(p), free(f), free(r), free(cap);
    attn_ctx_free(ctx);
}

static void test_stats(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    /* T = 3: row 0 uniform, row 1 all on token 0 ([CLS]), row 2 half 1 / half 2 */
    const float p[9] = {1.f / 3, 1.f / 3, 1.f / 3, 1, 0, 0, 0, 0.5f, 0.5f};
    const uint8_t cls[3] = {ATTN_TOKEN_CLS, ATTN_TOKEN_PUNCT, ATTN_TOKEN_SEP};
    attn_head_stats s;
    float ent[3];
    assert_int_equal(attn_attention_stats(ctx, 3, p, cls, &s, ent), ATTN_OK);
    assert_true(fabs(ent[0] - log(3.0)) < 1e-6 && ent[1] == 0 && fabs(ent[2] - log(2.0)) < 1e-6);
    assert_true(fabs(s.entropy - (log(3.0) + log(2.0)) / 3) < 1e-6);
    assert_true(fabs(s.distance - (1.0 + 1.0 + 0.5) / 3) < 1e-6);
    assert_true(fabs(s.share_cls - (1.0 / 3 + 1.0) / 3) < 1e-6);
    assert_true(fabs(s.share_punct - (1.0 / 3 + 0.5) / 3) < 1e-6);
    assert_true(fabs(s.share_sep - (1.0 / 3 + 0.5) / 3) < 1e-6);
    assert_true(s.top_i == 1 && s.top_j == 0 && s.top_p == 1.0);
    assert_int_equal(attn_attention_stats(ctx, 0, p, cls, &s, ent), ATTN_E_ARG);
    attn_ctx_free(ctx);
}

/* Gating head h of layer l to 0 is zeroing its columns of Wo; gate 1 is no
 * gate; importance, pruning and deletion curves follow their definitions. */
static void test_gate_importance_deletion(void **state) {
    (void)state;
    rng_state = 5;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    const int64_t E = 16, H = 2, L = 2, T = 9;
    attn_bert *m = make_model(ctx, E, H, 24, L);
    int32_t *ids = make_ids(T);
    float gate[4] = {1, 1, 1, 1}, e0[16], e1[16], e2[16];
    assert_int_equal(attn_bert_run_explained(ctx, m, ids, T, NULL, NULL, e0), ATTN_OK);
    assert_int_equal(attn_bert_run_explained(ctx, m, ids, T, gate, NULL, e1), ATTN_OK);
    assert_memory_equal(e0, e1, sizeof e0);
    gate[1 * H + 1] = 0; /* layer 1, head 1 */
    assert_int_equal(attn_bert_run_explained(ctx, m, ids, T, gate, NULL, e1), ATTN_OK);
    const int64_t Dh = E / H;
    for (int64_t r = 0; r < E; r++)
        for (int64_t c = Dh; c < E; c++)
            m->layers[1].wo[r * E + c] = 0;
    assert_int_equal(attn_bert_run_explained(ctx, m, ids, T, NULL, NULL, e2), ATTN_OK);
    double d = 0, moved = 0;
    for (int64_t k = 0; k < E; k++)
        d = fmax(d, fabs(e1[k] - e2[k])), moved = fmax(moved, fabs(e1[k] - e0[k]));
    assert_true(d < 1e-6);
    assert_true(moved > 1e-3);
    gate[0] = NAN;
    assert_int_equal(attn_bert_run_explained(ctx, m, ids, T, gate, NULL, e1), ATTN_E_ARG);
    attn_bert_free(m);

    m = make_model(ctx, E, H, 24, L);
    const int32_t *idp[2] = {ids, ids};
    const int64_t lens[2] = {T, T - 2};
    float imp[4], curve[5];
    int64_t order[4];
    assert_int_equal(attn_bert_head_importance(ctx, m, 2, idp, lens, imp), ATTN_OK);
    for (int k = 0; k < 4; k++)
        assert_true(imp[k] >= -1e-6 && imp[k] <= 2);
    assert_int_equal(attn_bert_prune_curve(ctx, m, 2, idp, lens, imp, curve, order), ATTN_OK);
    assert_true(fabs(curve[0] - 1.0) < 1e-6);
    for (int k = 1; k < 4; k++)
        assert_true(imp[order[k - 1]] <= imp[order[k]]);
    /* one head pruned: the mean of 1 - importance of the least important */
    assert_true(fabs(curve[1] - (1.0 - imp[order[0]])) < 1e-5);

    float score[9], dc[4], rc[4];
    for (int64_t t = 0; t < T; t++)
        score[t] = (float)t; /* remove the last content tokens first */
    assert_int_equal(attn_bert_deletion_curve(ctx, m, ids, T, score, 3, 0, 0, NULL, dc), ATTN_OK);
    assert_true(fabs(dc[0] - 1.0) < 1e-6);
    /* the last point: only [CLS] [SEP] left, whatever the order */
    assert_int_equal(attn_bert_deletion_curve(ctx, m, ids, T, NULL, 3, 4, 9, NULL, rc), ATTN_OK);
    const int32_t ends[2] = {ids[0], ids[T - 1]};
    assert_int_equal(attn_bert_run_explained(ctx, m, ends, 2, NULL, NULL, e1), ATTN_OK);
    assert_int_equal(attn_bert_run_explained(ctx, m, ids, T, NULL, NULL, e0), ATTN_OK);
    double c = 0, n0 = 0, n1 = 0;
    for (int64_t k = 0; k < E; k++)
        c += (double)e0[k] * e1[k], n0 += (double)e0[k] * e0[k], n1 += (double)e1[k] * e1[k];
    assert_true(fabs(dc[3] - c / sqrt(n0 * n1)) < 1e-6 && fabs(rc[3] - dc[3]) < 1e-6);
    /* after removing 2 of 7 (round(7/3)), the curve is that text's similarity */
    int32_t sub[7] = {ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[8]};
    assert_int_equal(attn_bert_run_explained(ctx, m, sub, 7, NULL, NULL, e1), ATTN_OK);
    c = n1 = 0;
    for (int64_t k = 0; k < E; k++)
        c += (double)e0[k] * e1[k], n1 += (double)e1[k] * e1[k];
    assert_true(fabs(dc[1] - c / sqrt(n0 * n1)) < 1e-6);

    /* with w: the curve is w . e_k (here w = e, so the same cosines: e is unit) */
    float wc[4];
    assert_int_equal(attn_bert_deletion_curve(ctx, m, ids, T, score, 3, 0, 0, e0, wc), ATTN_OK);
    for (int k = 0; k < 4; k++)
        assert_true(fabs(wc[k] - dc[k]) < 1e-5);
    assert_int_equal(attn_bert_deletion_curve(ctx, m, ids, T, NULL, 3, 0, 0, NULL, dc), ATTN_E_ARG);
    assert_int_equal(attn_bert_deletion_curve(ctx, m, ids, T, score, 0, 0, 0, NULL, dc),
                     ATTN_E_ARG);
    ids[3] = 53;
    assert_int_equal(attn_bert_run_explained(ctx, m, ids, T, NULL, NULL, e1), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "token 3"));
    assert_int_equal(attn_bert_head_importance(ctx, m, 2, idp, lens, imp), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "text 0"));
    assert_int_equal(attn_bert_run_explained(ctx, m, ids, 0, NULL, NULL, e1), ATTN_E_ARG);
    free(ids);
    attn_bert_free(m);
    attn_ctx_free(ctx);
}

/* y = w . e(gates) in double, from the forward with gates. */
static double gated_output(attn_ctx *ctx, const attn_bert *m, const int32_t *ids, int64_t T,
                           const float *gate, const float *w) {
    float e[64];
    assert_int_equal(attn_bert_run_explained(ctx, m, ids, T, gate, NULL, e), ATTN_OK);
    double y = 0;
    for (int64_t k = 0; k < m->cfg.hidden_size; k++)
        y += (double)w[k] * e[k];
    return y;
}

/* The relevance backward against central differences: dy/d(gate of head h
 * in layer l) = <dy/do_lh, o_lh>, which needs the gradient of every layer
 * above l, through LayerNorms, feed-forward blocks and attention (q, k and
 * v paths); for mean pooling with normalisation and for CLS pooling
 * without. Then R's structure: I plus non-negative terms. */
static void test_relevance_gradient(void **state) {
    (void)state;
    rng_state = 23;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    const int64_t E = 16, H = 2, L = 3, T = 8;
    attn_bert *m = make_model(ctx, E, H, 24, L);
    int32_t *ids = make_ids(T);
    float w[16], R[64], cams[3 * 64], y, gate[6];
    double dg[6];
    fill(w, 16, 1.0, 0.0);
    for (int variant = 0; variant < 2; variant++) {
        if (variant == 1) m->cfg.pooling = ATTN_POOL_CLS, m->cfg.normalize = 0;
        assert_int_equal(attn__bert_relevance(ctx, m, ids, T, w, R, &y, cams, dg), ATTN_OK);
        for (int k = 0; k < 6; k++)
            gate[k] = 1;
        assert_true(fabs(y - gated_output(ctx, m, ids, T, gate, w)) < 1e-5);
        for (int k = 0; k < L * H; k++) {
            const float eps = 1e-2f;
            gate[k] = 1 + eps;
            const double yp = gated_output(ctx, m, ids, T, gate, w);
            gate[k] = 1 - eps;
            const double ym = gated_output(ctx, m, ids, T, gate, w);
            gate[k] = 1;
            const double fd = (yp - ym) / (2.0 * eps);
            if (getenv("ATTN_TEST_VERBOSE"))
                fprintf(stderr, "pooling %d, head %d: dy/dgate %.6g, central difference %.6g\n",
                        variant, k, dg[k], fd);
            assert_true(fabs(fd - dg[k]) <= 2e-3 * fmax(1.0, fabs(dg[k])));
        }
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < T; j++)
                assert_true(R[i * T + j] >= (i == j ? 1.0f : 0.0f));
        float R2[64];
        assert_int_equal(attn_bert_relevance(ctx, m, ids, T, w, R2, NULL), ATTN_OK);
        assert_memory_equal(R, R2, sizeof R);
    }
    w[3] = INFINITY;
    assert_int_equal(attn_bert_relevance(ctx, m, ids, T, w, R, NULL), ATTN_E_ARG);
    w[3] = 0;
    ids[2] = -1;
    assert_int_equal(attn_bert_relevance(ctx, m, ids, T, w, R, NULL), ATTN_E_ARG);
    free(ids);
    attn_bert_free(m);
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probs_and_rollout),
        cmocka_unit_test(test_flow),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_gate_importance_deletion),
        cmocka_unit_test(test_relevance_gradient),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
