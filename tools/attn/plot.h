/* A drawing surface for the CLI's charts (attn compare --plot): the chart
 * code draws once through these calls and the surface renders them as SVG
 * text or rasterises them into a PNG (plot_png.c: lines, markers and a
 * bitmap font of its own, written with libpng). Coordinates in pixels from
 * the top left; colours "#rrggbb". */
#ifndef ATTN_CLI_PLOT_H
#define ATTN_CLI_PLOT_H

typedef struct plot plot;

enum { PLOT_SVG = 0, PLOT_PNG = 1 };
enum { PLOT_START = -1, PLOT_MIDDLE = 0, PLOT_END = 1 }; /* text anchor */

/* The kind a path asks for: PLOT_SVG (.svg), PLOT_PNG (.png, any case), or
 * -1 for any other name. */
int plot_kind_of(const char *path);

/* A white w x h surface; NULL when out of memory. */
plot *plot_new(int kind, int w, int h);
void plot_free(plot *p);

void plot_line(plot *p, double x1, double y1, double x2, double y2, const char *color,
               double width);
/* Line segments through n points, a marker (small filled square) on each. */
void plot_polyline(plot *p, int n, const double *x, const double *y, const char *color,
                   double width);
void plot_rect(plot *p, double x, double y, double w, double h, const char *color);
/* size: the SVG font size in pixels (the PNG font draws 7-pixel capitals,
 * doubled from 14 up); vertical: rotated a quarter turn anticlockwise,
 * reading upwards. */
void plot_text(plot *p, double x, double y, double size, int anchor, int vertical,
               const char *s);

/* Render and write atomically to path (the output-file rule): 0, or the
 * CLI's exit status 1 with a message printed. Frees nothing. */
int plot_write(plot *p, const char *path);

#endif /* ATTN_CLI_PLOT_H */
