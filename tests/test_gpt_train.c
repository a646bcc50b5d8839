/* The GPT-2 trainer (attn_gpt_trainer_*): every parameter's gradient
 * against central finite differences of the loss, the save / load round
 * trip through attn_gpt_save and attn_gpt_load (same loss from the loaded
 * model's logits), and argument errors. */
#include <attn/attn.h>

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

enum { V = 13, P = 6, E = 8, H = 2, L = 2, I = 16, B = 2, T = 5 };

static uint64_t rng_state = 42;
static double urand(void) { /* [0, 1) */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

static attn_gpt_config tiny(void) {
    attn_gpt_config c;
    memset(&c, 0, sizeof c);
    c.arch = ATTN_GPT_ARCH_GPT2, c.vocab_size = V, c.n_positions = P, c.n_embd = E;
    c.n_layer = L, c.n_head = H, c.n_kv_head = H, c.n_inner = I, c.layer_norm_epsilon = 1e-5f;
    c.attention_bias = c.mlp_bias = 1, c.act = ATTN_GPT_GELU_TANH, c.scale_attn_weights = 1;
    c.tie_word_embeddings = 1, c.bos_token_id = c.eos_token_id = -1;
    return c;
}

/* A trainer whose weights are O(1) (the default 0.02 makes gradients too
 * small for finite differences to see a missing term), with dropout p. */
static attn_gpt_trainer *make(attn_ctx *ctx, int32_t *ids, float p) {
    attn_gpt_config c = tiny();
    c.attn_pdrop = c.resid_pdrop = c.embd_pdrop = p;
    attn_gpt_trainer *t = NULL;
    assert_int_equal(attn_gpt_trainer_create(ctx, &c, B, 7, &t), ATTN_OK);
    int np;
    const attn_param *ps = attn_gpt_trainer_params(t, &np);
    assert_int_equal(np, 4 + 12 * L);
    for (int i = 0; i < np; i++) {
        float *v = ps[i].value.data;
        const int ln = strstr(ps[i].name, "ln_") && strstr(ps[i].name, ".weight");
        for (int64_t k = 0; k < attn_tensor_numel(&ps[i].value); k++)
            v[k] = (float)((ln ? 1.0 : 0.0) + (urand() - 0.5) * 0.8);
    }
    for (int k = 0; k < B * (T + 1); k++)
        ids[k] = (int32_t)(urand() * V);
    return t;
}

/* The mean loss: mode 0 evaluation, 2 the next train step's forward. */
static double mean_loss(attn_ctx *ctx, attn_gpt_trainer *t, const int32_t *ids, int mode) {
    double s;
    assert_int_equal(attn_gpt_trainer_step(ctx, t, B, T, ids, mode, &s), ATTN_OK);
    return s / (B * T);
}

/* Every parameter's gradient against central differences of the loss the
 * train step computes: with dropout p, the same masks (the trainer's seed,
 * step 0), evaluated on a twin trainer with the same seed and weights
 * (train mode 2, which does not advance the step). */
static void check_gradients(float p) {
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    int32_t ids[B * (T + 1)], ids2[B * (T + 1)];
    attn_gpt_trainer *t = make(ctx, ids, p), *u = make(ctx, ids2, p);
    int np;
    const attn_param *ps = attn_gpt_trainer_params(t, &np), *pu = attn_gpt_trainer_params(u, &np);
    for (int i = 0; i < np; i++) /* the twin: t's weights */
        memcpy(pu[i].value.data, ps[i].value.data,
               (size_t)attn_tensor_numel(&ps[i].value) * sizeof(float));
    const int mode = p > 0.0f ? 2 : 0;
    const double before = mean_loss(ctx, t, ids, 2);
    double s_train;
    assert_int_equal(attn_gpt_trainer_step(ctx, t, B, T, ids, 1, &s_train), ATTN_OK);
    const double loss0 = mean_loss(ctx, u, ids, mode);
    assert_true(loss0 == s_train / (B * T) && before == loss0); /* the same masks, bitwise */
    const double eval = mean_loss(ctx, u, ids, 0), next = mean_loss(ctx, t, ids, 2);
    if (p > 0.0f) { /* dropout on in training only, new masks each step */
        assert_true(fabs(eval - loss0) > 1e-3 && fabs(next - loss0) > 1e-3);
    } else {
        assert_true(eval == loss0 && next == loss0);
    }
    const float h = 1e-2f;
    int checked = 0;
    for (int i = 0; i < np; i++) {
        float *v = pu[i].value.data;
        const float *g = ps[i].grad.data;
        const int64_t n = attn_tensor_numel(&ps[i].value);
        for (int rep = 0; rep < 3; rep++) {
            /* wte: rows of ids in the batch matter most; any row has a head gradient */
            const int64_t k = (int64_t)(urand() * (double)n);
            const float keep = v[k];
            v[k] = keep + h;
            const double lp = mean_loss(ctx, u, ids, mode);
            v[k] = keep - h;
            const double lm = mean_loss(ctx, u, ids, mode);
            v[k] = keep;
            const double fd = (lp - lm) / (2.0 * h);
            if (fabs(fd - g[k]) > 2e-3 + 3e-2 * fabs(fd))
                fail_msg("dropout %g: %s[%lld]: gradient %.6g, finite difference %.6g", (double)p,
                         ps[i].name, (long long)k, (double)g[k], fd);
            checked++;
        }
    }
    assert_int_equal(checked, 3 * np);
    attn_gpt_trainer_free(t);
    attn_gpt_trainer_free(u);
    attn_ctx_free(ctx);
}

static void test_gradients(void **state) {
    (void)state;
    check_gradients(0.0f);
}

/* Dropout 0.3 everywhere (attention probabilities, both residual branches,
 * the embeddings), the masks fixed by the seed. */
static void test_gradients_dropout(void **state) {
    (void)state;
    check_gradients(0.3f);
}

static void test_save_load(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    int32_t ids[B * (T + 1)];
    attn_gpt_trainer *t = make(ctx, ids, 0.0f);
    const double want = mean_loss(ctx, t, ids, 0);
    char dir[] = "/tmp/attn-gpt-train-XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(attn_gpt_save(ctx, attn_gpt_trainer_model(t), dir, 0), ATTN_OK);
    /* a byte tokenizer needs 256 ids */
    assert_int_equal(attn_gpt_save(ctx, attn_gpt_trainer_model(t), dir, 1), ATTN_E_ARG);
    attn_gpt *m = NULL;
    if (attn_gpt_load(ctx, dir, &m)) fail_msg("%s", attn_ctx_last_error(ctx));
    double sum = 0.0;
    float logits[T * V];
    for (int b = 0; b < B; b++) {
        attn_gpt_cache *c = NULL;
        assert_int_equal(attn_gpt_cache_create(ctx, m, 1, P, &c), ATTN_OK);
        assert_int_equal(attn_gpt_forward(ctx, m, c, T, ids + b * (T + 1), 0, logits), ATTN_OK);
        for (int i = 0; i < T; i++) {
            double mx = -INFINITY, z = 0.0;
            for (int v = 0; v < V; v++)
                mx = fmax(mx, logits[i * V + v]);
            for (int v = 0; v < V; v++)
                z += exp(logits[i * V + v] - mx);
            sum += mx + log(z) - logits[i * V + ids[b * (T + 1) + i + 1]];
        }
        attn_gpt_cache_free(c);
    }
    const double got = sum / (B * T);
    if (fabs(got - want) > 1e-5 * (1.0 + fabs(want)))
        fail_msg("loaded model's loss %.9g, trainer's %.9g", got, want);
    attn_gpt_free(m);
    /* the dropout probabilities travel in config.json */
    attn_gpt_config c0;
    assert_int_equal(attn_gpt_config_load(ctx, dir, &c0), ATTN_OK);
    assert_true(c0.attn_pdrop == 0.0f && c0.resid_pdrop == 0.0f && c0.embd_pdrop == 0.0f);
    attn_gpt_config cd = tiny();
    cd.attn_pdrop = 0.25f, cd.resid_pdrop = 0.125f, cd.embd_pdrop = 0.5f;
    attn_gpt_trainer *td = NULL;
    assert_int_equal(attn_gpt_trainer_create(ctx, &cd, 1, 3, &td), ATTN_OK);
    assert_int_equal(attn_gpt_save(ctx, attn_gpt_trainer_model(td), dir, 0), ATTN_OK);
    assert_int_equal(attn_gpt_config_load(ctx, dir, &c0), ATTN_OK);
    assert_true(c0.attn_pdrop == 0.25f && c0.resid_pdrop == 0.125f && c0.embd_pdrop == 0.5f);
    attn_gpt_trainer_free(td);
    char path[1100];
    snprintf(path, sizeof path, "%s/config.json", dir), unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir), unlink(path);
    rmdir(dir);
    attn_gpt_trainer_free(t);
    attn_ctx_free(ctx);
}

static void test_errors(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    int32_t ids[B * (T + 1)];
    attn_gpt_trainer *t = make(ctx, ids, 0.0f);
    assert_int_equal(attn_gpt_trainer_step(ctx, t, B + 1, T, ids, 1, NULL), ATTN_E_ARG);
    assert_int_equal(attn_gpt_trainer_step(ctx, t, B, P + 1, ids, 1, NULL), ATTN_E_ARG);
    assert_int_equal(attn_gpt_trainer_step(ctx, t, B, 0, ids, 1, NULL), ATTN_E_ARG);
    ids[3] = V;
    assert_int_equal(attn_gpt_trainer_step(ctx, t, B, T, ids, 1, NULL), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "vocab_size"));
    ids[3] = -1;
    assert_int_equal(attn_gpt_trainer_step(ctx, t, B, T, ids, 0, NULL), ATTN_E_ARG);
    ids[3] = 0;
    assert_int_equal(attn_gpt_trainer_step(ctx, t, B, T, ids, 3, NULL), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "train 3"));
    assert_int_equal(attn_gpt_trainer_step(ctx, t, B, T, ids, -1, NULL), ATTN_E_ARG);
    attn_gpt_trainer_free(t);
    /* dropout probabilities outside [0, 1), each named */
    const char *names[3] = {"attn_pdrop", "resid_pdrop", "embd_pdrop"};
    const float bad[4] = {1.0f, -0.1f, NAN, 1.5f};
    for (int i = 0; i < 3; i++)
        for (int b = 0; b < 4; b++) {
            attn_gpt_config d = tiny();
            float *f = i == 0 ? &d.attn_pdrop : i == 1 ? &d.resid_pdrop : &d.embd_pdrop;
            *f = bad[b];
            attn_gpt_trainer *w = NULL;
            assert_int_equal(attn_gpt_trainer_create(ctx, &d, 1, 1, &w), ATTN_E_ARG);
            assert_null(w);
            assert_non_null(strstr(attn_ctx_last_error(ctx), names[i]));
        }
    attn_gpt_config c = tiny();
    attn_gpt_trainer *u = NULL;
    c.tie_word_embeddings = 0;
    assert_int_equal(attn_gpt_trainer_create(ctx, &c, 1, 1, &u), ATTN_E_ARG);
    c = tiny(), c.arch = ATTN_GPT_ARCH_LLAMA;
    assert_int_equal(attn_gpt_trainer_create(ctx, &c, 1, 1, &u), ATTN_E_ARG);
    c = tiny(), c.n_embd = 7;
    assert_int_equal(attn_gpt_trainer_create(ctx, &c, 1, 1, &u), ATTN_E_SHAPE);
    c = tiny();
    assert_int_equal(attn_gpt_trainer_create(ctx, &c, 0, 1, &u), ATTN_E_ARG);
    assert_null(u);
    assert_int_equal(attn_gpt_save(ctx, NULL, "/tmp", 0), ATTN_E_ARG);
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_gradients_dropout),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
