/* Model-directory configuration: config.json, modules.json, the pooling
 * config and sentence_bert_config.json, good and bad, in a temporary dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <attn/attn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void put(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (text == NULL) {
        unlink(path);
        return;
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

#define BASE                                                                                       \
    "{\"vocab_size\": 100, \"hidden_size\": 24, \"num_hidden_layers\": 2,"                         \
    " \"num_attention_heads\": 4, \"intermediate_size\": 48, \"max_position_embeddings\": 64,"     \
    " \"type_vocab_size\": 2, \"layer_norm_eps\": 1e-5"
static const char *CONFIG = BASE ", \"hidden_act\": \"gelu\"}";

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/attn_bert_cfg_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    char sub[128];
    snprintf(sub, sizeof sub, "%s/1_Pooling", dir);
    return mkdir(sub, 0700);
}

static int teardown(void **state) {
    (void)state;
    const char *files[] = {"config.json", "modules.json", "sentence_bert_config.json",
                           "1_Pooling/config.json"};
    for (size_t i = 0; i < 4; i++)
        put(files[i], NULL);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/1_Pooling", dir);
    rmdir(sub);
    rmdir(dir);
    return 0;
}

static void expect_fail(attn_ctx *ctx, attn_status want, const char *in_msg) {
    attn_bert_config c;
    attn_status st = attn_bert_config_load(ctx, dir, &c);
    if (st != want || !strstr(attn_ctx_last_error(ctx), in_msg)) {
        fprintf(stderr, "want %s with \"%s\", got %s: %s\n", attn_status_str(want), in_msg,
                attn_status_str(st), attn_ctx_last_error(ctx));
        fail();
    }
}

static void test_config(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    attn_bert_config c;

    /* a bare checkpoint: mean pooling, no normalisation, max_position long */
    put("config.json", CONFIG);
    assert_int_equal(attn_bert_config_load(ctx, dir, &c), ATTN_OK);
    assert_int_equal(c.vocab_size, 100);
    assert_int_equal(c.hidden_size, 24);
    assert_int_equal(c.num_layers, 2);
    assert_int_equal(c.num_heads, 4);
    assert_int_equal(c.intermediate_size, 48);
    assert_int_equal(c.max_position, 64);
    assert_int_equal(c.type_vocab_size, 2);
    assert_true(c.layer_norm_eps == 1e-5f);
    assert_int_equal(c.pooling, ATTN_POOL_MEAN);
    assert_int_equal(c.normalize, 0);
    assert_int_equal(c.max_seq_length, 64);

    /* sentence-transformers layout */
    put("modules.json", "[{\"idx\":0,\"name\":\"0\",\"path\":\"\",\"type\":\"sentence_transformers."
                        "models.Transformer\"},"
                        "{\"idx\":1,\"name\":\"1\",\"path\":\"1_Pooling\",\"type\":\"sentence_"
                        "transformers.models.Pooling\"},"
                        "{\"idx\":2,\"name\":\"2\",\"path\":\"2_Normalize\",\"type\":\"sentence_"
                        "transformers.models.Normalize\"}]");
    put("1_Pooling/config.json",
        "{\"word_embedding_dimension\": 24, \"pooling_mode_cls_token\": true,"
        " \"pooling_mode_mean_tokens\": false}");
    put("sentence_bert_config.json", "{\"max_seq_length\": 32, \"do_lower_case\": false}");
    assert_int_equal(attn_bert_config_load(ctx, dir, &c), ATTN_OK);
    assert_int_equal(c.pooling, ATTN_POOL_CLS);
    assert_int_equal(c.normalize, 1);
    assert_int_equal(c.max_seq_length, 32);

    put("sentence_bert_config.json", "{\"max_seq_length\": 65}");
    expect_fail(ctx, ATTN_E_SHAPE, "max_seq_length 65 exceeds");
    put("sentence_bert_config.json", NULL);

    put("1_Pooling/config.json", "{\"pooling_mode_mean_sqrt_len_tokens\": true}");
    expect_fail(ctx, ATTN_E_UNSUPPORTED, "pooling_mode_mean_sqrt_len_tokens");
    put("1_Pooling/config.json",
        "{\"pooling_mode_cls_token\": true, \"pooling_mode_max_tokens\": true}");
    expect_fail(ctx, ATTN_E_UNSUPPORTED, "combining");
    /* the pooling's width must be the encoder's */
    put("1_Pooling/config.json",
        "{\"word_embedding_dimension\": 999, \"pooling_mode_mean_tokens\": true}");
    expect_fail(ctx, ATTN_E_SHAPE,
                "word_embedding_dimension 999 is not the model's hidden_size 24");
    put("1_Pooling/config.json", "{\"pooling_mode_mean_tokens\": true}");
    /* a module path that leaves the model directory is refused */
    put("modules.json", "[{\"path\": \"../../../../etc\", \"type\": "
                        "\"sentence_transformers.models.Pooling\"}]");
    expect_fail(ctx, ATTN_E_FORMAT, "leaves the model directory");
    put("modules.json",
        "[{\"path\": \"/etc\", \"type\": \"sentence_transformers.models.Pooling\"}]");
    expect_fail(ctx, ATTN_E_FORMAT, "leaves the model directory");
    put("modules.json", "[{\"path\": \"1_Pooling/../..\", \"type\": "
                        "\"sentence_transformers.models.Pooling\"}]");
    expect_fail(ctx, ATTN_E_FORMAT, "leaves the model directory");
    put("modules.json",
        "[{\"path\": \"1_Pooling\", \"type\": \"sentence_transformers.models.Pooling\"}]");
    assert_int_equal(attn_bert_config_load(ctx, dir, &c), ATTN_OK);
    put("1_Pooling/config.json", NULL);
    expect_fail(ctx, ATTN_E_NOTFOUND, "1_Pooling/config.json");
    put("modules.json", "[{\"path\": \"x\", \"type\": \"sentence_transformers.models.Dense\"}]");
    expect_fail(ctx, ATTN_E_UNSUPPORTED, "Dense");
    put("modules.json", NULL);

    put("config.json", "{\"vocab_size\": 100,");
    expect_fail(ctx, ATTN_E_FORMAT, "config.json: invalid JSON");
    put("config.json", "{\"vocab_size\": 100, \"hidden_size\": 24}");
    expect_fail(ctx, ATTN_E_NOTFOUND, "missing key \"num_hidden_layers\"");
    put("config.json", "{\"vocab_size\": 100, \"hidden_size\": \"24\"}");
    expect_fail(ctx, ATTN_E_FORMAT, "\"hidden_size\" must be an integer");

    put("config.json", BASE ", \"hidden_act\": \"gelu_new\"}");
    expect_fail(ctx, ATTN_E_UNSUPPORTED, "gelu_new");
    put("config.json", BASE ", \"num_attention_heads\": 5}");
    expect_fail(ctx, ATTN_E_FORMAT, "invalid JSON"); /* a duplicate key */
    put("config.json", "{\"vocab_size\": 100, \"hidden_size\": 24, \"num_hidden_layers\": 2,"
                       " \"num_attention_heads\": 5, \"intermediate_size\": 48,"
                       " \"max_position_embeddings\": 64}");
    expect_fail(ctx, ATTN_E_SHAPE, "not a multiple of num_attention_heads 5");
    put("config.json", NULL);
    expect_fail(ctx, ATTN_E_NOTFOUND, "config.json");

    assert_int_equal(attn_bert_config_load(ctx, "/nonexistent/model", &c), ATTN_E_NOTFOUND);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "/nonexistent/model/config.json"));
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config, setup, teardown)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
