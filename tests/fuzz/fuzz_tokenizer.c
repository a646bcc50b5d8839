/* libFuzzer target for the tokenizer: any byte string must give ATTN_OK or,
 * for text that is not UTF-8, ATTN_E_ARG naming the byte offset (never a
 * crash, leak or undefined behaviour), and an encoding must be well formed:
 * [CLS] ... [SEP], ids in range, counting agrees with writing, and a
 * truncated encoding is a prefix of the full one plus [SEP].
 * Build as fuzz_safetensors.c says, then:
 *   cmake --build build-fuzz --target fuzz_tokenizer
 *   ATTN_FUZZ_VOCAB=tests/data/tokenizer/vocab.txt build-fuzz/tests/fuzz_tokenizer \
 *     -max_total_time=300 corpus
 * tests/test_tokenizer.c includes this file to run the same checks in ctest. */
#include <attn/attn.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

/* Encode buf three ways (count, write, truncated to 2 + buf[0] % 16) and
 * check the results agree. Returns the status of the first encoding. */
static attn_status fuzz_tokenizer_one(attn_ctx *ctx, const attn_tokenizer *tok, const uint8_t *buf,
                                      size_t len) {
    int n = -1;
    attn_status s = attn_tokenizer_encode(ctx, tok, (const char *)buf, len, 0, NULL, 0, &n);
    FUZZ_CHECK(s == ATTN_OK || s == ATTN_E_ARG || s == ATTN_E_NOMEM);
    if (s == ATTN_E_ARG) FUZZ_CHECK(strstr(attn_ctx_last_error(ctx), "byte offset") && n == 0);
    if (s != ATTN_OK) return s;
    FUZZ_CHECK(n >= 2);
    int32_t *full = malloc((size_t)n * sizeof *full), *cut = malloc((size_t)n * sizeof *cut);
    FUZZ_CHECK(full && cut);
    int m = -1;
    FUZZ_CHECK(attn_tokenizer_encode(ctx, tok, (const char *)buf, len, 0, full, n, &m) == ATTN_OK);
    FUZZ_CHECK(m == n);
    FUZZ_CHECK(full[0] == attn_tokenizer_id(tok, "[CLS]"));
    FUZZ_CHECK(full[n - 1] == attn_tokenizer_id(tok, "[SEP]"));
    for (int i = 0; i < n; i++)
        FUZZ_CHECK(attn_tokenizer_token(tok, full[i]) != NULL);
    int max_len = 2 + (len ? buf[0] % 16 : 0), k = -1;
    FUZZ_CHECK(attn_tokenizer_encode(ctx, tok, (const char *)buf, len, max_len, cut, n, &k) ==
               ATTN_OK);
    FUZZ_CHECK(k == (n < max_len ? n : max_len));
    FUZZ_CHECK(!memcmp(cut, full, (size_t)(k - 1) * sizeof *cut) && cut[k - 1] == full[n - 1]);
    free(full);
    free(cut);
    return s;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static attn_ctx *ctx;
    static attn_tokenizer *tok;
    if (!tok) {
        const char *v = getenv("ATTN_FUZZ_VOCAB");
        FUZZ_CHECK(attn_ctx_create(&ctx, 1) == ATTN_OK);
        FUZZ_CHECK(attn_tokenizer_load(ctx, v ? v : "tests/data/tokenizer/vocab.txt", 1, &tok) ==
                   ATTN_OK);
    }
    fuzz_tokenizer_one(ctx, tok, data, size);
    return 0;
}
#endif
