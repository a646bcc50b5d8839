/* Every fuzz target's committed seed corpus, replayed through the target's
 * own checks (tests/fuzz/corpus/<target>/): the model-directory loader, the
 * option parser, the safetensors reader, the tokenizer and the image decoders. A file that
 * breaks a property aborts this program, as it would the fuzzer. The same
 * checks run here, in the sanitizer build, and under every kernel family. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NO_MAIN
#include "fuzz/fuzz_cli_args.c"
#include "fuzz/fuzz_image.c"
#include "fuzz/fuzz_model_dir.c"
#include "fuzz/fuzz_safetensors.c"
#include "fuzz/fuzz_tokenizer.c"

/* tests/ (ATTN_TEST_DATA is tests/data, set by ctest) */
static const char *tests_dir(void) {
    static char d[512];
    const char *t = getenv("ATTN_TEST_DATA");
    snprintf(d, sizeof d, "%s/..", t ? t : "tests/data");
    return d;
}

/* Call one(buf, len) for every file of corpus/<name>; returns the count. */
static int replay(const char *name, void (*one)(const uint8_t *, size_t)) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/fuzz/corpus/%s", tests_dir(), name);
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc((size_t)len + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
        fclose(f);
        one(buf, (size_t)len);
        free(buf);
        n++;
    }
    closedir(d);
    printf("%s: %d corpus files replayed\n", name, n);
    return n;
}

static void model_one(const uint8_t *b, size_t n) {
    (void)fuzz_model_one(b, n);
}
static void cli_one(const uint8_t *b, size_t n) {
    fuzz_cli_args_one(b, n);
}
static void st_one(const uint8_t *b, size_t n) {
    (void)fuzz_safetensors_one(b, n);
}
static void image_one(const uint8_t *b, size_t n) {
    (void)fuzz_image_one(b, n);
}
static attn_ctx *tok_ctx;
static attn_tokenizer *tok;
static void tok_one(const uint8_t *b, size_t n) {
    (void)fuzz_tokenizer_one(tok_ctx, tok, b, n);
}

static void test_model_dir(void **state) {
    (void)state;
    assert_true(replay("model_dir", model_one) >= 5);
    /* the full seed opens: the replay reaches weights and an embedding */
    char path[1024];
    snprintf(path, sizeof path, "%s/fuzz/corpus/model_dir/full", tests_dir());
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_int_equal(fuzz_model_one(buf, n), ATTN_OK);
}

static void test_cli_args(void **state) {
    (void)state;
    assert_true(replay("cli_args", cli_one) >= 5);
}

static void test_safetensors_corpus(void **state) {
    (void)state;
    assert_true(replay("safetensors", st_one) >= 5);
}

static void test_tokenizer_corpus(void **state) {
    (void)state;
    char vocab[1024];
    snprintf(vocab, sizeof vocab, "%s/data/tokenizer/vocab.txt", tests_dir());
    assert_int_equal(attn_ctx_create(&tok_ctx, 1), ATTN_OK);
    assert_int_equal(attn_tokenizer_load(tok_ctx, vocab, 1, &tok), ATTN_OK);
    assert_true(replay("tokenizer", tok_one) >= 5);
    attn_tokenizer_free(tok);
    attn_ctx_free(tok_ctx);
}

static void test_image_corpus(void **state) {
    (void)state;
    assert_true(replay("image", image_one) >= 20);
    /* the valid seeds decode: the replay reaches the resampler */
    char path[1024];
    snprintf(path, sizeof path, "%s/fuzz/corpus/image/pal_trns.png", tests_dir());
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_int_equal(fuzz_image_one(buf, n), ATTN_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_dir),
        cmocka_unit_test(test_cli_args),
        cmocka_unit_test(test_safetensors_corpus),
        cmocka_unit_test(test_tokenizer_corpus),
        cmocka_unit_test(test_image_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
