/* Training a byte-level BPE (attn_bpe_train) and writing it (attn_bpe_save):
 * the merges of a text worked out by hand (most frequent pair first, ties
 * to the smaller pair, stop when no pair occurs twice), determinism, the
 * round trip encode -> decode on mixed-script text seen and unseen, tokens
 * capped at 4096 bytes, the saved files read back in both forms with the
 * same ids, and bad arguments. Hugging Face's reading of the saved files is
 * checked by tests/bpe_hf_check.py (from test_train_lm.sh). */
/* cmocka.h needs these three first */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

#include <attn/attn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static attn_ctx *ctx;

static attn_bpe *train(const char *text, size_t len, int vocab) {
    attn_bpe *t = NULL;
    attn_status st = attn_bpe_train(ctx, text, len, vocab, &t);
    if (st) print_error("attn_bpe_train: %s\n", attn_ctx_last_error(ctx));
    assert_int_equal(st, ATTN_OK);
    assert_non_null(t);
    return t;
}

static void expect_token(const attn_bpe *t, int32_t id, const char *bytes) {
    size_t n = 0;
    const unsigned char *b = attn_bpe_token_bytes(t, id, &n);
    if (!b || n != strlen(bytes) || memcmp(b, bytes, n))
        print_error("token %d: got '%.*s', want '%s'\n", (int)id, (int)n, b ? (const char *)b : "",
                    bytes);
    assert_non_null(b);
    assert_int_equal(n, strlen(bytes));
    assert_memory_equal(b, bytes, n);
}

/* "aaab aaab aab" is cut into "aaab", " aaab", " aab". Pair counts:
 * (a,a) 5, (a,b) 3, (' ',a) 2, so aa = 256. Then (' ',aa), (aa,a) and
 * (a,b) all occur twice: the smallest pair, (' ' = 32, 256), gives " aa" =
 * 257. Then (a,b) 2 -> "ab" = 258; every pair left occurs once: stop. */
static void test_merges_by_hand(void **state) {
    (void)state;
    const char *text = "aaab aaab aab";
    attn_bpe *t = train(text, strlen(text), 300);
    assert_int_equal(attn_bpe_vocab_size(t), 259);
    for (int b = 0; b < 256; b++) {
        char c[2] = {(char)b, 0};
        size_t n = 0;
        const unsigned char *p = attn_bpe_token_bytes(t, b, &n);
        assert_int_equal(n, 1);
        assert_int_equal(p[0], (unsigned char)c[0]);
    }
    expect_token(t, 256, "aa");
    expect_token(t, 257, " aa");
    expect_token(t, 258, "ab");
    /* GPT-2 spellings: " " is U+0120 */
    assert_int_equal(attn_bpe_id(t, "\u0120aa"), 257);
    int32_t ids[16];
    int n = 0;
    assert_int_equal(attn_bpe_encode(ctx, t, text, strlen(text), 0, ids, 16, &n), ATTN_OK);
    const int32_t want[] = {256, 258, 257, 258, 257, 'b'};
    assert_int_equal(n, 6);
    assert_memory_equal(ids, want, sizeof want);
    attn_bpe_free(t);
    /* the vocabulary asked for stops it first */
    t = train(text, strlen(text), 257);
    assert_int_equal(attn_bpe_vocab_size(t), 257);
    expect_token(t, 256, "aa");
    attn_bpe_free(t);
    /* 256: the bytes alone; an empty text: no pairs at all */
    t = train(text, strlen(text), 256);
    assert_int_equal(attn_bpe_vocab_size(t), 256);
    attn_bpe_free(t);
    t = train("", 0, 1000);
    assert_int_equal(attn_bpe_vocab_size(t), 256);
    attn_bpe_free(t);
}

/* Text in several scripts with white-space runs, contractions and numbers,
 * from a fixed LCG (so it is the same on every run). */
static char *mixed_text(unsigned seed, size_t words, size_t *len) {
    static const char *const w[] = {
        "the",  "cat",     "sat",    "on",      "mat",    "don't",      "we'll", "it's",
        "café", "naïve",   "Zürich", "東京",    "北京市", "こんにちは", "🙂",  "👍🏽",
        "2024", "3.14159", "über",   "résumé",  "Ωμέγα",  "Привет",     "مرحبا", "\t",
        "  ",   "\n",      "...",    "--",      "(x)",    "e-mail",     "I'm",   "THEY'RE",
        "x²",   "½",       "ﬁne",    "a\u00a0b"};
    const size_t nw = sizeof w / sizeof w[0];
    char *s = malloc(words * 24 + 1);
    size_t n = 0;
    unsigned x = seed;
    for (size_t i = 0; i < words; i++) {
        x = x * 1103515245u + 12345u;
        const char *p = w[(x >> 16) % nw];
        /* a skewed choice: short common words more often */
        if ((x >> 8) % 3 == 0) p = w[(x >> 20) % 6];
        memcpy(s + n, p, strlen(p));
        n += strlen(p);
        if ((x >> 4) % 5) s[n++] = ' ';
    }
    s[n] = '\0';
    *len = n;
    return s;
}

static void expect_round_trip(const attn_bpe *t, const char *text, size_t len, int shorter) {
    int32_t *ids = malloc((len + 1) * sizeof *ids);
    int n = 0;
    assert_int_equal(attn_bpe_encode(ctx, t, text, len, 0, ids, (int)len + 1, &n), ATTN_OK);
    if (shorter) assert_true((size_t)n < len * 3 / 4);
    char *back = malloc(len + 1);
    size_t m = 0;
    assert_int_equal(attn_bpe_decode(ctx, t, ids, n, back, len + 1, &m), ATTN_OK);
    assert_int_equal(m, len);
    assert_memory_equal(back, text, len);
    free(ids), free(back);
}

static void test_round_trip_and_determinism(void **state) {
    (void)state;
    size_t len, len2;
    char *text = mixed_text(7, 20000, &len);
    char *other = mixed_text(99, 3000, &len2);
    attn_bpe *a = train(text, len, 600), *b = train(text, len, 600);
    assert_int_equal(attn_bpe_vocab_size(a), 600);
    assert_int_equal(attn_bpe_vocab_size(b), 600);
    for (int32_t id = 0; id < 600; id++) {
        size_t na, nb;
        const unsigned char *pa = attn_bpe_token_bytes(a, id, &na);
        const unsigned char *pb = attn_bpe_token_bytes(b, id, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(pa, pb, na);
    }
    expect_round_trip(a, text, len, 1);
    expect_round_trip(a, other, len2, 1); /* text it was not trained on */
    const char *odd = "zebra quokka ✓ 1234567 \r\n\t  x";
    expect_round_trip(a, odd, strlen(odd), 0);
    /* a prefix of the text gives another (smaller-count) tokenizer, still
     * a lossless one */
    size_t cut = len / 7;
    while ((text[cut] & 0xC0) == 0x80) /* a character boundary */
        cut++;
    attn_bpe *c = train(text, cut, 400);
    expect_round_trip(c, text, len, 1);
    attn_bpe_free(a), attn_bpe_free(b), attn_bpe_free(c);
    free(text), free(other);
}

/* One long run of a letter is one pre-token: the merges double the token
 * (aa, aaaa, ...) up to 4096 bytes and no further. */
static void test_token_cap(void **state) {
    (void)state;
    const size_t n = 20000;
    char *s = malloc(n);
    memset(s, 'a', n);
    attn_bpe *t = train(s, n, 300);
    size_t longest = 0;
    for (int32_t id = 0; id < attn_bpe_vocab_size(t); id++) {
        size_t k;
        attn_bpe_token_bytes(t, id, &k);
        longest = k > longest ? k : longest;
    }
    assert_int_equal(longest, 4096);
    expect_round_trip(t, s, n, 1);
    attn_bpe_free(t);
    free(s);
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void expect_same_ids(const attn_bpe *x, const attn_bpe *y, const char *text, size_t len) {
    int32_t *a = malloc((len + 1) * sizeof *a), *b = malloc((len + 1) * sizeof *b);
    int na = 0, nb = 0;
    assert_int_equal(attn_bpe_encode(ctx, x, text, len, 0, a, (int)len + 1, &na), ATTN_OK);
    assert_int_equal(attn_bpe_encode(ctx, y, text, len, 0, b, (int)len + 1, &nb), ATTN_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na * sizeof *a);
    free(a), free(b);
}

static void test_save_reload(void **state) {
    (void)state;
    size_t len;
    char *text = mixed_text(3, 8000, &len);
    attn_bpe *t = train(text, len, 500);
    char dir[] = "/tmp/attn-bpe-train-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[64], p1[128], p2[128], p3[128];
    snprintf(sub, sizeof sub, "%s/tok", dir); /* created by the save */
    assert_int_equal(attn_bpe_save(ctx, t, sub), ATTN_OK);
    attn_bpe *r = NULL, *f = NULL;
    assert_int_equal(attn_bpe_load_dir(ctx, sub, &r), ATTN_OK);
    snprintf(p1, sizeof p1, "%s/vocab.json", sub);
    snprintf(p2, sizeof p2, "%s/merges.txt", sub);
    assert_int_equal(attn_bpe_load_files(ctx, p1, p2, &f), ATTN_OK);
    assert_int_equal(attn_bpe_vocab_size(r), 500);
    assert_int_equal(attn_bpe_vocab_size(f), 500);
    expect_same_ids(t, r, text, len);
    expect_same_ids(t, f, text, len);
    /* saving what was loaded writes the same bytes again */
    snprintf(p3, sizeof p3, "%s/again", dir);
    assert_int_equal(attn_bpe_save(ctx, r, p3), ATTN_OK);
    const char *files[] = {"tokenizer.json", "vocab.json", "merges.txt"};
    for (int i = 0; i < 3; i++) {
        char a[160], b[160];
        snprintf(a, sizeof a, "%s/%s", sub, files[i]);
        snprintf(b, sizeof b, "%s/%s", p3, files[i]);
        size_t na, nb;
        char *x = read_file(a, &na), *y = read_file(b, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(x, y, na);
        free(x), free(y);
        unlink(a), unlink(b);
    }
    /* merges.txt: a version line, then one "a b" line per merge */
    rmdir(sub), rmdir(p3), rmdir(dir);
    attn_bpe_free(t), attn_bpe_free(r), attn_bpe_free(f);
    free(text);
}

static void expect_arg_error(attn_status st, const char *part) {
    assert_int_equal(st, ATTN_E_ARG);
    const char *m = attn_ctx_last_error(ctx);
    if (!strstr(m, part)) print_error("message '%s' lacks '%s'\n", m, part);
    assert_non_null(strstr(m, part));
}

static void test_bad_args(void **state) {
    (void)state;
    attn_bpe *t = (attn_bpe *)1;
    const int bad[] = {-1, 0, 1, 255, ATTN_BPE_TRAIN_MAX_VOCAB + 1, 1 << 30};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_arg_error(attn_bpe_train(ctx, "abc", 3, bad[i], &t), "vocab_size");
        assert_null(t);
    }
    expect_arg_error(attn_bpe_train(ctx, NULL, 3, 300, &t), "NULL");
    expect_arg_error(attn_bpe_train(ctx, "abc", 3, 300, NULL), "NULL");
    assert_int_equal(attn_bpe_train(NULL, "abc", 3, 300, &t), ATTN_E_ARG);
    /* not UTF-8: the offset of the bad byte is named */
    expect_arg_error(attn_bpe_train(ctx, "abc\xff", 4, 300, &t), "byte offset 3");
    expect_arg_error(attn_bpe_train(ctx, "ab\xe2\x82", 4, 300, &t), "byte offset 2");
    expect_arg_error(attn_bpe_train(ctx, "\xed\xa0\x80", 3, 300, &t), "byte offset 0");
    assert_null(t);
    /* saving: NULL, and a tokenizer this writer does not reproduce */
    expect_arg_error(attn_bpe_save(ctx, NULL, "/tmp/x"), "NULL");
    attn_bpe *l = NULL;
    char p[1024];
    const char *d = getenv("ATTN_TEST_DATA");
    snprintf(p, sizeof p, "%s/bpe/llama3", d ? d : "tests/data");
    assert_int_equal(attn_bpe_load_dir(ctx, p, &l), ATTN_OK);
    char dir[] = "/tmp/attn-bpe-train-XXXXXX";
    assert_non_null(mkdtemp(dir));
    expect_arg_error(attn_bpe_save(ctx, l, dir), "only GPT-2-style");
    char f[128];
    snprintf(f, sizeof f, "%s/tokenizer.json", dir);
    assert_int_equal(access(f, F_OK), -1); /* nothing written */
    rmdir(dir);
    attn_bpe_free(l);
}

int main(void) {
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merges_by_hand), cmocka_unit_test(test_round_trip_and_determinism),
        cmocka_unit_test(test_token_cap),      cmocka_unit_test(test_save_reload),
        cmocka_unit_test(test_bad_args),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    attn_ctx_free(ctx);
    return rc;
}
