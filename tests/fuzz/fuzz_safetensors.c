/* libFuzzer target for the safetensors reader: any byte string must give
 * ATTN_OK or ATTN_E_FORMAT (never a crash, leak or undefined behaviour), and
 * a file that opens must serve every tensor consistently.
 * The library itself must be instrumented too, or the fuzzer sees no coverage
 * of the parser:
 *   S="-fsanitize=address,undefined"
 *   cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DATTN_FUZZ=ON \
 *     -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all" \
 *     -DCMAKE_SHARED_LINKER_FLAGS="$S" -DCMAKE_EXE_LINKER_FLAGS="$S"
 *   cmake --build build-fuzz --target fuzz_safetensors
 *   cp -r tests/data/safetensors_bad corpus
 *   build-fuzz/tests/fuzz_safetensors -max_total_time=300 corpus
 * tests/test_safetensors.c includes this file to run the same checks in ctest. */
#include <attn/attn.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

/* Open buf, read back everything it holds, and return the open status. */
static attn_status fuzz_safetensors_one(const uint8_t *buf, size_t len) {
    attn_ctx *ctx = NULL;
    if (attn_ctx_create(&ctx, 1)) return ATTN_E_NOMEM;
    attn_safetensors *st = NULL;
    attn_status s = attn_safetensors_open_memory(ctx, buf, len, &st);
    FUZZ_CHECK(s == ATTN_OK || s == ATTN_E_FORMAT || s == ATTN_E_NOMEM);
    FUZZ_CHECK((s == ATTN_OK) == (st != NULL));
    FUZZ_CHECK(s == ATTN_OK || attn_ctx_last_error(ctx)[0] != '\0');
    int n = attn_safetensors_count(st);
    for (int i = 0; i < n; i++) {
        const char *name = attn_safetensors_name(st, i);
        FUZZ_CHECK(name && *name && attn_safetensors_find(st, name) == i);
        attn_tensor v;
        attn_status g = attn_safetensors_get(ctx, st, name, &v);
        if (g == ATTN_E_DTYPE || g == ATTN_E_UNSUPPORTED) continue;
        FUZZ_CHECK(g == ATTN_OK);
        size_t bytes = (size_t)attn_tensor_numel(&v) * attn_dtype_size(v.dtype);
        FUZZ_CHECK(((uintptr_t)v.data & 7) == 0 && (bytes < 64 || ((uintptr_t)v.data & 63) == 0));
        unsigned acc = 0; /* touch every byte so the sanitizer sees any overrun */
        for (size_t b = 0; b < bytes; b++)
            acc += ((const unsigned char *)v.data)[b];
        (void)acc;
        float *f = NULL;
        attn_tensor fv;
        g = attn_safetensors_get_f32(ctx, st, name, &f, &fv);
        FUZZ_CHECK(g == ATTN_OK || g == ATTN_E_DTYPE || g == ATTN_E_NOMEM);
        if (g == ATTN_OK) {
            int64_t numel = attn_tensor_numel(&fv);
            float sum = 0.0f;
            for (int64_t e = 0; e < numel; e++)
                sum += f[e];
            *(volatile float *)&sum = sum;
        }
        attn_buffer_free(f);
    }
    attn_safetensors_close(st);
    attn_ctx_free(ctx);
    return s;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)fuzz_safetensors_one(data, size);
    return 0;
}
#endif
