/* libFuzzer target for the image decoders (src/image/decode.c: PNG through
 * libpng, JPEG through libjpeg-turbo, the EXIF orientation parser) and the
 * resampler: any byte string must give ATTN_OK, ATTN_E_FORMAT or
 * ATTN_E_SHAPE with a message (never a crash, leak, longjmp gone wrong or
 * undefined behaviour); an image that decodes has sides in [1, 32768] and
 * at most the pixels asked for, every byte readable, and resizes and
 * preprocesses. Build as fuzz_safetensors.c says, then:
 *   cmake --build build-fuzz --target fuzz_image
 *   cp -r tests/fuzz/corpus/image corpus
 *   build-fuzz/tests/fuzz_image -max_total_time=600 -rss_limit_mb=2048 corpus
 * tests/test_fuzz_replay.c includes this file to replay the committed
 * corpus (tests/fuzz/corpus/image: small valid files of every colour type,
 * truncations, hostile headers) in ctest. */
#include <attn/attn.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

#define FUZZ_IMAGE_MAX_PIXELS (1 << 20) /* keeps the fuzzer's memory small */

static attn_status fuzz_image_one(const uint8_t *buf, size_t len) {
    attn_ctx *ctx = NULL;
    if (attn_ctx_create(&ctx, 1)) return ATTN_E_NOMEM;
    attn_image img;
    attn_status s = attn_image_decode(ctx, buf, len, "fuzz", 0, FUZZ_IMAGE_MAX_PIXELS, &img);
    FUZZ_CHECK(s == ATTN_OK || s == ATTN_E_FORMAT || s == ATTN_E_SHAPE || s == ATTN_E_NOMEM);
    FUZZ_CHECK(s == ATTN_OK || attn_ctx_last_error(ctx)[0] != '\0');
    FUZZ_CHECK((s == ATTN_OK) == (img.rgb != NULL));
    if (s == ATTN_OK) {
        FUZZ_CHECK(img.width >= 1 && img.height >= 1 && img.width <= ATTN_IMAGE_MAX_SIDE &&
                   img.height <= ATTN_IMAGE_MAX_SIDE &&
                   img.width * img.height <= FUZZ_IMAGE_MAX_PIXELS);
        unsigned acc = 0;
        for (int64_t i = 0; i < img.width * img.height * 3; i++)
            acc += img.rgb[i];
        *(volatile unsigned *)&acc = acc;
        attn_image_preproc p = {1, 7, 5, ATTN_RESAMPLE_BICUBIC, 1, 1.0f / 255, 1,
                                {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
        float px[3 * 7 * 5];
        FUZZ_CHECK(attn_image_preprocess(ctx, &img, &p, px) == ATTN_OK);
        for (int i = 0; i < 3 * 7 * 5; i++)
            FUZZ_CHECK(px[i] >= -1.0f - 1e-6f && px[i] <= 1.0f + 1e-6f);
    }
    attn_image_free(&img);
    attn_ctx_free(ctx);
    return s;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)fuzz_image_one(data, size);
    return 0;
}
#endif
