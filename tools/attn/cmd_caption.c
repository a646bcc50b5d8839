/* attn caption --model DIR IMAGE...: caption images with a captioner saved
 * by `attn train --task caption --output DIR` (attn_caption_load), greedy
 * decoding; one line per image: "IMAGE: the caption". */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: attn caption --model DIR [options] IMAGE...\n\n"
               "Write a caption for each PNG or JPEG image with an image captioner saved by\n"
               "`attn train --task caption --output DIR` (config.json model_type\n"
               "attn_captioner). Each image is preprocessed as DIR/preprocessor_config.json\n"
               "says (for the digits model: resized to 8x8, gray levels in all three\n"
               "channels) and captioned by greedy decoding; prints \"IMAGE: caption\".\n\n"
               "  --model DIR   the captioner (required)\n"
               "  --threads N   threads (default 1; 0 = ATTN_NUM_THREADS, else all cores)\n"
               "  -h, --help    show this help\n\n"
               "Exit status: 0 success, 1 failure (a bad model or image), 2 bad usage.\n");
}

int attn_cmd_caption(int argc, char **argv) {
    const char *model = NULL;
    int threads = 1;
    const cli_opt opts[] = {
        {"--model", CLI_STRING, &model, 0, 0, 0, NULL},
        CLI_OPT_THREADS(&threads),
    };
    const cli_spec spec = {"caption", opts, sizeof opts / sizeof opts[0], usage, CLI_POS_ANYWHERE,
                           argc};
    const char **files = malloc((size_t)(argc + 1) * sizeof *files);
    if (!files) return attn_cli_error(1, "out of memory");
    int n = 0;
    int rc = attn_cli_parse(&spec, argc, argv, files, &n);
    if (rc < 0 && !model) rc = attn_cli_error(2, "caption: --model DIR is required");
    if (rc < 0 && n == 0) rc = attn_cli_error(2, "caption: no IMAGE given");
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
    for (int i = 0; i < n; i++)
        printf("%s\n", lines[i]);
    rc = 0;
done:
    for (int i = 0; lines && i < n; i++)
        free(lines[i]);
    free(lines), free(px), free(out), free(files);
    attn_caption_trainer_free(t);
    attn_ctx_free(ctx);
    return rc;
}
