/* The backward of the transformer pieces of src/nn (block.h, "Training").
 *
 * - Parity with PyTorch autograd on the fixtures of
 *   scripts/make_nn_bwd_fixtures.py (tests/data/nn_bwd): a pre-LN GPT-2
 *   block (causal, GELU-tanh), the same with T = 1 and H = 1, a grouped-head
 *   block with E = 20 (exact GELU), a post-LN BERT block over a padded
 *   batch, a post-LN block with an additive float mask and GQA, a pre-LN decoder layer with
 * cross-attention to encoder states of another length and width (padded encoder rows), and token +
 * position embedding -> GPT block -> final LayerNorm -> tied head -> mean cross-entropy with
 * ignore_index. Outputs, dx, the encoder's gradient and every parameter gradient are checked
 * against PyTorch in float64 with the project's rule, PyTorch's own float32 run as the plain fp32
 *   implementation: max |attn - f64| <= 2 max |torch32 - f64| + 1e-6.
 * - Float64 finite differences for the pieces whose float64 forward is a few
 *   lines here: softmax cross-entropy (with ignore_index and huge logits),
 *   GELU-tanh, the embedding scatter-add; a plain fp32 version of each sets
 *   the tolerance as above.
 * - The training forward gives bitwise the outputs of the inference forward
 *   (attn__layer_forward), so a model trains what it runs.
 * - End to end: a 2-layer pre-LN decoder trained with AdamW on reversing a
 *   sequence must reach a loss the task allows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "attn_test.h"
#include "nn/block.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fixture access ------------------------------------------------------ */

typedef struct fx {
    attn_safetensors *st;
    const char *name;
    float *owned[128];
    int nowned;
    int fails;
} fx;

static void fx_open(fx *f, const char *name) {
    memset(f, 0, sizeof *f);
    const char *dir = getenv("ATTN_TEST_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/nn_bwd/%s.safetensors", dir ? dir : "tests/data", name);
    if (attn_safetensors_open(at_ctx, path, &f->st)) fail_msg("%s", attn_ctx_last_error(at_ctx));
    f->name = name;
}

static void fx_close(fx *f) {
    for (int i = 0; i < f->nowned; i++)
        attn_buffer_free(f->owned[i]);
    attn_safetensors_close(f->st);
}

/* F32 copy of tensor `name` (owned by f); n gets its element count. */
static float *fx_f32(fx *f, const char *name, int64_t *n) {
    attn_tensor t;
    float *p = NULL;
    if (attn_safetensors_get_f32(at_ctx, f->st, name, &p, &t))
        fail_msg("%s: %s", f->name, attn_ctx_last_error(at_ctx));
    assert_true(f->nowned < 128);
    f->owned[f->nowned++] = p;
    if (n) *n = attn_tensor_numel(&t);
    return p;
}

static attn_tensor fx_view(fx *f, const char *name) {
    attn_tensor t;
    if (attn_safetensors_get(at_ctx, f->st, name, &t))
        fail_msg("%s: %s", f->name, attn_ctx_last_error(at_ctx));
    return t;
}

static float *fx_in(fx *f, const char *name, int64_t *n) {
    char full[256];
    snprintf(full, sizeof full, "in.%s", name);
    return fx_f32(f, full, n);
}

static int fx_meta(fx *f, const char *key) {
    const char *v = attn_safetensors_metadata(f->st, key);
    if (!v) fail_msg("%s: no metadata %s", f->name, key);
    return atoi(v);
}

/* Compare n floats with f64.<what> under the rule set by t32.<what>. */
static void fx_check(fx *f, const char *what, const float *got, int64_t n) {
    char a[256], b[256];
    snprintf(a, sizeof a, "f64.%s", what);
    snprintf(b, sizeof b, "t32.%s", what);
    attn_tensor r = fx_view(f, a), t = fx_view(f, b);
    assert_int_equal(r.dtype, ATTN_F64);
    assert_int_equal(t.dtype, ATTN_F32);
    if (attn_tensor_numel(&r) != n || attn_tensor_numel(&t) != n)
        fail_msg("%s: %s has %lld elements, the fixture %lld", f->name, what, (long long)n,
                 (long long)attn_tensor_numel(&r));
    char label[300];
    snprintf(label, sizeof label, "%s: %s", f->name, what);
    if (!at_check_f64(label, got, r.data, t.data, n, 0)) f->fails++;
}

/* ---- a layer from a fixture --------------------------------------------- */

typedef struct grads {
    float *mem;
    int64_t n;
} grads;

static float *gnew(grads *g, int64_t n) {
    /* a bump allocator over one zeroed block */
    float *p = g->mem + g->n;
    g->n += n;
    return p;
}

static void load_block(fx *f, const char *p, attn__mha_block *m, attn__mha_block_grad *g, grads *gs,
                       int64_t E, int64_t H, int64_t Hkv, int causal, int64_t kdim) {
    char nm[64];
    memset(m, 0, sizeof *m);
    m->heads.H = H, m->heads.Hkv = Hkv, m->heads.Dh = E / H, m->heads.causal = causal;
    m->E = E, m->KV = Hkv * (E / H), m->kdim = kdim;
    const int64_t KV = m->KV, kd = kdim ? kdim : E;
    int64_t nw = E * E + 2 * KV * kd;
    if (!kdim) {
        snprintf(nm, sizeof nm, "%sw_qkv", p);
        m->w_qkv = fx_in(f, nm, NULL);
    } else { /* Wq then [Wk; Wv], back to back */
        float *w = gnew(gs, nw);
        snprintf(nm, sizeof nm, "%sw_q", p);
        memcpy(w, fx_in(f, nm, NULL), (size_t)(E * E) * sizeof(float));
        snprintf(nm, sizeof nm, "%sw_kv", p);
        memcpy(w + E * E, fx_in(f, nm, NULL), (size_t)(2 * KV * kd) * sizeof(float));
        m->w_qkv = w;
    }
    snprintf(nm, sizeof nm, "%sb_qkv", p);
    m->b_qkv = fx_in(f, nm, NULL);
    snprintf(nm, sizeof nm, "%sw_out", p);
    m->w_out = fx_in(f, nm, NULL);
    snprintf(nm, sizeof nm, "%sb_out", p);
    m->b_out = fx_in(f, nm, NULL);
    g->w_qkv = gnew(gs, nw), g->b_qkv = gnew(gs, E + 2 * KV);
    g->w_out = gnew(gs, E * E), g->b_out = gnew(gs, E);
}

static void check_block(fx *f, const char *p, const attn__mha_block *m,
                        const attn__mha_block_grad *g) {
    char nm[64];
    const int64_t E = m->E, KV = m->KV, kd = m->kdim ? m->kdim : E;
    if (!m->kdim) {
        snprintf(nm, sizeof nm, "grad.%sw_qkv", p);
        fx_check(f, nm, g->w_qkv, (E + 2 * KV) * E);
    } else {
        snprintf(nm, sizeof nm, "grad.%sw_q", p);
        fx_check(f, nm, g->w_qkv, E * E);
        snprintf(nm, sizeof nm, "grad.%sw_kv", p);
        fx_check(f, nm, g->w_qkv + E * E, 2 * KV * kd);
    }
    snprintf(nm, sizeof nm, "grad.%sb_qkv", p);
    fx_check(f, nm, g->b_qkv, E + 2 * KV);
    snprintf(nm, sizeof nm, "grad.%sw_out", p);
    fx_check(f, nm, g->w_out, E * E);
    snprintf(nm, sizeof nm, "grad.%sb_out", p);
    fx_check(f, nm, g->b_out, E);
}

static void load_ffn(fx *f, const char *p, attn__ffn *ff, attn__ffn_grad *g, grads *gs, int64_t E,
                     int64_t I, int tanh_) {
    char nm[64];
    memset(ff, 0, sizeof *ff);
    ff->E = E, ff->I = I, ff->gelu_tanh = tanh_;
#define W(field) (snprintf(nm, sizeof nm, "%s" #field, p), ff->field = fx_in(f, nm, NULL))
    W(w1), W(b1), W(w2), W(b2);
#undef W
    g->w1 = gnew(gs, I * E), g->b1 = gnew(gs, I), g->w2 = gnew(gs, E * I), g->b2 = gnew(gs, E);
}

static void check_ffn(fx *f, const char *p, const attn__ffn *ff, const attn__ffn_grad *g) {
    char nm[64];
    const int64_t E = ff->E, I = ff->I;
    snprintf(nm, sizeof nm, "grad.%sw1", p), fx_check(f, nm, g->w1, I * E);
    snprintf(nm, sizeof nm, "grad.%sb1", p), fx_check(f, nm, g->b1, I);
    snprintf(nm, sizeof nm, "grad.%sw2", p), fx_check(f, nm, g->w2, E * I);
    snprintf(nm, sizeof nm, "grad.%sb2", p), fx_check(f, nm, g->b2, E);
}

/* LayerNorm weights p + "ln1_g" etc. */
static const float *ln_in(fx *f, const char *p, const char *which) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s%s", p, which);
    return fx_in(f, nm, NULL);
}

static void check_ln(fx *f, const char *p, const char *which, const float *g, int64_t E) {
    char nm[64];
    snprintf(nm, sizeof nm, "grad.%s%s", p, which);
    fx_check(f, nm, g, E);
}

typedef struct layer_fx {
    attn__layer L;
    attn__layer_grad g;
    grads gs;
} layer_fx;

static void load_layer(fx *f, const char *p, layer_fx *lf, int64_t E, int64_t H, int64_t Hkv,
                       int causal, int64_t I, int tanh_, int pre_ln) {
    memset(lf, 0, sizeof *lf);
    lf->gs.mem = calloc((size_t)(4 * (E + 2 * E) * E + 4 * I * E + 64 * E + 4 * I), sizeof(float));
    assert_non_null(lf->gs.mem);
    attn__layer *L = &lf->L;
    load_block(f, p, &L->attn, &lf->g.attn, &lf->gs, E, H, Hkv, causal, 0);
    load_ffn(f, p, &L->ffn, &lf->g.ffn, &lf->gs, E, I, tanh_);
    L->ln1_g = ln_in(f, p, "ln1_g"), L->ln1_b = ln_in(f, p, "ln1_b");
    L->ln2_g = ln_in(f, p, "ln2_g"), L->ln2_b = ln_in(f, p, "ln2_b");
    L->eps = 1e-5f, L->pre_ln = pre_ln;
    lf->g.ln1_g = gnew(&lf->gs, E), lf->g.ln1_b = gnew(&lf->gs, E);
    lf->g.ln2_g = gnew(&lf->gs, E), lf->g.ln2_b = gnew(&lf->gs, E);
}

static void check_layer(fx *f, const char *p, const layer_fx *lf) {
    const int64_t E = lf->L.attn.E;
    check_block(f, p, &lf->L.attn, &lf->g.attn);
    check_ffn(f, p, &lf->L.ffn, &lf->g.ffn);
    check_ln(f, p, "ln1_g", lf->g.ln1_g, E), check_ln(f, p, "ln1_b", lf->g.ln1_b, E);
    check_ln(f, p, "ln2_g", lf->g.ln2_g, E), check_ln(f, p, "ln2_b", lf->g.ln2_b, E);
}

static float *falloc(int64_t n) {
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    assert_non_null(p);
    return p;
}

/* ---- layer cases --------------------------------------------------------- */

static void run_layer_case(const char *name) {
    fx f;
    fx_open(&f, name);
    attn_tensor xv = fx_view(&f, "in.x");
    const int64_t B = xv.shape[0], T = xv.shape[1], E = xv.shape[2], N = B * T;
    const int H = fx_meta(&f, "H"), Hkv = fx_meta(&f, "Hkv"), I = fx_meta(&f, "I");
    layer_fx lf;
    load_layer(&f, "", &lf, E, H, Hkv, fx_meta(&f, "causal"), I, fx_meta(&f, "tanh"),
               fx_meta(&f, "pre_ln"));
    const attn__layer *L = &lf.L;
    int32_t *len = NULL;
    if (attn_safetensors_find(f.st, "in.len") >= 0) len = fx_view(&f, "in.len").data;
    const attn__batch bt = {B, T, len};
    attn_tensor mask; /* an additive float mask [T, T], or none */
    memset(&mask, 0, sizeof mask);
    if (attn_safetensors_find(f.st, "in.mask") >= 0) mask = fx_view(&f, "in.mask");

    float *x = falloc(N * E), *x2 = falloc(N * E);
    memcpy(x, fx_in(&f, "x", NULL), (size_t)(N * E) * sizeof(float));
    memcpy(x2, x, (size_t)(N * E) * sizeof(float));
    float *actm = falloc(attn__layer_act_floats(L, B, T));
    float *scr = falloc(attn__layer_bwd_floats(L, B, T));
    attn__layer_act act;
    attn__layer_act_bind(L, B, T, actm, &act);
    assert_int_equal(attn__layer_forward_train(at_ctx, L, &bt, x, mask, &act), ATTN_OK);

    /* the inference forward gives the same bits */
    attn__layer_ws ws = {falloc(N * (E + 2 * L->attn.KV)), falloc(N * E), falloc(N * I)};
    assert_int_equal(attn__layer_forward(at_ctx, L, &bt, x2, mask, NULL, &ws), ATTN_OK);
    for (int64_t r = 0; r < N; r++)
        if (!attn__batch_padded(&bt, r))
            assert_memory_equal(x + r * E, x2 + r * E, (size_t)E * sizeof(float));
    free(ws.qkv), free(ws.o), free(ws.h);

    for (int64_t r = 0; r < N; r++) /* padded rows are not outputs */
        if (attn__batch_padded(&bt, r)) memset(x + r * E, 0, (size_t)E * sizeof(float));
    fx_check(&f, "out", x, N * E);

    float *dx = falloc(N * E);
    memcpy(dx, fx_in(&f, "dy", NULL), (size_t)(N * E) * sizeof(float));
    assert_int_equal(attn__layer_backward(at_ctx, L, &bt, mask, &act, dx, &lf.g, scr), ATTN_OK);
    fx_check(&f, "dx", dx, N * E);
    check_layer(&f, "", &lf);
    int fails = f.fails;
    free(x), free(x2), free(actm), free(scr), free(dx), free(lf.gs.mem);
    fx_close(&f);
    if (fails) fail_msg("%s: %d tensors outside the tolerance", name, fails);
}

static void test_gpt_block(void **s) {
    (void)s;
    run_layer_case("gpt");
}
static void test_gpt_block_t1(void **s) {
    (void)s;
    run_layer_case("gpt_t1");
}
static void test_gqa_block(void **s) {
    (void)s;
    run_layer_case("gqa");
}
static void test_bert_block_padded(void **s) {
    (void)s;
    run_layer_case("bert");
}
static void test_masked_block(void **s) {
    (void)s;
    run_layer_case("masked");
}

/* ---- decoder layer with cross-attention --------------------------------- */

static void test_decoder_cross(void **s) {
    (void)s;
    fx f;
    fx_open(&f, "dec");
    attn_tensor xv = fx_view(&f, "in.x"), ev = fx_view(&f, "in.enc");
    const int64_t B = xv.shape[0], T = xv.shape[1], E = xv.shape[2], N = B * T;
    const int64_t S = ev.shape[1], kd = ev.shape[2];
    const int H = fx_meta(&f, "H"), Hkv = fx_meta(&f, "Hkv"), I = fx_meta(&f, "I");
    assert_int_equal(fx_meta(&f, "kdim"), kd);
    grads gs = {falloc(8 * (E + 2 * E) * (E + kd) + 4 * I * E + 64 * E), 0};
    attn__dec_layer D;
    attn__dec_layer_grad g;
    memset(&D, 0, sizeof D), memset(&g, 0, sizeof g);
    load_block(&f, "self.", &D.self, &g.self, &gs, E, H, Hkv, 1, 0);
    load_block(&f, "cross.", &D.cross, &g.cross, &gs, E, H, Hkv, 0, kd);
    load_ffn(&f, "", &D.ffn, &g.ffn, &gs, E, I, fx_meta(&f, "tanh"));
    D.ln1_g = ln_in(&f, "", "ln1_g"), D.ln1_b = ln_in(&f, "", "ln1_b");
    D.lnc_g = ln_in(&f, "", "lnc_g"), D.lnc_b = ln_in(&f, "", "lnc_b");
    D.ln2_g = ln_in(&f, "", "ln2_g"), D.ln2_b = ln_in(&f, "", "ln2_b");
    D.eps = 1e-5f;
    const char *lns[6] = {"ln1_g", "ln1_b", "lnc_g", "lnc_b", "ln2_g", "ln2_b"};
    float **gl[6] = {&g.ln1_g, &g.ln1_b, &g.lnc_g, &g.lnc_b, &g.ln2_g, &g.ln2_b};
    for (int i = 0; i < 6; i++)
        *gl[i] = gnew(&gs, E);

    attn__enc_states enc = {fx_in(&f, "enc", NULL), S, fx_view(&f, "in.enc_len").data};
    const attn__batch bt = {B, T, NULL};
    float *x = falloc(N * E);
    memcpy(x, fx_in(&f, "x", NULL), (size_t)(N * E) * sizeof(float));
    float *actm = falloc(attn__dec_layer_act_floats(&D, B, T, S));
    float *scr = falloc(attn__dec_layer_bwd_floats(&D, B, T, S));
    attn__dec_layer_act act;
    attn__dec_layer_act_bind(&D, B, T, S, actm, &act);
    assert_int_equal(attn__dec_layer_forward(at_ctx, &D, &bt, x, &enc, &act), ATTN_OK);
    fx_check(&f, "out", x, N * E);

    float *dx = falloc(N * E), *denc = falloc(B * S * kd);
    memcpy(dx, fx_in(&f, "dy", NULL), (size_t)(N * E) * sizeof(float));
    assert_int_equal(attn__dec_layer_backward(at_ctx, &D, &bt, &enc, &act, dx, denc, &g, scr),
                     ATTN_OK);
    fx_check(&f, "dx", dx, N * E);
    fx_check(&f, "denc", denc, B * S * kd);
    check_block(&f, "self.", &D.self, &g.self);
    check_block(&f, "cross.", &D.cross, &g.cross);
    check_ffn(&f, "", &D.ffn, &g.ffn);
    for (int i = 0; i < 6; i++)
        check_ln(&f, "", lns[i], *gl[i], E);
    int fails = f.fails;
    free(x), free(actm), free(scr), free(dx), free(denc), free(gs.mem);
    fx_close(&f);
    if (fails) fail_msg("dec: %d tensors outside the tolerance", fails);
}

/* ---- embedding -> block -> final LN -> tied head -> cross-entropy -------- */

static void test_lm_head_loss(void **s) {
    (void)s;
    fx f;
    fx_open(&f, "lm");
    attn_tensor idv = fx_view(&f, "in.ids"), tv = fx_view(&f, "in.targets");
    const int64_t B = idv.shape[0], T = idv.shape[1], N = B * T;
    int64_t nt, np;
    const float *tok = fx_in(&f, "tok", &nt), *pos = fx_in(&f, "pos", &np);
    const int64_t V = fx_meta(&f, "V"), E = nt / V, P = np / E;
    const int H = fx_meta(&f, "H"), I = fx_meta(&f, "I");
    const int32_t ign = fx_meta(&f, "ignore_index");
    layer_fx lf;
    load_layer(&f, "l0.", &lf, E, H, H, 1, I, 1, 1);
    const attn__batch bt = {B, T, NULL};
    attn_tensor none;
    memset(&none, 0, sizeof none);
    const int32_t *ids[8];
    for (int64_t b = 0; b < B; b++)
        ids[b] = (const int32_t *)idv.data + b * T;
    const int32_t *targets = tv.data;

    attn__embedding emb;
    memset(&emb, 0, sizeof emb);
    emb.E = E, emb.tok = tok, emb.pos = pos;
    float *x = falloc(N * E), *h = falloc(N * E), *mean = falloc(N), *rstd = falloc(N);
    attn__embedding_forward(at_ctx, &emb, &bt, ids, 0, x);
    float *actm = falloc(attn__layer_act_floats(&lf.L, B, T));
    float *scr = falloc(attn__layer_bwd_floats(&lf.L, B, T));
    attn__layer_act act;
    attn__layer_act_bind(&lf.L, B, T, actm, &act);
    assert_int_equal(attn__layer_forward_train(at_ctx, &lf.L, &bt, x, none, &act), ATTN_OK);
    const float *lg = fx_in(&f, "lnf_g", NULL), *lb = fx_in(&f, "lnf_b", NULL);
    attn__layernorm_rows_train(at_ctx, N, E, x, lg, lb, 1e-5f, h, mean, rstd);

    const int64_t cnt = attn__ce_count(targets, N, ign);
    assert_int_equal(cnt, N - 3);
    float *g_tok = falloc(V * E), *g_pos = falloc(P * E), *g_lg = falloc(E), *g_lb = falloc(E);
    float *dh = falloc(N * E), *hs = falloc(attn__lm_head_ce_floats(V));
    double loss =
        attn__lm_head_ce(at_ctx, h, N, E, tok, V, targets, ign, 1.0f / (float)cnt, dh, g_tok, hs) /
        (double)cnt;
    float lossf = (float)loss;
    fx_check(&f, "loss", &lossf, 1);

    /* the loss alone (no gradients) is the same number */
    double loss2 =
        attn__lm_head_ce(at_ctx, h, N, E, tok, V, targets, ign, 1.0f, NULL, NULL, hs) / (double)cnt;
    assert_true(loss2 == loss);

    attn__layernorm_rows_backward(at_ctx, N, E, x, lg, mean, rstd, dh, dh, g_lg, g_lb);
    assert_int_equal(attn__layer_backward(at_ctx, &lf.L, &bt, none, &act, dh, &lf.g, scr), ATTN_OK);
    attn__embedding_backward(at_ctx, &emb, &bt, ids, 0, dh, g_tok, g_pos, NULL);
    fx_check(&f, "grad.tok", g_tok, V * E);
    fx_check(&f, "grad.pos", g_pos, P * E);
    fx_check(&f, "grad.lnf_g", g_lg, E);
    fx_check(&f, "grad.lnf_b", g_lb, E);
    check_layer(&f, "l0.", &lf);
    int fails = f.fails;
    free(x), free(h), free(mean), free(rstd), free(actm), free(scr), free(g_tok), free(g_pos);
    free(g_lg), free(g_lb), free(dh), free(hs), free(lf.gs.mem);
    fx_close(&f);
    if (fails) fail_msg("lm: %d tensors outside the tolerance", fails);
}

/* ---- float64 finite differences ------------------------------------------ */

static uint64_t lcg = 0x2545F4914F6CDD1Dull;
static double urand(void) { /* uniform in [-1, 1) */
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

enum { CE_N = 6, CE_V = 13 };

/* Mean cross-entropy in float64 over rows not ignored. */
static double ce64(const double *z, const int32_t *t, double scale) {
    double L = 0.0;
    for (int r = 0; r < CE_N; r++) {
        if (t[r] < 0) continue;
        const double *zr = z + r * CE_V;
        double m = zr[0], s = 0.0;
        for (int k = 1; k < CE_V; k++)
            m = zr[k] > m ? zr[k] : m;
        for (int k = 0; k < CE_V; k++)
            s += exp(zr[k] - m);
        L += (m + log(s) - zr[t[r]]) * scale;
    }
    return L;
}

/* Softmax cross-entropy: loss and gradient against central differences of
 * the float64 loss, with ignored rows (zero gradient) and one row of huge
 * logits (1e3: exp overflows without the max taken out). */
static void test_softmax_ce_fd(void **s) {
    (void)s;
    float z[CE_N * CE_V], d[CE_N * CE_V], d32[CE_N * CE_V], zi[CE_N * CE_V];
    double z64[CE_N * CE_V], ref[CE_N * CE_V];
    const int32_t t[CE_N] = {3, -100, 12, 0, 7, -100};
    for (int i = 0; i < CE_N * CE_V; i++)
        z[i] = (float)(3.0 * urand());
    for (int k = 0; k < CE_V; k++)
        z[4 * CE_V + k] = (float)(1000.0 + 20.0 * urand());
    const int64_t cnt = attn__ce_count(t, CE_N, -100);
    assert_int_equal(cnt, 4);
    const double scale = 1.0 / (double)cnt;
    for (int i = 0; i < CE_N * CE_V; i++)
        z64[i] = z[i];
    for (int i = 0; i < CE_N * CE_V; i++) {
        const double h = 1e-5 * fmax(1.0, fabs(z64[i])), keep = z64[i];
        z64[i] = keep + h;
        double lp = ce64(z64, t, scale);
        z64[i] = keep - h;
        double lm = ce64(z64, t, scale);
        z64[i] = keep;
        ref[i] = (lp - lm) / (2.0 * h);
    }
    /* plain fp32: float sums, p = e / s */
    float loss32 = 0.0f;
    for (int r = 0; r < CE_N; r++) {
        float *dr = d32 + r * CE_V;
        const float *zr = z + r * CE_V;
        if (t[r] < 0) {
            memset(dr, 0, CE_V * sizeof(float));
            continue;
        }
        float m = zr[0], sum = 0.0f;
        for (int k = 1; k < CE_V; k++)
            m = zr[k] > m ? zr[k] : m;
        for (int k = 0; k < CE_V; k++)
            sum += expf(zr[k] - m);
        loss32 += (m + logf(sum) - zr[t[r]]) / (float)cnt;
        for (int k = 0; k < CE_V; k++)
            dr[k] = (expf(zr[k] - m) / sum - (k == t[r])) / (float)cnt;
    }
    double loss = attn__softmax_ce(at_ctx, z, CE_V, CE_N, CE_V, t, -100, (float)scale, d) * scale;
    assert_true(at_check_f64("softmax_ce dlogits", d, ref, d32, CE_N * CE_V, lcg));
    for (int i = 0; i < CE_V; i++) /* ignored rows: exactly zero */
        assert_true(d[CE_V + i] == 0.0f && d[5 * CE_V + i] == 0.0f);
    const double l64 = ce64(z64, t, scale);
    float lossf = (float)loss;
    assert_true(at_check_f64("softmax_ce loss", &lossf, &l64, &loss32, 1, lcg));
    /* in place (dlogits == logits) gives the same bits */
    memcpy(zi, z, sizeof z);
    double loss_i = attn__softmax_ce(at_ctx, zi, CE_V, CE_N, CE_V, t, -100, (float)scale, zi);
    assert_true(loss_i * scale == loss);
    assert_memory_equal(zi, d, sizeof d);
}

static double gelu_tanh64(double x) {
    return 0.5 * x * (1.0 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x)));
}

/* GELU-tanh forward and backward against float64 (the function itself, and
 * central differences of it). Bound: 1e-6 absolute on values of order 1,
 * about 16 ulp; a wrong constant or a dropped term is off by 1e-3 or more. */
static void test_gelu_tanh_fd(void **s) {
    (void)s;
    enum { n = 2001 };
    static float x[n], y[n], dy[n], dx[n];
    double ey = 0.0, ed = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = (float)(-8.0 + 16.0 * i / (n - 1));
        y[i] = x[i], dy[i] = 1.0f;
    }
    attn__gelu_tanh_forward(y, n);
    attn__gelu_tanh_backward(x, dy, dx, n);
    for (int i = 0; i < n; i++) {
        const double h = 1e-6, xd = x[i];
        double fd = (gelu_tanh64(xd + h) - gelu_tanh64(xd - h)) / (2.0 * h);
        ey = fmax(ey, fabs(y[i] - gelu_tanh64(xd)));
        ed = fmax(ed, fabs(dx[i] - fd));
    }
    if (at_verbose()) fprintf(stderr, "gelu_tanh: forward err %.3g, backward err %.3g\n", ey, ed);
    assert_true(ey <= 1e-6);
    assert_true(ed <= 1e-6);
}

/* Embedding scatter-add against float64 differences of L = sum w . x over
 * real rows, at a position offset, with padded rows (no gradient) and
 * repeated ids (the sums). */
static void test_embedding_fd(void **s) {
    (void)s;
    enum { V = 5, E = 19, B = 2, T = 6, P = 9, N = B * T };
    float tok[V * E], pos[P * E], w[N * E], gt[V * E] = {0}, gp[P * E] = {0}, gt32[V * E],
                                                   gp32[P * E];
    double rt[V * E], rp[P * E];
    const int32_t id0[T] = {1, 4, 1, 1, 0, 3}, id1[T] = {4, 4, 2, 0, 2, 2};
    const int32_t *ids[B] = {id0, id1};
    const int32_t len[B] = {6, 4};
    const attn__batch bt = {B, T, len};
    const int64_t pos0 = 2;
    for (int i = 0; i < V * E; i++)
        tok[i] = (float)urand();
    for (int i = 0; i < P * E; i++)
        pos[i] = (float)urand();
    for (int i = 0; i < N * E; i++)
        w[i] = (float)urand();
    attn__embedding emb;
    memset(&emb, 0, sizeof emb);
    emb.E = E, emb.tok = tok, emb.pos = pos;
    /* L is linear: a central difference is the derivative up to rounding
     * of L itself, summed in float64 */
    double tokd[V * E], posd[P * E];
    for (int i = 0; i < V * E; i++)
        tokd[i] = tok[i];
    for (int i = 0; i < P * E; i++)
        posd[i] = pos[i];
#define LOSS64(acc)                                                                                \
    do {                                                                                           \
        acc = 0.0;                                                                                 \
        for (int r = 0; r < N; r++) {                                                              \
            if (attn__batch_padded(&bt, r)) continue;                                              \
            int b = r / T, t = r % T;                                                              \
            for (int c = 0; c < E; c++)                                                            \
                acc +=                                                                             \
                    (double)w[r * E + c] * (tokd[ids[b][t] * E + c] + posd[(pos0 + t) * E + c]);   \
        }                                                                                          \
    } while (0)
    for (int i = 0; i < V * E + P * E; i++) {
        double *p = i < V * E ? &tokd[i] : &posd[i - V * E], keep = *p, lp, lm;
        *p = keep + 0.5;
        LOSS64(lp);
        *p = keep - 0.5;
        LOSS64(lm);
        *p = keep;
        (i < V * E ? rt : rp)[i < V * E ? i : i - V * E] = lp - lm;
    }
#undef LOSS64
    /* plain fp32: rows in reverse order */
    memset(gt32, 0, sizeof gt32), memset(gp32, 0, sizeof gp32);
    for (int r = N - 1; r >= 0; r--) {
        if (attn__batch_padded(&bt, r)) continue;
        int b = r / T, t = r % T;
        for (int c = 0; c < E; c++) {
            gt32[ids[b][t] * E + c] += w[r * E + c];
            gp32[(pos0 + t) * E + c] += w[r * E + c];
        }
    }
    attn__embedding_backward(at_ctx, &emb, &bt, ids, pos0, w, gt, gp, NULL);
    assert_true(at_check_f64("embedding g_tok", gt, rt, gt32, V * E, lcg));
    assert_true(at_check_f64("embedding g_pos", gp, rp, gp32, P * E, lcg));
    for (int c = 0; c < E; c++) /* positions never used get nothing */
        assert_true(gp[c] == 0.0f && gp[(P - 1) * E + c] == 0.0f);
}

/* ---- end to end: a 2-layer decoder learns to reverse ---------------------- */

/* Task: DIGITS random symbols of NSYM, a separator, then the same symbols
 * reversed; the model reads the first T = 2 DIGITS tokens and predicts the
 * reversed half (positions DIGITS .. 2 DIGITS - 1; the rest is ignored). The
 * answer is a function of the input, so the loss can go to ~0; chance is
 * ln(NSYM) = 1.79. */
enum { NSYM = 6, SEP = NSYM, VOC = NSYM + 1, DIGITS = 4, TT = 2 * DIGITS, NL = 2 };
enum { EM = 32, HM = 4, IM = 64, BM = 32 };

typedef struct tiny {
    float *w, *g; /* every parameter, and every gradient, back to back */
    int64_t n;
    attn_param params[64];
    char names[64][32];
    int np;
    attn__embedding emb;
    float *g_tok, *g_pos;
    attn__layer L[NL];
    attn__layer_grad lg[NL];
    const float *lnf_g, *lnf_b;
    float *g_lnf_g, *g_lnf_b;
} tiny;

static float *tparam(tiny *m, const char *name, int64_t n, float **grad) {
    float *p = m->w + m->n;
    *grad = m->g + m->n;
    attn_param *q = &m->params[m->np];
    snprintf(m->names[m->np], sizeof m->names[0], "%s", name);
    q->name = m->names[m->np++];
    q->value = attn_tensor_make(p, ATTN_F32, 1, (int64_t[]){n});
    q->grad = attn_tensor_make(*grad, ATTN_F32, 1, (int64_t[]){n});
    m->n += n;
    return p;
}

static void tfill(float *p, int64_t n, float bound) {
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(bound * urand());
}

static void tiny_init(tiny *m) {
    memset(m, 0, sizeof *m);
    const int64_t cap =
        VOC * EM + TT * EM + NL * (4 * EM * EM + 2 * EM * IM + 9 * EM + IM) + 2 * EM;
    m->w = falloc(cap), m->g = falloc(cap);
    float *tok = tparam(m, "tok", VOC * EM, &m->g_tok), *pos = tparam(m, "pos", TT * EM, &m->g_pos);
    tfill(tok, VOC * EM, 0.5f), tfill(pos, TT * EM, 0.5f);
    m->emb.E = EM, m->emb.tok = tok, m->emb.pos = pos;
    for (int l = 0; l < NL; l++) {
        attn__layer *L = &m->L[l];
        attn__layer_grad *g = &m->lg[l];
        float *p;
        L->attn.heads.H = L->attn.heads.Hkv = HM, L->attn.heads.Dh = EM / HM;
        L->attn.heads.causal = 1;
        L->attn.E = L->attn.KV = EM;
        L->attn.w_qkv = p = tparam(m, "w_qkv", 3 * EM * EM, &g->attn.w_qkv);
        tfill(p, 3 * EM * EM, 1.0f / sqrtf(EM));
        L->attn.b_qkv = tparam(m, "b_qkv", 3 * EM, &g->attn.b_qkv);
        L->attn.w_out = p = tparam(m, "w_out", EM * EM, &g->attn.w_out);
        tfill(p, EM * EM, 1.0f / sqrtf(EM));
        L->attn.b_out = tparam(m, "b_out", EM, &g->attn.b_out);
        L->ffn.E = EM, L->ffn.I = IM, L->ffn.gelu_tanh = 1;
        L->ffn.w1 = p = tparam(m, "w1", IM * EM, &g->ffn.w1);
        tfill(p, IM * EM, 1.0f / sqrtf(EM));
        L->ffn.b1 = tparam(m, "b1", IM, &g->ffn.b1);
        L->ffn.w2 = p = tparam(m, "w2", EM * IM, &g->ffn.w2);
        tfill(p, EM * IM, 1.0f / sqrtf(IM));
        L->ffn.b2 = tparam(m, "b2", EM, &g->ffn.b2);
        float *gg[4], *ln[4];
        const char *lnn[4] = {"ln1_g", "ln1_b", "ln2_g", "ln2_b"};
        for (int i = 0; i < 4; i++)
            ln[i] = tparam(m, lnn[i], EM, &gg[i]);
        for (int i = 0; i < EM; i++)
            ln[0][i] = ln[2][i] = 1.0f;
        L->ln1_g = ln[0], L->ln1_b = ln[1], L->ln2_g = ln[2], L->ln2_b = ln[3];
        g->ln1_g = gg[0], g->ln1_b = gg[1], g->ln2_g = gg[2], g->ln2_b = gg[3];
        L->eps = 1e-5f, L->pre_ln = 1;
    }
    float *lg = tparam(m, "lnf_g", EM, &m->g_lnf_g);
    m->lnf_b = tparam(m, "lnf_b", EM, &m->g_lnf_b);
    for (int i = 0; i < EM; i++)
        lg[i] = 1.0f;
    m->lnf_g = lg;
    assert_true(m->n <= cap);
}

static void reverse_batch(int32_t *ids, int32_t *targets) {
    for (int b = 0; b < BM; b++) {
        int32_t d[DIGITS];
        for (int i = 0; i < DIGITS; i++)
            d[i] = (int32_t)((urand() + 1.0) * 0.5 * NSYM) % NSYM;
        int32_t *x = ids + b * TT, *y = targets + b * TT;
        for (int i = 0; i < DIGITS; i++)
            x[i] = d[i];
        x[DIGITS] = SEP;
        for (int i = 1; i < DIGITS; i++)
            x[DIGITS + i] = d[DIGITS - i];
        for (int t = 0; t < TT; t++) /* position t predicts token t + 1 */
            y[t] = t >= DIGITS ? d[TT - 1 - t] : -100;
    }
}

/* Loss of one batch; with train set, gradients and an AdamW step. */
static double tiny_step(tiny *m, attn_adamw *opt, const int32_t *idsf, const int32_t *targets,
                        float **act_mem, float *scr, float *x, float *h, float *mean, float *rstd,
                        float *hs, int train) {
    const attn__batch bt = {BM, TT, NULL};
    const int64_t N = BM * TT;
    const int32_t *ids[BM];
    for (int b = 0; b < BM; b++)
        ids[b] = idsf + b * TT;
    attn_tensor none;
    memset(&none, 0, sizeof none);
    attn__layer_act act[NL];
    attn__embedding_forward(at_ctx, &m->emb, &bt, ids, 0, x);
    for (int l = 0; l < NL; l++) {
        attn__layer_act_bind(&m->L[l], BM, TT, act_mem[l], &act[l]);
        assert_int_equal(attn__layer_forward_train(at_ctx, &m->L[l], &bt, x, none, &act[l]),
                         ATTN_OK);
    }
    attn__layernorm_rows_train(at_ctx, N, EM, x, m->lnf_g, m->lnf_b, 1e-5f, h, mean, rstd);
    const int64_t cnt = attn__ce_count(targets, N, -100);
    memset(m->g, 0, (size_t)m->n * sizeof(float));
    float *dh = train ? h + N * EM : NULL;
    double loss = attn__lm_head_ce(at_ctx, h, N, EM, m->emb.tok, VOC, targets, -100,
                                   1.0f / (float)cnt, dh, train ? m->g_tok : NULL, hs) /
                  (double)cnt;
    if (!train) return loss;
    attn__layernorm_rows_backward(at_ctx, N, EM, x, m->lnf_g, mean, rstd, dh, dh, m->g_lnf_g,
                                  m->g_lnf_b);
    for (int l = NL - 1; l >= 0; l--)
        assert_int_equal(
            attn__layer_backward(at_ctx, &m->L[l], &bt, none, &act[l], dh, &m->lg[l], scr),
            ATTN_OK);
    attn__embedding_backward(at_ctx, &m->emb, &bt, ids, 0, dh, m->g_tok, m->g_pos, NULL);
    assert_int_equal(attn_param_clip_grad_norm(at_ctx, m->params, m->np, 1.0f, NULL), ATTN_OK);
    assert_int_equal(attn_adamw_step(at_ctx, opt), ATTN_OK);
    return loss;
}

static void test_train_reverse(void **s) {
    (void)s;
    tiny m;
    tiny_init(&m);
    const int64_t N = BM * TT;
    float *act_mem[NL];
    for (int l = 0; l < NL; l++)
        act_mem[l] = falloc(attn__layer_act_floats(&m.L[l], BM, TT));
    float *scr = falloc(attn__layer_bwd_floats(&m.L[0], BM, TT));
    float *x = falloc(N * EM), *h = falloc(2 * N * EM), *mean = falloc(N), *rstd = falloc(N);
    float *hs = falloc(attn__lm_head_ce_floats(VOC));
    int32_t ids[BM * TT], targets[BM * TT];
    attn_adamw_config cfg = {0};
    cfg.lr = 3e-3f, cfg.weight_decay = 0.01f;
    attn_adamw *opt = NULL;
    assert_int_equal(attn_adamw_create(at_ctx, &cfg, m.params, m.np, &opt), ATTN_OK);
    /* the loss is below 0.01 by step 50 on this task; sanitizer runs
     * (ATTN_TEST_QUICK) take fewer steps */
    const int steps = at_quick() ? 100 : 200;
    double first = 0.0, loss = 0.0;
    for (int it = 0; it < steps; it++) {
        reverse_batch(ids, targets);
        loss = tiny_step(&m, opt, ids, targets, act_mem, scr, x, h, mean, rstd, hs, 1);
        if (it == 0) first = loss;
        if (at_verbose() && it % 50 == 0) fprintf(stderr, "step %d loss %.4f\n", it, loss);
    }
    /* held-out: fresh batches the model has not seen */
    double eval = 0.0;
    for (int k = 0; k < 4; k++) {
        reverse_batch(ids, targets);
        eval += tiny_step(&m, opt, ids, targets, act_mem, scr, x, h, mean, rstd, hs, 0) / 4.0;
    }
    fprintf(stderr, "reverse task: loss %.4f at step 0, %.4f at step %d, held-out %.4f\n", first,
            loss, steps, eval);
    assert_true(first > 1.2); /* near chance, ln 6 = 1.79 */
    assert_true(eval < 0.05);
    attn_adamw_free(opt);
    for (int l = 0; l < NL; l++)
        free(act_mem[l]);
    free(scr), free(x), free(h), free(mean), free(rstd), free(hs), free(m.w), free(m.g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt_block),     cmocka_unit_test(test_gpt_block_t1),
        cmocka_unit_test(test_gqa_block),     cmocka_unit_test(test_bert_block_padded),
        cmocka_unit_test(test_masked_block),  cmocka_unit_test(test_decoder_cross),
        cmocka_unit_test(test_lm_head_loss),  cmocka_unit_test(test_softmax_ce_fd),
        cmocka_unit_test(test_gelu_tanh_fd),  cmocka_unit_test(test_embedding_fd),
        cmocka_unit_test(test_train_reverse),
    };
    return cmocka_run_group_tests(tests, at_ctx_setup, at_ctx_teardown);
}
