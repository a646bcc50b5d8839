/* The captioner's gradients (attn_caption_trainer_step) against central
 * differences of its loss, on a tiny model: parameters of the decoder
 * (tied embedding, cross-attention, final LayerNorm) and of the encoder
 * behind the cross-attention (patch projection, position embeddings, a
 * layer, the ViT's final LayerNorm that feeds the decoder), so the wiring
 * between the two halves is checked end to end. Also bad arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_test.h"

enum { B = 2, T = 3, S = 4, PXN = 3 * S * S };

static void setup_model(attn_ctx *ctx, attn_caption_trainer **t) {
    attn_vit_config c = {S, 2, 3, 8, 2, 2, 16, 1e-12f, 1, 10, 0, NULL};
    attn_image_preproc pre = {1, S, S, ATTN_RESAMPLE_BILINEAR, 1, 1.0f / 255.0f, 1,
                              {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
    attn_caption_config d = {5, 4, 1, 2, 16, NULL, 0, 1};
    assert_int_equal(attn_caption_trainer_create(ctx, &c, &pre, &d, B, 7, t), ATTN_OK);
    /* larger weights than the 0.02 initialisation, so every path carries gradient */
    int np;
    const attn_param *ps = attn_caption_trainer_params(*t, &np);
    uint64_t r = 99;
    for (int i = 0; i < np; i++) {
        float *v = ps[i].value.data;
        for (int64_t k = 0; k < attn_tensor_numel(&ps[i].value); k++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            v[k] += (float)((double)(r >> 40) / (double)(1ull << 24) - 0.5) * 0.6f;
        }
    }
}

static void test_gradients(void **state) {
    (void)state;
    attn_ctx *ctx = NULL;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    attn_caption_trainer *t = NULL;
    setup_model(ctx, &t);
    float px[B * PXN];
    for (int i = 0; i < B * PXN; i++)
        px[i] = sinf(0.37f * (float)i) * 0.9f;
    const int32_t ids[B * (T + 1)] = {0, 2, 3, 1, 0, 4, 2, 1};
    double loss;
    assert_int_equal(attn_caption_trainer_step(ctx, t, B, px, ids, T, 1, &loss), ATTN_OK);
    assert_true(isfinite(loss) && loss > 0);
    int np;
    const attn_param *ps = attn_caption_trainer_params(t, &np);
    static const char *check[] = {
        "decoder.wte", "decoder.layers.0.cross_attn.in_proj_weight",
        "decoder.layers.0.cross_attn.out_proj.weight", "decoder.ln_f.weight",
        "encoder.vit.embeddings.patch_embeddings.projection.weight",
        "encoder.vit.embeddings.position_embeddings",
        "encoder.vit.encoder.layer.1.attention.attention.value.weight",
        "encoder.vit.encoder.layer.0.output.dense.weight", "encoder.vit.layernorm.weight",
        "encoder.vit.layernorm.bias"};
    int found = 0;
    for (size_t q = 0; q < sizeof check / sizeof check[0]; q++)
        for (int i = 0; i < np; i++) {
            if (strcmp(ps[i].name, check[q])) continue;
            found++;
            float *v = ps[i].value.data;
            const float *g = ps[i].grad.data;
            const int64_t n = attn_tensor_numel(&ps[i].value);
            double worst = 0, gmax = 0;
            for (int64_t k = 0; k < n; k += n / 7 + 1) {
                const float keep = v[k], h = 1e-2f;
                double lp, lm;
                v[k] = keep + h;
                assert_int_equal(attn_caption_trainer_step(ctx, t, B, px, ids, T, 0, &lp), 0);
                v[k] = keep - h;
                assert_int_equal(attn_caption_trainer_step(ctx, t, B, px, ids, T, 0, &lm), 0);
                v[k] = keep;
                const double fd = (lp - lm) / (2.0 * (double)h);
                worst = fmax(worst, fabs(fd - g[k]));
                gmax = fmax(gmax, fabs(g[k]));
            }
            printf("%-62s max |fd - grad| %.2e (max |grad| %.2e)\n", ps[i].name, worst, gmax);
            assert_true(gmax > 1e-4); /* the path carries gradient */
            assert_true(worst < 2e-3 + 2e-2 * gmax);
        }
    assert_int_equal(found, (int)(sizeof check / sizeof check[0]));
    attn_caption_trainer_free(t);
    attn_ctx_free(ctx);
}

static void test_bad_args(void **state) {
    (void)state;
    attn_ctx *ctx = NULL;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    attn_caption_trainer *t = NULL;
    setup_model(ctx, &t);
    float px[B * PXN] = {0};
    const int32_t bad_id[B * (T + 1)] = {0, 2, 3, 1, 0, 4, 5, 1};
    double loss;
    assert_int_equal(attn_caption_trainer_step(ctx, t, B, px, bad_id, T, 1, &loss), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "token 5"));
    assert_int_equal(attn_caption_trainer_step(ctx, t, B + 1, px, bad_id, T, 1, &loss), ATTN_E_ARG);
    assert_int_equal(attn_caption_trainer_step(ctx, t, B, px, bad_id, 5, 1, &loss), ATTN_E_ARG);
    int32_t out[B * 4];
    assert_int_equal(attn_caption_generate(ctx, t, B, px, 0, 9, out), ATTN_E_ARG);
    assert_int_equal(attn_caption_generate(ctx, t, B, px, 0, 1, out), ATTN_OK);
    for (int b = 0; b < B; b++) {
        assert_int_equal(out[b * 4], 0);
        for (int k = 1; k < 4; k++)
            assert_true(out[b * 4 + k] >= 0 && out[b * 4 + k] < 5);
    }
    /* cross-attention maps: T rows of S / 4 patches, each a distribution */
    float map[4 * 4];
    assert_int_equal(attn_caption_cross_attention(ctx, t, px, out, 4, map), ATTN_OK);
    for (int r = 0; r < 4; r++) {
        double sum = 0;
        for (int s = 0; s < 4; s++) {
            assert_true(map[r * 4 + s] >= 0.0f);
            sum += map[r * 4 + s];
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    assert_int_equal(attn_caption_cross_attention(ctx, t, px, out, 5, map), ATTN_E_ARG);
    int64_t P;
    assert_int_equal(attn_caption_patch_grid(t, &P), 2);
    assert_int_equal(P, 2);
    attn_caption_trainer_free(t);
    attn_vit_config c = {S, 2, 3, 8, 1, 2, 16, 1e-12f, 1, 10, 0, NULL};
    attn_image_preproc pre = {1, S, S, ATTN_RESAMPLE_BILINEAR, 1, 1.0f / 255.0f, 1,
                              {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
    attn_caption_config d = {5, 4, 1, 3, 16, NULL, 0, 1}; /* 3 heads do not divide 8 */
    assert_int_equal(attn_caption_trainer_create(ctx, &c, &pre, &d, B, 1, &t), ATTN_E_ARG);
    assert_null(t);
    d.heads = 2, d.eos = 5;
    assert_int_equal(attn_caption_trainer_create(ctx, &c, &pre, &d, B, 1, &t), ATTN_E_ARG);
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
