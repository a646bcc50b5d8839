/* attn_model (a model directory as one object), through the public API:
 * opening the tokenizer alone, what it reports, and the errors of a missing
 * config.json, an unknown model_type and bad flags; the default-directory
 * search with ATTN_MODEL_DIR and a buffer too small. The full open of BERT
 * directories (weights, vocabulary size) is exercised by test_bert_cli.sh
 * and test_bert_model.sh through `attn embed`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <attn/attn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tokdir[4096];

static int setup(void **state) {
    (void)state;
    const char *data = getenv("ATTN_TEST_DATA");
    snprintf(tokdir, sizeof tokdir, "%s/tokenizer", data ? data : "tests/data");
    return 0;
}

static void test_tokenizer_only(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    attn_model *m = NULL;
    assert_int_equal(attn_model_open(ctx, tokdir, ATTN_MODEL_OPEN_TOKENIZER, &m), ATTN_OK);
    const attn_model_info *in = attn_model_get_info(m);
    assert_int_equal(in->type, ATTN_MODEL_TOKENIZER);
    assert_string_equal(in->type_name, "tokenizer");
    assert_string_equal(in->dir, tokdir);
    assert_int_equal(in->vocab_size, 30522);
    assert_int_equal(in->hidden_size, 0);
    assert_int_equal(in->max_seq_length, attn_tokenizer_max_len(attn_model_get_tokenizer(m)));
    assert_null(attn_model_get_bert(m));
    int32_t ids[8];
    int n = 0;
    assert_int_equal(
        attn_tokenizer_encode(ctx, attn_model_get_tokenizer(m), "hello", 5, 0, ids, 8, &n),
        ATTN_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 7592);
    attn_model_free(m);
    attn_model_free(NULL);
    assert_null(attn_model_get_info(NULL));
    assert_null(attn_model_get_tokenizer(NULL));
    assert_null(attn_model_get_bert(NULL));
    attn_ctx_free(ctx);
}

static void test_errors(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    attn_model *m = (attn_model *)1;
    /* the whole model needs config.json: the message names it */
    assert_int_equal(attn_model_open(ctx, tokdir, 0, &m), ATTN_E_NOTFOUND);
    assert_null(m);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "tokenizer/config.json"));
    assert_int_equal(attn_model_open(ctx, tokdir, 0x10, &m), ATTN_E_ARG);
    assert_int_equal(attn_model_open(ctx, tokdir, 0, NULL), ATTN_E_ARG);

    char dir[] = "/tmp/attn_model_XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"model_type\": \"t5\", \"vocab_size\": 9}", f);
    fclose(f);
    assert_int_equal(attn_model_open(ctx, dir, 0, &m), ATTN_E_UNSUPPORTED);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "config.json: model_type \"t5\""));
    /* the BERT configuration reader says the same of another model type */
    attn_bert_config c;
    assert_int_equal(attn_bert_config_load(ctx, dir, &c), ATTN_E_UNSUPPORTED);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "model_type \"t5\""));
    /* a GPT-2 config lacking its sizes names the missing key */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"model_type\": \"gpt2\", \"vocab_size\": 9}", f);
    fclose(f);
    assert_int_equal(attn_model_open(ctx, dir, 0, &m), ATTN_E_NOTFOUND);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "n_positions"));
    unlink(path);
    rmdir(dir);
    attn_ctx_free(ctx);
}

/* What transformers writes for "no limit" (model_max_length = a 31-digit
 * integer, beyond int64) loads as no limit; an integer-valued config key
 * written as 384.0 still reads as 384; neither fails the load. */
static void test_huge_integers(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    char dir[] = "/tmp/attn_model_XXXXXX", path[160], cmd[9000];
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "cp '%s/vocab.txt' '%s/vocab.txt'", tokdir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"do_lower_case\": true, \"model_max_length\": "
          "1000000000000000019884624838656, \"unused\": 123456789012345678901234567890}",
          f);
    fclose(f);
    attn_tokenizer *t = NULL;
    assert_int_equal(attn_tokenizer_load_dir(ctx, dir, &t), ATTN_OK);
    assert_int_equal(attn_tokenizer_max_len(t), 0); /* 0: no limit known */
    attn_tokenizer_free(t);
    /* config.json with the same kind of number in a key BERT does not use */
    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"model_type\": \"bert\", \"vocab_size\": 30522, \"hidden_size\": 8.0, "
          "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"intermediate_size\": 16, "
          "\"max_position_embeddings\": 32, \"type_vocab_size\": 2, "
          "\"layer_norm_eps\": 1e-12, \"transformers_version_big\": "
          "1000000000000000019884624838656}",
          f);
    fclose(f);
    attn_bert_config c;
    assert_int_equal(attn_bert_config_load(ctx, dir, &c), ATTN_OK);
    assert_int_equal(c.hidden_size, 8);
    /* a fractional value where an integer is meant is still an error */
    f = fopen(path, "w");
    fputs("{\"model_type\": \"bert\", \"vocab_size\": 30522, \"hidden_size\": 8.5}", f);
    fclose(f);
    assert_int_equal(attn_bert_config_load(ctx, dir, &c), ATTN_E_FORMAT);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "hidden_size"));
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    attn_ctx_free(ctx);
}

static void test_find_default(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    setenv("ATTN_MODEL_DIR", tokdir, 1);
    char buf[4096], small[4];
    assert_int_equal(attn_model_find_default(ctx, buf, sizeof buf), ATTN_OK);
    assert_string_equal(buf, tokdir);
    /* a buffer too small is ATTN_E_ARG, as everywhere */
    assert_int_equal(attn_model_find_default(ctx, small, sizeof small), ATTN_E_ARG);
    assert_string_equal(small, "");
    attn_model *m = NULL;
    assert_int_equal(attn_model_open(ctx, NULL, ATTN_MODEL_OPEN_TOKENIZER, &m), ATTN_OK);
    assert_string_equal(attn_model_get_info(m)->dir, tokdir);
    attn_model_free(m);
    unsetenv("ATTN_MODEL_DIR");
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_only),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_find_default),
        cmocka_unit_test(test_huge_integers),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
