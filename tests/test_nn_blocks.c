/* The reusable transformer pieces of src/nn (attention.h, block.h):
 * - a pre-LN layer (GPT-2 / ViT order) with grouped heads and a causal mask
 *   against a naive layer written here in float64 (the oracle) and in plain
 *   float32 (the yardstick): max |attn - f64| <= 2 * max |naive f32 - f64|
 *   + 1e-6, the rule of the project;
 * - the KV-cache path: the same layer fed in chunks (4, 1, 4 tokens) through
 *   a cache gives the rows of one full causal forward (same rule), the cache
 *   holds len rows afterwards, and a full cache or a cache of another shape
 *   is an error;
 * - the attention block, self and cross, gives bitwise the y of attn_mha
 *   with the same weights (one multi-head attention in the code base);
 * - embeddings at a position offset (pos0, as after a cache). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "nn/block.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { E = 16, H = 4, HKV = 2, DH = E / H, KV = HKV * DH, I = 32, T = 9, B = 2 };

static uint64_t rng_state = 12345;
static float urand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}
static float *rand_buf(size_t n, float scale, float offset) {
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = offset + scale * urand();
    return p;
}

typedef struct weights {
    float *wqkv, *bqkv, *wo, *bo, *w1, *b1, *w2, *b2, *g1, *be1, *g2, *be2;
} weights;

static weights make_weights(void) {
    weights w;
    w.wqkv = rand_buf((size_t)(E + 2 * KV) * E, 0.6f, 0.0f);
    w.bqkv = rand_buf(E + 2 * KV, 0.2f, 0.0f);
    w.wo = rand_buf(E * E, 0.25f, 0.0f);
    w.bo = rand_buf(E, 0.2f, 0.0f);
    w.w1 = rand_buf(I * E, 0.4f, 0.0f);
    w.b1 = rand_buf(I, 0.3f, 0.0f);
    w.w2 = rand_buf(E * I, 0.2f, 0.0f);
    w.b2 = rand_buf(E, 0.2f, 0.0f);
    w.g1 = rand_buf(E, 0.2f, 1.0f);
    w.be1 = rand_buf(E, 0.2f, 0.0f);
    w.g2 = rand_buf(E, 0.2f, 1.0f);
    w.be2 = rand_buf(E, 0.2f, 0.0f);
    return w;
}

static void free_weights(weights *w) {
    free(w->wqkv), free(w->bqkv), free(w->wo), free(w->bo), free(w->w1), free(w->b1);
    free(w->w2), free(w->b2), free(w->g1), free(w->be1), free(w->g2), free(w->be2);
}

static attn__layer make_layer(const weights *w) {
    attn__layer L;
    memset(&L, 0, sizeof L);
    L.attn.heads.H = H, L.attn.heads.Hkv = HKV, L.attn.heads.Dh = DH, L.attn.heads.causal = 1;
    L.attn.E = E, L.attn.KV = KV;
    L.attn.w_qkv = w->wqkv, L.attn.b_qkv = w->bqkv, L.attn.w_out = w->wo, L.attn.b_out = w->bo;
    L.ffn.E = E, L.ffn.I = I;
    L.ffn.w1 = w->w1, L.ffn.b1 = w->b1, L.ffn.w2 = w->w2, L.ffn.b2 = w->b2;
    L.ln1_g = w->g1, L.ln1_b = w->be1, L.ln2_g = w->g2, L.ln2_b = w->be2;
    L.eps = 1e-5f;
    L.pre_ln = 1;
    return L;
}

/* The naive pre-LN causal layer on one sequence x [T, E] in place, in R. */
#define DEFINE_NAIVE(R, NAME, SQRT, EXP, ERF)                                                      \
    static void NAME##_ln(const R *x, const float *g, const float *b, R *y) {                      \
        R mu = 0, var = 0;                                                                         \
        for (int k = 0; k < E; k++)                                                                \
            mu += x[k];                                                                            \
        mu /= E;                                                                                   \
        for (int k = 0; k < E; k++)                                                                \
            var += (x[k] - mu) * (x[k] - mu);                                                      \
        var /= E;                                                                                  \
        R rs = (R)1 / SQRT(var + (R)1e-5f);                                                        \
        for (int k = 0; k < E; k++)                                                                \
            y[k] = (x[k] - mu) * rs * (R)g[k] + (R)b[k];                                           \
    }                                                                                              \
    static void NAME##_lin(const R *x, int K, const float *W, const float *bias, int N, R *y) {    \
        for (int o = 0; o < N; o++) {                                                              \
            R s = (R)bias[o];                                                                      \
            for (int k = 0; k < K; k++)                                                            \
                s += x[k] * (R)W[o * K + k];                                                       \
            y[o] = s;                                                                              \
        }                                                                                          \
    }                                                                                              \
    static void NAME(const weights *w, R *x) {                                                     \
        R h[T][E], qkv[T][E + 2 * KV], a[T][E], y[E], f[I], s[T];                                  \
        for (int t = 0; t < T; t++) {                                                              \
            NAME##_ln(x + t * E, w->g1, w->be1, h[t]);                                             \
            NAME##_lin(h[t], E, w->wqkv, w->bqkv, E + 2 * KV, qkv[t]);                             \
        }                                                                                          \
        for (int hh = 0; hh < H; hh++) {                                                           \
            const int kh = hh / (H / HKV);                                                         \
            for (int i = 0; i < T; i++) {                                                          \
                R mx = -INFINITY, sum = 0;                                                         \
                for (int j = 0; j <= i; j++) {                                                     \
                    R d = 0;                                                                       \
                    for (int e = 0; e < DH; e++)                                                   \
                        d += qkv[i][hh * DH + e] * qkv[j][E + kh * DH + e];                        \
                    s[j] = d / SQRT((R)DH);                                                        \
                    if (s[j] > mx) mx = s[j];                                                      \
                }                                                                                  \
                for (int j = 0; j <= i; j++)                                                       \
                    sum += (s[j] = EXP(s[j] - mx));                                                \
                for (int e = 0; e < DH; e++) {                                                     \
                    R o = 0;                                                                       \
                    for (int j = 0; j <= i; j++)                                                   \
                        o += s[j] / sum * qkv[j][E + KV + kh * DH + e];                            \
                    a[i][hh * DH + e] = o;                                                         \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int t = 0; t < T; t++) {                                                              \
            R *xr = x + t * E;                                                                     \
            NAME##_lin(a[t], E, w->wo, w->bo, E, y);                                               \
            for (int k = 0; k < E; k++)                                                            \
                xr[k] += y[k];                                                                     \
            NAME##_ln(xr, w->g2, w->be2, h[t]);                                                    \
            NAME##_lin(h[t], E, w->w1, w->b1, I, f);                                               \
            for (int k = 0; k < I; k++)                                                            \
                f[k] = f[k] * (R)0.5 * ((R)1 + ERF(f[k] / SQRT((R)2)));                            \
            NAME##_lin(f, I, w->w2, w->b2, E, y);                                                  \
            for (int k = 0; k < E; k++)                                                            \
                xr[k] += y[k];                                                                     \
        }                                                                                          \
    }
DEFINE_NAIVE(double, naive64, sqrt, exp, erf)
DEFINE_NAIVE(float, naive32, sqrtf, expf, erff)

/* max |got - f64| <= 2 * max |f32 - f64| + 1e-6 over n values */
static void check_rule(const char *what, const float *got, const double *ref, const float *f32,
                       size_t n) {
    double e = 0, e32 = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)got[i] - ref[i]));
        e32 = fmax(e32, fabs((double)f32[i] - ref[i]));
    }
    if (!(e <= 2 * e32 + 1e-6)) fail_msg("%s: max error %.3g > 2 * %.3g + 1e-6", what, e, e32);
}

static attn__layer_ws ws_alloc(int64_t N) {
    attn__layer_ws ws = {malloc((size_t)N * (E + 2 * KV) * sizeof(float)),
                         malloc((size_t)N * E * sizeof(float)),
                         malloc((size_t)N * I * sizeof(float))};
    assert_true(ws.qkv && ws.o && ws.h);
    return ws;
}

static void ws_free(attn__layer_ws *ws) {
    free(ws->qkv), free(ws->o), free(ws->h);
}

static void test_pre_ln_layer_and_kv_cache(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    weights w = make_weights();
    const attn__layer L = make_layer(&w);
    float *x0 = rand_buf(B * T * E, 1.0f, 0.0f);
    attn_tensor nomask;
    memset(&nomask, 0, sizeof nomask);

    /* one causal forward of all T tokens */
    float *full = malloc(sizeof(float) * B * T * E);
    memcpy(full, x0, sizeof(float) * B * T * E);
    attn__layer_ws ws = ws_alloc(B * T);
    const attn__batch bt = {B, T, NULL};
    assert_int_equal(attn__layer_forward(ctx, &L, &bt, full, nomask, NULL, &ws), ATTN_OK);

    double ref[B * T * E];
    float f32[B * T * E];
    for (int i = 0; i < B * T * E; i++)
        ref[i] = x0[i], f32[i] = x0[i];
    for (int b = 0; b < B; b++) {
        naive64(&w, ref + b * T * E);
        naive32(&w, f32 + b * T * E);
    }
    check_rule("pre-LN layer", full, ref, f32, B * T * E);

    /* the same tokens in chunks of 4, 1, 4 through a KV cache */
    float *kc = calloc(B * T * KV, sizeof(float)), *vc = calloc(B * T * KV, sizeof(float));
    attn__kv_cache cache = {kc, vc, B, T, KV, 0};
    float *inc = malloc(sizeof(float) * B * T * E);
    const int chunks[3] = {4, 1, 4};
    for (int c = 0, t0 = 0; c < 3; t0 += chunks[c++]) {
        const int n = chunks[c];
        float *xc = malloc(sizeof(float) * B * n * E);
        for (int b = 0; b < B; b++)
            memcpy(xc + b * n * E, x0 + (b * T + t0) * E, sizeof(float) * n * E);
        const attn__batch bc = {B, n, NULL};
        assert_int_equal(attn__layer_forward(ctx, &L, &bc, xc, nomask, &cache, &ws), ATTN_OK);
        assert_int_equal(cache.len, t0 + n);
        for (int b = 0; b < B; b++)
            memcpy(inc + (b * T + t0) * E, xc + b * n * E, sizeof(float) * n * E);
        free(xc);
    }
    check_rule("pre-LN layer through a KV cache", inc, ref, f32, B * T * E);

    /* a full cache, and one of another shape, are refused */
    float one[B * E];
    memset(one, 0, sizeof one);
    const attn__batch b1 = {B, 1, NULL};
    assert_int_equal(attn__layer_forward(ctx, &L, &b1, one, nomask, &cache, &ws), ATTN_E_ARG);
    assert_int_equal(cache.len, T);
    attn__kv_cache other = {kc, vc, B, T, KV + 1, 0};
    assert_int_equal(attn__layer_forward(ctx, &L, &b1, one, nomask, &other, &ws), ATTN_E_SHAPE);

    free(kc), free(vc), free(inc), free(full), free(x0);
    ws_free(&ws);
    free_weights(&w);
    attn_ctx_free(ctx);
}

/* attn_mha and the nn/ block share one attention: same weights, same y. */
static void test_block_is_attn_mha(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    attn_mha_config mc = {.E = E, .H = H, .Hkv = HKV};
    attn_mha *mha;
    assert_int_equal(attn_mha_create(ctx, &mc, 7, &mha), ATTN_OK);
    int np;
    const attn_param *ps = attn_mha_get_params(mha, &np);
    assert_int_equal(np, 8); /* q, k, v weights and biases, out_proj weight and bias */
    float wqkv[(E + 2 * KV) * E], bqkv[E + 2 * KV];
    float *wdst[3] = {wqkv, wqkv + E * E, wqkv + (E + KV) * E};
    float *bdst[3] = {bqkv, bqkv + E, bqkv + E + KV};
    for (int i = 0; i < np; i++) { /* random biases too: zero ones would hide a slip */
        float *v = ps[i].value.data;
        for (int64_t k = 0; k < attn_tensor_numel(&ps[i].value); k++)
            v[k] = 0.5f * urand();
        if (i < 3) memcpy(wdst[i], v, sizeof(float) * attn_tensor_numel(&ps[i].value));
        if (i >= 3 && i < 6)
            memcpy(bdst[i - 3], v, sizeof(float) * attn_tensor_numel(&ps[i].value));
    }
    attn__mha_block blk = {.heads = {H, HKV, DH, 0, 0, 0, 0, 0, 0, 0},
                           .E = E,
                           .KV = KV,
                           .w_qkv = wqkv,
                           .b_qkv = bqkv,
                           .w_out = ps[6].value.data,
                           .b_out = ps[7].value.data};
    enum { S = 5 };
    float *x = rand_buf(B * T * E, 1.0f, 0.0f), *xkv = rand_buf(B * S * E, 1.0f, 0.0f);
    const int32_t kvl_self[B] = {T, 4}, kvl_cross[B] = {3, S};
    float y_mha[B * T * E], y_blk[B * T * E], o[B * T * E];
    float qkv[B * T * (E + 2 * KV)], kv[B * S * 2 * KV];
    for (int cross = 0; cross < 2; cross++) {
        attn_mha_args a;
        memset(&a, 0, sizeof a);
        a.x_q = attn_tensor_make(x, ATTN_F32, 3, (int64_t[]){B, T, E});
        if (cross) a.x_k = attn_tensor_make(xkv, ATTN_F32, 3, (int64_t[]){B, S, E});
        a.kv_len = cross ? kvl_cross : kvl_self;
        a.y = attn_tensor_make(y_mha, ATTN_F32, 3, (int64_t[]){B, T, E});
        assert_int_equal(attn_mha_forward(ctx, mha, &a), ATTN_OK);

        attn__mha_block_args ba;
        memset(&ba, 0, sizeof ba);
        ba.B = B, ba.T = T, ba.x = x, ba.kv_len = a.kv_len, ba.qkv = qkv, ba.o = o;
        if (cross) ba.x_kv = xkv, ba.S = S, ba.kv = kv;
        assert_int_equal(attn__mha_block_attend(ctx, &blk, &ba), ATTN_OK);
        attn__mha_block_out(ctx, &blk, B * T, o, y_blk);
        if (memcmp(y_mha, y_blk, sizeof y_mha))
            fail_msg("%s-attention: the block's y differs from attn_mha's",
                     cross ? "cross" : "self");
    }
    /* cross-attention has no cache */
    attn__kv_cache c = {kv, kv, B, S, KV, 0};
    attn__mha_block_args ba = {
        .B = B, .T = T, .x = x, .x_kv = xkv, .S = S, .cache = &c, .qkv = qkv, .kv = kv, .o = o};
    assert_int_equal(attn__mha_block_attend(ctx, &blk, &ba), ATTN_E_ARG);
    free(x), free(xkv);
    attn_mha_free(mha);
    attn_ctx_free(ctx);
}

static void test_embedding_offset(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    float *tok = rand_buf(7 * E, 1.0f, 0.0f), *pos = rand_buf(20 * E, 1.0f, 0.0f);
    const attn__embedding e = {E, tok, pos, NULL, NULL, NULL, 0.0f};
    const int32_t s0[3] = {3, 1, 6}, s1[3] = {5, 0, 2};
    const int32_t *ids[2] = {s0, s1};
    const int32_t len[2] = {3, 2}; /* s1's third token is padding */
    const attn__batch bt = {2, 3, len};
    float x[2 * 3 * E];
    attn__embedding_forward(ctx, &e, &bt, ids, 11, x);
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 3; t++) {
            const int id = t < len[b] ? ids[b][t] : 0;
            for (int k = 0; k < E; k++)
                assert_true(x[(b * 3 + t) * E + k] == tok[id * E + k] + pos[(11 + t) * E + k]);
        }
    free(tok), free(pos);
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pre_ln_layer_and_kv_cache),
        cmocka_unit_test(test_block_is_attn_mha),
        cmocka_unit_test(test_embedding_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
