/* AdamW and clip_grad_norm against torch.optim.AdamW + clip_grad_norm_
 * (fixture tests/data/mha/adamw.*, same tolerance rule as the layer: at most
 * 2x PyTorch fp32's distance from its float64 run + 1e-6); the layer's
 * weight loading and saving; argument errors of the nn API. */
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

static attn_safetensors *open_fx(attn_ctx *ctx, const char *suffix) {
    const char *data = getenv("ATTN_TEST_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/mha/adamw.%s.safetensors", data ? data : "tests/data", suffix);
    attn_safetensors *st = NULL;
    if (attn_safetensors_open(ctx, path, &st)) fail_msg("%s", attn_ctx_last_error(ctx));
    return st;
}

static void copy_f32(attn_ctx *ctx, attn_safetensors *st, const char *name, float *dst, int64_t n) {
    attn_tensor t;
    assert_int_equal(attn_safetensors_get(ctx, st, name, &t), ATTN_OK);
    assert_int_equal(t.dtype, ATTN_F32);
    assert_int_equal(attn_tensor_numel(&t), n);
    memcpy(dst, t.data, (size_t)n * sizeof(float));
}

static void test_adamw_torch(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    attn_safetensors *in = open_fx(ctx, "in"), *f64 = open_fx(ctx, "f64"),
                     *t32 = open_fx(ctx, "torch32");
    float w[35], b[7], gw[35], gb[7];
    copy_f32(ctx, in, "w0", w, 35);
    copy_f32(ctx, in, "b0", b, 7);
    attn_param ps[2];
    ps[0].name = "w", ps[1].name = "b";
    ps[0].value = attn_tensor_make(w, ATTN_F32, 2, (int64_t[]){5, 7});
    ps[0].grad = attn_tensor_make(gw, ATTN_F32, 2, (int64_t[]){5, 7});
    ps[1].value = attn_tensor_make(b, ATTN_F32, 1, (int64_t[]){7});
    ps[1].grad = attn_tensor_make(gb, ATTN_F32, 1, (int64_t[]){7});
    attn_adamw_config c = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f};
    attn_adamw *opt;
    assert_int_equal(attn_adamw_create(ctx, &c, ps, 2, &opt), ATTN_OK);
    int steps = atoi(attn_safetensors_metadata(in, "steps"));
    for (int k = 0; k < steps; k++) {
        char nm[32];
        snprintf(nm, sizeof nm, "g%d.w", k);
        copy_f32(ctx, in, nm, gw, 35);
        snprintf(nm, sizeof nm, "g%d.b", k);
        copy_f32(ctx, in, nm, gb, 7);
        double norm;
        assert_int_equal(attn_param_clip_grad_norm(ctx, ps, 2, 2.0f, &norm), ATTN_OK);
        assert_true(norm > 2.0); /* the fixture's gradients do get clipped */
        assert_int_equal(attn_adamw_step(ctx, opt), ATTN_OK);
    }
    const char *names[2] = {"w", "b"};
    const float *got[2] = {w, b};
    for (int i = 0; i < 2; i++) {
        attn_tensor r64, r32;
        assert_int_equal(attn_safetensors_get(ctx, f64, names[i], &r64), ATTN_OK);
        assert_int_equal(attn_safetensors_get(ctx, t32, names[i], &r32), ATTN_OK);
        int64_t n = attn_tensor_numel(&r64);
        double et = 0, eg = 0;
        for (int64_t j = 0; j < n; j++) {
            double ref = ((const double *)r64.data)[j];
            et = fmax(et, fabs((double)((const float *)r32.data)[j] - ref));
            eg = fmax(eg, fabs((double)got[i][j] - ref));
        }
        if (eg > 2 * et + 1e-6)
            fail_msg("AdamW %s: max err %.3g > 2 * torch fp32 err %.3g + 1e-6", names[i], eg, et);
    }
    attn_adamw_free(opt);
    attn_safetensors_close(in), attn_safetensors_close(f64), attn_safetensors_close(t32);
    attn_ctx_free(ctx);
}

static void test_clip(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    float v[4] = {0}, g[4] = {3, 0, 0, 4}; /* norm 5 */
    attn_param p = {"p", attn_tensor_make(v, ATTN_F32, 1, (int64_t[]){4}),
                    attn_tensor_make(g, ATTN_F32, 1, (int64_t[]){4})};
    double norm;
    assert_int_equal(attn_param_clip_grad_norm(ctx, &p, 1, 10.0f, &norm), ATTN_OK);
    assert_true(norm == 5.0 && g[0] == 3.0f && g[3] == 4.0f); /* below max: untouched */
    assert_int_equal(attn_param_clip_grad_norm(ctx, &p, 1, 1.0f, &norm), ATTN_OK);
    assert_true(fabs(sqrt(g[0] * g[0] + g[3] * g[3]) - 1.0) < 1e-6);
    assert_int_equal(attn_param_clip_grad_norm(ctx, &p, 1, 0.0f, NULL), ATTN_E_ARG);
    assert_int_equal(attn_param_clip_grad_norm(ctx, &p, 1, NAN, NULL), ATTN_E_ARG);
    attn_adamw *o = NULL;
    attn_adamw_config bad = {.lr = -1.0f};
    assert_int_equal(attn_adamw_create(ctx, &bad, &p, 1, &o), ATTN_E_ARG);
    bad = (attn_adamw_config){.beta1 = 1.0f};
    assert_int_equal(attn_adamw_create(ctx, &bad, &p, 1, &o), ATTN_E_ARG);
    assert_null(o);
    /* set_lr ignores lr <= 0 and NaN: with a constant gradient every bias-
     * corrected AdamW step moves a weight by lr * sign(g) (up to eps) */
    assert_int_equal(attn_adamw_step(ctx, NULL), ATTN_E_ARG);
    attn_adamw_config cfg = {.lr = 0.5f};
    assert_int_equal(attn_adamw_create(ctx, &cfg, &p, 1, &o), ATTN_OK);
    attn_adamw_set_lr(o, 0.0f);
    attn_adamw_set_lr(o, NAN);
    attn_adamw_set_lr(NULL, 1.0f); /* no-op */
    assert_int_equal(attn_adamw_step(ctx, o), ATTN_OK);
    assert_true(fabs(v[0] + 0.5) < 1e-6 && v[1] == 0.0f);
    attn_adamw_set_lr(o, 0.25f);
    assert_int_equal(attn_adamw_step(ctx, o), ATTN_OK);
    assert_true(fabs(v[0] + 0.75) < 1e-6 && fabs(v[3] + 0.75) < 1e-6);
    attn_adamw_free(o);
    attn_adamw_free(NULL); /* no-op */
    attn_ctx_free(ctx);
}

/* Save a layer, load it into a fresh one: same values. Missing, misshapen
 * and extra tensors fail with a message naming them and change nothing. */
static void test_load_save(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    attn_mha_config c = {.E = 12, .H = 4, .Hkv = 2, .kdim = 5, .vdim = 7};
    attn_mha *a, *b;
    assert_int_equal(attn_mha_create(ctx, &c, 1, &a), ATTN_OK);
    assert_int_equal(attn_mha_create(ctx, &c, 2, &b), ATTN_OK);
    char path[] = "/tmp/attn_test_mha_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(attn_mha_save(ctx, a, path), ATTN_OK);
    attn_safetensors *st;
    assert_int_equal(attn_safetensors_open(ctx, path, &st), ATTN_OK);
    assert_int_equal(attn_mha_load(ctx, b, st, NULL, 1), ATTN_OK);
    int na, nb;
    const attn_param *pa = attn_mha_get_params(a, &na), *pb = attn_mha_get_params(b, &nb);
    assert_int_equal(na, 8); /* GQA: q/k/v weights and biases, out_proj weight and bias */
    assert_int_equal(na, nb);
    for (int i = 0; i < na; i++) {
        assert_string_equal(pa[i].name, pb[i].name);
        assert_memory_equal(pa[i].value.data, pb[i].value.data,
                            (size_t)attn_tensor_numel(&pa[i].value) * 4);
    }
    attn_safetensors_close(st);

    /* a layer without biases finds extra tensors (strict) and nothing missing */
    attn_mha_config cn = c;
    cn.no_bias = 1;
    attn_mha *n;
    assert_int_equal(attn_mha_create(ctx, &cn, 3, &n), ATTN_OK);
    assert_int_equal(attn_safetensors_open(ctx, path, &st), ATTN_OK);
    float keep = ((float *)attn_mha_get_params(n, &nb)[0].value.data)[0];
    assert_int_equal(attn_mha_load(ctx, n, st, "", 1), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "unexpected tensor 'q_proj_bias'"));
    assert_true(((float *)attn_mha_get_params(n, &nb)[0].value.data)[0] == keep); /* unchanged */
    assert_int_equal(attn_mha_load(ctx, n, st, "", 0), ATTN_OK);
    /* another width: every shape differs */
    attn_mha_config cw = c;
    cw.kdim = 6;
    attn_mha *w;
    assert_int_equal(attn_mha_create(ctx, &cw, 3, &w), ATTN_OK);
    assert_int_equal(attn_mha_load(ctx, w, st, "", 0), ATTN_E_SHAPE);
    assert_non_null(
        strstr(attn_ctx_last_error(ctx), "'k_proj_weight' has shape [6, 5], expected [6, 6]"));
    /* a prefix that does not match: the first weight is missing */
    assert_int_equal(attn_mha_load(ctx, b, st, "enc.", 0), ATTN_E_NOTFOUND);
    assert_non_null(
        strstr(attn_ctx_last_error(ctx), "missing weight 'enc.q_proj_weight' [12, 12]"));
    attn_safetensors_close(st);
    unlink(path);
    attn_mha_free(a), attn_mha_free(b), attn_mha_free(n), attn_mha_free(w);
    attn_ctx_free(ctx);
}

static void test_errors(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    attn_mha *m = NULL;
    attn_mha_config c = {.E = 10, .H = 4};
    assert_int_equal(attn_mha_create(ctx, &c, 0, &m), ATTN_E_SHAPE); /* E % H, as BERT */
    assert_null(m);
    c = (attn_mha_config){.E = 8, .H = 4, .Hkv = 3};
    assert_int_equal(attn_mha_create(ctx, &c, 0, &m), ATTN_E_SHAPE); /* H % Hkv, as sdpa */
    c = (attn_mha_config){.E = 8, .H = 2, .dropout = 1.0f};
    assert_int_equal(attn_mha_create(ctx, &c, 0, &m), ATTN_E_ARG);
    c = (attn_mha_config){.E = 8, .H = 2, .kdim = 3, .vdim = 3};
    assert_int_equal(attn_mha_create(ctx, &c, 0, &m), ATTN_OK);
    float x[2 * 3 * 8] = {0}, y[2 * 3 * 8], k[2 * 5 * 3] = {0};
    attn_mha_args a = {0};
    a.x_q = attn_tensor_make(x, ATTN_F32, 3, (int64_t[]){2, 3, 8});
    a.y = attn_tensor_make(y, ATTN_F32, 3, (int64_t[]){2, 3, 8});
    /* kdim != E: self-attention is impossible */
    assert_int_equal(attn_mha_forward(ctx, m, &a), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "kdim"));
    a.x_k = attn_tensor_make(k, ATTN_F32, 3, (int64_t[]){2, 5, 3});
    assert_int_equal(attn_mha_forward(ctx, m, &a), ATTN_OK);
    a.y.shape[1] = 4; /* y of the wrong shape */
    assert_int_equal(attn_mha_forward(ctx, m, &a), ATTN_E_SHAPE);
    a.y.shape[1] = 3;
    attn_mha_grads g = {0};
    float dy[2 * 3 * 8] = {0}, dx[2 * 3 * 8], dk[2 * 5 * 3];
    g.dy = a.y;
    g.dy.data = dy;
    g.dx_q = attn_tensor_make(dx, ATTN_F32, 3, (int64_t[]){2, 3, 8});
    assert_int_equal(attn_mha_backward(ctx, m, &a, &g), ATTN_E_ARG); /* dx_k missing */
    assert_non_null(strstr(attn_ctx_last_error(ctx), "dx_k"));
    g.dx_k = attn_tensor_make(dk, ATTN_F32, 3, (int64_t[]){2, 5, 3});
    assert_int_equal(attn_mha_backward(ctx, m, &a, &g), ATTN_OK);
    a.x_k.shape[1] = 4; /* another S than the saved forward */
    assert_int_equal(attn_mha_backward(ctx, m, &a, &g), ATTN_E_ARG);
    attn_mha_free(m);
    attn_mha_free(NULL);
    attn_adamw_free(NULL);
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_torch),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_load_save),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
