/* safetensors reader and writer: round trips of every dtype and of strided
 * views, float conversions, every error path, the committed corpus of
 * corrupt files and seeded random mutations of a valid file. */
/* mknod, S_IFCHR */
#undef _POSIX_C_SOURCE
#define _XOPEN_SOURCE 700
#include <attn/attn.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

#define FUZZ_NO_MAIN
#include "fuzz/fuzz_safetensors.c"

static char tmpdir[256];

static int quick(void) {
    const char *q = getenv("ATTN_TEST_QUICK");
    return q && *q && strcmp(q, "0");
}

/* A path in tmpdir; a few calls' results stay valid at once. */
static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", tmpdir, name);
    return b;
}

/* Entries in tmpdir; the writer must never leave a temporary file behind. */
static int dir_entries(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void clear_dir(void) {
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64: a seeded, portable stream */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/attn_test_st_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    clear_dir();
    rmdir(tmpdir);
    return 0;
}

/* ---- round trips ----------------------------------------------------------- */

static void test_roundtrip_every_dtype(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    enum { N = 11 };
    const attn_dtype dts[N] = {ATTN_U8,  ATTN_F16, ATTN_F32, ATTN_BOOL, ATTN_F64, ATTN_BF16,
                               ATTN_I32, ATTN_I64, ATTN_F32, ATTN_U8,   ATTN_F32};
    const int nds[N] = {1, 2, 3, 4, 0, 2, 1, 3, 2, 1, 4};
    const int64_t shapes[N][4] = {{5},  {3, 7},    {2, 3, 5}, {2, 1, 3, 2}, {0},         {1, 9},
                                  {13}, {2, 2, 3}, {0, 3},    {64},         {1, 2, 3, 4}};
    const char *names[N] = {"u8",  "f16", "f32",   "bool",  "f64.scalar",    "bf16",
                            "i32", "i64", "empty", "u8.64", "layer.0.weight"};
    attn_tensor ts[N];
    void *bufs[N];
    for (int i = 0; i < N; i++) {
        ts[i] = attn_tensor_make(NULL, dts[i], nds[i], shapes[i]);
        size_t bytes = (size_t)attn_tensor_numel(&ts[i]) * attn_dtype_size(dts[i]);
        unsigned char *b = bufs[i] = bytes ? malloc(bytes) : NULL;
        for (size_t k = 0; k < bytes; k++)
            b[k] = (unsigned char)rnd();
        if (dts[i] == ATTN_BOOL)
            for (size_t k = 0; k < bytes; k++)
                b[k] &= 1;
        ts[i].data = b; /* "empty" keeps data == NULL: allowed with no elements */
    }
    const char *meta[] = {"format", "pt", "note", "round trip \xc3\xa9"};
    const char *path = tmp_path("rt.safetensors");
    assert_int_equal(attn_safetensors_write_meta(ctx, path, N, names, ts, 2, meta), ATTN_OK);
    assert_int_equal(dir_entries(), 1);

    /* header length makes the data section start 8-byte aligned */
    size_t flen;
    unsigned char *raw = read_all(path, &flen);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | raw[i];
    assert_int_equal((8 + hlen) % 8, 0);
    assert_int_equal(raw[8], '{');

    for (int pass = 0; pass < 2; pass++) {
        attn_safetensors *st = NULL;
        assert_int_equal(pass ? attn_safetensors_open_memory(ctx, raw, flen, &st)
                              : attn_safetensors_open(ctx, path, &st),
                         ATTN_OK);
        assert_int_equal(attn_safetensors_count(st), N);
        /* data order: largest element size first, then the given order */
        const char *order[N] = {"f64.scalar", "i64",  "f32", "i32",  "empty", "layer.0.weight",
                                "f16",        "bf16", "u8",  "bool", "u8.64"};
        for (int i = 0; i < N; i++) {
            assert_string_equal(attn_safetensors_name(st, i), order[i]);
            assert_int_equal(attn_safetensors_find(st, order[i]), i);
        }
        assert_null(attn_safetensors_name(st, N));
        assert_int_equal(attn_safetensors_find(st, "nope"), -1);
        for (int i = 0; i < N; i++) {
            attn_tensor v;
            assert_int_equal(attn_safetensors_get(ctx, st, names[i], &v), ATTN_OK);
            assert_int_equal(v.dtype, dts[i]);
            assert_int_equal(v.ndim, nds[i]);
            for (int d = 0; d < nds[i]; d++)
                assert_int_equal(v.shape[d], shapes[i][d]);
            size_t bytes = (size_t)attn_tensor_numel(&v) * attn_dtype_size(v.dtype);
            assert_int_equal(((uintptr_t)v.data) % (bytes >= 64 ? 64 : 8), 0);
            if (bytes) assert_memory_equal(v.data, bufs[i], bytes);
            assert_string_equal(
                attn_safetensors_dtype_name(st, attn_safetensors_find(st, names[i])),
                attn_dtype_name(dts[i]));
        }
        assert_string_equal(attn_safetensors_metadata(st, "format"), "pt");
        assert_string_equal(attn_safetensors_metadata(st, "note"), "round trip \xc3\xa9");
        assert_null(attn_safetensors_metadata(st, "absent"));
        attn_safetensors_close(st);
    }
    free(raw);
    for (int i = 0; i < N; i++)
        free(bufs[i]);

    /* an empty file set: header "{}" padded, no data */
    assert_int_equal(attn_safetensors_write(ctx, path, 0, NULL, NULL), ATTN_OK);
    attn_safetensors *st = NULL;
    assert_int_equal(attn_safetensors_open(ctx, path, &st), ATTN_OK);
    assert_int_equal(attn_safetensors_count(st), 0);
    assert_null(attn_safetensors_metadata(st, "format"));
    attn_safetensors_close(st);
    attn_safetensors_close(NULL);
    clear_dir();
    attn_ctx_free(ctx);
}

/* Strided, permuted, broadcast, reversed and non-unit-last-stride views are
 * written as their logical contiguous contents. */
static void test_roundtrip_strided(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    float base[2 * 3 * 4 * 5];
    for (int i = 0; i < 120; i++)
        base[i] = (float)i * 0.5f - 7.0f;
    /* base as [B=2,T=3,H=4,D=5]; the view is [B,H,T,D] */
    attn_tensor perm = attn_tensor_f32_4d(base, 2, 4, 3, 5);
    perm.stride[0] = 60, perm.stride[1] = 5, perm.stride[2] = 20, perm.stride[3] = 1;
    /* one row broadcast over 3 rows */
    attn_tensor bc = attn_tensor_make(base + 10, ATTN_F32, 2, (int64_t[]){3, 5});
    bc.stride[0] = 0;
    /* rows in reverse order and every second element */
    attn_tensor rev = attn_tensor_make(base + 110, ATTN_F32, 2, (int64_t[]){4, 5});
    rev.stride[0] = -10, rev.stride[1] = 2;
    double d64[6] = {1, -2, 3.5, 1e300, -0.0, 7};
    attn_tensor col = attn_tensor_make(d64, ATTN_F64, 1, (int64_t[]){3});
    col.stride[0] = 2;
    const char *names[] = {"perm", "bc", "rev", "col"};
    attn_tensor ts[] = {perm, bc, rev, col};
    const char *path = tmp_path("strided.safetensors");
    assert_int_equal(attn_safetensors_write(ctx, path, 4, names, ts), ATTN_OK);
    attn_safetensors *st;
    assert_int_equal(attn_safetensors_open(ctx, path, &st), ATTN_OK);
    attn_tensor v;
    assert_int_equal(attn_safetensors_get(ctx, st, "perm", &v), ATTN_OK);
    const float *p = v.data;
    for (int b = 0; b < 2; b++)
        for (int h = 0; h < 4; h++)
            for (int t = 0; t < 3; t++)
                for (int d = 0; d < 5; d++)
                    assert_true(p[((b * 4 + h) * 3 + t) * 5 + d] ==
                                base[((b * 3 + t) * 4 + h) * 5 + d]);
    assert_int_equal(attn_safetensors_get(ctx, st, "bc", &v), ATTN_OK);
    for (int r = 0; r < 3; r++)
        for (int d = 0; d < 5; d++)
            assert_true(((float *)v.data)[r * 5 + d] == base[10 + d]);
    assert_int_equal(attn_safetensors_get(ctx, st, "rev", &v), ATTN_OK);
    for (int r = 0; r < 4; r++)
        for (int d = 0; d < 5; d++)
            assert_true(((float *)v.data)[r * 5 + d] == base[110 - 10 * r + 2 * d]);
    assert_int_equal(attn_safetensors_get(ctx, st, "col", &v), ATTN_OK);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(&((double *)v.data)[i], &d64[2 * i], 8);
    attn_safetensors_close(st);
    clear_dir();
    attn_ctx_free(ctx);
}

/* Tensors larger than the writer's 1 MiB staging buffer, contiguous (one
 * row split across flushes) and strided (element by element). */
static void test_roundtrip_large(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    int64_t n = 700001; /* odd, so the two tensors end off any power of two */
    float *a = malloc((size_t)(2 * n) * sizeof *a);
    for (int64_t i = 0; i < 2 * n; i++)
        a[i] = (float)i;
    attn_tensor row = attn_tensor_make(a, ATTN_F32, 1, (int64_t[]){2 * n});
    attn_tensor every2 = attn_tensor_make(a + 1, ATTN_F32, 2, (int64_t[]){1, n});
    every2.stride[1] = 2;
    const char *names[] = {"row", "odd"};
    attn_tensor ts[] = {row, every2};
    const char *path = tmp_path("large.safetensors");
    assert_int_equal(attn_safetensors_write(ctx, path, 2, names, ts), ATTN_OK);
    attn_safetensors *st;
    assert_int_equal(attn_safetensors_open(ctx, path, &st), ATTN_OK);
    attn_tensor v;
    assert_int_equal(attn_safetensors_get(ctx, st, "row", &v), ATTN_OK);
    assert_memory_equal(v.data, a, (size_t)(2 * n) * sizeof *a);
    assert_int_equal(attn_safetensors_get(ctx, st, "odd", &v), ATTN_OK);
    for (int64_t i = 0; i < n; i++)
        if (((float *)v.data)[i] != (float)(2 * i + 1))
            fail_msg("odd[%lld] = %g, want %g", (long long)i, ((float *)v.data)[i],
                     (double)(2 * i + 1));
    attn_safetensors_close(st);
    free(a);
    clear_dir();
    attn_ctx_free(ctx);
}

/* ---- float conversion -------------------------------------------------------- */

static void test_get_f32_conversions(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    const uint16_t f16[] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x8400, 0x7c00,
                            0xfc00, 0x0000, 0x8000, 0x3555, 0x03ff};
    const float f16_want[] = {1.0f,      -2.0f, 65504.0f, 0x1p-24f,    -0x1p-14f,   INFINITY,
                              -INFINITY, 0.0f,  -0.0f,    0x1.554p-2f, 0x1.ff8p-15f};
    const uint16_t bf16[] = {0x3f80, 0xc2f7, 0x7f80, 0x0001};
    const float bf16_want[] = {1.0f, -123.5f, INFINITY, 0x1p-133f};
    const double f64[] = {1.0 / 3.0, -1e-50, 1e40, 2.5};
    const float f32[] = {NAN, 1.5f};
    const int32_t i32[] = {1, 2};
    const uint16_t nan16[] = {0x7e00};
    const char *names[] = {"f16", "bf16", "f64", "f32", "i32", "nan16"};
    attn_tensor ts[] = {
        attn_tensor_make((void *)f16, ATTN_F16, 1, (int64_t[]){11}),
        attn_tensor_make((void *)bf16, ATTN_BF16, 2, (int64_t[]){2, 2}),
        attn_tensor_make((void *)f64, ATTN_F64, 1, (int64_t[]){4}),
        attn_tensor_make((void *)f32, ATTN_F32, 1, (int64_t[]){2}),
        attn_tensor_make((void *)i32, ATTN_I32, 1, (int64_t[]){2}),
        attn_tensor_make((void *)nan16, ATTN_F16, 1, (int64_t[]){1}),
    };
    const char *path = tmp_path("conv.safetensors");
    assert_int_equal(attn_safetensors_write(ctx, path, 6, names, ts), ATTN_OK);
    attn_safetensors *st;
    assert_int_equal(attn_safetensors_open(ctx, path, &st), ATTN_OK);
    float *f;
    attn_tensor v;
    assert_int_equal(attn_safetensors_get_f32(ctx, st, "f16", &f, &v), ATTN_OK);
    assert_int_equal(v.dtype, ATTN_F32);
    assert_ptr_equal(v.data, f);
    assert_int_equal(((uintptr_t)f) % 64, 0);
    for (int i = 0; i < 11; i++) {
        if (memcmp(&f[i], &f16_want[i], 4)) fail_msg("f16[%d] = %a, want %a", i, f[i], f16_want[i]);
    }
    attn_buffer_free(f);
    assert_int_equal(attn_safetensors_get_f32(ctx, st, "bf16", &f, &v), ATTN_OK);
    assert_int_equal(v.ndim, 2);
    for (int i = 0; i < 4; i++)
        assert_true(f[i] == bf16_want[i]);
    attn_buffer_free(f);
    assert_int_equal(attn_safetensors_get_f32(ctx, st, "f64", &f, &v), ATTN_OK);
    for (int i = 0; i < 4; i++)
        assert_true(f[i] == (float)f64[i]);
    attn_buffer_free(f);
    assert_int_equal(attn_safetensors_get_f32(ctx, st, "f32", &f, &v), ATTN_OK);
    assert_true(isnan(f[0]) && f[1] == 1.5f);
    attn_buffer_free(f);
    assert_int_equal(attn_safetensors_get_f32(ctx, st, "nan16", &f, &v), ATTN_OK);
    assert_true(isnan(f[0]));
    attn_buffer_free(f);
    f = (float *)1;
    assert_int_equal(attn_safetensors_get_f32(ctx, st, "i32", &f, &v), ATTN_E_DTYPE);
    assert_null(f);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "'i32'"));
    assert_int_equal(attn_safetensors_get_f32(ctx, st, "missing", &f, &v), ATTN_E_NOTFOUND);
    attn_buffer_free(NULL);
    attn_safetensors_close(st);
    clear_dir();
    attn_ctx_free(ctx);
}

/* A file written by the reference implementation (safetensors.torch; see
 * tests/fixtures/make_safetensors_py.py) reads back with exactly its values. */
static void test_torch_file(void **state) {
    (void)state;
    const char *data = getenv("ATTN_TEST_DATA");
    assert_non_null(data);
    char path[512];
    snprintf(path, sizeof path, "%s/safetensors_py/torch.safetensors", data);
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    attn_safetensors *st;
    if (attn_safetensors_open(ctx, path, &st)) fail_msg("%s", attn_ctx_last_error(ctx));
    assert_int_equal(attn_safetensors_count(st), 11);
    assert_string_equal(attn_safetensors_metadata(st, "format"), "pt");
    assert_string_equal(attn_safetensors_metadata(st, "origin"), "safetensors.torch");
    attn_tensor v;
    float *f;
    assert_int_equal(attn_safetensors_get(ctx, st, "f32", &v), ATTN_OK);
    assert_true(v.ndim == 3 && v.shape[0] == 2 && v.shape[1] == 3 && v.shape[2] == 4);
    for (int i = 0; i < 24; i++)
        assert_true(((float *)v.data)[i] == (float)i * 0.5f - 3.0f);
    assert_int_equal(attn_safetensors_get(ctx, st, "f64", &v), ATTN_OK);
    for (int i = 0; i < 5; i++)
        assert_true(((double *)v.data)[i] == (double)i / 3.0);
    assert_int_equal(attn_safetensors_get_f32(ctx, st, "f16", &f, &v), ATTN_OK);
    const float f16[6] = {1.0f, -2.0f, 65504.0f, 0x1p-24f, INFINITY, -0.0f};
    assert_memory_equal(f, f16, sizeof f16);
    attn_buffer_free(f);
    assert_int_equal(attn_safetensors_get_f32(ctx, st, "bf16", &f, &v), ATTN_OK);
    const float bf16[4] = {1.0f, -123.5f, 0x1p100f, 0x1p-130f};
    assert_true(v.ndim == 2 && v.shape[0] == 2 && v.shape[1] == 2);
    assert_memory_equal(f, bf16, sizeof bf16);
    attn_buffer_free(f);
    assert_int_equal(attn_safetensors_get(ctx, st, "i32", &v), ATTN_OK);
    for (int i = 0; i < 7; i++)
        assert_int_equal(((int32_t *)v.data)[i], i - 3);
    assert_int_equal(attn_safetensors_get(ctx, st, "i64", &v), ATTN_OK);
    const int64_t i64[3] = {-(1LL << 40), 0, (1LL << 40) + 7};
    assert_memory_equal(v.data, i64, sizeof i64);
    assert_int_equal(attn_safetensors_get(ctx, st, "u8", &v), ATTN_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(((uint8_t *)v.data)[i], 250 + i);
    assert_int_equal(attn_safetensors_get(ctx, st, "bool", &v), ATTN_OK);
    assert_int_equal(v.dtype, ATTN_BOOL);
    const uint8_t b[3] = {1, 0, 1};
    assert_memory_equal(v.data, b, 3);
    assert_int_equal(attn_safetensors_get(ctx, st, "scalar", &v), ATTN_OK);
    assert_true(v.ndim == 0 && attn_tensor_numel(&v) == 1 && *(float *)v.data == 3.5f);
    assert_int_equal(attn_safetensors_get(ctx, st, "empty", &v), ATTN_OK);
    assert_true(v.ndim == 2 && v.shape[0] == 0 && v.shape[1] == 3);
    assert_int_equal(attn_safetensors_get(ctx, st, "layer.0.weight", &v), ATTN_OK);
    assert_true(v.ndim == 4 && v.shape[3] == 3);
    for (int i = 0; i < 6; i++)
        assert_true(((float *)v.data)[i] == (float)i);
    attn_safetensors_close(st);
    attn_ctx_free(ctx);
}

/* ---- reader errors ----------------------------------------------------------- */

/* A file image from a header string and n data bytes (valued 1..n). */
static unsigned char *image(const char *hdr, size_t ndata, size_t *len) {
    size_t h = strlen(hdr);
    unsigned char *b = malloc(8 + h + ndata);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, hdr, h);
    for (size_t i = 0; i < ndata; i++)
        b[8 + h + i] = (unsigned char)(i + 1);
    *len = 8 + h + ndata;
    return b;
}

static void test_get_errors(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    size_t len;
    /* valid files holding a 5-dim tensor and a dtype attn does not serve;
     * offsets deliberately misaligned (an F32 at byte 1) */
    unsigned char *b =
        image("{\"five\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]},"
              "\"i8\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[5,7]},"
              "\"f\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1,5]}}  ",
              7, &len);
    attn_safetensors *st;
    assert_int_equal(attn_safetensors_open_memory(ctx, b, len, &st), ATTN_OK);
    free(b);
    assert_int_equal(attn_safetensors_count(st), 3);
    assert_int_equal(attn_safetensors_ndim(st, attn_safetensors_find(st, "five")), 5);
    attn_tensor v;
    assert_int_equal(attn_safetensors_get(ctx, st, "five", &v), ATTN_E_UNSUPPORTED);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "'five'"));
    assert_int_equal(attn_safetensors_get(ctx, st, "i8", &v), ATTN_E_DTYPE);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "I8"));
    assert_int_equal(attn_safetensors_get(ctx, st, "f", &v), ATTN_OK);
    assert_int_equal(((uintptr_t)v.data) % 8, 0);
    const unsigned char want[4] = {2, 3, 4, 5};
    assert_memory_equal(v.data, want, 4);
    assert_int_equal(attn_safetensors_get(ctx, st, "q", &v), ATTN_E_NOTFOUND);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "'q'"));
    assert_non_null(strstr(attn_ctx_last_error(ctx), "<memory>"));
    assert_int_equal(attn_safetensors_get(ctx, st, NULL, &v), ATTN_E_ARG);
    attn_safetensors_close(st);

    /* BOOL bytes 1, 2, 3 in the file all read as true (1) */
    b = image("{\"b\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}", 3, &len);
    assert_int_equal(attn_safetensors_open_memory(ctx, b, len, &st), ATTN_OK);
    free(b);
    assert_int_equal(attn_safetensors_get(ctx, st, "b", &v), ATTN_OK);
    const unsigned char ones[3] = {1, 1, 1};
    assert_memory_equal(v.data, ones, 3);
    attn_safetensors_close(st);

    st = (attn_safetensors *)1;
    assert_int_equal(attn_safetensors_open(ctx, tmp_path("does-not-exist"), &st), ATTN_E_IO);
    assert_null(st);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "does-not-exist"));
    assert_int_equal(attn_safetensors_open(ctx, tmpdir, &st), ATTN_E_IO);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "not a regular file"));
    const char *fifo = tmp_path("fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(attn_safetensors_open(ctx, fifo, &st), ATTN_E_IO); /* and does not hang */
    assert_non_null(strstr(attn_ctx_last_error(ctx), "not a regular file"));
    unlink(fifo);
    /* an empty tensor whose other dims overflow when multiplied: refused
     * (its view's strides would overflow int64; the fuzzer found it) */
    b = image("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,1099511627776,1099511627776,4],"
              "\"data_offsets\":[0,0]}}",
              0, &len);
    assert_int_equal(attn_safetensors_open_memory(ctx, b, len, &st), ATTN_E_FORMAT);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "shape product overflows"));
    free(b);
    /* large but representable empty tensors still load */
    b = image("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,1048576,1048576,4],"
              "\"data_offsets\":[0,0]}}",
              0, &len);
    assert_int_equal(attn_safetensors_open_memory(ctx, b, len, &st), ATTN_OK);
    assert_int_equal(attn_safetensors_get(ctx, st, "z", &v), ATTN_OK);
    assert_int_equal(attn_tensor_numel(&v), 0);
    attn_safetensors_close(st);
    free(b);
    assert_int_equal(attn_safetensors_open(ctx, NULL, &st), ATTN_E_ARG);
    assert_int_equal(attn_safetensors_open(ctx, tmpdir, NULL), ATTN_E_ARG);
    assert_int_equal(attn_safetensors_open_memory(ctx, NULL, 4, &st), ATTN_E_ARG);
    attn_ctx_free(ctx);
}

/* Every committed corrupt file fails with ATTN_E_FORMAT and says why. */
static const struct {
    const char *file, *says;
} bad_files[] = {
    {"empty", "shorter than the 8-byte header length"},
    {"short_length", "shorter than the 8-byte header length"},
    {"header_past_end", "runs past the end of the file"},
    {"header_huge", "over the 104857600-byte limit"},
    {"header_zero", "not valid JSON"},
    {"not_json", "not valid JSON"},
    {"trailing_garbage", "not valid JSON"},
    {"nul_in_header", "not valid JSON"},
    {"not_object", "not a JSON object"},
    {"entry_not_object", "tensor 'a': entry is not a JSON object"},
    {"missing_dtype", "tensor 'a': missing \"dtype\""},
    {"missing_shape", "tensor 'a': missing \"shape\""},
    {"missing_offsets", "tensor 'a': missing \"data_offsets\""},
    {"unknown_dtype", "tensor 'a': unknown dtype \"F33\""},
    {"dtype_not_string", "tensor 'a': dtype is not a string"},
    {"shape_negative", "tensor 'a': shape[0] is not a non-negative integer"},
    {"shape_float", "tensor 'a': shape[0] is not a non-negative integer"},
    {"shape_not_array", "tensor 'a': shape is not an array"},
    {"shape_overflow", "tensor 'a': shape product overflows"},
    {"offsets_reversed", "tensor 'a': data_offsets [4, 0] need 0 <= begin <= end"},
    {"offsets_three", "tensor 'a': data_offsets is not [begin, end]"},
    {"offsets_negative", "tensor 'a': data_offsets [-4, -4] need 0 <= begin <= end"},
    {"offsets_beyond_data", "tensor 'a': data_offsets end 16 is beyond the data section (8 bytes)"},
    {"size_mismatch", "tensor 'a': data_offsets span 8 bytes but shape and dtype F32 need 12"},
    {"overlap", "tensor 'b' (bytes 4..12) overlaps tensor 'a'"},
    {"hole", "4 unused bytes before tensor 'b'"},
    {"trailing_data", "4 bytes at the end of the data section belong to no tensor"},
    {"duplicate_name", "duplicate object key"},
    {"empty_name", "a tensor has an empty name"},
    {"metadata_not_object", "__metadata__ is not a JSON object"},
    {"metadata_not_string", "__metadata__ value of 'k' is not a string"},
    {"truncated_data", "tensor 'a': data_offsets end 16 is beyond the data section (10 bytes)"},
};
#define NBAD (sizeof bad_files / sizeof bad_files[0])

/* Files of other formats say what they look like, not a header length. */
static void test_other_formats(void **state) {
    (void)state;
    static const struct {
        const char *bytes;
        size_t n;
        const char *says;
    } files[] = {
        {"PK\x03\x04\x14\x00\x00\x00\x08\x00"
         "archive/data.pkl",
         26, "not a safetensors file (looks like a PyTorch zip checkpoint"},
        {"\x80\x02\x8a\x0a"
         "lz\xfc\x9c"
         "F\xf9 j\xa8",
         14,
         "not a safetensors file (looks like a "
         "Python pickle"},
        {"\x93NUMPY\x01\x00v\x00{'descr': '<f4'", 26, "looks like a NumPy .npy file"},
        {"q,k,v\n1.0,2.0,3.0\n", 18, "not a safetensors file (looks like text)"},
        {"hello", 5, "not a safetensors file (looks like text)"},
    };
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        attn_safetensors *st = NULL;
        attn_status s = attn_safetensors_open_memory(ctx, files[i].bytes, files[i].n, &st);
        const char *msg = attn_ctx_last_error(ctx);
        if (s != ATTN_E_FORMAT || !strstr(msg, files[i].says))
            fail_msg("file %zu: status %d, message \"%s\"; want \"%s\"", i, s, msg, files[i].says);
        assert_null(st);
    }
    attn_ctx_free(ctx);
}

/* attn_safetensors_open_header + attn_safetensors_read: the same header
 * checks as a full open (the bad corpus), no data in views, ranges of every
 * dtype equal to the full read's (converted like get_f32), and the errors:
 * a range outside the tensor, as_f32 on integers, a file cut after opening. */
static void test_header_only(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    float f32[3 * 5 * 7];
    uint16_t f16[40], bf16[40];
    double f64[40];
    int64_t i64[6];
    unsigned char b8[9];
    for (int i = 0; i < 105; i++)
        f32[i] = (float)i * 0.25f - 3.0f;
    for (int i = 0; i < 40; i++) {
        f16[i] = (uint16_t)(0x3c00 + 37 * i);
        bf16[i] = (uint16_t)(0xc000 + 91 * i);
        f64[i] = 1.0 / (i + 1);
    }
    for (int i = 0; i < 6; i++)
        i64[i] = (int64_t)i * 1000000007LL;
    for (int i = 0; i < 9; i++)
        b8[i] = (unsigned char)(i % 3 ? i * 40 : 0); /* BOOL bytes other than 0 read as 1 */
    const char *names[] = {"f32", "f16", "bf16", "f64", "i64", "bool"};
    attn_tensor ts[] = {
        attn_tensor_make(f32, ATTN_F32, 3, (int64_t[]){3, 5, 7}),
        attn_tensor_make(f16, ATTN_F16, 2, (int64_t[]){8, 5}),
        attn_tensor_make(bf16, ATTN_BF16, 1, (int64_t[]){40}),
        attn_tensor_make(f64, ATTN_F64, 2, (int64_t[]){4, 10}),
        attn_tensor_make(i64, ATTN_I64, 1, (int64_t[]){6}),
        attn_tensor_make(b8, ATTN_BOOL, 2, (int64_t[]){3, 3}),
    };
    const char *path = tmp_path("lazy.safetensors");
    assert_int_equal(attn_safetensors_write(ctx, path, 6, names, ts), ATTN_OK);
    attn_safetensors *full, *lazy;
    assert_int_equal(attn_safetensors_open(ctx, path, &full), ATTN_OK);
    assert_int_equal(attn_safetensors_open_header(ctx, path, &lazy), ATTN_OK);
    assert_int_equal(attn_safetensors_count(lazy), 6);
    for (int t = 0; t < 6; t++) {
        attn_tensor a, b;
        assert_int_equal(attn_safetensors_get(ctx, full, names[t], &a), ATTN_OK);
        assert_int_equal(attn_safetensors_get(ctx, lazy, names[t], &b), ATTN_OK);
        assert_null(b.data);
        assert_int_equal(a.ndim, b.ndim);
        assert_int_equal(a.dtype, b.dtype);
        for (int d = 0; d < a.ndim; d++)
            assert_int_equal(a.shape[d], b.shape[d]);
        int64_t n = attn_tensor_numel(&a);
        size_t es = attn_dtype_size(a.dtype);
        int fl = a.dtype != ATTN_I64 && a.dtype != ATTN_BOOL;
        float *conv = NULL;
        attn_tensor cv;
        if (fl)
            assert_int_equal(attn_safetensors_get_f32(ctx, full, names[t], &conv, &cv), ATTN_OK);
        /* every range [first, first + len) of a few lengths, both handles */
        for (int64_t first = 0; first <= n; first += 3)
            for (int64_t len = 0; first + len <= n; len += 4) {
                unsigned char raw[1024], raw2[1024];
                float f[256], f2[256];
                assert_int_equal(attn_safetensors_read(ctx, lazy, names[t], first, len, 0, raw),
                                 ATTN_OK);
                assert_int_equal(attn_safetensors_read(ctx, full, names[t], first, len, 0, raw2),
                                 ATTN_OK);
                assert_memory_equal(raw, (const unsigned char *)a.data + first * (int64_t)es,
                                    (size_t)len * es);
                assert_memory_equal(raw, raw2, (size_t)len * es);
                if (!fl) continue;
                assert_int_equal(attn_safetensors_read(ctx, lazy, names[t], first, len, 1, f),
                                 ATTN_OK);
                assert_int_equal(attn_safetensors_read(ctx, full, names[t], first, len, 1, f2),
                                 ATTN_OK);
                assert_memory_equal(f, conv + first, (size_t)len * 4);
                assert_memory_equal(f2, conv + first, (size_t)len * 4);
            }
        attn_buffer_free(conv);
        /* ranges outside the tensor */
        unsigned char buf[8];
        assert_int_equal(attn_safetensors_read(ctx, lazy, names[t], n, 1, 0, buf), ATTN_E_ARG);
        assert_non_null(strstr(attn_ctx_last_error(ctx), names[t]));
        assert_int_equal(attn_safetensors_read(ctx, lazy, names[t], -1, 1, 0, buf), ATTN_E_ARG);
        assert_int_equal(attn_safetensors_read(ctx, lazy, names[t], 0, -1, 0, buf), ATTN_E_ARG);
        assert_int_equal(attn_safetensors_read(ctx, lazy, names[t], 1, INT64_MAX, 0, buf),
                         ATTN_E_ARG);
    }
    float f[8];
    int64_t bools[2];
    assert_int_equal(attn_safetensors_read(ctx, lazy, "i64", 0, 2, 1, f), ATTN_E_DTYPE);
    assert_int_equal(attn_safetensors_read(ctx, lazy, "bool", 0, 2, 1, f), ATTN_E_DTYPE);
    assert_int_equal(attn_safetensors_read(ctx, lazy, "none", 0, 1, 0, bools), ATTN_E_NOTFOUND);
    assert_int_equal(attn_safetensors_read(ctx, lazy, "f32", 0, 1, 0, NULL), ATTN_E_ARG);
    float *g = (float *)1;
    attn_tensor gv;
    assert_int_equal(attn_safetensors_get_f32(ctx, lazy, "f32", &g, &gv), ATTN_E_ARG);
    assert_null(g);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "header-only"));
    /* the file shrinks after the open: a read past its end is ATTN_E_IO */
    assert_int_equal(truncate(path, 200), 0);
    assert_int_equal(attn_safetensors_read(ctx, lazy, "bool", 0, 9, 0, b8), ATTN_E_IO);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "'bool'"));
    attn_safetensors_close(lazy);
    attn_safetensors_close(full);
    /* a bad header fails as the full open fails, and nothing is open */
    const char *data = getenv("ATTN_TEST_DATA");
    assert_non_null(data);
    char bad[1024];
    for (size_t i = 0; i < NBAD; i++) {
        snprintf(bad, sizeof bad, "%s/safetensors_bad/%s.safetensors", data, bad_files[i].file);
        attn_safetensors *st = (attn_safetensors *)1;
        attn_status s1 = attn_safetensors_open_header(ctx, bad, &st);
        if (s1 != ATTN_E_FORMAT || !strstr(attn_ctx_last_error(ctx), bad_files[i].says))
            fail_msg("%s: header-only open gave %d \"%s\"", bad_files[i].file, s1,
                     attn_ctx_last_error(ctx));
        assert_null(st);
    }
    attn_safetensors *st = NULL;
    assert_int_equal(attn_safetensors_open_header(ctx, tmp_path("none"), &st), ATTN_E_IO);
    assert_int_equal(attn_safetensors_open_header(ctx, tmpdir, &st), ATTN_E_IO);
    assert_int_equal(attn_safetensors_open_header(ctx, NULL, &st), ATTN_E_ARG);
    clear_dir();
    attn_ctx_free(ctx);
}

static void test_bad_corpus(void **state) {
    (void)state;
    const char *data = getenv("ATTN_TEST_DATA");
    assert_non_null(data);
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/safetensors_bad", data);
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    for (size_t i = 0; i < NBAD; i++) {
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, bad_files[i].file);
        attn_safetensors *st = NULL;
        attn_status s = attn_safetensors_open(ctx, path, &st);
        const char *msg = attn_ctx_last_error(ctx);
        if (s != ATTN_E_FORMAT || !strstr(msg, bad_files[i].says) || !strstr(msg, path))
            fail_msg("%s: status %d, message \"%s\"; want ATTN_E_FORMAT and \"%s\"",
                     bad_files[i].file, s, msg, bad_files[i].says);
        assert_null(st);
        size_t len;
        unsigned char *b = read_all(path, &len);
        assert_int_equal(fuzz_safetensors_one(b, len), ATTN_E_FORMAT);
        free(b);
    }
    /* every file in the corpus is listed above, so none goes unchecked */
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    size_t seen = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int known = 0;
        for (size_t i = 0; i < NBAD; i++) {
            snprintf(path, sizeof path, "%s.safetensors", bad_files[i].file);
            known |= !strcmp(path, e->d_name);
        }
        if (!known) fail_msg("%s/%s has no expected message in this test", dir, e->d_name);
        seen++;
    }
    closedir(d);
    assert_int_equal(seen, NBAD);
    attn_ctx_free(ctx);
}

/* A file that opens, written back with the writer, opens again with the same
 * tensors (names, dtypes, shapes, bytes). */
static void rewrite_same(attn_ctx *ctx, const unsigned char *buf, size_t len, uint64_t seed,
                         int it) {
    attn_safetensors *a, *b;
    assert_int_equal(attn_safetensors_open_memory(ctx, buf, len, &a), ATTN_OK);
    int n = attn_safetensors_count(a), m = 0;
    const char **names = calloc((size_t)n + 1, sizeof *names);
    attn_tensor *ts = calloc((size_t)n + 1, sizeof *ts);
    for (int i = 0; i < n; i++) {
        names[m] = attn_safetensors_name(a, i);
        if (attn_safetensors_get(ctx, a, names[m], &ts[m]) == ATTN_OK) m++;
    }
    const char *path = tmp_path("rewrite.safetensors");
    if (attn_safetensors_write(ctx, path, m, names, ts) || attn_safetensors_open(ctx, path, &b))
        fail_msg("seed %llu iteration %d: rewrite failed: %s", (unsigned long long)seed, it,
                 attn_ctx_last_error(ctx));
    assert_int_equal(attn_safetensors_count(b), m);
    for (int i = 0; i < m; i++) {
        attn_tensor v;
        assert_int_equal(attn_safetensors_get(ctx, b, names[i], &v), ATTN_OK);
        size_t bytes = (size_t)attn_tensor_numel(&v) * attn_dtype_size(v.dtype);
        if (v.dtype != ts[i].dtype || v.ndim != ts[i].ndim ||
            memcmp(v.shape, ts[i].shape, sizeof v.shape) ||
            (bytes && memcmp(v.data, ts[i].data, bytes)))
            fail_msg("seed %llu iteration %d: tensor '%s' changed on rewrite",
                     (unsigned long long)seed, it, names[i]);
    }
    attn_safetensors_close(b);
    attn_safetensors_close(a);
    free(names);
    free(ts);
}

/* Seeded mutations of a valid file: no crash or sanitizer report ever, and
 * the status is known where the mutation decides it. */
static void test_mutations(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    float f[12];
    uint16_t h[6];
    int64_t l[2] = {-1, 1LL << 40};
    unsigned char m[5] = {1, 0, 1, 1, 0};
    for (int i = 0; i < 12; i++)
        f[i] = (float)i - 3.25f;
    for (int i = 0; i < 6; i++)
        h[i] = (uint16_t)(0x3c00 + 77 * i);
    const char *names[] = {"q", "k.half", "len", "mask"};
    attn_tensor ts[] = {attn_tensor_f32_4d(f, 1, 2, 3, 2),
                        attn_tensor_make(h, ATTN_BF16, 2, (int64_t[]){2, 3}),
                        attn_tensor_make(l, ATTN_I64, 1, (int64_t[]){2}),
                        attn_tensor_make(m, ATTN_BOOL, 2, (int64_t[]){1, 5})};
    const char *meta[] = {"format", "pt"};
    const char *path = tmp_path("valid.safetensors");
    assert_int_equal(attn_safetensors_write_meta(ctx, path, 4, names, ts, 1, meta), ATTN_OK);
    size_t len;
    unsigned char *valid = read_all(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | valid[i];
    size_t dstart = 8 + (size_t)hlen;
    unsigned char *buf = malloc(len + 64);
    uint64_t seed = 20240601;
    const char *env = getenv("ATTN_TEST_SEED");
    if (env) seed = strtoull(env, NULL, 10);
    rng_state = seed;
    int iters = quick() ? 400 : 4000, nok = 0, nfmt = 0;
    print_message("mutations: seed %llu, %d iterations (ATTN_TEST_SEED to change)\n",
                  (unsigned long long)seed, iters);
    for (int it = 0; it < iters; it++) {
        memcpy(buf, valid, len);
        size_t n = len;
        int kind = (int)(rnd() % 5), want = -1; /* -1: either OK or FORMAT */
        switch (kind) {
        case 0: /* data bytes only: still a valid file */
            for (int r = 1 + (int)(rnd() % 4); r > 0; r--)
                buf[dstart + rnd() % (len - dstart)] = (unsigned char)rnd();
            want = ATTN_OK;
            break;
        case 1: /* cut anywhere: the tensors no longer tile the rest */
            n = (size_t)(rnd() % len);
            want = ATTN_E_FORMAT;
            break;
        case 2: { /* another header length */
            uint64_t nl = rnd() % 4 == 0 ? rnd() : hlen + 1 + rnd() % 64;
            if (rnd() % 2 && hlen > 0) nl = rnd() % hlen;
            for (int i = 0; i < 8; i++)
                buf[i] = (unsigned char)(nl >> (8 * i));
            want = ATTN_E_FORMAT;
            break;
        }
        case 3: /* bytes appended: they belong to no tensor */
            for (int r = 1 + (int)(rnd() % 16); r > 0; r--)
                buf[n++] = (unsigned char)rnd();
            want = ATTN_E_FORMAT;
            break;
        default: { /* header bytes: anything may happen, nothing may crash */
            static const char pick[] = "{}[]\",:0123456789-eE. \\u\x00\xff";
            for (int r = 1 + (int)(rnd() % 3); r > 0; r--)
                buf[8 + rnd() % hlen] = rnd() % 2 ? (unsigned char)pick[rnd() % (sizeof pick - 1)]
                                                  : (unsigned char)rnd();
            break;
        }
        }
        attn_status s = fuzz_safetensors_one(buf, n);
        if ((want != -1 && (int)s != want) || (s != ATTN_OK && s != ATTN_E_FORMAT))
            fail_msg("seed %llu iteration %d (mutation kind %d): status %d, want %d",
                     (unsigned long long)seed, it, kind, s, want);
        if (s == ATTN_OK && nok % 8 == 0) rewrite_same(ctx, buf, n, seed, it);
        nok += s == ATTN_OK;
        nfmt += s == ATTN_E_FORMAT;
    }
    print_message("mutations: %d opened, %d rejected as corrupt\n", nok, nfmt);
    assert_true(nok > 0 && nfmt > 0);
    free(buf);
    free(valid);
    clear_dir();
    attn_ctx_free(ctx);
}

/* ---- writer errors ----------------------------------------------------------- */

static void expect_write_fail(attn_ctx *ctx, const char *path, int n, const char **names,
                              const attn_tensor *ts, attn_status want, const char *says) {
    attn_status s = attn_safetensors_write(ctx, path, n, names, ts);
    if (s != want || !strstr(attn_ctx_last_error(ctx), says))
        fail_msg("write to %s: status %d \"%s\", want %d \"%s\"", path, s, attn_ctx_last_error(ctx),
                 want, says);
}

/* The output-file rule (io.h, attn_outfile_open) as the library's writer
 * applies it (issue 10: /dev/null, FIFOs, links and read-only files were
 * replaced by a regular file). */
static void test_write_targets(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    float f[4] = {1, 2, 3, 4};
    attn_tensor t = attn_tensor_make(f, ATTN_F32, 1, (int64_t[]){4});
    const char *names[] = {"x"};
    /* a character device is written through and stays a device */
    struct stat sb;
    /* device nodes of our own where we may make them (root): a broken
     * writer must not replace the system's /dev/null and /dev/full */
    char null_dev[512], full_dev[512];
    snprintf(null_dev, sizeof null_dev, "%s", tmp_path("null"));
    snprintf(full_dev, sizeof full_dev, "%s", tmp_path("full"));
    unlink(null_dev), unlink(full_dev);
    if (mknod(null_dev, S_IFCHR | 0666, makedev(1, 3)) ||
        mknod(full_dev, S_IFCHR | 0666, makedev(1, 7))) {
        snprintf(null_dev, sizeof null_dev, "/dev/null");
        snprintf(full_dev, sizeof full_dev, "/dev/full");
    }
    assert_int_equal(attn_safetensors_write(ctx, null_dev, 1, names, &t), ATTN_OK);
    assert_int_equal(stat(null_dev, &sb), 0);
    assert_true(S_ISCHR(sb.st_mode));
    /* a full device: the write fails, ATTN_E_IO */
    assert_int_equal(attn_safetensors_write(ctx, full_dev, 1, names, &t), ATTN_E_IO);
    assert_int_equal(stat(full_dev, &sb), 0);
    assert_true(S_ISCHR(sb.st_mode));
    unlink(null_dev), unlink(full_dev);
    /* a read-only file is refused and kept */
    const char *ro = tmp_path("ro.safetensors");
    FILE *fp = fopen(ro, "w");
    assert_non_null(fp);
    fputs("keep", fp);
    fclose(fp);
    assert_int_equal(chmod(ro, 0444), 0);
    assert_int_equal(attn_safetensors_write(ctx, ro, 1, names, &t), ATTN_E_IO);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "read-only"));
    size_t n;
    unsigned char *b = read_all(ro, &n);
    assert_true(n == 4 && !memcmp(b, "keep", 4));
    free(b);
    /* a symbolic link: the target is written, the link stays */
    const char *target = tmp_path("target.safetensors"), *link = tmp_path("link.safetensors");
    unlink(link), unlink(target);
    assert_int_equal(symlink(target, link), 0);
    /* to nothing: refused, nothing created */
    assert_int_equal(attn_safetensors_write(ctx, link, 1, names, &t), ATTN_E_IO);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "symbolic link"));
    assert_int_equal(lstat(target, &sb), -1);
    fp = fopen(target, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(attn_safetensors_write(ctx, link, 1, names, &t), ATTN_OK);
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_int_equal(lstat(target, &sb), 0);
    assert_true(S_ISREG(sb.st_mode) && sb.st_size > 0);
    unlink(link), unlink(target), chmod(ro, 0644), unlink(ro);
    /* a directory is refused */
    assert_int_equal(attn_safetensors_write(ctx, "/", 1, names, &t), ATTN_E_IO);
    attn_ctx_free(ctx);
}

/* Header limits fail before the header is parsed (issue 10: 1.45M tensors
 * cost 1.7 GB and 8 s before "missing tensor"). */
static attn_status open_header(attn_ctx *ctx, const char *json) {
    size_t n = strlen(json);
    unsigned char *b = malloc(8 + n);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(b + 8, json, n);
    attn_safetensors *st = NULL;
    attn_status s = attn_safetensors_open_memory(ctx, b, 8 + n, &st);
    attn_safetensors_close(st);
    free(b);
    return s;
}

static void test_header_limits(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    const char *ent = "\"t%06d\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},";
    for (int over = 0; over < 2; over++) {
        int n = ATTN_SAFETENSORS_MAX_TENSORS + over;
        size_t cap = (size_t)n * 64 + 64, at = 0;
        char *j = malloc(cap);
        assert_non_null(j);
        j[at++] = '{';
        for (int i = 0; i < n; i++)
            at += (size_t)snprintf(j + at, cap - at, ent, i);
        j[at - 1] = '}';
        j[at] = 0;
        attn_status s = open_header(ctx, j);
        if (over) {
            assert_int_equal(s, ATTN_E_FORMAT);
            assert_non_null(strstr(attn_ctx_last_error(ctx), "more than 65536 tensors"));
        } else {
            assert_int_equal(s, ATTN_OK);
        }
        free(j);
    }
    /* names: 1024 bytes are fine, 1025 are not */
    for (int over = 0; over < 2; over++) {
        char j[2200];
        int len = ATTN_SAFETENSORS_MAX_NAME + over;
        int at = snprintf(j, sizeof j, "{\"");
        memset(j + at, 'n', (size_t)len);
        snprintf(j + at + len, sizeof j - (size_t)(at + len),
                 "\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}");
        attn_status s = open_header(ctx, j);
        assert_int_equal(s, over ? ATTN_E_FORMAT : ATTN_OK);
        if (over) assert_non_null(strstr(attn_ctx_last_error(ctx), "1025 bytes"));
    }
    attn_ctx_free(ctx);
}

static void test_write_errors(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    float f[4] = {1, 2, 3, 4};
    attn_tensor t = attn_tensor_make(f, ATTN_F32, 1, (int64_t[]){4});
    const char *path = tmp_path("w.safetensors");
    /* an existing file stays as it was when a write fails */
    const char *keep[] = {"keep"};
    assert_int_equal(attn_safetensors_write(ctx, path, 1, keep, &t), ATTN_OK);
    size_t len0;
    unsigned char *before = read_all(path, &len0);

    attn_tensor two[2] = {t, t};
    const char *fresh = tmp_path("fresh.safetensors");
    expect_write_fail(ctx, fresh, 2, (const char *[]){"a", "a"}, two, ATTN_E_ARG,
                      "duplicate tensor name 'a'");
    assert_false(exists(fresh));
    expect_write_fail(ctx, path, 2, (const char *[]){"a", "a"}, two, ATTN_E_ARG,
                      "duplicate tensor name 'a'");
    expect_write_fail(ctx, path, 1, (const char *[]){""}, &t, ATTN_E_ARG, "name is empty");
    expect_write_fail(ctx, path, 1, (const char *[]){NULL}, &t, ATTN_E_ARG, "name is NULL");
    expect_write_fail(ctx, path, 1, (const char *[]){"__metadata__"}, &t, ATTN_E_ARG, "reserved");
    expect_write_fail(ctx, path, 1, (const char *[]){"bad\xff"}, &t, ATTN_E_ARG, "UTF-8");
    attn_tensor bad = t;
    bad.data = NULL;
    expect_write_fail(ctx, path, 1, (const char *[]){"x"}, &bad, ATTN_E_ARG, "'x': data is NULL");
    bad = t;
    bad.ndim = 5;
    expect_write_fail(ctx, path, 1, (const char *[]){"x"}, &bad, ATTN_E_UNSUPPORTED, "5 dims");
    bad = t;
    bad.shape[0] = -2;
    expect_write_fail(ctx, path, 1, (const char *[]){"x"}, &bad, ATTN_E_SHAPE, "negative size");
    bad = t;
    bad.dtype = (attn_dtype)99;
    expect_write_fail(ctx, path, 1, (const char *[]){"x"}, &bad, ATTN_E_DTYPE, "unknown dtype");
    const char *dup_meta[] = {"k", "1", "k", "2"};
    assert_int_equal(attn_safetensors_write_meta(ctx, path, 1, keep, &t, 2, dup_meta), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "duplicate metadata key 'k'"));
    const char *null_meta[] = {"k", NULL}, *bad_meta[] = {"k", "\xff"};
    assert_int_equal(attn_safetensors_write_meta(ctx, path, 1, keep, &t, 1, null_meta), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "NULL key or value"));
    assert_int_equal(attn_safetensors_write_meta(ctx, path, 1, keep, &t, 1, bad_meta), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "not valid UTF-8"));
    assert_int_equal(attn_safetensors_write(ctx, path, -1, keep, &t), ATTN_E_ARG);
    assert_int_equal(attn_safetensors_write(ctx, NULL, 1, keep, &t), ATTN_E_ARG);
    /* the target is a directory: refused before anything is written */
    expect_write_fail(ctx, tmpdir, 1, keep, &t, ATTN_E_IO, "is a directory");
    assert_int_equal(dir_entries(), 1);
    /* no such directory */
    char nodir[512];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir.safetensors", tmpdir);
    expect_write_fail(ctx, nodir, 1, keep, &t, ATTN_E_IO, "cannot create");
    assert_false(exists(nodir));

    /* the disk refuses the data half-way (file size limit): no file, no temp */
    size_t big_n = (size_t)1 << 20;
    float *big = calloc(big_n, sizeof *big);
    attn_tensor bt = attn_tensor_make(big, ATTN_F32, 1, (int64_t[]){(int64_t)big_n});
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 100000;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    attn_status s = attn_safetensors_write(ctx, path, 1, keep, &bt);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    if (s != ATTN_E_IO || !strstr(attn_ctx_last_error(ctx), "write failed"))
        fail_msg("write past the size limit: status %d \"%s\"", s, attn_ctx_last_error(ctx));
    free(big);

    assert_int_equal(dir_entries(), 1);
    size_t len1;
    unsigned char *after = read_all(path, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    free(before);
    free(after);
    clear_dir();
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_dtype),
        cmocka_unit_test(test_roundtrip_strided),
        cmocka_unit_test(test_roundtrip_large),
        cmocka_unit_test(test_get_f32_conversions),
        cmocka_unit_test(test_header_only),
        cmocka_unit_test(test_torch_file),
        cmocka_unit_test(test_get_errors),
        cmocka_unit_test(test_bad_corpus),
        cmocka_unit_test(test_other_formats),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_write_targets),
        cmocka_unit_test(test_header_limits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
