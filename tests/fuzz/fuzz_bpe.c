/* libFuzzer target for the byte-level BPE tokenizer.
 * An input starting with '{' is a tokenizer.json: loading it must give
 * ATTN_OK or an error with a message (never a crash, leak or undefined
 * behaviour), and a tokenizer that loads must encode and decode a text.
 * Any other input is a text for one of the fixture tokenizers (chosen by its
 * first byte): encoding gives ATTN_OK, or ATTN_E_ARG naming the byte offset
 * of invalid UTF-8; counting agrees with writing; decoding the ids gives the
 * text back byte for byte (byte-level BPE loses nothing; but for the spaces
 * add_prefix_space adds, NFC, and special tokens); the input read as
 * ids decodes to valid UTF-8.
 * Build as fuzz_safetensors.c says, then:
 *   cmake --build build-fuzz --target fuzz_bpe
 *   ATTN_FUZZ_BPE_DIR=tests/data/bpe build-fuzz/tests/fuzz_bpe -max_total_time=300 corpus
 * (seeds: tests/fuzz/corpus/bpe). tests/test_bpe.c includes this file to
 * replay the committed corpus in ctest. */
#include <attn/attn.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_check.h"

#define FUZZ_BPE_N 4
static const char *const fuzz_bpe_names[FUZZ_BPE_N] = {"gpt2", "gpt2_prefix", "llama3", "qwen2"};

/* 1 if s[0..n) is valid UTF-8 (shortest forms, no surrogates). */
static int fuzz_bpe_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80                 ? 1
                   : c >= 0xc2 && c <= 0xdf ? 2
                   : c >= 0xe0 && c <= 0xef ? 3
                   : c >= 0xf0 && c <= 0xf4 ? 4
                                            : 0;
        if (!k || n - i < k) return 0;
        if (k > 1) {
            unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
            unsigned hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
            if (s[i + 1] < lo || s[i + 1] > hi) return 0;
            for (size_t j = 2; j < k; j++)
                if ((s[i + j] & 0xc0) != 0x80) return 0;
        }
        i += k;
    }
    return 1;
}

/* Encode text with t and check the properties above; returns the status. */
static attn_status fuzz_bpe_text(attn_ctx *ctx, const attn_bpe *t, const uint8_t *buf, size_t len,
                                 int special, int lossless) {
    int n = -1;
    attn_status s = attn_bpe_encode(ctx, t, (const char *)buf, len, special, NULL, 0, &n);
    FUZZ_CHECK(s == ATTN_OK || s == ATTN_E_ARG || s == ATTN_E_NOMEM);
    if (s == ATTN_E_ARG) FUZZ_CHECK(strstr(attn_ctx_last_error(ctx), "byte offset") && n == 0);
    if (s != ATTN_OK) return s;
    FUZZ_CHECK(n >= 0 && (size_t)n <= len + 16);
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    FUZZ_CHECK(ids);
    int m = -1;
    FUZZ_CHECK(attn_bpe_encode(ctx, t, (const char *)buf, len, special, ids, n, &m) == ATTN_OK);
    FUZZ_CHECK(m == n);
    if (n > 0) {
        int k = -1;
        FUZZ_CHECK(attn_bpe_encode(ctx, t, (const char *)buf, len, special, ids, n - 1, &k) ==
                   ATTN_E_ARG);
        FUZZ_CHECK(k == n);
        FUZZ_CHECK(attn_bpe_encode(ctx, t, (const char *)buf, len, special, ids, n, &m) == ATTN_OK);
    }
    size_t need = 0;
    FUZZ_CHECK(attn_bpe_decode(ctx, t, ids, n, NULL, 0, &need) == ATTN_OK);
    char *out = malloc(need + 1);
    FUZZ_CHECK(out);
    size_t got = 0;
    FUZZ_CHECK(attn_bpe_decode(ctx, t, ids, n, out, need + 1, &got) == ATTN_OK && got == need);
    FUZZ_CHECK(fuzz_bpe_utf8((const unsigned char *)out, got));
    if (!special && lossless) FUZZ_CHECK(got == len && !memcmp(out, buf, len));
    free(out);
    free(ids);
    return s;
}

/* The input read as little-endian 16-bit ids (modulo the vocabulary). */
static void fuzz_bpe_ids(attn_ctx *ctx, const attn_bpe *t, const uint8_t *buf, size_t len) {
    int n = (int)(len / 2);
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    FUZZ_CHECK(ids);
    int32_t v = attn_bpe_vocab_size(t);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)((buf[2 * i] | buf[2 * i + 1] << 8) % v);
    size_t need = 0;
    attn_status s = attn_bpe_decode(ctx, t, ids, n, NULL, 0, &need);
    FUZZ_CHECK(s == ATTN_OK || s == ATTN_E_ARG); /* an id in a gap of the vocabulary */
    if (s == ATTN_OK) {
        char *out = malloc(need + 1);
        FUZZ_CHECK(out);
        size_t got = 0;
        FUZZ_CHECK(attn_bpe_decode(ctx, t, ids, n, out, need + 1, &got) == ATTN_OK);
        FUZZ_CHECK(got == need && out[got] == '\0');
        FUZZ_CHECK(fuzz_bpe_utf8((const unsigned char *)out, got));
        if (need > 0)
            FUZZ_CHECK(attn_bpe_decode(ctx, t, ids, n, out, need - 1, &got) == ATTN_E_ARG &&
                       got == need);
        free(out);
    }
    free(ids);
}

/* A tokenizer.json from the input. */
static attn_status fuzz_bpe_json(attn_ctx *ctx, const uint8_t *buf, size_t len) {
    char path[] = "/tmp/attn_fuzz_bpe_XXXXXX";
    int fd = mkstemp(path);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(write(fd, buf, len) == (ssize_t)len);
    close(fd);
    attn_bpe *t = NULL;
    attn_status s = attn_bpe_load_json(ctx, path, &t);
    unlink(path);
    FUZZ_CHECK((s == ATTN_OK) == (t != NULL));
    if (s != ATTN_OK) {
        FUZZ_CHECK(attn_ctx_last_error(ctx)[0] != '\0');
        return s;
    }
    static const char text[] =
        "Hello, world! It's 12345 <|endoftext|>  \n\t caf\xc3\xa9 \xe4\xbd\xa0";
    int n = -1;
    FUZZ_CHECK(attn_bpe_encode(ctx, t, text, sizeof text - 1, 1, NULL, 0, &n) == ATTN_OK);
    fuzz_bpe_ids(ctx, t, buf, len < 64 ? len : 64);
    attn_bpe_free(t);
    return s;
}

static attn_bpe *fuzz_bpe_tok[FUZZ_BPE_N];

static void fuzz_bpe_one(attn_ctx *ctx, const uint8_t *buf, size_t len) {
    if (len && buf[0] == '{') {
        (void)fuzz_bpe_json(ctx, buf, len);
        return;
    }
    int which = len ? buf[0] % FUZZ_BPE_N : 0;
    const attn_bpe *t = fuzz_bpe_tok[which];
    const uint8_t *text = len ? buf + 1 : buf;
    size_t n = len ? len - 1 : 0;
    /* gpt2_prefix puts a space before the text (add_prefix_space), qwen2
     * normalizes it to NFC */
    (void)fuzz_bpe_text(ctx, t, text, n, 0, which != 1 && which != 3);
    (void)fuzz_bpe_text(ctx, t, text, n, 1, which != 1 && which != 3);
    fuzz_bpe_ids(ctx, t, text, n);
}

/* Load the fixture tokenizers from dir (tests/data/bpe). */
static void fuzz_bpe_setup(attn_ctx *ctx, const char *dir) {
    for (int i = 0; i < FUZZ_BPE_N; i++) {
        if (fuzz_bpe_tok[i]) continue;
        char p[1100];
        snprintf(p, sizeof p, "%.1000s/%s", dir, fuzz_bpe_names[i]);
        FUZZ_CHECK(attn_bpe_load_dir(ctx, p, &fuzz_bpe_tok[i]) == ATTN_OK);
    }
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static attn_ctx *ctx;
    if (!ctx) {
        const char *d = getenv("ATTN_FUZZ_BPE_DIR");
        FUZZ_CHECK(attn_ctx_create(&ctx, 1) == ATTN_OK);
        fuzz_bpe_setup(ctx, d ? d : "tests/data/bpe");
    }
    fuzz_bpe_one(ctx, data, size);
    return 0;
}
#endif
