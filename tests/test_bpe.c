/* Byte-level BPE tokenizer: the ids and decodes Hugging Face's `tokenizers`
 * gives for tokenizers trained by scripts/make_bpe_fixtures.py
 * (tests/data/bpe: GPT-2 style, GPT-2 with add_prefix_space, Llama-3 style
 * with its Split regex and BOS template, Qwen2's regex and NFC, GPT-2 with added
 * tokens that strip white space), every code point's class, the counting
 * contract, errors on bad and hostile files, and the fuzz seed corpus. */
/* cmocka.h needs these three first */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

#include <attn/attn.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "text/bpe_internal.h" /* attn__bpe_class, for the per-code-point check */
#define FUZZ_NO_MAIN
#include "fuzz/fuzz_bpe.c"

static attn_ctx *ctx;

#define NTOK 5 /* the fixture tokenizers */

static const char *data_dir(void) {
    static char d[1024];
    const char *t = getenv("ATTN_TEST_DATA");
    snprintf(d, sizeof d, "%s/bpe", t ? t : "tests/data");
    return d;
}

static attn_bpe *load(const char *name) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", data_dir(), name);
    attn_bpe *t = NULL;
    attn_status st = attn_bpe_load_dir(ctx, p, &t);
    if (st != ATTN_OK) print_error("load %s: %s\n", p, attn_ctx_last_error(ctx));
    assert_int_equal(st, ATTN_OK);
    return t;
}

static size_t unhex(const char *h, unsigned char *out) {
    if (!strcmp(h, "-")) return 0;
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    return n;
}

static int parse_ids(char *s, int32_t *ids, int cap) {
    if (!strcmp(s, "-")) return 0;
    int n = 0;
    for (char *tok = strtok(s, " "); tok; tok = strtok(NULL, " ")) {
        assert_true(n < cap);
        ids[n++] = (int32_t)atoi(tok);
    }
    return n;
}

/* Split a line at tabs into at most k fields. */
static int fields(char *line, char **f, int k) {
    int n = 0;
    line[strcspn(line, "\n")] = '\0';
    for (char *p = line; n < k;) {
        f[n++] = p;
        char *tab = strchr(p, '\t');
        if (!tab) break;
        *tab = '\0';
        p = tab + 1;
    }
    return n;
}

static void expect_ids(const attn_bpe *t, const char *name, const unsigned char *text, size_t len,
                       int special, const int32_t *want, int nwant) {
    static int32_t got[8192];
    int n = -1, c = -1;
    attn_status st = attn_bpe_encode(ctx, t, (const char *)text, len, special, got, 8192, &n);
    if (st != ATTN_OK) print_error("%s: encode: %s\n", name, attn_ctx_last_error(ctx));
    assert_int_equal(st, ATTN_OK);
    assert_int_equal(attn_bpe_encode(ctx, t, (const char *)text, len, special, NULL, 0, &c),
                     ATTN_OK);
    assert_int_equal(c, n);
    int same = n == nwant && !memcmp(got, want, (size_t)n * sizeof *got);
    if (!same) {
        print_error("%s (special %d) text '%.*s': got %d ids, HF %d\n  got:", name, special,
                    (int)len, (const char *)text, n, nwant);
        for (int i = 0; i < n; i++)
            print_error(" %d", (int)got[i]);
        print_error("\n  HF: ");
        for (int i = 0; i < nwant; i++)
            print_error(" %d", (int)want[i]);
        print_error("\n");
    }
    assert_true(same);
}

/* Every fixture text: ids without and with special tokens, and the decode,
 * equal Hugging Face's; the GPT-2 rows also through vocab.json +
 * merges.txt and through merges written as "a b" strings. */
static void test_hf_cases(void **state) {
    (void)state;
    const char *names[NTOK] = {"gpt2", "gpt2_prefix", "llama3", "qwen2", "gpt2_added"};
    attn_bpe *toks[NTOK];
    for (int i = 0; i < NTOK; i++)
        toks[i] = load(names[i]);
    char p[1200];
    snprintf(p, sizeof p, "%s/gpt2/vocab.json", data_dir());
    char m[1200];
    snprintf(m, sizeof m, "%s/gpt2/merges.txt", data_dir());
    attn_bpe *files = NULL, *legacy = load("gpt2_legacy");
    assert_int_equal(attn_bpe_load_files(ctx, p, m, &files), ATTN_OK);
    snprintf(p, sizeof p, "%s/cases.txt", data_dir());
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    static char line[1 << 16];
    static unsigned char text[8192], dec[16384];
    static int32_t want[8192], wants[8192];
    static char out[32768];
    int rows = 0, per[NTOK] = {0};
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char *fl[5];
        assert_int_equal(fields(line, fl, 5), 5);
        int k = -1;
        for (int i = 0; i < NTOK; i++)
            if (!strcmp(fl[0], names[i])) k = i;
        assert_true(k >= 0);
        size_t len = unhex(fl[1], text);
        int nw = parse_ids(fl[2], want, 8192), nws = parse_ids(fl[3], wants, 8192);
        size_t nd = unhex(fl[4], dec);
        expect_ids(toks[k], names[k], text, len, 0, want, nw);
        expect_ids(toks[k], names[k], text, len, 1, wants, nws);
        if (k == 0) expect_ids(files, "gpt2 vocab.json+merges.txt", text, len, 0, want, nw);
        if (k == 0) expect_ids(legacy, "gpt2 with \"a b\" merges", text, len, 0, want, nw);
        size_t got = 0;
        assert_int_equal(attn_bpe_decode(ctx, toks[k], want, nw, out, sizeof out, &got), ATTN_OK);
        if (got != nd || memcmp(out, dec, nd))
            print_error("%s: decode of '%.*s' differs from HF's\n", names[k], (int)len, text);
        assert_int_equal(got, nd);
        assert_memory_equal(out, dec, nd);
        /* byte-level BPE loses nothing: the decode is the text (but for
         * the spaces add_prefix_space adds, lstrip/rstrip remove, and what
         * NFC changes) */
        if (k == 0 || k == 2) {
            assert_int_equal(got, len);
            assert_memory_equal(out, text, len);
        }
        rows++;
        per[k]++;
    }
    fclose(f);
    printf("%d HF cases (gpt2 %d, gpt2_prefix %d, llama3 %d, qwen2 %d, gpt2_added %d)\n", rows,
           per[0], per[1], per[2], per[3], per[4]);
    for (int i = 0; i < NTOK; i++)
        assert_true(per[i] >= 40);
    for (int i = 0; i < NTOK; i++)
        attn_bpe_free(toks[i]);
    attn_bpe_free(files);
    attn_bpe_free(legacy);
}

/* 300 random strings over characters at the regexes' edges (white space
 * of every kind, apostrophes, marks, digits of other scripts, new letters,
 * added tokens, NUL): HF's ids, with each of four tokenizers. */
static void test_hf_random(void **state) {
    (void)state;
    const char *names[NTOK] = {"gpt2", "gpt2_prefix", "llama3", "qwen2", "gpt2_added"};
    attn_bpe *toks[NTOK];
    for (int i = 0; i < NTOK; i++)
        toks[i] = load(names[i]);
    char p[1200];
    snprintf(p, sizeof p, "%s/random.txt", data_dir());
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    static char line[1 << 16];
    static unsigned char text[8192];
    static int32_t want[8192];
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char *fl[3];
        assert_int_equal(fields(line, fl, 3), 3);
        int k = -1;
        for (int i = 0; i < NTOK; i++)
            if (!strcmp(fl[0], names[i])) k = i;
        assert_true(k >= 0);
        size_t len = unhex(fl[1], text);
        int nw = parse_ids(fl[2], want, 8192);
        expect_ids(toks[k], names[k], text, len, 0, want, nw);
        rows++;
    }
    fclose(f);
    assert_int_equal(rows, 1200);
    for (int i = 0; i < NTOK; i++)
        attn_bpe_free(toks[i]);
}

/* Decoding byte tokens that do not form UTF-8: the U+FFFD placement of
 * Hugging Face's decode. */
static void test_hf_decode(void **state) {
    (void)state;
    const char *names[NTOK] = {"gpt2", "gpt2_prefix", "llama3", "qwen2", "gpt2_added"};
    attn_bpe *toks[NTOK];
    for (int i = 0; i < NTOK; i++)
        toks[i] = load(names[i]);
    char p[1200];
    snprintf(p, sizeof p, "%s/decode.txt", data_dir());
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char line[4096];
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char *fl[3];
        assert_int_equal(fields(line, fl, 3), 3);
        int k = -1;
        for (int i = 0; i < NTOK; i++)
            if (!strcmp(fl[0], names[i])) k = i;
        assert_true(k >= 0);
        int32_t ids[256];
        unsigned char want[1024];
        char got[1024];
        int n = parse_ids(fl[1], ids, 256);
        size_t nw = unhex(fl[2], want), ng = 0, cnt = 0;
        assert_int_equal(attn_bpe_decode(ctx, toks[k], ids, n, NULL, 0, &cnt), ATTN_OK);
        assert_int_equal(attn_bpe_decode(ctx, toks[k], ids, n, got, sizeof got, &ng), ATTN_OK);
        assert_int_equal(cnt, ng);
        if (ng != nw || memcmp(got, want, nw)) print_error("%s: decode of %s\n", names[k], fl[1]);
        assert_int_equal(ng, nw);
        assert_memory_equal(got, want, nw);
        assert_int_equal(got[ng], '\0');
        rows++;
    }
    fclose(f);
    assert_true(rows >= 40);
    for (int i = 0; i < NTOK; i++)
        attn_bpe_free(toks[i]);
}

/* The class (letter, number, white space, other) of every scalar value
 * agrees with the reference's regex engine (tests/data/bpe/classes.txt). */
static void test_codepoint_classes(void **state) {
    (void)state;
    char p[1200];
    snprintf(p, sizeof p, "%s/classes.txt", data_dir());
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char line[256];
    long checked = 0, bad = 0;
    int32_t next = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        unsigned lo, hi;
        char k;
        assert_int_equal(sscanf(line, "%x %x %c", &lo, &hi, &k), 3);
        assert_int_equal((int32_t)lo, next); /* the ranges cover everything */
        for (int32_t c = (int32_t)lo; c <= (int32_t)hi; c++) {
            if (c >= 0xD800 && c <= 0xDFFF) continue;
            checked++;
            int got = attn__bpe_class(c);
            if (got != k && bad++ < 40)
                print_error("U+%04X: class %c, the reference's %c\n", (unsigned)c, got, k);
        }
        next = (int32_t)hi + 1;
    }
    fclose(f);
    assert_int_equal(next, 0x110000);
    assert_int_equal(checked, 0x110000 - 0x800);
    if (bad) print_error("%ld code points differ\n", bad);
    assert_int_equal(bad, 0);
}

/* Counting, short buffers, accessors. */
static void test_contract(void **state) {
    (void)state;
    attn_bpe *t = load("gpt2"), *l = load("llama3");
    const char *text = "Hello, world! It's 2026.";
    int n = -1, k = -1;
    assert_int_equal(attn_bpe_encode(ctx, t, text, strlen(text), 0, NULL, 0, &n), ATTN_OK);
    assert_true(n > 3);
    int32_t ids[64], sentinel = 0x5eed;
    for (int i = 0; i < 64; i++)
        ids[i] = sentinel;
    assert_int_equal(attn_bpe_encode(ctx, t, text, strlen(text), 0, ids, n - 1, &k), ATTN_E_ARG);
    assert_int_equal(k, n);
    assert_int_equal(ids[n - 1], sentinel); /* nothing beyond cap */
    assert_non_null(strstr(attn_ctx_last_error(ctx), "needs"));
    assert_int_equal(attn_bpe_encode(ctx, t, text, strlen(text), 0, ids, n, &k), ATTN_OK);
    assert_int_equal(k, n);
    /* empty text: no ids, or just the BOS */
    assert_int_equal(attn_bpe_encode(ctx, t, NULL, 0, 1, NULL, 0, &k), ATTN_OK);
    assert_int_equal(k, 0);
    assert_int_equal(attn_bpe_encode(ctx, l, NULL, 0, 1, ids, 64, &k), ATTN_OK);
    assert_int_equal(k, 1);
    assert_int_equal(ids[0], attn_bpe_bos_id(l));
    /* decode: counting, too small a buffer (untouched), no NUL when exact */
    size_t need = 0, got = 0;
    assert_int_equal(attn_bpe_decode(ctx, t, ids, 0, NULL, 0, &need), ATTN_OK);
    assert_int_equal(need, 0);
    assert_int_equal(attn_bpe_encode(ctx, t, text, strlen(text), 0, ids, 64, &k), ATTN_OK);
    assert_int_equal(attn_bpe_decode(ctx, t, ids, k, NULL, 0, &need), ATTN_OK);
    assert_int_equal(need, strlen(text));
    char buf[64];
    memset(buf, 'z', sizeof buf);
    assert_int_equal(attn_bpe_decode(ctx, t, ids, k, buf, need - 1, &got), ATTN_E_ARG);
    assert_int_equal(got, need);
    assert_int_equal(buf[0], 'z');
    assert_int_equal(attn_bpe_decode(ctx, t, ids, k, buf, need, &got), ATTN_OK);
    assert_memory_equal(buf, text, need);
    assert_int_equal(buf[need], 'z');
    /* accessors */
    assert_int_equal(attn_bpe_vocab_size(t), 1500);
    assert_int_equal(attn_bpe_vocab_size(l), 2003);
    assert_int_equal(attn_bpe_eos_id(t), attn_bpe_id(t, "<|endoftext|>"));
    assert_int_equal(attn_bpe_bos_id(t), attn_bpe_id(t, "<|endoftext|>")); /* tokenizer_config */
    assert_int_equal(attn_bpe_bos_id(l), attn_bpe_id(l, "<|begin_of_text|>"));
    assert_int_equal(attn_bpe_bos_id(l), 2000);
    assert_int_equal(attn_bpe_eos_id(l), attn_bpe_id(l, "<|end_of_text|>"));
    assert_int_equal(attn_bpe_id(t, "nonexistent token"), -1);
    int32_t sp = attn_bpe_id(t, "\xc4\xa0"); /* "Ġ": the byte ' ' */
    assert_true(sp >= 0);
    size_t bl = 9;
    const unsigned char *b = attn_bpe_token_bytes(t, sp, &bl);
    assert_non_null(b);
    assert_int_equal(bl, 1);
    assert_int_equal(b[0], ' ');
    b = attn_bpe_token_bytes(t, attn_bpe_eos_id(t), &bl);
    assert_int_equal(bl, 13);
    assert_memory_equal(b, "<|endoftext|>", 13);
    assert_null(attn_bpe_token_bytes(t, -1, &bl));
    assert_int_equal(bl, 0);
    assert_null(attn_bpe_token_bytes(t, 1500, &bl));
    assert_int_equal(attn_bpe_vocab_size(NULL), 0);
    assert_int_equal(attn_bpe_id(NULL, "a"), -1);
    attn_bpe_free(t);
    attn_bpe_free(l);
    attn_bpe_free(NULL);
}

static void test_bad_args(void **state) {
    (void)state;
    attn_bpe *t = load("gpt2");
    int n = 7;
    int32_t ids[8];
    assert_int_equal(attn_bpe_encode(ctx, t, "ab\xff", 3, 0, ids, 8, &n), ATTN_E_ARG);
    assert_int_equal(n, 0);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "byte offset 2"));
    assert_int_equal(attn_bpe_encode(ctx, t, "\xed\xa0\x80", 3, 0, ids, 8, &n), ATTN_E_ARG);
    assert_int_equal(attn_bpe_encode(ctx, t, "\xc0\xaf", 2, 0, ids, 8, &n), ATTN_E_ARG);
    assert_int_equal(attn_bpe_encode(ctx, NULL, "a", 1, 0, ids, 8, &n), ATTN_E_ARG);
    assert_int_equal(attn_bpe_encode(ctx, t, NULL, 1, 0, ids, 8, &n), ATTN_E_ARG);
    assert_int_equal(attn_bpe_encode(ctx, t, "a", 1, 0, NULL, 8, &n), ATTN_E_ARG);
    assert_int_equal(attn_bpe_encode(ctx, t, "a", 1, 0, ids, -1, &n), ATTN_E_ARG);
    assert_int_equal(attn_bpe_encode(ctx, t, "a", 1, 0, ids, 8, NULL), ATTN_E_ARG);
    size_t got = 5;
    char buf[16];
    int32_t bad[2] = {3, 1500};
    assert_int_equal(attn_bpe_decode(ctx, t, bad, 2, buf, sizeof buf, &got), ATTN_E_ARG);
    assert_int_equal(got, 0);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "1500"));
    bad[1] = -3;
    assert_int_equal(attn_bpe_decode(ctx, t, bad, 2, buf, sizeof buf, &got), ATTN_E_ARG);
    assert_int_equal(attn_bpe_decode(ctx, t, bad, -1, buf, sizeof buf, &got), ATTN_E_ARG);
    assert_int_equal(attn_bpe_decode(ctx, t, NULL, 1, buf, sizeof buf, &got), ATTN_E_ARG);
    assert_int_equal(attn_bpe_decode(ctx, t, bad, 1, NULL, 4, &got), ATTN_E_ARG);
    attn_bpe *o = (attn_bpe *)1;
    assert_int_equal(attn_bpe_load_dir(ctx, NULL, &o), ATTN_E_ARG);
    assert_null(o);
    assert_int_equal(attn_bpe_load_json(ctx, "/nonexistent/tokenizer.json", &o), ATTN_E_NOTFOUND);
    assert_int_equal(attn_bpe_load_dir(ctx, "/nonexistent", &o), ATTN_E_NOTFOUND);
    assert_null(o);
    attn_bpe_free(t);
}

/* ------------------------------------------------ bad and hostile files */

static char tmpdir[256];

static void put(const char *name, const char *content) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

/* tokenizer.json from a base text with one substring replaced; loading must
 * fail with `want` and a message containing `msg`. */
static char *base_json;

static void expect_json_error(const char *from, const char *to, attn_status want, const char *msg) {
    const char *at = strstr(base_json, from);
    if (!at) print_error("base lacks '%s'\n", from);
    assert_non_null(at);
    size_t n = strlen(base_json) + strlen(to) + 1;
    char *s = malloc(n);
    snprintf(s, n, "%.*s%s%s", (int)(at - base_json), base_json, to, at + strlen(from));
    put("tokenizer.json", s);
    free(s);
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
    attn_bpe *t = (attn_bpe *)1;
    attn_status st = attn_bpe_load_json(ctx, p, &t);
    if (st != want || !strstr(attn_ctx_last_error(ctx), msg))
        print_error("replacing '%s' by '%s': status %d, '%s' (want %d, '%s')\n", from, to, st,
                    attn_ctx_last_error(ctx), want, msg);
    assert_int_equal(st, want);
    assert_null(t);
    assert_non_null(strstr(attn_ctx_last_error(ctx), msg));
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    return b;
}

static void test_bad_files(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/attn_bpe_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char p[1200];
    snprintf(p, sizeof p, "%s/llama3/tokenizer.json", data_dir());
    base_json = slurp(p);
    /* unknown regex: named, never approximated */
    expect_json_error("\\\\p{N}{1,3}", "\\\\p{N}{1,4}", ATTN_E_FORMAT,
                      "unsupported Split regex \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}");
    expect_json_error("\"behavior\":\"Isolated\"", "\"behavior\":\"Removed\"", ATTN_E_FORMAT,
                      "Removed");
    expect_json_error("\"normalizer\":null", "\"normalizer\":{\"type\":\"NFKC\"}", ATTN_E_FORMAT,
                      "normalizer \"NFKC\" is not supported (only NFC)");
    expect_json_error("\"byte_fallback\":false", "\"byte_fallback\":true", ATTN_E_FORMAT,
                      "byte_fallback");
    expect_json_error("\"type\":\"BPE\"", "\"type\":\"WordPiece\"", ATTN_E_FORMAT,
                      "model type \"WordPiece\"");
    expect_json_error("\"type\":\"Split\"", "\"type\":\"Whitespace\"", ATTN_E_FORMAT,
                      "pre_tokenizer \"Whitespace\"");
    expect_json_error("\"continuing_subword_prefix\":null", "\"continuing_subword_prefix\":\"##\"",
                      ATTN_E_FORMAT, "continuing_subword_prefix");
    expect_json_error("\"single_word\":false", "\"single_word\":true", ATTN_E_FORMAT,
                      "single_word");
    expect_json_error("\"ids\":[2000]", "\"ids\":[99999]", ATTN_E_FORMAT, "outside");
    expect_json_error("\"id\":2000,", "\"id\":-5,", ATTN_E_FORMAT, "added token 1");
    expect_json_error("\"id\":2001,", "\"id\":2000,", ATTN_E_FORMAT, "two added tokens");
    expect_json_error("\"id\":2000,", "\"id\":5,", ATTN_E_FORMAT, "another token");
    expect_json_error("\"merges\":[[", "\"merges\":[[\"zzz\",\"q\"],[", ATTN_E_FORMAT,
                      "merge 1 ('zzz' 'q'): its first token");
    expect_json_error("\"merges\":[[", "\"merges\":[7,[", ATTN_E_FORMAT, "merge 1 is neither");
    expect_json_error("\"merges\":[[", "\"merges\":[[\"a\"],[", ATTN_E_FORMAT, "merge 1");
    expect_json_error("\"vocab\":{", "\"vocab\":{\"zz\":-1,", ATTN_E_FORMAT, "'zz'");
    expect_json_error("\"vocab\":{", "\"vocab\":{\"zz\":99999999999,", ATTN_E_FORMAT, "'zz'");
    expect_json_error("\"vocab\":{", "\"vocab\":{\"zz\":3,", ATTN_E_FORMAT, "two tokens");
    expect_json_error("\"vocab\":{", "\"vocab\":{\"zz\":1.5,", ATTN_E_FORMAT, "'zz'");
    expect_json_error("{\"version\"", "[{\"version\"", ATTN_E_FORMAT, "JSON");
    expect_json_error("\"model\":{", "\"model\":7,\"x\":{", ATTN_E_FORMAT, "no \"model\"");
    expect_json_error("\"decoder\":{\"type\":\"ByteLevel\"", "\"decoder\":{\"type\":\"Metaspace\"",
                      ATTN_E_FORMAT, "decoder \"Metaspace\"");
    expect_json_error("\"pre_tokenizer\":{\"type\":\"Sequence\"",
                      "\"pre_tokenizer\":null,\"x\":{\"type\":\"Sequence\"", ATTN_E_FORMAT,
                      "no ByteLevel");
    expect_json_error("\"type\":\"TemplateProcessing\"", "\"type\":\"RobertaProcessing\"",
                      ATTN_E_FORMAT, "post_processor \"RobertaProcessing\"");
    free(base_json);
    /* vocab.json + merges.txt */
    put("vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2}");
    put("merges.txt", "#version: 0.2\na b\n");
    char v[600], m[600];
    snprintf(v, sizeof v, "%s/vocab.json", tmpdir);
    snprintf(m, sizeof m, "%s/merges.txt", tmpdir);
    attn_bpe *t = NULL;
    assert_int_equal(attn_bpe_load_files(ctx, v, m, &t), ATTN_OK);
    int32_t ids[8];
    int n = 0;
    /* a byte with no token is dropped (no unk): what the reference does */
    assert_int_equal(attn_bpe_encode(ctx, t, "abxa", 4, 0, ids, 8, &n), ATTN_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 0);
    attn_bpe_free(t);
    /* with an unk token: one per such byte, or per run with fuse_unk (the
     * ids HF gives for this vocabulary) */
    for (int fuse = 0; fuse < 2; fuse++) {
        char js[512];
        snprintf(
            js, sizeof js,
            "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": %s, "
            "\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"<unk>\": 3}, \"merges\": [\"a b\"]}, "
            "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}}",
            fuse ? "true" : "false");
        put("tokenizer.json", js);
        snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
        assert_int_equal(attn_bpe_load_json(ctx, p, &t), ATTN_OK);
        assert_int_equal(attn_bpe_encode(ctx, t, "abxxa", 5, 0, ids, 8, &n), ATTN_OK);
        int32_t want[2][4] = {{2, 3, 3, 0}, {2, 3, 0}};
        assert_int_equal(n, fuse ? 3 : 4);
        assert_memory_equal(ids, want[fuse], (size_t)n * sizeof *ids);
        attn_bpe_free(t);
        unlink(p);
    }
    put("merges.txt", "a c\n");
    assert_int_equal(attn_bpe_load_files(ctx, v, m, &t), ATTN_E_FORMAT);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "second token"));
    put("merges.txt", "b a\n");
    assert_int_equal(attn_bpe_load_files(ctx, v, m, &t), ATTN_E_FORMAT);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "merged token"));
    put("merges.txt", "a b c\n");
    assert_int_equal(attn_bpe_load_files(ctx, v, m, &t), ATTN_E_FORMAT);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "line 1"));
    put("vocab.json", "{}");
    assert_int_equal(attn_bpe_load_files(ctx, v, m, &t), ATTN_E_FORMAT);
    put("vocab.json", "{\"a\": \"x\"}");
    assert_int_equal(attn_bpe_load_files(ctx, v, m, &t), ATTN_E_FORMAT);
    put("vocab.json", "{\"a\": 0, \"b\": 1");
    assert_int_equal(attn_bpe_load_files(ctx, v, m, &t), ATTN_E_FORMAT);
    assert_null(t);
    /* a directory: vocab.json without merges.txt */
    put("vocab.json", "{\"a\": 0}");
    unlink(m);
    snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
    unlink(p);
    assert_int_equal(attn_bpe_load_dir(ctx, tmpdir, &t), ATTN_E_NOTFOUND);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "merges.txt"));
    unlink(v);
    rmdir(tmpdir);
}

/* A word of 100000 letters, a run of digits, deep white space: the merge
 * heap and the pre-tokenizer at size, and the decode gives the text back. */
static void test_long_inputs(void **state) {
    (void)state;
    attn_bpe *toks[2] = {load("gpt2"), load("llama3")};
    size_t n = 100000;
    char *s = malloc(n + 1);
    for (int pat = 0; pat < 4; pat++) {
        for (size_t i = 0; i < n; i++)
            s[i] = pat == 0   ? "the"[i % 3]
                   : pat == 1 ? (char)('0' + i % 10)
                   : pat == 2 ? " \n\t"[i % 3]
                              : "ab cd'e!"[i % 8];
        for (int k = 0; k < 2; k++) {
            int cnt = 0;
            assert_int_equal(attn_bpe_encode(ctx, toks[k], s, n, 0, NULL, 0, &cnt), ATTN_OK);
            int32_t *ids = malloc((size_t)cnt * sizeof *ids);
            int m = 0;
            assert_int_equal(attn_bpe_encode(ctx, toks[k], s, n, 0, ids, cnt, &m), ATTN_OK);
            char *d = malloc(n + 1);
            size_t got = 0;
            assert_int_equal(attn_bpe_decode(ctx, toks[k], ids, m, d, n + 1, &got), ATTN_OK);
            assert_int_equal(got, n);
            assert_memory_equal(d, s, n);
            free(d);
            free(ids);
        }
    }
    free(s);
    attn_bpe_free(toks[0]);
    attn_bpe_free(toks[1]);
}

/* One tokenizer, two threads encoding different texts at once, each with
 * its own context: the same ids as one thread alone (a tokenizer is
 * immutable after loading). */
typedef struct job {
    const attn_bpe *t;
    const char *text;
    size_t len;
    int32_t *ids;
    int n, reps, bad;
} job;

static void *run_job(void *arg) {
    job *j = arg;
    attn_ctx *c = NULL;
    if (attn_ctx_create(&c, 1) != ATTN_OK) {
        j->bad = 1;
        return NULL;
    }
    int32_t *got = malloc((size_t)j->n * sizeof *got);
    for (int r = 0; r < j->reps && got; r++) {
        int m = 0;
        if (attn_bpe_encode(c, j->t, j->text, j->len, 1, got, j->n, &m) != ATTN_OK || m != j->n ||
            memcmp(got, j->ids, (size_t)m * sizeof *got))
            j->bad = 1;
    }
    if (!got) j->bad = 1;
    free(got);
    attn_ctx_free(c);
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    attn_bpe *t = load("qwen2"); /* NFC, Split regex, template: every stage */
    static const char *const texts[2] = {
        "Hello, world! It's 12345 caf\xc3\xa9 e\xcc\x81 \xe4\xbd\xa0\xe5\xa5\xbd <|eot_id|> ",
        "  \n\t The quick brown fox's 3.14159 jumps \xf0\x9f\x98\x80 over\r\n the lazy dog. "};
    job jobs[2];
    char *big[2];
    for (int k = 0; k < 2; k++) {
        size_t L = strlen(texts[k]);
        big[k] = malloc(200 * L + 1);
        for (int r = 0; r < 200; r++)
            memcpy(big[k] + r * L, texts[k], L);
        jobs[k] = (job){t, big[k], 200 * L, NULL, 0, 20, 0};
        assert_int_equal(attn_bpe_encode(ctx, t, big[k], jobs[k].len, 1, NULL, 0, &jobs[k].n),
                         ATTN_OK);
        jobs[k].ids = malloc((size_t)jobs[k].n * sizeof(int32_t));
        int m = 0;
        assert_int_equal(
            attn_bpe_encode(ctx, t, big[k], jobs[k].len, 1, jobs[k].ids, jobs[k].n, &m), ATTN_OK);
    }
    pthread_t th[2];
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&th[k], NULL, run_job, &jobs[k]), 0);
    for (int k = 0; k < 2; k++) {
        pthread_join(th[k], NULL);
        assert_int_equal(jobs[k].bad, 0);
        free(jobs[k].ids);
        free(big[k]);
    }
    attn_bpe_free(t);
}

/* The fuzz target's committed seeds (tests/fuzz/corpus/bpe). */
static void test_fuzz_corpus(void **state) {
    (void)state;
    fuzz_bpe_setup(ctx, data_dir());
    char d[1200];
    snprintf(d, sizeof d, "%s/../../fuzz/corpus/bpe", data_dir());
    DIR *dir = opendir(d);
    assert_non_null(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.') continue;
        char p[1500];
        snprintf(p, sizeof p, "%s/%s", d, e->d_name);
        FILE *f = fopen(p, "rb");
        assert_non_null(f);
        static uint8_t buf[1 << 20];
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        fuzz_bpe_one(ctx, buf, len);
        n++;
    }
    closedir(dir);
    printf("bpe: %d corpus files replayed\n", n);
    assert_true(n >= 10);
    for (int i = 0; i < FUZZ_BPE_N; i++) {
        attn_bpe_free(fuzz_bpe_tok[i]);
        fuzz_bpe_tok[i] = NULL;
    }
}

int main(void) {
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hf_cases),  cmocka_unit_test(test_hf_decode),
        cmocka_unit_test(test_hf_random), cmocka_unit_test(test_codepoint_classes),
        cmocka_unit_test(test_contract),  cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_bad_files), cmocka_unit_test(test_long_inputs),
        cmocka_unit_test(test_threads),   cmocka_unit_test(test_fuzz_corpus),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    attn_ctx_free(ctx);
    return rc;
}
