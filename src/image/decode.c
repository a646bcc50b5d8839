/* PNG (libpng) and JPEG (libjpeg-turbo) decoding to 8-bit RGB from memory.
 * Both libraries report errors through a callback that must not return:
 * ours longjmp back to the decoder, which frees what it allocated and fails
 * with the library's message. The size limit is checked from the header,
 * before the pixel buffer (or libjpeg's decompression state) is allocated. */
#include "core/internal.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

/* ---- size check --------------------------------------------------------- */

static attn_status check_size(attn_ctx *ctx, const char *name, const char *fmt, int64_t w,
                              int64_t h, int64_t max_pixels) {
    if (w < 1 || h < 1)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: %s image has zero size (%lld x %lld)", name,
                             fmt, (long long)w, (long long)h);
    if (w > ATTN_IMAGE_MAX_SIDE || h > ATTN_IMAGE_MAX_SIDE || w * h > max_pixels)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "%s: %s image of %lld x %lld pixels is too large (limit: sides <= %d, "
                             "%lld pixels)",
                             name, fmt, (long long)w, (long long)h, ATTN_IMAGE_MAX_SIDE,
                             (long long)max_pixels);
    return ATTN_OK;
}

/* ---- PNG ---------------------------------------------------------------- */

/* rgba composited over opaque white into rgb (which may be rgba itself), as
 * Hugging Face's convert_to_rgb does with PIL's alpha_composite: 7-bit
 * fixed-point blend factors and PIL's rounded division by 255. */
static void over_white(const uint8_t *rgba, uint8_t *rgb) {
    const uint32_t a = rgba[3];
    if (a == 255) {
        rgb[0] = rgba[0], rgb[1] = rgba[1], rgb[2] = rgba[2];
        return;
    }
    if (a == 0) {
        rgb[0] = rgb[1] = rgb[2] = 255;
        return;
    }
    const uint32_t c1 = a << 7, c2 = (255u << 7) - c1; /* src * 255 * 255 * 128 / (255 * 255) */
    for (int c = 0; c < 3; c++) {
        uint32_t t = rgba[c] * c1 + 255u * c2 + (0x80u << 7);
        rgb[c] = (uint8_t)((((t >> 8) + t) >> 8) >> 7);
    }
}

typedef struct png_state {
    jmp_buf jb;
    const uint8_t *data;
    size_t len, pos;
    char msg[200];
    uint8_t *rgb;
    png_bytep *rows;
} png_state;

static void png_fail(png_structp png, png_const_charp msg) {
    png_state *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    longjmp(s->jb, 1);
}

static void png_warn(png_structp png, png_const_charp msg) {
    (void)png, (void)msg; /* warnings (bad ancillary chunks) are not fatal */
}

static void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
    png_state *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) png_error(png, "the file is truncated");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

static attn_status decode_png(attn_ctx *ctx, const uint8_t *data, size_t len, const char *name,
                              int64_t max_pixels, attn_image *out) {
    png_state *s = calloc(1, sizeof *s);
    if (!s) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory", name);
    s->data = data, s->len = len;
    /* the sizes of the IHDR chunk (always first) checked here, so a zero or
     * huge size gets the same message as in a JPEG */
    if (len >= 24 && !memcmp(data + 12, "IHDR", 4)) {
        const int64_t w = (int64_t)data[16] << 24 | data[17] << 16 | data[18] << 8 | data[19];
        const int64_t h = (int64_t)data[20] << 24 | data[21] << 16 | data[22] << 8 | data[23];
        attn_status st = check_size(ctx, name, "PNG", w, h, max_pixels);
        if (st) {
            free(s);
            return st;
        }
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s, png_fail, png_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        free(s);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory", name);
    }
    attn_status st = ATTN_OK;
    if (setjmp(s->jb)) {
        st = attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: corrupt PNG: %s", name, s->msg);
        goto done;
    }
    png_set_read_fn(png, s, png_read_mem);
    /* libpng's own limits as a second line: the same sides, and a bound on
     * ancillary chunk memory (text, ICC profiles) */
    png_set_user_limits(png, ATTN_IMAGE_MAX_SIDE, ATTN_IMAGE_MAX_SIDE);
    png_set_chunk_malloc_max(png, 8u << 20);
    png_read_info(png, info);
    const int64_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((st = check_size(ctx, name, "PNG", w, h, max_pixels))) goto done;
    const int ct = png_get_color_type(png, info);
    png_set_expand(png); /* palette -> RGB, gray < 8 bits -> 8 bits, tRNS -> alpha */
    png_set_strip_16(png);
    if (!(ct & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_add_alpha(png, 0xff, PNG_FILLER_AFTER); /* RGBA rows, alpha or not */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 4) png_error(png, "unexpected row size");
    s->rgb = malloc((size_t)(w * h * 4));
    s->rows = malloc((size_t)h * sizeof *s->rows);
    if (!s->rgb || !s->rows) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: cannot allocate %lld x %lld pixels", name,
                           (long long)w, (long long)h);
        goto done;
    }
    for (int64_t y = 0; y < h; y++)
        s->rows[y] = s->rgb + y * w * 4;
    png_read_image(png, s->rows);
    png_read_end(png, NULL);
    /* RGBA -> RGB in place (each write lands at or before its read) */
    for (int64_t i = 0; i < w * h; i++)
        over_white(s->rgb + i * 4, s->rgb + i * 3);
    uint8_t *small = realloc(s->rgb, (size_t)(w * h * 3));
    if (small) s->rgb = small;
    out->width = w, out->height = h, out->rgb = s->rgb;
    s->rgb = NULL;
done:
    png_destroy_read_struct(&png, &info, NULL);
    free(s->rgb);
    free(s->rows);
    free(s);
    return st;
}

/* ---- JPEG --------------------------------------------------------------- */

typedef struct jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_fail(j_common_ptr c) {
    jpeg_err *e = (jpeg_err *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings are corrupt or missing data (libjpeg would fill the rest of a
 * truncated file with gray): an error here. Trace messages are ignored. */
static void jpeg_message(j_common_ptr c, int level) {
    if (level < 0) jpeg_fail(c);
}

/* The EXIF Orientation tag (1..8) of an APP1 "Exif" segment, or 1. Every
 * offset is bounds-checked against the segment. */
/* not inlined: its locals must not live in decode_jpeg's setjmp frame */
__attribute__((noinline)) static int exif_orientation(const uint8_t *p, size_t n) {
    if (n < 14 || memcmp(p, "Exif\0\0", 6)) return 1;
    p += 6, n -= 6; /* the TIFF header */
    int le;
    if (p[0] == 'I' && p[1] == 'I')
        le = 1;
    else if (p[0] == 'M' && p[1] == 'M')
        le = 0;
    else
        return 1;
#define U16(q) (le ? (unsigned)(q)[0] | (unsigned)(q)[1] << 8 : (unsigned)(q)[1] | (unsigned)(q)[0] << 8)
#define U32(q) (le ? (uint32_t)U16(q) | (uint32_t)U16((q) + 2) << 16 : (uint32_t)U16(q) << 16 | U16((q) + 2))
    if (U16(p + 2) != 42) return 1;
    uint32_t ifd = U32(p + 4);
    if (ifd > n || n - ifd < 2) return 1;
    unsigned count = U16(p + ifd);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n) return 1;
        if (U16(p + e) != 0x0112) continue;
        if (U16(p + e + 2) != 3 || U32(p + e + 4) != 1) return 1; /* SHORT, count 1 */
        unsigned v = U16(p + e + 8);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
#undef U16
#undef U32
    return 1;
}

/* Apply orientation o (EXIF: 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
 * 6 rotate 90 clockwise, 7 transverse, 8 rotate 270 clockwise) to img. */
static attn_status orient(attn_ctx *ctx, const char *name, int o, attn_image *img) {
    if (o <= 1) return ATTN_OK;
    const int64_t w = img->width, h = img->height;
    const int swap = o >= 5;
    const int64_t W = swap ? h : w, H = swap ? w : h;
    uint8_t *dst = malloc((size_t)(w * h * 3));
    if (!dst) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory", name);
    for (int64_t Y = 0; Y < H; Y++)
        for (int64_t X = 0; X < W; X++) {
            int64_t x, y; /* the source pixel of output (X, Y) */
            switch (o) {
            case 2: x = w - 1 - X, y = Y; break;
            case 3: x = w - 1 - X, y = h - 1 - Y; break;
            case 4: x = X, y = h - 1 - Y; break;
            case 5: x = Y, y = X; break;
            case 6: x = Y, y = h - 1 - X; break;
            case 7: x = w - 1 - Y, y = h - 1 - X; break;
            default: x = w - 1 - Y, y = X; break; /* 8 */
            }
            memcpy(dst + (Y * W + X) * 3, img->rgb + (y * w + x) * 3, 3);
        }
    free(img->rgb);
    img->rgb = dst, img->width = W, img->height = H;
    return ATTN_OK;
}

typedef struct jpeg_state {
    struct jpeg_decompress_struct c;
    jpeg_err err;
    uint8_t *rgb, *row;
} jpeg_state;

static attn_status decode_jpeg(attn_ctx *ctx, const uint8_t *data, size_t len, const char *name,
                               int flags, int64_t max_pixels, attn_image *out) {
    jpeg_state *s = calloc(1, sizeof *s);
    if (!s) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory", name);
    s->c.err = jpeg_std_error(&s->err.mgr);
    s->err.mgr.error_exit = jpeg_fail;
    s->err.mgr.emit_message = jpeg_message;
    attn_status st = ATTN_OK;
    int orientation = 1;
    if (setjmp(s->err.jb)) {
        st = attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: corrupt JPEG: %s", name, s->err.msg);
        goto done;
    }
    jpeg_create_decompress(&s->c);
    jpeg_mem_src(&s->c, data, (unsigned long)len);
    jpeg_save_markers(&s->c, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(&s->c, TRUE);
    if ((st = check_size(ctx, name, "JPEG", s->c.image_width, s->c.image_height, max_pixels)))
        goto done;
    for (jpeg_saved_marker_ptr m = s->c.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && orientation == 1)
            orientation = exif_orientation(m->data, m->data_length);
    const int cmyk = s->c.jpeg_color_space == JCS_CMYK || s->c.jpeg_color_space == JCS_YCCK;
    s->c.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&s->c);
    const int64_t w = s->c.output_width, h = s->c.output_height;
    const int comps = s->c.output_components;
    if (comps != (cmyk ? 4 : 3)) {
        st = attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: corrupt JPEG: %d components", name, comps);
        goto done;
    }
    s->rgb = malloc((size_t)(w * h * 3));
    s->row = malloc((size_t)(w * comps));
    if (!s->rgb || !s->row) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: cannot allocate %lld x %lld pixels", name,
                           (long long)w, (long long)h);
        goto done;
    }
    while (s->c.output_scanline < s->c.output_height) {
        const int64_t y = s->c.output_scanline;
        JSAMPROW r = cmyk ? s->row : s->rgb + y * w * 3;
        if (jpeg_read_scanlines(&s->c, &r, 1) != 1) ERREXIT(&s->c, JERR_INPUT_EMPTY);
        if (cmyk) /* Adobe CMYK is stored inverted: 255 - C etc.; R = (1-C)(1-K) */
            for (int64_t x = 0; x < w; x++) {
                const unsigned k = s->row[x * 4 + 3];
                for (int c = 0; c < 3; c++)
                    s->rgb[(y * w + x) * 3 + c] = (uint8_t)((s->row[x * 4 + c] * k + 127) / 255);
            }
    }
    jpeg_finish_decompress(&s->c);
    out->width = w, out->height = h, out->rgb = s->rgb;
    s->rgb = NULL;
    if (!(flags & ATTN_IMAGE_NO_EXIF)) st = orient(ctx, name, orientation, out);
    if (st) attn_image_free(out);
done:
    jpeg_destroy_decompress(&s->c);
    free(s->rgb);
    free(s->row);
    free(s);
    return st;
}

/* ---- the public entry points -------------------------------------------- */

void attn_image_free(attn_image *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

attn_status attn_image_decode(attn_ctx *ctx, const void *data, size_t len, const char *name,
                              int flags, int64_t max_pixels, attn_image *out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!out) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_image_decode: out is NULL");
    memset(out, 0, sizeof *out);
    if (!name) name = "image";
    if (!data && len) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_image_decode: data is NULL");
    if (flags & ~ATTN_IMAGE_NO_EXIF)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_image_decode: unknown flags 0x%x", flags);
    if (max_pixels == 0) max_pixels = ATTN_IMAGE_MAX_PIXELS;
    if (max_pixels < 1 || max_pixels > ATTN_IMAGE_MAX_PIXELS)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_image_decode: max_pixels %lld outside [1, %lld]",
                             (long long)max_pixels, (long long)ATTN_IMAGE_MAX_PIXELS);
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t *d = data;
    if (len >= 8 && !memcmp(d, png_sig, 8)) return decode_png(ctx, d, len, name, max_pixels, out);
    if (len >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff)
        return decode_jpeg(ctx, d, len, name, flags, max_pixels, out);
    if (len == 0) return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: empty file, not an image", name);
    return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: not a PNG or JPEG image (unknown signature)",
                         name);
}

attn_status attn_image_load(attn_ctx *ctx, const char *path, int flags, attn_image *out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!path || !out) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_image_load: NULL argument");
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return attn_ctx_fail(ctx, ATTN_E_IO, "%s: cannot open", path);
    /* the largest file worth reading: uncompressed pixels at the limit plus
     * headers; a longer file is refused before it is read */
    const long max_len = (long)(ATTN_IMAGE_MAX_PIXELS * 4 + (1 << 24));
    long n = -1;
    if (!fseek(f, 0, SEEK_END)) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET)) {
        fclose(f);
        return attn_ctx_fail(ctx, ATTN_E_IO, "%s: cannot read (not a regular file?)", path);
    }
    if (n > max_len) {
        fclose(f);
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: file of %ld bytes is too large for an image",
                             path, n);
    }
    uint8_t *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: cannot allocate %ld bytes", path, n);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != (size_t)n) {
        free(buf);
        return attn_ctx_fail(ctx, ATTN_E_IO, "%s: read failed", path);
    }
    attn_status st = attn_image_decode(ctx, buf, (size_t)n, path, flags, 0, out);
    free(buf);
    return st;
}
