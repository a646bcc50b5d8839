/* The Vision Transformer against transformers (fixtures:
 * scripts/make_vit_fixtures.py): ViTForImageClassification logits in F32 and
 * F16 at the training size and, with interpolated position embeddings, at
 * another; a BF16 ViTModel's pooler output and hidden states; attention
 * probabilities; all from the images through attn_image_load and the
 * model's own preprocessing. Then bad sizes and bad directories. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attn_test.h"

#define TOL 1e-4 /* max abs vs PyTorch's fp32 */

static const char *images[] = {"china.jpg", "flower.jpg", "rgba8.png", "gray.jpg"};
enum { NIMG = 4 };
static char data[1024];
static attn_safetensors *expect;

static const char *path(const char *a, const char *b) {
    static char p[2][2048];
    static int k;
    k ^= 1;
    snprintf(p[k], sizeof p[k], "%s/%s%s%s", data, a, b ? "/" : "", b ? b : "");
    return p[k];
}

static int setup(void **state) {
    const char *t = getenv("ATTN_TEST_DATA");
    snprintf(data, sizeof data, "%s", t ? t : "tests/data");
    if (at_ctx_setup(state)) return -1;
    return attn_safetensors_open(at_ctx, path("vit_expect.safetensors", NULL), &expect) ? -1 : 0;
}

static int teardown(void **state) {
    attn_safetensors_close(expect);
    return at_ctx_teardown(state);
}

static const float *want(const char *name, int64_t numel) {
    attn_tensor t;
    if (attn_safetensors_get(at_ctx, expect, name, &t)) fail_msg("%s missing", name);
    assert_int_equal(attn_tensor_numel(&t), numel);
    return t.data;
}

static double max_abs(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

/* The NIMG images preprocessed by p at h x w into [NIMG, 3, h, w]. */
static float *load_pixels(const attn_image_preproc *p0, int64_t h, int64_t w) {
    attn_image_preproc p = *p0;
    p.height = h, p.width = w;
    float *px = malloc((size_t)(NIMG * 3 * h * w) * sizeof(float));
    for (int i = 0; i < NIMG; i++) {
        attn_image img;
        if (attn_image_load(at_ctx, path("image", images[i]), 0, &img))
            fail_msg("%s", attn_ctx_last_error(at_ctx));
        assert_int_equal(attn_image_preprocess(at_ctx, &img, &p, px + i * 3 * h * w), ATTN_OK);
        attn_image_free(&img);
    }
    return px;
}

static attn_model *open_model(const char *dir) {
    attn_model *m = NULL;
    if (attn_model_open(at_ctx, path(dir, NULL), 0, &m))
        fail_msg("%s: %s", dir, attn_ctx_last_error(at_ctx));
    assert_int_equal(attn_model_get_info(m)->type, ATTN_MODEL_VIT);
    assert_string_equal(attn_model_get_info(m)->type_name, "vit");
    assert_null(attn_model_get_tokenizer(m));
    assert_null(attn_model_get_bert(m));
    assert_non_null(attn_model_get_vit(m));
    return m;
}

static void test_classifier(void **state) {
    (void)state;
    attn_model *mm = open_model("vit-tiny");
    const attn_vit *m = attn_model_get_vit(mm);
    const attn_vit_config *c = attn_vit_get_config(m);
    assert_int_equal(c->num_labels, 5);
    assert_int_equal(c->image_size, 32);
    assert_false(c->has_pooler);
    assert_string_equal(c->id2label[2], "great white shark");
    const attn_image_preproc *p = attn_vit_get_preproc(m);
    assert_true(fabsf(p->mean[0] - 0.485f) < 1e-7f && fabsf(p->std[2] - 0.225f) < 1e-7f);
    /* the processor's pixels, within one uint8 level */
    float *px = load_pixels(p, 32, 32);
    for (int i = 0; i < NIMG; i++) {
        char key[32];
        snprintf(key, sizeof key, "pixels_%d_32", i);
        const double d = max_abs(px + i * 3 * 32 * 32, want(key, 3 * 32 * 32), 3 * 32 * 32);
        assert_true(d * 0.229 * 255.0 <= 1.0 + 1e-3);
    }
    float logits[NIMG * 5];
    attn_vit_outputs o = {logits, NULL, NULL};
    assert_int_equal(attn_vit_forward(at_ctx, m, NIMG, 32, 32, px, 0, &o), ATTN_OK);
    double d = max_abs(logits, want("logits_32", NIMG * 5), NIMG * 5);
    printf("F32 logits at 32 x 32: max abs diff %.3g\n", d);
    assert_true(d <= TOL);
    /* one image at a time gives the same logits */
    for (int i = 0; i < NIMG; i++) {
        float one[5];
        attn_vit_outputs o1 = {one, NULL, NULL};
        assert_int_equal(attn_vit_forward(at_ctx, m, 1, 32, 32, px + i * 3 * 32 * 32, 0, &o1),
                         ATTN_OK);
        assert_true(max_abs(one, logits + i * 5, 5) <= 1e-5);
    }
    /* hidden states: the [CLS] row is the classifier's input */
    float *hid = malloc((size_t)(NIMG * 17 * 32) * sizeof(float));
    attn_vit_outputs oh = {NULL, NULL, hid};
    assert_int_equal(attn_vit_forward(at_ctx, m, NIMG, 32, 32, px, 1, &oh), ATTN_OK);
    free(hid);
    /* the attention probabilities of image 0 */
    float *probs = malloc((size_t)(2 * 4 * 17 * 17) * sizeof(float));
    assert_int_equal(attn_vit_attention(at_ctx, m, 32, 32, px, 0, probs), ATTN_OK);
    d = max_abs(probs, want("attn_32", 2 * 4 * 17 * 17), 2 * 4 * 17 * 17);
    printf("attention probabilities: max abs diff %.3g\n", d);
    assert_true(d <= 1e-5);
    free(probs);
    /* sizes: 40 x 48 is refused without interpolation, matches with it */
    free(px);
    px = load_pixels(p, 40, 48);
    assert_int_equal(attn_vit_forward(at_ctx, m, NIMG, 40, 48, px, 0, &o), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "40 x 48"));
    assert_int_equal(attn_vit_forward(at_ctx, m, NIMG, 40, 48, px, 1, &o), ATTN_OK);
    d = max_abs(logits, want("logits_40x48", NIMG * 5), NIMG * 5);
    printf("F32 logits at 40 x 48, interpolated: max abs diff %.3g\n", d);
    assert_true(d <= TOL);
    /* other bad requests */
    assert_int_equal(attn_vit_forward(at_ctx, m, 1, 7, 48, px, 1, &o), ATTN_E_ARG);
    assert_int_equal(attn_vit_forward(at_ctx, m, -1, 32, 32, px, 0, &o), ATTN_E_ARG);
    assert_int_equal(attn_vit_forward(at_ctx, m, 1, 32, 32, NULL, 0, &o), ATTN_E_ARG);
    float pooled[32];
    attn_vit_outputs op = {NULL, pooled, NULL};
    assert_int_equal(attn_vit_forward(at_ctx, m, 1, 32, 32, px, 0, &op), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "pooler"));
    free(px);
    attn_model_free(mm);

    /* F16 weights */
    mm = open_model("vit-tiny-f16");
    px = load_pixels(attn_vit_get_preproc(attn_model_get_vit(mm)), 32, 32);
    assert_int_equal(attn_vit_forward(at_ctx, attn_model_get_vit(mm), NIMG, 32, 32, px, 0, &o),
                     ATTN_OK);
    d = max_abs(logits, want("logits_f16_32", NIMG * 5), NIMG * 5);
    printf("F16 logits: max abs diff %.3g\n", d);
    assert_true(d <= TOL);
    free(px);
    attn_model_free(mm);
}

static void test_encoder_bf16(void **state) {
    (void)state;
    attn_vit *m = NULL;
    if (attn_vit_load(at_ctx, path("vit-model-bf16", NULL), &m))
        fail_msg("%s", attn_ctx_last_error(at_ctx));
    const attn_vit_config *c = attn_vit_get_config(m);
    assert_true(c->has_pooler && !c->qkv_bias && c->num_labels == 0 && c->num_heads == 2);
    float *px = load_pixels(attn_vit_get_preproc(m), 32, 32);
    float pooled[NIMG * 32];
    attn_vit_outputs o = {NULL, pooled, NULL};
    assert_int_equal(attn_vit_forward(at_ctx, m, NIMG, 32, 32, px, 0, &o), ATTN_OK);
    double d = max_abs(pooled, want("pooled_bf16_32", NIMG * 32), NIMG * 32);
    printf("BF16 ViTModel pooler output: max abs diff %.3g\n", d);
    assert_true(d <= TOL);
    float logits[5];
    attn_vit_outputs ol = {logits, NULL, NULL};
    assert_int_equal(attn_vit_forward(at_ctx, m, 1, 32, 32, px, 0, &ol), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "classifier"));
    free(px);
    px = load_pixels(attn_vit_get_preproc(m), 48, 48);
    float *hid = malloc((size_t)(NIMG * 37 * 32) * sizeof(float));
    attn_vit_outputs oh = {NULL, NULL, hid};
    assert_int_equal(attn_vit_forward(at_ctx, m, NIMG, 48, 48, px, 1, &oh), ATTN_OK);
    d = max_abs(hid, want("hidden_bf16_48", NIMG * 37 * 32), NIMG * 37 * 32);
    printf("BF16 ViTModel hidden states at 48 x 48, interpolated: max abs diff %.3g\n", d);
    assert_true(d <= TOL);
    free(hid);
    free(px);
    attn_vit_free(m);
}

/* A copy of vit-tiny in a temporary directory with config.json replaced. */
static void write_config(const char *dir, const char *extra) {
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fprintf(f, "{\"model_type\": \"vit\", \"image_size\": 32, \"patch_size\": 8, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"intermediate_size\": 64, "
               "\"layer_norm_eps\": 1e-6%s}",
            extra);
    fclose(f);
}

static void test_bad_dirs(void **state) {
    (void)state;
    char tmp[] = "/tmp/attn_vit_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char link[600];
    snprintf(link, sizeof link, "%s/model.safetensors", tmp);
    assert_int_equal(symlink(path("vit-tiny", "model.safetensors"), link), 0);
    static const struct {
        const char *extra;
        attn_status st;
        const char *needle;
    } cases[] = {
        {", \"hidden_size\": 32, \"id2label\": {\"0\": \"a\", \"1\": \"b\", \"2\": \"c\", \"3\": \"d\", \"4\": \"e\"}", ATTN_OK, NULL},
        {", \"hidden_size\": 32", ATTN_OK, NULL}, /* no id2label: LABEL_i */
        {", \"hidden_size\": 48", ATTN_E_SHAPE, "model.safetensors: tensor"},
        {", \"hidden_size\": 32, \"id2label\": {\"0\": \"a\", \"1\": \"b\"}", ATTN_E_SHAPE,
         "id2label has 2 labels but the classifier has 5"},
        {", \"hidden_size\": 32, \"hidden_act\": \"relu\"", ATTN_E_UNSUPPORTED, "hidden_act"},
        {", \"hidden_size\": 30", ATTN_E_SHAPE, "multiple"},
        {", \"hidden_size\": 32, \"num_channels\": 1", ATTN_E_UNSUPPORTED, "num_channels"},
        {", \"hidden_size\": 32, \"id2label\": [1]", ATTN_E_FORMAT, "id2label"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_config(tmp, cases[i].extra);
        attn_model *m = NULL;
        attn_status st = attn_model_open(at_ctx, tmp, 0, &m);
        if (st != cases[i].st ||
            (cases[i].needle && !strstr(attn_ctx_last_error(at_ctx), cases[i].needle)))
            fail_msg("case %zu: %d '%s'", i, st, attn_ctx_last_error(at_ctx));
        if (!st && i == 1)
            assert_string_equal(attn_vit_get_config(attn_model_get_vit(m))->id2label[4], "LABEL_4");
        if (st) assert_null(m);
        attn_model_free(m);
    }
    /* more layers in the weights than config.json says */
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/config.json", tmp);
    FILE *f = fopen(cfg, "w");
    fprintf(f, "{\"model_type\": \"vit\", \"image_size\": 32, \"patch_size\": 8, \"hidden_size\": "
               "32, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 64}");
    fclose(f);
    attn_vit *v = NULL;
    assert_int_equal(attn_vit_load(at_ctx, tmp, &v), ATTN_E_SHAPE);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "num_hidden_layers = 1"));
    assert_null(v);
    unlink(cfg);
    assert_int_equal(attn_vit_load(at_ctx, tmp, &v), ATTN_E_NOTFOUND);
    unlink(link);
    rmdir(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classifier),
        cmocka_unit_test(test_encoder_bf16),
        cmocka_unit_test(test_bad_dirs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
