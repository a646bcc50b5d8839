/* attn caption --model DIR IMAGE...: caption images with a captioner saved
 * by `attn train --task caption --output DIR` (attn_caption_load), greedy
 * decoding; one line per image: "IMAGE: the caption". */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f, "usage: attn caption --model DIR [options] IMAGE...\n\n"
               "Write a caption for each PNG or JPEG image with an image captioner saved by\n"
               "`attn train --task caption --output DIR` (config.json model_type\n"
               "attn_captioner). Each image is preprocessed as DIR/preprocessor_config.json\n"
               "says (for the digits model: resized to 8x8, gray levels in all three\n"
               "channels) and captioned by greedy decoding; prints \"IMAGE: caption\".\n\n"
               "  --model DIR   the captioner (required)\n"
               "  --show-attention DIR2\n"
               "                one IMAGE only: also write DIR2/NN-WORD.png for each generated\n"
               "                word, the image with that word's cross-attention over the\n"
               "                patches (last decoder layer, heads averaged: the attention of\n"
               "                the position that predicted the word) as a heat map\n"
               "  --threads N   threads (default 1; 0 = ATTN_NUM_THREADS, else all cores)\n"
               "  -h, --help    show this help\n\n"
               "Exit status: 0 success, 1 failure (a bad model or image), 2 bad usage.\n");
}

int attn_cmd_caption(int argc, char **argv) {
    const char *model = NULL, *show = NULL;
    int threads = 1;
    const cli_opt opts[] = {
        {"--model", CLI_STRING, &model, 0, 0, 0, NULL},
        CLI_OPT_THREADS(&threads),
        {"--show-attention", CLI_STRING, &show, 0, 0, 0, NULL},
    };
    const cli_spec spec = {"caption", opts, sizeof opts / sizeof opts[0], usage, CLI_POS_ANYWHERE,
                           argc};
    const char **files = malloc((size_t)(argc + 1) * sizeof *files);
    if (!files) return attn_cli_error(1, "out of memory");
    int n = 0;
    int rc = attn_cli_parse(&spec, argc, argv, files, &n);
    if (rc < 0 && !model) rc = attn_cli_error(2, "caption: --model DIR is required");
    if (rc < 0 && n == 0) rc = attn_cli_error(2, "caption: no IMAGE given");
    if (rc < 0 && show && n != 1)
        rc = attn_cli_error(2, "caption: --show-attention takes exactly one IMAGE (%d given)", n);
    if (rc >= 0) {
        free(files);
        return rc;
    }
    attn_ctx *ctx = NULL;
    if ((rc = attn_cli_ctx(&ctx, threads))) {
        free(files);
        return rc;
    }
    rc = 1;
    attn_image_preproc pre;
    attn_caption_trainer *t = NULL;
    float *px = NULL;
    int32_t *out = NULL;
    char **lines = calloc((size_t)n, sizeof *lines);
    uint8_t *rgb = NULL;
    float *map = NULL;
    if (!lines) {
        attn_cli_error(1, "out of memory");
        goto done;
    }
    if (attn_caption_load(ctx, model, 1, &pre, &t)) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    const attn_caption_config *dc = attn_caption_trainer_config(t);
    px = malloc((size_t)(3 * pre.height * pre.width) * sizeof *px);
    out = malloc((size_t)dc->max_len * sizeof *out);
    if (!px || !out) {
        attn_cli_error(1, "out of memory");
        goto done;
    }
    /* every image first: a bad one means no output at all */
    for (int i = 0; i < n; i++) {
        attn_image img;
        memset(&img, 0, sizeof img);
        attn_status st = attn_image_load(ctx, files[i], 0, &img);
        if (!st) st = attn_image_preprocess(ctx, &img, &pre, px);
        if (!st && show) {
            rgb = malloc((size_t)(3 * pre.height * pre.width));
            if (!rgb) st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
            if (!st) st = attn_image_resize(ctx, &img, pre.width, pre.height, pre.resample, rgb);
        }
        attn_image_free(&img);
        if (!st) st = attn_caption_generate(ctx, t, 1, px, dc->bos, dc->eos, out);
        if (st) {
            attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
            goto done;
        }
        size_t len = strlen(files[i]) + 2;
        for (int64_t k = 1; k < dc->max_len && out[k] != dc->eos; k++)
            len += strlen(dc->words[out[k]]) + 1;
        if (!(lines[i] = malloc(len + 1))) {
            attn_cli_error(1, "out of memory");
            goto done;
        }
        strcpy(lines[i], files[i]);
        strcat(lines[i], ":");
        for (int64_t k = 1; k < dc->max_len && out[k] != dc->eos; k++)
            strcat(strcat(lines[i], " "), dc->words[out[k]]);
    }
    if (show) {
        int64_t T = 1;
        while (T < dc->max_len && out[T] != dc->eos)
            T++;
        int64_t P = 0;
        const int64_t gh = attn_caption_patch_grid(t, &P);
        map = malloc((size_t)(T * gh * gh) * sizeof *map);
        if (!map || attn_caption_cross_attention(ctx, t, px, out, T, map)) {
            attn_cli_error(1, "%s", map ? attn_ctx_last_error(ctx) : "out of memory");
            goto done;
        }
        if (mkdir(show, 0777) && errno != EEXIST) {
            attn_cli_error(1, "%s: cannot create the directory", show);
            goto done;
        }
        for (int64_t k = 1; k < T; k++) {
            char path[4096], word[64];
            const char *w = dc->words[out[k]];
            size_t j = 0; /* the word as a file name: letters and digits, others '_' */
            for (; w[j] && j < sizeof word - 1; j++)
                word[j] = (w[j] >= 'a' && w[j] <= 'z') || (w[j] >= 'A' && w[j] <= 'Z') ||
                                  (w[j] >= '0' && w[j] <= '9')
                              ? w[j]
                              : '_';
            word[j] = 0;
            snprintf(path, sizeof path, "%s/%02lld-%s.png", show, (long long)k, word);
            if (attn_cli_write_heatmap(path, rgb, pre.height, pre.width, P, map + (k - 1) * gh * gh,
                                       gh, gh)) goto done;
        }
    }
    for (int i = 0; i < n; i++)
        printf("%s\n", lines[i]);
    rc = 0;
done:
    for (int i = 0; lines && i < n; i++)
        free(lines[i]);
    free(lines), free(px), free(out), free(files), free(rgb), free(map);
    attn_caption_trainer_free(t);
    attn_ctx_free(ctx);
    return rc;
}
