/* plot_png.h: the chart rasteriser behind `attn compare --plot FILE.png`.
 * Lines are stamped with a square pen along their longer axis, markers are
 * filled squares, and text uses the 5 x 7 font below (one glyph per
 * printable ASCII character the charts need; anything else draws as a
 * box). The image is written with libpng through the output-file rule. */
#include "plot_png.h"
#include "cli.h"
#include "cli_out.h"
#include "plot.h"

#include <png.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct plot_raster {
    int w, h;
    unsigned char *px; /* RGB, row-major */
};

/* The font: each glyph is 7 rows of 5 columns, '#' set. Designed for
 * this chart writer: digits, both cases, and the punctuation of labels. */
typedef struct glyph {
    char c;
    const char *rows; /* 7 groups of 5, separated by spaces */
} glyph;

static const glyph g_font[] = {
    {' ', "..... ..... ..... ..... ..... ..... ....."},
    {'0', ".###. #...# #..## #.#.# ##..# #...# .###."},
    {'1', "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###."},
    {'2', ".###. #...# ....# ...#. ..#.. .#... #####"},
    {'3', "####. ....# ....# .###. ....# ....# ####."},
    {'4', "...#. ..##. .#.#. #..#. ##### ...#. ...#."},
    {'5', "##### #.... ####. ....# ....# #...# .###."},
    {'6', "..##. .#... #.... ####. #...# #...# .###."},
    {'7', "##### ....# ...#. ..#.. .#... .#... .#..."},
    {'8', ".###. #...# #...# .###. #...# #...# .###."},
    {'9', ".###. #...# #...# .#### ....# ...#. .##.."},
    {'a', "..... ..... .###. ....# .#### #...# .####"},
    {'b', "#.... #.... ####. #...# #...# #...# ####."},
    {'c', "..... ..... .###. #.... #.... #...# .###."},
    {'d', "....# ....# .#### #...# #...# #...# .####"},
    {'e', "..... ..... .###. #...# ##### #.... .###."},
    {'f', "..##. .#..# .#... ###.. .#... .#... .#..."},
    {'g', "..... .#### #...# #...# .#### ....# .###."},
    {'h', "#.... #.... #.##. ##..# #...# #...# #...#"},
    {'i', "..#.. ..... .##.. ..#.. ..#.. ..#.. .###."},
    {'j', "...#. ..... ..##. ...#. ...#. #..#. .##.."},
    {'k', "#.... #.... #..#. #.#.. ##... #.#.. #..#."},
    {'l', ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###."},
    {'m', "..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#"},
    {'n', "..... ..... #.##. ##..# #...# #...# #...#"},
    {'o', "..... ..... .###. #...# #...# #...# .###."},
    {'p', "..... ..... ####. #...# ####. #.... #...."},
    {'q', "..... ..... .#### #...# .#### ....# ....#"},
    {'r', "..... ..... #.##. ##..# #.... #.... #...."},
    {'s', "..... ..... .###. #.... .###. ....# ####."},
    {'t', ".#... .#... ###.. .#... .#... .#..# ..##."},
    {'u', "..... ..... #...# #...# #...# #..## .##.#"},
    {'v', "..... ..... #...# #...# #...# .#.#. ..#.."},
    {'w', "..... ..... #...# #...# #.#.# #.#.# .#.#."},
    {'x', "..... ..... #...# .#.#. ..#.. .#.#. #...#"},
    {'y', "..... ..... #...# #...# .#### ....# .###."},
    {'z', "..... ..... ##### ...#. ..#.. .#... #####"},
    {'A', ".###. #...# #...# ##### #...# #...# #...#"},
    {'B', "####. #...# #...# ####. #...# #...# ####."},
    {'C', ".###. #...# #.... #.... #.... #...# .###."},
    {'D', "###.. #..#. #...# #...# #...# #..#. ###.."},
    {'E', "##### #.... #.... ####. #.... #.... #####"},
    {'F', "##### #.... #.... ####. #.... #.... #...."},
    {'G', ".###. #...# #.... #.### #...# #...# .####"},
    {'H', "#...# #...# #...# ##### #...# #...# #...#"},
    {'I', ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###."},
    {'J', "..### ...#. ...#. ...#. ...#. #..#. .##.."},
    {'K', "#...# #..#. #.#.. ##... #.#.. #..#. #...#"},
    {'L', "#.... #.... #.... #.... #.... #.... #####"},
    {'M', "#...# ##.## #.#.# #.#.# #...# #...# #...#"},
    {'N', "#...# #...# ##..# #.#.# #..## #...# #...#"},
    {'O', ".###. #...# #...# #...# #...# #...# .###."},
    {'P', "####. #...# #...# ####. #.... #.... #...."},
    {'Q', ".###. #...# #...# #...# #.#.# #..#. .##.#"},
    {'R', "####. #...# #...# ####. #.#.. #..#. #...#"},
    {'S', ".#### #.... #.... .###. ....# ....# ####."},
    {'T', "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.."},
    {'U', "#...# #...# #...# #...# #...# #...# .###."},
    {'V', "#...# #...# #...# #...# #...# .#.#. ..#.."},
    {'W', "#...# #...# #...# #.#.# #.#.# #.#.# .#.#."},
    {'X', "#...# #...# .#.#. ..#.. .#.#. #...# #...#"},
    {'Y', "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.."},
    {'Z', "##### ....# ...#. ..#.. .#... #.... #####"},
    {'-', "..... ..... ..... .###. ..... ..... ....."},
    {'+', "..... ..#.. ..#.. ##### ..#.. ..#.. ....."},
    {'.', "..... ..... ..... ..... ..... .##.. .##.."},
    {',', "..... ..... ..... ..... .##.. ..#.. .#..."},
    {':', "..... .##.. .##.. ..... .##.. .##.. ....."},
    {'=', "..... ..... ##### ..... ##### ..... ....."},
    {'(', "...#. ..#.. .#... .#... .#... ..#.. ...#."},
    {')', ".#... ..#.. ...#. ...#. ...#. ..#.. .#..."},
    {'/', "..... ....# ...#. ..#.. .#... #.... ....."},
    {'%', "##..# ##.#. ...#. ..#.. .#... .#.## #..##"},
    {'_', "..... ..... ..... ..... ..... ..... #####"},
    {'\'', "..#.. ..#.. .#... ..... ..... ..... ....."},
    {0, NULL},
};
static const char *g_box = "##### #...# #...# #...# #...# #...# #####";

static const char *glyph_of(char c) {
    for (const glyph *g = g_font; g->rows; g++)
        if (g->c == c) return g->rows;
    return g_box;
}

/* "#rrggbb" to bytes (black for anything else). */
static void rgb_of(const char *color, unsigned char out[3]) {
    unsigned v = 0;
    if (color && color[0] == '#' && strlen(color) == 7 && sscanf(color + 1, "%6x", &v) == 1) {
        out[0] = (unsigned char)(v >> 16), out[1] = (unsigned char)(v >> 8);
        out[2] = (unsigned char)v;
    } else
        out[0] = out[1] = out[2] = 0;
}

plot_raster *plot_raster_new(int w, int h) {
    plot_raster *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->w = w, r->h = h;
    r->px = malloc((size_t)w * (size_t)h * 3);
    if (!r->px) {
        free(r);
        return NULL;
    }
    memset(r->px, 255, (size_t)w * (size_t)h * 3);
    return r;
}

void plot_raster_free(plot_raster *r) {
    if (!r) return;
    free(r->px);
    free(r);
}

static void put(plot_raster *r, int x, int y, const unsigned char c[3]) {
    if (x < 0 || y < 0 || x >= r->w || y >= r->h) return;
    unsigned char *p = r->px + ((size_t)y * (size_t)r->w + (size_t)x) * 3;
    p[0] = c[0], p[1] = c[1], p[2] = c[2];
}

/* A filled square of side s centred on (x, y). */
static void square(plot_raster *r, double x, double y, int s, const unsigned char c[3]) {
    const int x0 = (int)floor(x - (s - 1) / 2.0 + 0.5), y0 = (int)floor(y - (s - 1) / 2.0 + 0.5);
    for (int dy = 0; dy < s; dy++)
        for (int dx = 0; dx < s; dx++)
            put(r, x0 + dx, y0 + dy, c);
}

void plot_raster_line(plot_raster *r, double x1, double y1, double x2, double y2,
                      const char *color, double width) {
    unsigned char c[3];
    rgb_of(color, c);
    if (!isfinite(x1) || !isfinite(y1) || !isfinite(x2) || !isfinite(y2)) return;
    const int pen = width < 1.5 ? 1 : (int)lround(width);
    /* one stamp per pixel along the longer axis (at most the image's size) */
    double n = fmax(fabs(x2 - x1), fabs(y2 - y1));
    n = fmin(ceil(n), (double)(r->w + r->h));
    const int steps = (int)n;
    for (int i = 0; i <= steps; i++) {
        const double t = steps ? (double)i / steps : 0.0;
        square(r, x1 + t * (x2 - x1), y1 + t * (y2 - y1), pen, c);
    }
}

void plot_raster_marker(plot_raster *r, double x, double y, const char *color) {
    unsigned char c[3];
    rgb_of(color, c);
    if (isfinite(x) && isfinite(y)) square(r, x, y, 5, c);
}

void plot_raster_text(plot_raster *r, double x, double y, int scale, int anchor, int vertical,
                      const char *s) {
    static const unsigned char ink[3] = {34, 34, 34};
    const int adv = 6 * scale, len = (int)(adv * (int)strlen(s) - scale);
    /* along the reading direction: start offset by the anchor */
    const double off = anchor == PLOT_START ? 0.0 : anchor == PLOT_END ? -len : -len / 2.0;
    for (int k = 0; s[k]; k++) {
        const char *g = glyph_of(s[k]);
        for (int row = 0; row < 7; row++)
            for (int col = 0; col < 5; col++) {
                if (g[row * 6 + col] != '#') continue;
                /* glyph pixel (u along the text, v down from its top) */
                const double u = off + k * adv + col * scale, v = (row - 7) * scale;
                for (int sy = 0; sy < scale; sy++)
                    for (int sx = 0; sx < scale; sx++) {
                        if (!vertical)
                            put(r, (int)lround(x + u) + sx, (int)lround(y + v) + sy, ink);
                        else /* reading upwards: u goes up, v goes right */
                            put(r, (int)lround(x + v) + sy, (int)lround(y - u) - sx, ink);
                    }
            }
    }
}

typedef struct png_job {
    const plot_raster *r;
} png_job;

static void png_write_cb(png_structp png, png_bytep data, png_size_t n) {
    FILE *f = png_get_io_ptr(png);
    if (fwrite(data, 1, n, f) != n) png_error(png, "write failed");
}
static void png_flush_cb(png_structp png) {
    (void)png;
}

static int put_png(FILE *f, void *arg) {
    const png_job *j = arg;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, info ? &info : NULL);
        return attn_cli_error(1, "PNG encoder: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return attn_cli_error(1, "PNG encoder: write failed");
    }
    png_set_write_fn(png, f, png_write_cb, png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)j->r->w, (png_uint_32)j->r->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < j->r->h; y++)
        png_write_row(png, j->r->px + (size_t)y * (size_t)j->r->w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int plot_raster_write(plot_raster *r, const char *path) {
    png_job j = {r};
    return attn_cli_write_to(path, put_png, &j);
}
