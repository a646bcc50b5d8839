/* attn classify: image classification with a Hugging Face ViT directory
 * (attn/vit.h): top-k labels with probabilities, and --show-attention, a PNG
 * of the image with the [CLS] token's attention over the patches as a heat
 * map (drawn with libgd, as attn explain --png). */
#include "cli.h"
#include "cli_out.h"
#include "cli_time.h"

#include <gd.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATTN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ATTN_MAX(a, b) ((a) > (b) ? (a) : (b))

static void usage(FILE *f) {
    fprintf(f,
            "usage: attn classify --model DIR [--top-k K] [--format text|jsonl] [--size H,W\n"
            "                     --interpolate] [--threads N] [--bench R] IMAGE...\n"
            "       attn classify --model DIR --show-attention --output OUT.png\n"
            "                     [--layer L --head H | --rollout] IMAGE\n\n"
            "Classify PNG or JPEG images with a Vision Transformer directory (config.json\n"
            "model_type \"vit\", model.safetensors of ViTForImageClassification,\n"
            "preprocessor_config.json). Each image is decoded (EXIF orientation applied),\n"
            "resized and normalised as Hugging Face's ViTImageProcessor, and run in\n"
            "batches. Output, in input order:\n"
            "  text    (default) per image, K lines IMAGE<TAB>LABEL<TAB>PROBABILITY\n"
            "  jsonl   per image {\"image\": ..., \"top\": [{\"id\", \"label\", \"prob\"}, ...]}\n"
            "Labels come from config.json's id2label. Every image is read before anything is\n"
            "printed: a bad image prints nothing but the error.\n\n"
            "  --model DIR      the ViT directory (required)\n"
            "  --top-k K        labels per image, most probable first (default 5, at most\n"
            "                   the model's labels)\n"
            "  --size H,W       resize to H x W instead of the preprocessor's size; a size\n"
            "                   other than the model's image_size needs --interpolate\n"
            "  --interpolate    bicubic-interpolate the position embeddings for the size\n"
            "                   (Hugging Face's interpolate_pos_encoding)\n"
            "  --threads N      threads (default: ATTN_NUM_THREADS, else all cores)\n"
            "  --bench R        classify everything R more times and print the median\n"
            "                   images/s and images per CPU second (all threads' CPU time)\n"
            "                   to stderr (decoding and preprocessing included)\n"
            "  --show-attention write OUT.png: the preprocessed image with the [CLS]\n"
            "                   token's attention over the patches as a heat map (one IMAGE)\n"
            "  --layer L --head H   that head's attention (counted from 0)\n"
            "  --rollout        attention rollout over all layers (the default)\n"
            "  --output FILE    the PNG (written atomically; never left partial)\n");
}

typedef struct cls_opts {
    const char *model, *format, *output;
    int topk, threads, bench, interpolate, show, rollout, layer, head;
    int64_t h, w;
} cls_opts;

static int parse_size(const char *cmd, const char *name, const char *value, void *dst) {
    int64_t *hw = dst;
    long h, w;
    char a[32], b[32];
    const char *comma = strchr(value, ',');
    if (!comma || comma - value >= (long)sizeof a || strlen(comma + 1) >= sizeof b) goto bad;
    memcpy(a, value, (size_t)(comma - value));
    a[comma - value] = '\0';
    strcpy(b, comma + 1);
    if (attn_cli_parse_long(a, &h) || attn_cli_parse_long(b, &w) || h < 1 || w < 1 ||
        h > ATTN_IMAGE_MAX_SIDE || w > ATTN_IMAGE_MAX_SIDE)
        goto bad;
    hw[0] = h, hw[1] = w;
    return 0;
bad:
    return attn_cli_error(2, "%s: %s '%s': expected H,W with sides in [1, %d]", cmd, name, value,
                          ATTN_IMAGE_MAX_SIDE);
}

/* The images, decoded and preprocessed into px [n, 3, H, W]. 0, or 1 after
 * printing the error (naming the file). */
static int load_images(attn_ctx *ctx, const attn_image_preproc *p, int n, const char **files,
                       float *px, attn_image *keep) {
    const int64_t hw = p->height * p->width;
    for (int i = 0; i < n; i++) {
        attn_image img;
        attn_status st = attn_image_load(ctx, files[i], 0, &img);
        if (!st) st = attn_image_preprocess(ctx, &img, p, px + (int64_t)i * 3 * hw);
        if (st) {
            attn_image_free(&img);
            return attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        }
        if (keep && i == 0)
            *keep = img;
        else
            attn_image_free(&img);
    }
    return 0;
}

typedef struct ranked {
    int64_t id;
    double p;
} ranked;

static int by_prob(const void *x, const void *y) {
    const ranked *a = x, *b = y;
    if (a->p != b->p) return a->p > b->p ? -1 : 1;
    return a->id < b->id ? -1 : (a->id > b->id);
}

static void print_top(const cls_opts *o, const attn_vit_config *c, const char *file,
                      const float *logits, ranked *r) {
    const int64_t NL = c->num_labels;
    double mx = -INFINITY, sum = 0.0;
    for (int64_t k = 0; k < NL; k++)
        mx = fmax(mx, logits[k]);
    for (int64_t k = 0; k < NL; k++)
        sum += exp((double)logits[k] - mx);
    for (int64_t k = 0; k < NL; k++)
        r[k] = (ranked){k, exp((double)logits[k] - mx) / sum};
    qsort(r, (size_t)NL, sizeof *r, by_prob);
    const int64_t K = ATTN_MIN((int64_t)o->topk, NL);
    if (!strcmp(o->format, "jsonl")) {
        fputs("{\"image\": ", stdout);
        attn_cli_json_str(stdout, file, strlen(file));
        fputs(", \"top\": [", stdout);
        for (int64_t k = 0; k < K; k++) {
            printf("%s{\"id\": %lld, \"label\": ", k ? ", " : "", (long long)r[k].id);
            const char *l = c->id2label[r[k].id];
            attn_cli_json_str(stdout, l, strlen(l));
            printf(", \"prob\": %.6g}", r[k].p);
        }
        fputs("]}\n", stdout);
    } else {
        for (int64_t k = 0; k < K; k++)
            printf("%s\t%s\t%.6f\n", file, c->id2label[r[k].id], r[k].p);
    }
}

/* ---- the heat map -------------------------------------------------------- */

typedef struct png_out {
    void *p;
    int n;
} png_out;

static int put_png(FILE *f, void *arg) {
    const png_out *b = arg;
    return fwrite(b->p, 1, (size_t)b->n, f) == (size_t)b->n ? 0 : attn_cli_error(1, "write failed");
}

/* A blue -> cyan -> yellow -> red ramp for v in [0, 1]. */
static void heat(double v, int rgb[3]) {
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    const double r = fmin(1.0, fmax(0.0, 2.0 * v - 0.5) * 1.5);
    const double g = v < 0.5 ? 2.0 * v : 2.0 * (1.0 - v) + 0.0;
    const double b = fmax(0.0, 1.0 - 2.0 * v);
    rgb[0] = (int)lround(255 * r), rgb[1] = (int)lround(255 * fmin(1.0, g + 0.2 * v)),
    rgb[2] = (int)lround(255 * b);
}

/* map [gh * gw] (the [CLS] row over the patches) over the preprocessed
 * image (rgb [H, W, 3]), each pixel drawn as a scale x scale square. */
int attn_cli_write_heatmap(const char *path, const uint8_t *rgb, int64_t H, int64_t W, int64_t P,
                         const float *map, int64_t gh, int64_t gw) {
    const int scale = (int)ATTN_MAX(1, ATTN_MIN(8, 256 / ATTN_MAX(H, W)));
    float mx = 0.0f;
    for (int64_t i = 0; i < gh * gw; i++)
        mx = fmaxf(mx, map[i]);
    gdImagePtr im = gdImageCreateTrueColor((int)(W * scale), (int)(H * scale));
    if (!im) return attn_cli_error(1, "%s: cannot allocate the image", path);
    for (int64_t y = 0; y < H; y++)
        for (int64_t x = 0; x < W; x++) {
            const int64_t py = ATTN_MIN(y / P, gh - 1), pxx = ATTN_MIN(x / P, gw - 1);
            const int inside = y / P < gh && x / P < gw; /* pixels the convolution crops: gray */
            const double v = inside && mx > 0 ? map[py * gw + pxx] / mx : 0.0;
            int hc[3];
            heat(v, hc);
            const uint8_t *s = rgb + (y * W + x) * 3;
            int c[3];
            for (int k = 0; k < 3; k++)
                c[k] = inside ? (int)lround(0.45 * s[k] + 0.55 * hc[k]) : s[k] / 2;
            const int col = gdTrueColor(c[0], c[1], c[2]);
            gdImageFilledRectangle(im, (int)(x * scale), (int)(y * scale),
                                   (int)(x * scale + scale - 1), (int)(y * scale + scale - 1), col);
        }
    png_out b = {NULL, 0};
    b.p = gdImagePngPtr(im, &b.n);
    gdImageDestroy(im);
    if (!b.p) return attn_cli_error(1, "%s: cannot encode the PNG", path);
    int rc = attn_cli_write_to(path, put_png, &b);
    gdFree(b.p);
    return rc;
}

static int show_attention(attn_ctx *ctx, const attn_vit *m, const cls_opts *o,
                          const attn_image_preproc *p, const char *file, const float *px,
                          const attn_image *img) {
    const attn_vit_config *c = attn_vit_get_config(m);
    const int64_t P = c->patch_size, gh = p->height / P, gw = p->width / P, T = 1 + gh * gw;
    const int64_t L = c->num_layers, NH = c->num_heads;
    if ((double)L * NH * T * T > 1e9)
        return attn_cli_error(1, "%s: %lld patches: the attention maps are too large", file,
                              (long long)(T - 1));
    float *probs = malloc((size_t)(L * NH * T * T) * sizeof(float));
    float *roll = malloc((size_t)(T * T) * sizeof(float));
    uint8_t *rgb = malloc((size_t)(p->height * p->width * 3));
    int rc = 1;
    if (!probs || !roll || !rgb) {
        attn_cli_error(1, "out of memory");
        goto done;
    }
    attn_status st = attn_vit_attention(ctx, m, p->height, p->width, px, o->interpolate, probs);
    if (!st && o->rollout) st = attn_attention_rollout(ctx, L, NH, T, probs, roll);
    if (!st) st = attn_image_resize(ctx, img, p->width, p->height, p->resample, rgb);
    if (st) {
        attn_cli_error(1, "%s: %s", file, attn_ctx_last_error(ctx));
        goto done;
    }
    const float *row = o->rollout ? roll : probs + (o->layer * NH + o->head) * T * T;
    rc = attn_cli_write_heatmap(o->output, rgb, p->height, p->width, P, row + 1, gh, gw);
done:
    free(probs), free(roll), free(rgb);
    return rc;
}

/* Options that contradict each other: 2 after printing the error, else -1. */
static int check_usage(cls_opts *o, int n, const char **files) {
    if (!o->model) return attn_cli_error(2, "classify: --model DIR is required");
    if (n < 1) return attn_cli_error(2, "classify: no IMAGE given");
    if (strcmp(o->format, "text") && strcmp(o->format, "jsonl"))
        return attn_cli_error(2, "classify: --format '%s': expected text or jsonl", o->format);
    if ((o->layer >= 0) != (o->head >= 0))
        return attn_cli_error(2, "classify: --layer and --head go together");
    if (o->show) {
        if (!o->output) return attn_cli_error(2, "classify: --show-attention needs --output FILE");
        if (n != 1) return attn_cli_error(2, "classify: --show-attention takes one IMAGE");
        if (o->rollout && o->layer >= 0)
            return attn_cli_error(2, "classify: --rollout or --layer/--head, not both");
        if (o->layer < 0) o->rollout = 1;
        if (o->bench) return attn_cli_error(2, "classify: --bench and --show-attention exclude each other");
        if (attn_cli_same_file(o->output, files[0])) return 2;
    } else if (o->output || o->layer >= 0 || o->rollout) {
        return attn_cli_error(2, "classify: --output, --layer, --head and --rollout go with "
                                 "--show-attention");
    }
    return -1;
}

static int run(const cls_opts *op, const int64_t size[2], int n, const char **files) {
    cls_opts o = *op;
    attn_ctx *ctx = NULL;
    int rc = attn_cli_ctx(&ctx, o.threads);
    if (rc) return rc;
    attn_model *mm = NULL;
    float *px = NULL, *logits = NULL;
    ranked *r = NULL;
    double *times = NULL;
    attn_image keep = {0, 0, NULL};
    rc = 1;
    if (attn_model_open(ctx, o.model, 0, &mm)) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    const attn_vit *m = attn_model_get_vit(mm);
    if (!m) {
        attn_cli_error(1, "%s: a %s model, not a ViT image classifier", o.model,
                       attn_model_get_info(mm)->type_name);
        goto done;
    }
    const attn_vit_config *c = attn_vit_get_config(m);
    if (!o.show && c->num_labels == 0) {
        attn_cli_error(1, "%s: the model has no classifier (a ViTModel): nothing to classify",
                       o.model);
        goto done;
    }
    if (o.show && o.layer >= 0 && (o.layer >= c->num_layers || o.head >= c->num_heads)) {
        rc = attn_cli_error(2, "classify: --layer %d --head %d: the model has %lld layers of %lld "
                               "heads (counted from 0)",
                            o.layer, o.head, (long long)c->num_layers, (long long)c->num_heads);
        goto done;
    }
    attn_image_preproc p = *attn_vit_get_preproc(m);
    if (size[0]) p.height = size[0], p.width = size[1], p.do_resize = 1;
    if (!p.do_resize) {
        attn_cli_error(1, "%s: preprocessor_config.json has do_resize false, which this "
                          "command does not support (give --size H,W)", o.model);
        goto done;
    }
    if (!o.interpolate && (p.height != c->image_size || p.width != c->image_size)) {
        rc = attn_cli_error(2, "classify: images of %lld x %lld pixels, but the model takes "
                               "%lld x %lld: add --interpolate to interpolate its position "
                               "embeddings",
                            (long long)p.height, (long long)p.width, (long long)c->image_size,
                            (long long)c->image_size);
        goto done;
    }
    if (p.height < c->patch_size || p.width < c->patch_size) {
        rc = attn_cli_error(2, "classify: --size %lld,%lld is smaller than a patch (%lld)",
                            (long long)p.height, (long long)p.width, (long long)c->patch_size);
        goto done;
    }
    const int64_t per = 3 * p.height * p.width;
    px = malloc((size_t)(n * per) * sizeof(float));
    logits = malloc((size_t)((int64_t)n * ATTN_MAX(c->num_labels, 1)) * sizeof(float));
    r = malloc((size_t)ATTN_MAX(c->num_labels, 1) * sizeof *r);
    times = malloc((size_t)(2 * (o.bench + 1)) * sizeof *times);
    if (!px || !logits || !r || !times) {
        attn_cli_error(1, "out of memory for %d images", n);
        goto done;
    }
    for (int rep = 0; rep <= o.bench; rep++) {
        const double t0 = attn_cli_clock_s(CLOCK_MONOTONIC);
        const double c0 = attn_cli_clock_s(CLOCK_PROCESS_CPUTIME_ID);
        if (load_images(ctx, &p, n, files, px, o.show && rep == 0 ? &keep : NULL)) goto done;
        if (c->num_labels) {
            attn_vit_outputs out = {logits, NULL, NULL};
            if (attn_vit_forward(ctx, m, n, p.height, p.width, px, o.interpolate, &out)) {
                attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
                goto done;
            }
        }
        times[rep] = attn_cli_clock_s(CLOCK_MONOTONIC) - t0;
        times[o.bench + 1 + rep] = attn_cli_clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    }
    if (o.show && (rc = show_attention(ctx, m, &o, &p, files[0], px, &keep))) goto done;
    for (int i = 0; i < n && c->num_labels; i++)
        print_top(&o, c, files[i], logits + (int64_t)i * c->num_labels, r);
    if (o.bench) {
        const double med = attn_cli_median(times + 1, (size_t)o.bench);
        const double cpu = attn_cli_median(times + o.bench + 2, (size_t)o.bench);
        fprintf(stderr,
                "classify: %d images x %d runs, %d threads: median %.4f s = %.2f images/s, "
                "CPU time %.4f s = %.2f images per CPU second (decoding and preprocessing "
                "included)\n",
                n, o.bench, attn_ctx_threads(ctx), med, n / med, cpu, n / cpu);
    }
    rc = 0;
done:
    attn_image_free(&keep);
    free(px), free(logits), free(r), free(times);
    attn_model_free(mm);
    attn_ctx_free(ctx);
    return rc;
}

int attn_cmd_classify(int argc, char **argv) {
    cls_opts o = {NULL, "text", NULL, 5, 0, 0, 0, 0, 0, -1, -1, 0, 0};
    int64_t size[2] = {0, 0};
    const cli_opt opts[] = {
        {"--model", CLI_STRING, &o.model, 0, 0, 0, NULL},
        {"--top-k", CLI_INT, &o.topk, 1, 1e9, 0, NULL},
        {"--format", CLI_STRING, &o.format, 0, 0, 0, NULL},
        {"--size", CLI_CUSTOM, size, 0, 0, 0, parse_size},
        {"--interpolate", CLI_FLAG, &o.interpolate, 0, 0, 0, NULL},
        CLI_OPT_THREADS(&o.threads),
        {"--bench", CLI_INT, &o.bench, 1, 1e6, 0, NULL},
        {"--show-attention", CLI_FLAG, &o.show, 0, 0, 0, NULL},
        {"--layer", CLI_INT, &o.layer, 0, 1e6, 0, NULL},
        {"--head", CLI_INT, &o.head, 0, 1e6, 0, NULL},
        {"--rollout", CLI_FLAG, &o.rollout, 0, 0, 0, NULL},
        {"--output", CLI_STRING, &o.output, 0, 0, 0, NULL},
    };
    const cli_spec spec = {"classify", opts, sizeof opts / sizeof opts[0], usage,
                           CLI_POS_ANYWHERE, argc};
    const char **files = malloc((size_t)(argc + 1) * sizeof *files);
    if (!files) return attn_cli_error(1, "out of memory");
    int n = 0;
    int prc = attn_cli_parse(&spec, argc, argv, files, &n);
    if (prc < 0) prc = check_usage(&o, n, files);
    if (prc < 0) prc = run(&o, size, n, files);
    free(files);
    return prc;
}
