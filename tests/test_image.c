/* Image decoding (PNG, JPEG, EXIF orientation) against Pillow's decoding,
 * resizing and ViT preprocessing against transformers' ViTImageProcessor
 * (fixtures: scripts/make_image_fixtures.py), and hostile inputs: every
 * truncation, zero and huge sizes, corrupt bytes, bad configs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attn_test.h"

static char dir[1024];
static attn_safetensors *expect;

static const char *data_path(const char *name) {
    static char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static int setup(void **state) {
    const char *t = getenv("ATTN_TEST_DATA");
    snprintf(dir, sizeof dir, "%s/image", t ? t : "tests/data");
    if (at_ctx_setup(state)) return -1;
    return attn_safetensors_open(at_ctx, data_path("expect.safetensors"), &expect) ? -1 : 0;
}

static int teardown(void **state) {
    attn_safetensors_close(expect);
    return at_ctx_teardown(state);
}

static attn_tensor get(const char *prefix, const char *name) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    attn_tensor t;
    if (attn_safetensors_get(at_ctx, expect, key, &t)) fail_msg("%s: %s", key, attn_ctx_last_error(at_ctx));
    return t;
}

/* max |a - b| over n bytes, and how many differ */
static int max_diff(const uint8_t *a, const uint8_t *b, int64_t n, int64_t *ndiff) {
    int m = 0;
    *ndiff = 0;
    for (int64_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d) ++*ndiff;
        if (d > m) m = d;
    }
    return m;
}

static void test_decode(void **state) {
    (void)state;
    static const struct {
        const char *file;
        int tol; /* JPEG: libjpeg builds may round the colour conversion differently */
    } files[] = {
        {"china.jpg", 1},  {"flower.jpg", 1},  {"flower_prog.jpg", 1},
        {"gray.jpg", 1},   {"cmyk.jpg", 1},    {"exif6.jpg", 1},
        {"exif3.jpg", 1},  {"rgb8.png", 0},    {"rgba8.png", 0},
        {"gray8.png", 0},  {"gray_p.png", 0},  {"pal8.png", 0},
        {"pal_trns.png", 0}, {"rgb8_interlaced.png", 0}, {"rgb16.png", 0},
        {"rgb16_interlaced.png", 0}, {"gray16.png", 0},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        attn_image img;
        attn_status st = attn_image_load(at_ctx, data_path(files[i].file), 0, &img);
        if (st) fail_msg("%s: %s", files[i].file, attn_ctx_last_error(at_ctx));
        attn_tensor e = get("decoded_", files[i].file);
        assert_int_equal(e.dtype, ATTN_U8);
        assert_int_equal(img.height, e.shape[0]);
        assert_int_equal(img.width, e.shape[1]);
        int64_t nd;
        int m = max_diff(img.rgb, e.data, img.width * img.height * 3, &nd);
        if (at_verbose() || m)
            printf("%-22s %lld x %lld: max diff %d (%lld bytes differ)\n", files[i].file,
                   (long long)img.width, (long long)img.height, m, (long long)nd);
        assert_true(m <= files[i].tol);
        attn_image_free(&img);
        assert_null(img.rgb);
    }
    /* ATTN_IMAGE_NO_EXIF keeps the stored (sideways) orientation */
    attn_image a, b;
    assert_int_equal(attn_image_load(at_ctx, data_path("exif6.jpg"), ATTN_IMAGE_NO_EXIF, &a), ATTN_OK);
    assert_int_equal(attn_image_load(at_ctx, data_path("exif6.jpg"), 0, &b), ATTN_OK);
    assert_int_equal(a.width, b.height);
    assert_int_equal(a.height, b.width);
    /* orientation 6 = rotate 90 clockwise: upright (X, Y) is stored (Y, h - 1 - X) */
    for (int64_t Y = 0; Y < b.height; Y++)
        for (int64_t X = 0; X < b.width; X++)
            assert_memory_equal(b.rgb + (Y * b.width + X) * 3,
                                a.rgb + ((a.height - 1 - X) * a.width + Y) * 3, 3);
    attn_image_free(&a);
    attn_image_free(&b);
}

typedef struct pcase {
    char name[64], file[64];
    int64_t h, w;
    int resample;
    float mean[3], std[3];
} pcase;

static int read_cases(pcase *c, int max) {
    FILE *f = fopen(data_path("cases.txt"), "r");
    assert_non_null(f);
    int n = 0;
    while (n < max && fscanf(f, "%63s %63s %lld %lld %d %f %f %f %f %f %f", c[n].name, c[n].file,
                             (long long *)&c[n].h, (long long *)&c[n].w, &c[n].resample,
                             &c[n].mean[0], &c[n].mean[1], &c[n].mean[2], &c[n].std[0],
                             &c[n].std[1], &c[n].std[2]) == 11)
        n++;
    fclose(f);
    return n;
}

static void test_preprocess(void **state) {
    (void)state;
    pcase cs[32];
    int n = read_cases(cs, 32);
    assert_true(n >= 10);
    int with_pixels = 0;
    for (int i = 0; i < n; i++) {
        const pcase *c = &cs[i];
        attn_image img;
        assert_int_equal(attn_image_load(at_ctx, data_path(c->file), 0, &img), ATTN_OK);
        /* the resize alone: PIL's 8-bit levels */
        attn_tensor e = get("resized_", c->name);
        assert_int_equal(e.shape[0], c->h);
        assert_int_equal(e.shape[1], c->w);
        uint8_t *r = malloc((size_t)(c->h * c->w * 3));
        assert_int_equal(attn_image_resize(at_ctx, &img, c->w, c->h, (attn_resample)c->resample, r),
                         ATTN_OK);
        int64_t nd;
        int m = max_diff(r, e.data, c->h * c->w * 3, &nd);
        if (at_verbose() || m)
            printf("%-16s resize %lld x %lld: max diff %d levels (%lld differ)\n", c->name,
                   (long long)c->w, (long long)c->h, m, (long long)nd);
        assert_true(m <= 1);
        /* the whole preprocessing, against the processor's pixel values */
        attn_image_preproc p = {1, c->h, c->w, (attn_resample)c->resample, 1, 1.0f / 255, 1,
                                {c->mean[0], c->mean[1], c->mean[2]},
                                {c->std[0], c->std[1], c->std[2]}};
        const int64_t hw = c->h * c->w;
        float *px = malloc((size_t)(3 * hw) * sizeof(float));
        assert_int_equal(attn_image_preprocess(at_ctx, &img, &p, px), ATTN_OK);
        const uint8_t *lv = e.data;
        char key[256];
        snprintf(key, sizeof key, "pixels_%.64s", c->name);
        attn_tensor pv;
        const int has = attn_safetensors_find(expect, key) >= 0;
        if (has) {
            assert_int_equal(attn_safetensors_get(at_ctx, expect, key, &pv), ATTN_OK);
            with_pixels++;
        }
        double worst = 0.0; /* in uint8 levels */
        for (int ch = 0; ch < 3; ch++)
            for (int64_t k = 0; k < hw; k++) {
                /* the processor's value: from its file, else from its levels */
                double want = has ? ((const float *)pv.data)[ch * hw + k]
                                  : ((double)lv[k * 3 + ch] / 255.0 - c->mean[ch]) / c->std[ch];
                double d = fabs(px[ch * hw + k] - want) * c->std[ch] * 255.0;
                if (d > worst) worst = d;
            }
        if (at_verbose()) printf("%-16s pixels: max diff %.4f levels\n", c->name, worst);
        assert_true(worst <= 1.0 + 1e-3);
        if (m == 0) assert_true(worst <= 1e-3); /* same levels: same floats */
        free(px);
        free(r);
        attn_image_free(&img);
    }
    assert_true(with_pixels >= 3);
}

/* Every file must fail cleanly: a status, a message, out zeroed. */
static void expect_fail(const void *buf, size_t len, attn_status want, const char *needle) {
    attn_image img;
    memset(&img, 0x5a, sizeof img);
    attn_status st = attn_image_decode(at_ctx, buf, len, "hostile", 0, 0, &img);
    const char *msg = attn_ctx_last_error(at_ctx);
    if (st != want || (needle && !strstr(msg, needle)))
        fail_msg("len %zu: got %d '%s', wanted %d '%s'", len, st, msg, want, needle ? needle : "");
    assert_true(strstr(msg, "hostile") != NULL);
    assert_null(img.rgb);
    assert_int_equal(img.width, 0);
}

static uint8_t *slurp(const char *name, size_t *len) {
    FILE *f = fopen(data_path(name), "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len);
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* The IHDR's CRC after changing its sizes (zlib's CRC-32, bitwise). */
static void png_fix_ihdr(uint8_t *png) {
    uint32_t c = 0xffffffffu;
    for (int i = 12; i < 29; i++) {
        c ^= png[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xedb88320u : c >> 1;
    }
    put_be32(png + 29, ~c);
}

static void test_hostile(void **state) {
    (void)state;
    expect_fail("", 0, ATTN_E_FORMAT, "empty");
    expect_fail("GIF89a......", 12, ATTN_E_FORMAT, "not a PNG or JPEG");
    size_t n;
    uint8_t *png = slurp("pal_trns.png", &n);
    /* every truncation of a PNG: an error, never a partial image */
    const size_t step = at_quick() ? 37 : 1;
    for (size_t k = 8; k < n - 12; k += step) /* the IEND chunk may go: libpng stops at IDAT's end */
        expect_fail(png, k, k < 33 ? ATTN_E_FORMAT : ATTN_E_FORMAT, NULL);
    /* sizes: zero, over a side, over the pixel count (CRC made valid) */
    uint8_t *h = malloc(n);
    const uint32_t sizes[][2] = {{0, 5}, {5, 0}, {40000, 1}, {8193, 8192}};
    for (int i = 0; i < 4; i++) {
        memcpy(h, png, n);
        put_be32(h + 16, sizes[i][0]);
        put_be32(h + 20, sizes[i][1]);
        png_fix_ihdr(h);
        attn_image img;
        attn_status st = attn_image_decode(at_ctx, h, n, "hostile", 0, 0, &img);
        printf("PNG %u x %u: %s\n", sizes[i][0], sizes[i][1], attn_ctx_last_error(at_ctx));
        assert_true(st == ATTN_E_SHAPE || st == ATTN_E_FORMAT);
        assert_null(img.rgb);
    }
    memcpy(h, png, n);
    put_be32(h + 16, 8193), put_be32(h + 20, 8192);
    png_fix_ihdr(h);
    expect_fail(h, n, ATTN_E_SHAPE, "too large");
    /* a lower caller limit */
    attn_image img;
    assert_int_equal(attn_image_decode(at_ctx, png, n, "hostile", 0, 100, &img), ATTN_E_SHAPE);
    assert_int_equal(attn_image_decode(at_ctx, png, n, "hostile", 0, -1, &img), ATTN_E_ARG);
    assert_int_equal(attn_image_decode(at_ctx, png, n, "hostile", 8, 0, &img), ATTN_E_ARG);
    /* a flipped byte in the compressed data: a CRC error */
    memcpy(h, png, n);
    h[n - 20] ^= 0x55;
    expect_fail(h, n, ATTN_E_FORMAT, "corrupt PNG");
    free(h);
    free(png);

    uint8_t *jpg = slurp("exif6.jpg", &n);
    for (size_t k = 3; k < n - 2; k += step)
        expect_fail(jpg, k, ATTN_E_FORMAT, "corrupt JPEG");
    /* frame sizes: find the SOF0 marker */
    size_t sof = 0;
    for (size_t i = 2; i + 9 < n; i++)
        if (jpg[i] == 0xff && jpg[i + 1] == 0xc0) {
            sof = i;
            break;
        }
    assert_true(sof > 0);
    h = malloc(n);
    memcpy(h, jpg, n);
    h[sof + 5] = 0x9c, h[sof + 6] = 0x40, h[sof + 7] = 0x9c, h[sof + 8] = 0x40; /* 40000^2 */
    expect_fail(h, n, ATTN_E_SHAPE, "too large");
    memcpy(h, jpg, n);
    h[sof + 7] = 0, h[sof + 8] = 0; /* width 0 */
    attn_status st = attn_image_decode(at_ctx, h, n, "hostile", 0, 0, &img);
    assert_true(st == ATTN_E_SHAPE || st == ATTN_E_FORMAT);
    printf("JPEG width 0: %s\n", attn_ctx_last_error(at_ctx));
    free(h);
    free(jpg);
    /* files: missing, a directory */
    assert_int_equal(attn_image_load(at_ctx, data_path("no-such.png"), 0, &img), ATTN_E_IO);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "no-such.png"));
    assert_int_not_equal(attn_image_load(at_ctx, dir, 0, &img), ATTN_OK);
    assert_int_equal(attn_image_load(at_ctx, data_path("cases.txt"), 0, &img), ATTN_E_FORMAT);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "cases.txt"));
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_preproc_config(void **state) {
    (void)state;
    char tmp[] = "/tmp/attn_preproc_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char path[256];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", tmp);
    attn_image_preproc p;
    /* absent: ViTImageProcessor's defaults at the given size */
    assert_int_equal(attn_image_preproc_load(at_ctx, tmp, 32, &p), ATTN_OK);
    assert_int_equal(p.height, 32);
    assert_int_equal(p.resample, ATTN_RESAMPLE_BILINEAR);
    assert_true(p.mean[0] == 0.5f && p.std[2] == 0.5f && p.do_normalize && p.do_resize);
    write_file(path, "{\"size\": {\"height\": 40, \"width\": 24}, \"resample\": 3, "
                     "\"image_mean\": [0.1, 0.2, 0.3], \"image_std\": [0.4, 0.5, 0.6], "
                     "\"rescale_factor\": 0.5, \"do_normalize\": false}");
    if (attn_image_preproc_load(at_ctx, tmp, 32, &p)) fail_msg("%s", attn_ctx_last_error(at_ctx));
    assert_true(p.height == 40 && p.width == 24 && p.resample == ATTN_RESAMPLE_BICUBIC);
    assert_true(p.mean[1] == 0.2f && p.std[2] == 0.6f && p.rescale_factor == 0.5f && !p.do_normalize);
    static const struct {
        const char *json;
        attn_status st;
    } bad[] = {
        {"[1]", ATTN_E_FORMAT},
        {"{\"size\": {\"shortest_edge\": 224}}", ATTN_E_UNSUPPORTED},
        {"{\"size\": {\"height\": 0, \"width\": 3}}", ATTN_E_SHAPE},
        {"{\"size\": 100000}", ATTN_E_SHAPE},
        {"{\"resample\": 9}", ATTN_E_UNSUPPORTED},
        {"{\"image_std\": [1, 0, 1]}", ATTN_E_FORMAT},
        {"{\"image_mean\": [1, 2]}", ATTN_E_FORMAT},
        {"{\"do_resize\": 1}", ATTN_E_FORMAT},
        {"{\"do_center_crop\": true}", ATTN_E_UNSUPPORTED},
        {"{not json", ATTN_E_FORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i].json);
        attn_status st = attn_image_preproc_load(at_ctx, tmp, 32, &p);
        if (at_verbose()) printf("%s: %s\n", bad[i].json, attn_ctx_last_error(at_ctx));
        if (st != bad[i].st)
            fail_msg("%s: %d (%s)", bad[i].json, st, attn_ctx_last_error(at_ctx));
        assert_non_null(strstr(attn_ctx_last_error(at_ctx), "preprocessor_config.json"));
    }
    unlink(path);
    rmdir(tmp);
    /* argument checks of the pixel functions */
    attn_image img = {2, 2, (uint8_t[12]){0}};
    uint8_t out[12];
    assert_int_equal(attn_image_resize(at_ctx, &img, 0, 2, ATTN_RESAMPLE_BILINEAR, out), ATTN_E_ARG);
    assert_int_equal(attn_image_resize(at_ctx, &img, 2, 2, (attn_resample)7, out), ATTN_E_ARG);
    attn_image_preproc q = {1, 2, 2, ATTN_RESAMPLE_BILINEAR, 1, 1.0f / 255, 1, {0, 0, 0}, {1, 0, 1}};
    float px[12];
    assert_int_equal(attn_image_preprocess(at_ctx, &img, &q, px), ATTN_E_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_preprocess),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_preproc_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
