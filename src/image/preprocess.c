/* Resizing as PIL's Image.resize and preprocessing as Hugging Face's
 * ViTImageProcessor (the PIL backend).
 *
 * PIL's resampling (its Resample.c, reimplemented from the algorithm): a
 * separable convolution, first along rows then along columns, each pass
 * skipped when that side keeps its size. Output pixel i of a side samples the
 * input around center = (i + 0.5) * scale, scale = in / out; the filter's
 * support is widened by max(scale, 1), so shrinking averages every input
 * pixel (antialiasing). Taps are the filter at (j - center + 0.5) / fscale
 * for input pixels j in [round(center - support), round(center + support)),
 * normalised to sum 1, then turned into 22-bit fixed point; each pass sums
 * 8-bit pixels times taps in 32-bit integers from 1 << 21 (rounding) and
 * clips the result >> 22 to [0, 255]. The first pass's 8-bit output feeds
 * the second, as in PIL. */
#include "io/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PREC_BITS 22
#define PI 3.14159265358979323846

static double f_bilinear(double x) {
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double f_box(double x) {
    return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
}

static double f_hamming(double x) {
    x = fabs(x);
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x *= PI;
    return sin(x) / x * (0.54 + 0.46 * cos(x));
}

static double f_bicubic(double x) {
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x *= PI;
    return sin(x) / x;
}

static double f_lanczos(double x) {
    return x > -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0;
}

typedef struct filter {
    double (*f)(double);
    double support;
} filter;

static int get_filter(attn_resample r, filter *out) {
    switch (r) {
    case ATTN_RESAMPLE_BOX: *out = (filter){f_box, 0.5}; return 1;
    case ATTN_RESAMPLE_BILINEAR: *out = (filter){f_bilinear, 1.0}; return 1;
    case ATTN_RESAMPLE_HAMMING: *out = (filter){f_hamming, 1.0}; return 1;
    case ATTN_RESAMPLE_BICUBIC: *out = (filter){f_bicubic, 2.0}; return 1;
    case ATTN_RESAMPLE_LANCZOS: *out = (filter){f_lanczos, 3.0}; return 1;
    default: return 0;
    }
}

/* Taps of one side: for output i, input pixels [lo[i], lo[i] + n[i]) with
 * fixed-point weights k[i * ksize + j]. Returns ksize, or 0 on no memory. */
typedef struct taps {
    int64_t ksize;
    int64_t *lo, *n;
    int32_t *k;
} taps;

static void taps_free(taps *t) {
    free(t->lo), free(t->n), free(t->k);
}

static int make_taps(int64_t in, int64_t out, const filter *f, taps *t) {
    const double scale = (double)in / (double)out;
    const double fscale = scale < 1.0 ? 1.0 : scale;
    const double support = f->support * fscale;
    const int64_t ksize = (int64_t)ceil(support) * 2 + 1;
    t->ksize = ksize;
    t->lo = malloc((size_t)out * sizeof *t->lo);
    t->n = malloc((size_t)out * sizeof *t->n);
    t->k = calloc((size_t)(out * ksize), sizeof *t->k);
    double *w = malloc((size_t)ksize * sizeof *w);
    if (!t->lo || !t->n || !t->k || !w) {
        free(w);
        taps_free(t);
        return 0;
    }
    for (int64_t i = 0; i < out; i++) {
        const double center = ((double)i + 0.5) * scale;
        int64_t lo = (int64_t)(center - support + 0.5), hi = (int64_t)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        int64_t n = hi - lo;
        if (n > ksize) n = ksize;
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) {
            w[j] = f->f(((double)(j + lo) - center + 0.5) / fscale);
            sum += w[j];
        }
        for (int64_t j = 0; j < n; j++) {
            const double v = sum != 0.0 ? w[j] / sum : w[j];
            const double s = v * (double)(1 << PREC_BITS);
            t->k[i * ksize + j] = (int32_t)(v < 0 ? -0.5 + s : 0.5 + s);
        }
        t->lo[i] = lo, t->n[i] = n;
    }
    free(w);
    return 1;
}

static inline uint8_t clip8(int32_t v) {
    v >>= PREC_BITS; /* arithmetic shift: floor, as PIL */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* out [h, W, 3] = rows of in [h, w, 3] resampled to W. */
static void pass_h(const uint8_t *in, int64_t w, int64_t h, const taps *t, int64_t W,
                   uint8_t *out) {
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < W; x++) {
            const int32_t *k = t->k + x * t->ksize;
            const uint8_t *p = in + (y * w + t->lo[x]) * 3;
            int32_t s0 = 1 << (PREC_BITS - 1), s1 = s0, s2 = s0;
            for (int64_t j = 0; j < t->n[x]; j++) {
                s0 += p[j * 3 + 0] * k[j];
                s1 += p[j * 3 + 1] * k[j];
                s2 += p[j * 3 + 2] * k[j];
            }
            uint8_t *o = out + (y * W + x) * 3;
            o[0] = clip8(s0), o[1] = clip8(s1), o[2] = clip8(s2);
        }
}

/* out [H, w, 3] = columns of in [h, w, 3] resampled to H. */
static void pass_v(const uint8_t *in, int64_t w, const taps *t, int64_t H, uint8_t *out) {
    for (int64_t y = 0; y < H; y++) {
        const int32_t *k = t->k + y * t->ksize;
        for (int64_t x = 0; x < w; x++) {
            int32_t s0 = 1 << (PREC_BITS - 1), s1 = s0, s2 = s0;
            for (int64_t j = 0; j < t->n[y]; j++) {
                const uint8_t *p = in + ((t->lo[y] + j) * w + x) * 3;
                s0 += p[0] * k[j];
                s1 += p[1] * k[j];
                s2 += p[2] * k[j];
            }
            uint8_t *o = out + (y * w + x) * 3;
            o[0] = clip8(s0), o[1] = clip8(s1), o[2] = clip8(s2);
        }
    }
}

static uint8_t *resize_nearest(const attn_image *img, int64_t W, int64_t H, uint8_t *out) {
    /* PIL: source = floor((i + 0.5) * in / out) */
    for (int64_t y = 0; y < H; y++) {
        int64_t sy = (int64_t)(((double)y + 0.5) * (double)img->height / (double)H);
        if (sy >= img->height) sy = img->height - 1;
        for (int64_t x = 0; x < W; x++) {
            int64_t sx = (int64_t)(((double)x + 0.5) * (double)img->width / (double)W);
            if (sx >= img->width) sx = img->width - 1;
            memcpy(out + (y * W + x) * 3, img->rgb + (sy * img->width + sx) * 3, 3);
        }
    }
    return out;
}

attn_status attn_image_resize(attn_ctx *ctx, const attn_image *img, int64_t W, int64_t H,
                              attn_resample r, uint8_t *rgb) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!img || !img->rgb || !rgb)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_image_resize: NULL argument");
    if (img->width < 1 || img->height < 1 || W < 1 || H < 1 || W > ATTN_IMAGE_MAX_SIDE ||
        H > ATTN_IMAGE_MAX_SIDE || img->width > ATTN_IMAGE_MAX_SIDE ||
        img->height > ATTN_IMAGE_MAX_SIDE)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attn_image_resize: sizes %lld x %lld -> %lld x %lld outside [1, %d]",
                             (long long)img->width, (long long)img->height, (long long)W,
                             (long long)H, ATTN_IMAGE_MAX_SIDE);
    if (r == ATTN_RESAMPLE_NEAREST) {
        resize_nearest(img, W, H, rgb);
        return ATTN_OK;
    }
    filter f;
    if (!get_filter(r, &f))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_image_resize: unknown resample filter %d",
                             (int)r);
    const int64_t w = img->width, h = img->height;
    const int need_h = W != w, need_v = H != h;
    if (!need_h && !need_v) {
        memcpy(rgb, img->rgb, (size_t)(w * h * 3));
        return ATTN_OK;
    }
    taps th = {0}, tv = {0};
    uint8_t *tmp = NULL;
    int ok = (!need_h || make_taps(w, W, &f, &th)) && (!need_v || make_taps(h, H, &f, &tv));
    if (ok && need_h && need_v) ok = (tmp = malloc((size_t)(W * h * 3))) != NULL;
    if (ok) {
        /* PIL runs the horizontal pass over the input rows the vertical pass
         * reads; all rows here, which gives the same pixels */
        if (need_h) pass_h(img->rgb, w, h, &th, W, need_v ? tmp : rgb);
        if (need_v) pass_v(need_h ? tmp : img->rgb, W, &tv, H, rgb);
    }
    free(tmp);
    taps_free(&th), taps_free(&tv);
    return ok ? ATTN_OK
              : attn_ctx_fail(ctx, ATTN_E_NOMEM, "attn_image_resize: out of memory");
}

static int preproc_valid(const attn_image_preproc *p) {
    if (p->do_resize && (p->height < 1 || p->width < 1 || p->height > ATTN_IMAGE_MAX_SIDE ||
                         p->width > ATTN_IMAGE_MAX_SIDE || p->resample < 0 || p->resample > 5))
        return 0;
    for (int c = 0; c < 3; c++)
        if (p->do_normalize && !(p->std[c] > 0.0f && isfinite(p->std[c]) && isfinite(p->mean[c])))
            return 0;
    return !p->do_rescale || isfinite(p->rescale_factor);
}

attn_status attn_image_preprocess(attn_ctx *ctx, const attn_image *img, const attn_image_preproc *p,
                                  float *pixels) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!img || !img->rgb || !p || !pixels)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_image_preprocess: NULL argument");
    if (!preproc_valid(p))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_image_preprocess: invalid preprocessing "
                                              "(size, resample filter, or std <= 0)");
    const int64_t W = p->do_resize ? p->width : img->width;
    const int64_t H = p->do_resize ? p->height : img->height;
    const uint8_t *src = img->rgb;
    uint8_t *tmp = NULL;
    if (p->do_resize) {
        tmp = malloc((size_t)(W * H * 3));
        if (!tmp) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "attn_image_preprocess: out of memory");
        attn_status st = attn_image_resize(ctx, img, W, H, p->resample, tmp);
        if (st) {
            free(tmp);
            return st;
        }
        src = tmp;
    }
    /* as numpy in the processor: the rescale in double rounded to float32,
     * the normalisation in float32 */
    for (int c = 0; c < 3; c++) {
        const float mean = p->do_normalize ? p->mean[c] : 0.0f;
        const float std = p->do_normalize ? p->std[c] : 1.0f;
        float *out = pixels + (int64_t)c * H * W;
        for (int64_t i = 0; i < H * W; i++) {
            float v = src[i * 3 + c];
            if (p->do_rescale) v = (float)((double)src[i * 3 + c] * (double)p->rescale_factor);
            out[i] = p->do_normalize ? (v - mean) / std : v;
        }
    }
    free(tmp);
    return ATTN_OK;
}

/* ---- preprocessor_config.json ------------------------------------------- */

static attn_status get_bool(attn_ctx *ctx, const char *path, json_t *j, const char *key,
                            int *out) {
    json_t *v = json_object_get(j, key);
    if (!v) return ATTN_OK;
    if (!json_is_boolean(v))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"%s\" must be true or false", path, key);
    *out = json_is_true(v);
    return ATTN_OK;
}

/* A number, or a list of 3 numbers (image_mean, image_std). */
static attn_status get_nums(attn_ctx *ctx, const char *path, json_t *j, const char *key, int n,
                            float *out) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) return ATTN_OK;
    if (json_is_number(v) && n == 3) {
        out[0] = out[1] = out[2] = (float)json_number_value(v);
        return ATTN_OK;
    }
    if (n == 1 && json_is_number(v)) {
        out[0] = (float)json_number_value(v);
        return ATTN_OK;
    }
    if (n == 3 && json_is_array(v) && json_array_size(v) == 3) {
        for (int i = 0; i < 3; i++) {
            json_t *e = json_array_get(v, (size_t)i);
            if (!json_is_number(e)) goto bad;
            out[i] = (float)json_number_value(e);
        }
        return ATTN_OK;
    }
bad:
    return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"%s\" must be %s", path, key,
                         n == 3 ? "a number or a list of 3 numbers" : "a number");
}

attn_status attn_image_preproc_load(attn_ctx *ctx, const char *dir, int64_t default_size,
                                    attn_image_preproc *p) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!dir || !p || default_size < 1 || default_size > ATTN_IMAGE_MAX_SIDE)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_image_preproc_load: bad argument");
    const attn_image_preproc def = {1, default_size, default_size, ATTN_RESAMPLE_BILINEAR,
                                    1, 1.0f / 255.0f, 1, {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
    *p = def;
    char path[ATTN__PATH_LEN];
    if (!attn__path_join(path, dir, "preprocessor_config.json", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    json_t *j;
    attn_status st = attn__json_load(ctx, path, 1, &j);
    if (st || !j) return st;
    if (!json_is_object(j)) {
        json_decref(j);
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: expected a JSON object", path);
    }
    int crop = 0;
    if ((st = get_bool(ctx, path, j, "do_resize", &p->do_resize)) ||
        (st = get_bool(ctx, path, j, "do_rescale", &p->do_rescale)) ||
        (st = get_bool(ctx, path, j, "do_normalize", &p->do_normalize)) ||
        (st = get_bool(ctx, path, j, "do_center_crop", &crop)) ||
        (st = get_nums(ctx, path, j, "rescale_factor", 1, &p->rescale_factor)) ||
        (st = get_nums(ctx, path, j, "image_mean", 3, p->mean)) ||
        (st = get_nums(ctx, path, j, "image_std", 3, p->std)))
        goto out;
    if (crop) {
        st = attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "%s: do_center_crop is not supported", path);
        goto out;
    }
    json_t *r = json_object_get(j, "resample");
    if (r) {
        const double v = json_number_value(r); /* numbers may be read as reals */
        if (!json_is_number(r) || v < 0 || v > 5 || v != (double)(int)v) {
            st = attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                               "%s: \"resample\" must be a PIL filter number 0..5", path);
            goto out;
        }
        p->resample = (attn_resample)(int)v;
    }
    json_t *size = json_object_get(j, "size");
    if (json_is_number(size)) {
        const double v = json_number_value(size);
        if (v != (double)(int64_t)v || v < 0 || v > 1e9) {
            st = attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: \"size\" %g is not a valid size", path, v);
            goto out;
        }
        p->height = p->width = (int64_t)v;
    } else if (json_is_object(size)) {
        if (json_object_get(size, "shortest_edge") || json_object_get(size, "longest_edge")) {
            st = attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                               "%s: \"size\" by shortest/longest edge is not supported (give "
                               "height and width)",
                               path);
            goto out;
        }
        if ((st = attn__json_get_int(ctx, path, size, "height", 0, 0, 1, &p->height)) ||
            (st = attn__json_get_int(ctx, path, size, "width", 0, 0, 1, &p->width)))
            goto out;
    } else if (size && !json_is_null(size)) {
        st = attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"size\" must be an object or a number", path);
        goto out;
    }
    if (p->height > ATTN_IMAGE_MAX_SIDE || p->width > ATTN_IMAGE_MAX_SIDE || p->height < 1 ||
        p->width < 1) {
        st = attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: size %lld x %lld outside [1, %d]", path,
                           (long long)p->height, (long long)p->width, ATTN_IMAGE_MAX_SIDE);
        goto out;
    }
    for (int c = 0; c < 3; c++)
        if (p->do_normalize && !(p->std[c] > 0.0f)) {
            st = attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: image_std must be positive", path);
            goto out;
        }
out:
    json_decref(j);
    return st;
}
