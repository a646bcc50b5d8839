/* WordPiece tokenizer: greedy matching and [UNK] rules on hand-written
 * vocabularies, errors, and (test_hf_cases) the ids Hugging Face's
 * BertTokenizerFast gives with all-MiniLM-L6-v2's vocabulary, from
 * tests/data/tokenizer (written by tests/fixtures/make_tokenizer_fixtures.py). */
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
#include <unistd.h>

#include "text/text_internal.h" /* the normalizer, for the per-code-point check */
#define FUZZ_NO_MAIN
#include "fuzz/fuzz_tokenizer.c"

static attn_ctx *ctx;

/* Write `content` to a fresh temporary file; returns its malloc'd path. */
static char *temp_file(const char *content, size_t len) {
    char *path = strdup("/tmp/attn_tok_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    return path;
}

static attn_tokenizer *load_tiny(const char *vocab, int lowercase) {
    char *path = temp_file(vocab, strlen(vocab));
    attn_tokenizer *tok = NULL;
    attn_status st = attn_tokenizer_load(ctx, path, lowercase, &tok);
    if (st != ATTN_OK) print_error("load: %s\n", attn_ctx_last_error(ctx));
    assert_int_equal(st, ATTN_OK);
    unlink(path);
    free(path);
    return tok;
}

/* Tokens of `text` joined by spaces, into out. */
static void tokens_of(const attn_tokenizer *tok, const char *text, int max_len, char *out,
                      size_t n) {
    int32_t ids[512];
    int k = 0;
    attn_status st = attn_tokenizer_encode(ctx, tok, text, strlen(text), max_len, ids, 512, &k);
    if (st != ATTN_OK) print_error("encode '%s': %s\n", text, attn_ctx_last_error(ctx));
    assert_int_equal(st, ATTN_OK);
    out[0] = '\0';
    for (int i = 0; i < k; i++) {
        const char *t = attn_tokenizer_token(tok, ids[i]);
        assert_non_null(t);
        if (i) strncat(out, " ", n - strlen(out) - 1);
        strncat(out, t, n - strlen(out) - 1);
    }
}

#define EXPECT_TOKENS(tok, text, max_len, want)                                                    \
    do {                                                                                           \
        char got_[8192];                                                                           \
        tokens_of(tok, text, max_len, got_, sizeof got_);                                          \
        if (strcmp(got_, want))                                                                    \
            print_error("text '%s':\n  got  %s\n  want %s\n", text, got_, want);                   \
        assert_string_equal(got_, want);                                                           \
    } while (0)

static const char *tiny =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nun\n##aff\n##able\n##a\n##ff\na\n##b\nhello\n!\n"
    "abc\n##bcd\nx\n,\n'\ns\ncafe\ncaf\n##e\n##\xc3\xa9\n\xe4\xbd\xa0\n\xe5\xa5\xbd\n";

static void test_greedy(void **state) {
    (void)state;
    attn_tokenizer *tok = load_tiny(tiny, 1);
    assert_int_equal(attn_tokenizer_vocab_size(tok), 26);
    /* longest match first at each position */
    EXPECT_TOKENS(tok, "unaffable", 0, "[CLS] un ##aff ##able [SEP]");
    /* "##aff" beats "##a" + "##ff": the longest piece wins, not the fewest pieces */
    EXPECT_TOKENS(tok, "unaff", 0, "[CLS] un ##aff [SEP]");
    EXPECT_TOKENS(tok, "una", 0, "[CLS] un ##a [SEP]");
    /* greedy does not backtrack: "abc" then "##d" fails although a + ##bcd
     * would cover "abcd" -> the whole word is [UNK] */
    EXPECT_TOKENS(tok, "abcd", 0, "[CLS] [UNK] [SEP]");
    /* a word that starts with only a continuation piece available */
    EXPECT_TOKENS(tok, "b", 0, "[CLS] [UNK] [SEP]");
    /* a failing tail makes the whole word [UNK], not a partial split */
    EXPECT_TOKENS(tok, "unx", 0, "[CLS] [UNK] [SEP]");
    /* punctuation and white space split words; lowercasing */
    EXPECT_TOKENS(tok, " Hello,UNAFFABLE!\t\n x ", 0, "[CLS] hello , un ##aff ##able ! x [SEP]");
    EXPECT_TOKENS(tok, "", 0, "[CLS] [SEP]");
    EXPECT_TOKENS(tok, " \t\r\n ", 0, "[CLS] [SEP]");
    /* accents stripped when lowercasing: "Café" -> "cafe" */
    EXPECT_TOKENS(tok, "Caf\xc3\xa9", 0, "[CLS] cafe [SEP]");
    /* CJK ideographs are words of their own */
    EXPECT_TOKENS(tok,
                  "a\xe4\xbd\xa0\xe5\xa5\xbd"
                  "a",
                  0, "[CLS] a \xe4\xbd\xa0 \xe5\xa5\xbd a [SEP]");
    /* special tokens are taken verbatim, even inside a word, but not lowercased forms */
    EXPECT_TOKENS(tok, "x[MASK]x [mask] [SEP]", 0,
                  "[CLS] x [MASK] x [UNK] [UNK] [UNK] [SEP] [SEP]");
    attn_tokenizer_free(tok);

    /* cased: no lowercasing, accents kept */
    tok = load_tiny(tiny, 0);
    EXPECT_TOKENS(tok, "Hello hello", 0, "[CLS] [UNK] hello [SEP]");
    EXPECT_TOKENS(tok, "caf\xc3\xa9", 0, "[CLS] caf ##\xc3\xa9 [SEP]");
    attn_tokenizer_free(tok);
}

static void test_long_words(void **state) {
    (void)state;
    attn_tokenizer *tok = load_tiny(tiny, 1);
    char word[128], want[2048];
    /* exactly 100 characters: split into a ##a ##a ... */
    memset(word, 'a', 100);
    word[100] = '\0';
    strcpy(want, "[CLS] a");
    for (int i = 1; i < 100; i++)
        strcat(want, " ##a");
    strcat(want, " [SEP]");
    EXPECT_TOKENS(tok, word, 0, want);
    /* 101 characters: [UNK] without trying */
    memset(word, 'a', 101);
    word[101] = '\0';
    EXPECT_TOKENS(tok, word, 0, "[CLS] [UNK] [SEP]");
    /* the limit counts characters, not bytes: 100 x U+00E9 (200 bytes) in
     * "a" + 99 x "##é" is fine */
    char acc[256] = "a";
    for (int i = 0; i < 99; i++)
        strcat(acc, "\xc3\xa9");
    tokens_of(tok, acc, 0, want, sizeof want);
    assert_int_equal(strncmp(want, "[CLS] a ##e ##e", 15), 0); /* accents stripped */
    attn_tokenizer_free(tok);
    tok = load_tiny(tiny, 0);
    tokens_of(tok, acc, 0, want, sizeof want);
    assert_int_equal(strncmp(want, "[CLS] a ##\xc3\xa9 ##\xc3\xa9", 17), 0);
    strcat(acc, "\xc3\xa9"); /* 101 characters */
    EXPECT_TOKENS(tok, acc, 0, "[CLS] [UNK] [SEP]");
    attn_tokenizer_free(tok);
}

static void test_truncation(void **state) {
    (void)state;
    attn_tokenizer *tok = load_tiny(tiny, 1);
    const char *t = "unaffable hello x"; /* 5 pieces */
    EXPECT_TOKENS(tok, t, 0, "[CLS] un ##aff ##able hello x [SEP]");
    EXPECT_TOKENS(tok, t, 7, "[CLS] un ##aff ##able hello x [SEP]");
    EXPECT_TOKENS(tok, t, 100, "[CLS] un ##aff ##able hello x [SEP]");
    EXPECT_TOKENS(tok, t, 6, "[CLS] un ##aff ##able hello [SEP]");
    /* truncation cuts inside a word, as Hugging Face does */
    EXPECT_TOKENS(tok, t, 4, "[CLS] un ##aff [SEP]");
    EXPECT_TOKENS(tok, t, 2, "[CLS] [SEP]");
    EXPECT_TOKENS(tok, t, -5, "[CLS] un ##aff ##able hello x [SEP]");
    int n = -1;
    int32_t ids[8];
    assert_int_equal(attn_tokenizer_encode(ctx, tok, t, strlen(t), 1, ids, 8, &n), ATTN_E_ARG);
    /* counting, and a buffer that is too small */
    assert_int_equal(attn_tokenizer_encode(ctx, tok, t, strlen(t), 0, NULL, 0, &n), ATTN_OK);
    assert_int_equal(n, 7);
    ids[0] = -7;
    assert_int_equal(attn_tokenizer_encode(ctx, tok, t, strlen(t), 0, ids, 6, &n), ATTN_E_ARG);
    assert_int_equal(n, 7);
    assert_int_equal(ids[0], -7); /* nothing written */
    assert_non_null(strstr(attn_ctx_last_error(ctx), "needs 7"));
    assert_int_equal(attn_tokenizer_encode(ctx, tok, t, strlen(t), 0, ids, 7, &n), ATTN_OK);
    assert_int_equal(attn_tokenizer_encode(ctx, tok, NULL, 0, 0, ids, 7, &n), ATTN_OK);
    assert_int_equal(n, 2);
    assert_int_equal(attn_tokenizer_encode(ctx, tok, NULL, 3, 0, ids, 7, &n), ATTN_E_ARG);
    assert_int_equal(attn_tokenizer_encode(ctx, tok, t, 3, 0, NULL, 7, &n), ATTN_E_ARG);
    assert_int_equal(attn_tokenizer_encode(ctx, NULL, t, 3, 0, ids, 7, &n), ATTN_E_ARG);
    assert_int_equal(attn_tokenizer_encode(ctx, tok, t, 3, 0, ids, 7, NULL), ATTN_E_ARG);
    /* a length shorter than the string: only those bytes count */
    EXPECT_TOKENS(tok, "x", 0, "[CLS] x [SEP]");
    assert_int_equal(attn_tokenizer_encode(ctx, tok, "x hello", 1, 0, ids, 7, &n), ATTN_OK);
    assert_int_equal(n, 3);
    attn_tokenizer_free(tok);
}

static void test_bad_utf8(void **state) {
    (void)state;
    attn_tokenizer *tok = load_tiny(tiny, 1);
    static const struct {
        const char *s;
        size_t len, offset;
    } bad[] = {
        {"abc\xff", 4, 3},           /* never valid */
        {"a\xc0\xaf", 3, 1},         /* overlong '/' */
        {"ab\xed\xa0\x80", 5, 2},    /* surrogate U+D800 */
        {"\xe4\xbd", 2, 0},          /* truncated sequence */
        {"x\xf4\x90\x80\x80", 5, 1}, /* above U+10FFFF */
        {"hello \x80", 7, 6},        /* stray continuation byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t ids[16];
        int n = -1;
        attn_status st = attn_tokenizer_encode(ctx, tok, bad[i].s, bad[i].len, 0, ids, 16, &n);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", bad[i].offset);
        if (st != ATTN_E_ARG || !strstr(attn_ctx_last_error(ctx), want))
            print_error("case %zu: status %d, message '%s', want '%s'\n", i, st,
                        attn_ctx_last_error(ctx), want);
        assert_int_equal(st, ATTN_E_ARG);
        assert_non_null(strstr(attn_ctx_last_error(ctx), want));
        assert_int_equal(n, 0);
    }
    attn_tokenizer_free(tok);
}

static void test_vocab_files(void **state) {
    (void)state;
    attn_tokenizer *tok = NULL;
    assert_int_equal(attn_tokenizer_load(ctx, "/nonexistent/vocab.txt", 1, &tok), ATTN_E_IO);
    assert_null(tok);
    assert_int_equal(attn_tokenizer_load(ctx, NULL, 1, &tok), ATTN_E_ARG);
    static const struct {
        const char *v;
        size_t len;
        const char *msg;
    } bad[] = {
        {"", 0, "empty"},
        {"[CLS]\n[SEP]\nx\n", 14, "no [UNK]"},
        {"[UNK]\n[SEP]\n", 12, "no [CLS]"},
        {"[UNK]\n[CLS]\n", 12, "no [SEP]"},
        {"[UNK]\n[CLS]\n[SEP]\nok\nb\xc3(\n", 25, "line 5 is not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *path = temp_file(bad[i].v, bad[i].len);
        attn_status st = attn_tokenizer_load(ctx, path, 1, &tok);
        if (st != ATTN_E_FORMAT || !strstr(attn_ctx_last_error(ctx), bad[i].msg))
            print_error("case %zu: status %d, message '%s'\n", i, st, attn_ctx_last_error(ctx));
        assert_int_equal(st, ATTN_E_FORMAT);
        assert_non_null(strstr(attn_ctx_last_error(ctx), bad[i].msg));
        assert_null(tok);
        unlink(path);
        free(path);
    }
    /* CRLF line ends, no final newline, duplicates (the later line wins) */
    tok = load_tiny("[UNK]\r\n[CLS]\r\n[SEP]\r\nab\r\nab \r\n\r\nz", 1);
    assert_int_equal(attn_tokenizer_vocab_size(tok), 7);
    assert_int_equal(attn_tokenizer_id(tok, "[CLS]"), 1);
    assert_int_equal(attn_tokenizer_id(tok, "ab"), 4);
    assert_int_equal(attn_tokenizer_id(tok, ""), 5);
    assert_int_equal(attn_tokenizer_id(tok, "z"), 6);
    assert_int_equal(attn_tokenizer_id(tok, "zz"), -1);
    assert_string_equal(attn_tokenizer_token(tok, 3), "ab");
    assert_string_equal(attn_tokenizer_token(tok, 6), "z");
    assert_null(attn_tokenizer_token(tok, 7));
    assert_null(attn_tokenizer_token(tok, -1));
    assert_int_equal(attn_tokenizer_max_len(tok), 0);
    attn_tokenizer_free(tok);
    attn_tokenizer_free(NULL);
}

static void test_load_dir(void **state) {
    (void)state;
    char dir[] = "/tmp/attn_tokdir_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[256], q[256];
    snprintf(p, sizeof p, "%s/vocab.txt", dir);
    snprintf(q, sizeof q, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(p, "w");
    fputs(tiny, f);
    fclose(f);
    attn_tokenizer *tok = NULL;
    /* no config: uncased defaults */
    assert_int_equal(attn_tokenizer_load_dir(ctx, dir, &tok), ATTN_OK);
    EXPECT_TOKENS(tok, "HELLO", 0, "[CLS] hello [SEP]");
    attn_tokenizer_free(tok);
    f = fopen(q, "w");
    fputs("{\"do_lower_case\": false, \"model_max_length\": 4}", f);
    fclose(f);
    assert_int_equal(attn_tokenizer_load_dir(ctx, dir, &tok), ATTN_OK);
    EXPECT_TOKENS(tok, "HELLO", 0, "[CLS] [UNK] [SEP]");
    assert_int_equal(attn_tokenizer_max_len(tok), 4);
    attn_tokenizer_free(tok);
    /* lowercase without stripping accents: "é" stays and "##é" matches */
    f = fopen(q, "w");
    fputs("{\"do_lower_case\": true, \"strip_accents\": false, \"model_max_length\": 1e30}", f);
    fclose(f);
    assert_int_equal(attn_tokenizer_load_dir(ctx, dir, &tok), ATTN_OK);
    EXPECT_TOKENS(tok, "CAF\xc3\x89", 0, "[CLS] caf ##\xc3\xa9 [SEP]");
    assert_int_equal(attn_tokenizer_max_len(tok), 0);
    attn_tokenizer_free(tok);
    static const char *const bad[] = {"[1, 2]", "{\"do_lower_case\": 1}", "{", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = fopen(q, "w");
        fputs(bad[i], f);
        fclose(f);
        tok = NULL;
        assert_int_equal(attn_tokenizer_load_dir(ctx, dir, &tok), ATTN_E_FORMAT);
        assert_null(tok);
    }
    unlink(q);
    unlink(p);
    assert_int_equal(attn_tokenizer_load_dir(ctx, dir, &tok), ATTN_E_IO);
    rmdir(dir);
}

/* ---- against Hugging Face, with all-MiniLM-L6-v2's vocabulary ------------ */

static const char *data_dir(void) {
    const char *d = getenv("ATTN_TEST_DATA");
    return d && *d ? d : "tests/data";
}

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The shipped vocabulary with the model's settings (mode NULL), cased
 * ("cased": do_lower_case false), or lowercasing without stripping accents
 * ("nostrip", through a tokenizer_config.json as a model would say it). */
static attn_tokenizer *load_mode(const char *mode) {
    char path[1024], dir[] = "/tmp/attn_tokmode_XXXXXX", link[256], cfg[256];
    attn_tokenizer *tok = NULL;
    attn_status st;
    if (!mode) {
        snprintf(path, sizeof path, "%s/tokenizer", data_dir());
        st = attn_tokenizer_load_dir(ctx, path, &tok);
    } else if (!strcmp(mode, "cased")) {
        snprintf(path, sizeof path, "%s/tokenizer/vocab.txt", data_dir());
        st = attn_tokenizer_load(ctx, path, 0, &tok);
    } else {
        assert_string_equal(mode, "nostrip");
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/tokenizer/vocab.txt", data_dir());
        char abs[2048] = "";
        if (path[0] != '/') {
            assert_non_null(getcwd(abs, 1024));
            strcat(abs, "/");
        }
        strcat(abs, path);
        snprintf(link, sizeof link, "%s/vocab.txt", dir);
        assert_int_equal(symlink(abs, link), 0);
        snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
        FILE *f = fopen(cfg, "w");
        assert_non_null(f);
        fputs("{\"do_lower_case\": true, \"strip_accents\": false}", f);
        fclose(f);
        st = attn_tokenizer_load_dir(ctx, dir, &tok);
        unlink(cfg);
        unlink(link);
        rmdir(dir);
    }
    if (st != ATTN_OK) print_error("%s\n", attn_ctx_last_error(ctx));
    assert_int_equal(st, ATTN_OK);
    assert_int_equal(attn_tokenizer_vocab_size(tok), 30522);
    assert_int_equal(attn_tokenizer_id(tok, "[CLS]"), 101);
    return tok;
}

/* Every case of a cases*.txt file gives exactly Hugging Face's ids. */
static void run_cases(const char *mode, const char *file, int min_cases) {
    char path[1024];
    attn_tokenizer *tok = load_mode(mode);
    attn_status st;
    snprintf(path, sizeof path, "%s/tokenizer/%s", data_dir(), file);
    FILE *f = fopen(path, "r");
    if (!f) print_error("cannot open %s\n", path);
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    int ncases = 0, lineno = 0;
    enum { MAXIDS = 4096 };
    int32_t *want = malloc(MAXIDS * sizeof *want), *got = malloc(MAXIDS * sizeof *got);
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        if (line[0] == '#') continue;
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        assert_non_null(t2);
        int max_len = atoi(line);
        size_t len = strspn(t1 + 1, "0123456789abcdef") / 2;
        assert_ptr_equal(t1 + 1 + 2 * len, t2);
        char *text = malloc(len + 1);
        for (size_t i = 0; i < len; i++)
            text[i] = (char)(hexval(t1[1 + 2 * i]) * 16 + hexval(t1[2 + 2 * i]));
        int nwant = 0;
        for (char *p = t2 + 1; *p && *p != '\n';) {
            assert_true(nwant < MAXIDS);
            want[nwant++] = (int32_t)strtol(p, &p, 10);
            if (*p == ',') p++;
        }
        int n = 0;
        st = attn_tokenizer_encode(ctx, tok, text, len, max_len, got, MAXIDS, &n);
        if (st != ATTN_OK) print_error("line %d: %s\n", lineno, attn_ctx_last_error(ctx));
        assert_int_equal(st, ATTN_OK);
        int first = -1;
        for (int i = 0; i < (n < nwant ? n : nwant) && first < 0; i++)
            if (got[i] != want[i]) first = i;
        if (first < 0 && n != nwant) first = n < nwant ? n : nwant;
        if (first >= 0) {
            print_error("%s line %d (max_len %d, %d bytes): %d ids, want %d; first "
                        "difference at %d: got %d (%s), want %d (%s)\n",
                        file, lineno, max_len, (int)len, n, nwant, first,
                        first < n ? got[first] : -1,
                        first < n ? attn_tokenizer_token(tok, got[first]) : "-",
                        first < nwant ? want[first] : -1,
                        first < nwant ? attn_tokenizer_token(tok, want[first]) : "-");
        }
        assert_int_equal(first, -1);
        free(text);
        ncases++;
    }
    free(line);
    free(want);
    free(got);
    fclose(f);
    assert_true(ncases >= min_cases);
    attn_tokenizer_free(tok);
}

static void test_hf_cases(void **state) {
    (void)state;
    attn_tokenizer *tok = load_mode(NULL);
    assert_int_equal(attn_tokenizer_max_len(tok), 512);
    attn_tokenizer_free(tok);
    run_cases(NULL, "cases.txt", 490);
}

static void test_hf_cases_cased(void **state) {
    (void)state;
    run_cases("cased", "cases_cased.txt", 182);
}

static void test_hf_cases_nostrip(void **state) {
    (void)state;
    run_cases("nostrip", "cases_nostrip.txt", 182);
}

/* Every code point, alone, through the normalizer and the pre-tokenizer's
 * classes, against a codepoints*.txt file. */
static void run_codepoints(const char *file, int lowercase, int strip) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/%s", data_dir(), file);
    FILE *f = fopen(path, "r");
    if (!f) print_error("cannot open %s\n", path);
    assert_non_null(f);
    char line[512];
    long checked = 0, bad = 0;
    int32_t next = 0;
    while (fgets(line, sizeof line, f)) {
        char cls, kind[16];
        unsigned lo, hi;
        int used = 0;
        assert_int_equal(sscanf(line, "%x %x %c %15s %n", &lo, &hi, &cls, kind, &used), 4);
        /* the file covers every scalar value, in order */
        if ((int32_t)lo != next) print_error("codepoints.txt: gap before %x\n", lo);
        assert_int_equal((int32_t)lo, next);
        next = (int32_t)hi + 1 == 0xd800 ? 0xe000 : (int32_t)hi + 1;
        for (int32_t c = (int32_t)lo; c <= (int32_t)hi; c++) {
            int32_t want[8];
            int nw = 0;
            if (!strcmp(kind, "same")) {
                want[nw++] = c;
            } else if (!strcmp(kind, "cjk")) {
                want[nw++] = ' ';
                want[nw++] = c;
                want[nw++] = ' ';
            } else if (!strcmp(kind, "shift")) {
                want[nw++] = c + (int32_t)strtol(line + used, NULL, 10);
            } else if (!strcmp(kind, "hangul")) { /* Unicode 3.12 */
                int32_t s = c - 0xac00;
                want[nw++] = 0x1100 + s / 588;
                want[nw++] = 0x1161 + (s % 588) / 28;
                if (s % 28) want[nw++] = 0x11a7 + s % 28;
            } else if (!strcmp(kind, "map")) {
                for (char *p = line + used; *p && *p != '\n';) {
                    assert_true(nw < 8);
                    want[nw++] = (int32_t)strtol(p, &p, 16);
                    while (*p == ' ')
                        p++;
                }
            } else {
                assert_string_equal(kind, "drop");
            }
            int32_t *got;
            size_t ng;
            assert_int_equal(attn__bert_normalize(ctx, &c, 1, lowercase, strip, 1, &got, &ng),
                             ATTN_OK);
            char gcls = attn__is_bert_space(c) ? 's' : attn__is_bert_punct(c) ? 'p' : 'w';
            int ok = gcls == cls && (int)ng == nw;
            for (int i = 0; ok && i < nw; i++)
                ok = got[i] == want[i];
            if (!ok && bad++ < 10) {
                print_error("%s: ", file);
                char g[64] = "", w[64] = "";
                for (size_t i = 0; i < ng && i < 6; i++)
                    snprintf(g + strlen(g), sizeof g - strlen(g), " %X", got[i]);
                for (int i = 0; i < nw && i < 6; i++)
                    snprintf(w + strlen(w), sizeof w - strlen(w), " %X", want[i]);
                print_error("U+%04X: class %c ->%s, want class %c ->%s\n", c, gcls, g, cls, w);
            }
            attn__free(got);
            checked++;
        }
    }
    fclose(f);
    if (bad)
        print_error("%ld of %ld code points differ (utf8proc Unicode %s)\n", bad, checked,
                    attn__text_unicode_version());
    assert_int_equal(next, 0x110000);
    assert_int_equal(bad, 0);
}

static size_t utf8_encode(int32_t c, unsigned char *d) {
    if (c < 0x80) return d[0] = (unsigned char)c, 1;
    if (c < 0x800)
        return d[0] = (unsigned char)(0xc0 | c >> 6), d[1] = (unsigned char)(0x80 | (c & 63)), 2;
    if (c < 0x10000) {
        d[0] = (unsigned char)(0xe0 | c >> 12);
        d[1] = (unsigned char)(0x80 | ((c >> 6) & 63));
        d[2] = (unsigned char)(0x80 | (c & 63));
        return 3;
    }
    d[0] = (unsigned char)(0xf0 | c >> 18);
    d[1] = (unsigned char)(0x80 | ((c >> 12) & 63));
    d[2] = (unsigned char)(0x80 | ((c >> 6) & 63));
    d[3] = (unsigned char)(0x80 | (c & 63));
    return 4;
}

/* Random bytes and random valid UTF-8 against the real vocabulary, through
 * the fuzz target's checks: every call returns ATTN_OK or (invalid UTF-8
 * only) ATTN_E_ARG; counting agrees with writing; a truncated encoding is
 * [CLS] + a prefix of the pieces + [SEP]. Under AddressSanitizer this also
 * checks every buffer access. */
static void test_random_texts(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer", data_dir());
    attn_tokenizer *tok = NULL;
    assert_int_equal(attn_tokenizer_load_dir(ctx, path, &tok), ATTN_OK);
    unsigned seed = 12345;
    const char *q = getenv("ATTN_TEST_QUICK");
    int iters = q && *q && *q != '0' ? 300 : 3000;
    print_message("seed %u, %d texts\n", seed, iters);
    srand(seed);
    enum { MAXB = 700 };
    char text[MAXB];
    for (int it = 0; it < iters; it++) {
        size_t len = (size_t)(rand() % MAXB);
        int valid = it % 2;
        if (valid) { /* random scalar values, weighted towards ASCII and BMP */
            size_t k = 0;
            while (k + 4 <= len) {
                int r = rand() % 4;
                int32_t c = r == 0   ? 0x20 + rand() % 0x5f
                            : r == 1 ? rand() % 0x800
                            : r == 2 ? rand() % 0x10000
                                     : rand() % 0x110000;
                if (c >= 0xd800 && c <= 0xdfff) c = 'x';
                k += utf8_encode(c, (unsigned char *)text + k);
            }
            len = k;
        } else {
            for (size_t i = 0; i < len; i++)
                text[i] = (char)(rand() & 0xff);
        }
        attn_status st = fuzz_tokenizer_one(ctx, tok, (const uint8_t *)text, len);
        if (valid && st != ATTN_OK)
            print_error("seed %u text %d: %s\n", seed, it, attn_ctx_last_error(ctx));
        if (valid) assert_int_equal(st, ATTN_OK);
        assert_true(st == ATTN_OK || st == ATTN_E_ARG);
    }
    attn_tokenizer_free(tok);
}

/* Decode valid UTF-8 (the fixtures' texts) into code points; returns the count. */
static size_t utf8_decode(const unsigned char *s, size_t n, int32_t *out) {
    size_t k = 0;
    for (size_t i = 0; i < n; k++) {
        int len = s[i] < 0x80 ? 1 : s[i] < 0xe0 ? 2 : s[i] < 0xf0 ? 3 : 4;
        int32_t c = len == 1 ? s[i] : s[i] & (0x7f >> len);
        for (int j = 1; j < len; j++)
            c = (c << 6) | (s[i + j] & 0x3f);
        out[k] = c;
        i += (size_t)len;
    }
    return k;
}

/* The normalizer on whole texts (marks reordered across characters, CJK
 * spacing next to other text, ...) against normalized.txt. */
static void test_hf_normalized(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/normalized.txt", data_dir());
    FILE *f = fopen(path, "r");
    if (!f) print_error("cannot open %s\n", path);
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, ntexts = 0;
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        if (line[0] == '#') continue;
        size_t len = strspn(line, "0123456789abcdef") / 2;
        assert_int_equal(line[2 * len], '\t');
        unsigned char *text = malloc(len + 1);
        int32_t *cp = malloc((len + 1) * sizeof *cp), *want = malloc((4 * len + 8) * sizeof *want);
        for (size_t i = 0; i < len; i++)
            text[i] = (unsigned char)(hexval(line[2 * i]) * 16 + hexval(line[2 * i + 1]));
        size_t n = utf8_decode(text, len, cp), nw = 0;
        for (char *p = line + 2 * len + 1; *p && *p != '\n';) {
            assert_true(nw < 4 * len + 8);
            want[nw++] = (int32_t)strtol(p, &p, 16);
            while (*p == ' ')
                p++;
        }
        int32_t *got;
        size_t ng;
        assert_int_equal(attn__bert_normalize(ctx, cp, n, 1, 1, 1, &got, &ng), ATTN_OK);
        size_t first = 0;
        while (first < ng && first < nw && got[first] == want[first])
            first++;
        if (first < ng || first < nw)
            print_error("normalized.txt line %d: %zu code points, want %zu; first difference at "
                        "%zu: got U+%04X, want U+%04X\n",
                        lineno, ng, nw, first, first < ng ? (unsigned)got[first] : 0,
                        first < nw ? (unsigned)want[first] : 0);
        assert_true(first == ng && first == nw);
        attn__free(got);
        free(text);
        free(cp);
        free(want);
        ntexts++;
    }
    free(line);
    fclose(f);
    assert_true(ntexts >= 84);
}

static void test_hf_codepoints(void **state) {
    (void)state;
    run_codepoints("codepoints.txt", 1, 1);
}

static void test_hf_codepoints_cased(void **state) {
    (void)state;
    run_codepoints("codepoints_cased.txt", 0, 0);
}

static void test_hf_codepoints_nostrip(void **state) {
    (void)state;
    run_codepoints("codepoints_nostrip.txt", 1, 0);
}

int main(void) {
    if (attn_ctx_create(&ctx, 1) != ATTN_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_long_words),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bad_utf8),
        cmocka_unit_test(test_vocab_files),
        cmocka_unit_test(test_load_dir),
        cmocka_unit_test(test_hf_cases),
        cmocka_unit_test(test_hf_codepoints),
        cmocka_unit_test(test_hf_normalized),
        cmocka_unit_test(test_hf_cases_cased),
        cmocka_unit_test(test_hf_codepoints_cased),
        cmocka_unit_test(test_hf_cases_nostrip),
        cmocka_unit_test(test_hf_codepoints_nostrip),
        cmocka_unit_test(test_random_texts),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    attn_ctx_free(ctx);
    return rc;
}
