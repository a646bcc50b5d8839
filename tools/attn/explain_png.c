/* attn explain --png: one attention matrix of the first text as a heat map
 * with token labels (queries down the left, keys along the top), drawn with
 * libgd and its built-in bitmap font, written as PNG (libgd uses libpng)
 * atomically through attn_cli_write_to. */
#include "cli_out.h"
#include "explain_cli.h"

#include <gd.h>
#include <gdfonts.h>

#include <stdlib.h>
#include <string.h>

#define LABEL_CHARS 14 /* longer tokens are cut */

typedef struct png_bytes {
    void *p;
    int n;
} png_bytes;

static int put_bytes(FILE *f, void *arg) {
    const png_bytes *b = arg;
    return fwrite(b->p, 1, (size_t)b->n, f) == (size_t)b->n ? 0 : attn_cli_error(1, "write failed");
}

/* The token as the font can draw it: ASCII, others as '?', cut. */
static void label(const char *tk, char *out) {
    int n = 0;
    for (const unsigned char *c = (const unsigned char *)tk; *c && n < LABEL_CHARS; c++) {
        if ((*c & 0xc0) == 0x80) continue; /* UTF-8 continuation: one '?' per character */
        out[n++] = *c >= 0x20 && *c < 0x7f ? (char)*c : '?';
    }
    out[n] = '\0';
}

int explain_write_png(const char *path, const ex_run *r) {
    const ex_text *x = &r->x[0];
    const int64_t T = x->T;
    const float *m = r->png_rollout ? x->rollout : x->probs + (r->layer * r->H + r->head) * T * T;
    gdFontPtr font = gdFontGetSmall(); /* 6 x 13 */
    int cell = (int)(720 / T);
    cell = cell < 4 ? 4 : cell > 28 ? 28 : cell;
    const int lab = LABEL_CHARS * font->w + 8, top = 26;
    const int W = lab + (int)T * cell + 10, Hh = top + lab + (int)T * cell + 10;
    gdImagePtr im = gdImageCreateTrueColor(W, Hh);
    if (!im) return attn_cli_error(1, "out of memory for a %d x %d image", W, Hh);
    const int white = gdTrueColor(255, 255, 255), black = gdTrueColor(27, 27, 27);
    gdImageFilledRectangle(im, 0, 0, W - 1, Hh - 1, white);
    char title[128], buf[LABEL_CHARS + 1];
    if (r->png_rollout)
        snprintf(title, sizeof title, "attention rollout, %lld tokens (rows: queries)",
                 (long long)T);
    else
        snprintf(title, sizeof title, "layer %lld, head %lld, %lld tokens (rows: queries)",
                 (long long)r->layer, (long long)r->head, (long long)T);
    gdImageString(im, font, 4, 6, (unsigned char *)title, black);
    const int y0 = top + lab, x0 = lab;
    for (int64_t i = 0; i < T; i++) {
        label(attn_tokenizer_token(r->s->tok, x->ids[i]), buf);
        const int ty = y0 + (int)i * cell + (cell - font->h) / 2;
        if (cell >= 8 || i % 2 == 0) {
            gdImageString(im, font, x0 - 4 - (int)strlen(buf) * font->w, ty, (unsigned char *)buf,
                          black);
            gdImageStringUp(im, font, x0 + (int)i * cell + (cell - font->h) / 2, y0 - 4,
                            (unsigned char *)buf, black);
        }
        for (int64_t j = 0; j < T; j++) {
            float v = m[i * T + j];
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            const int c =
                gdTrueColor((int)(255 - 224 * v), (int)(255 - 160 * v), (int)(255 - 64 * v));
            gdImageFilledRectangle(im, x0 + (int)j * cell, y0 + (int)i * cell,
                                   x0 + (int)(j + 1) * cell - 1, y0 + (int)(i + 1) * cell - 1, c);
        }
    }
    gdImageRectangle(im, x0 - 1, y0 - 1, x0 + (int)T * cell, y0 + (int)T * cell, black);
    png_bytes b = {NULL, 0};
    b.p = gdImagePngPtr(im, &b.n);
    gdImageDestroy(im);
    if (!b.p) return attn_cli_error(1, "%s: cannot encode the PNG", path);
    int rc = attn_cli_write_to(path, put_bytes, &b);
    gdFree(b.p);
    return rc;
}
