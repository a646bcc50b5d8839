/* The PNG side of plot.h: an RGB raster with anti-aliasing-free lines,
 * square markers and a 5 x 7 bitmap font drawn here (plot_png.c). */
#ifndef ATTN_CLI_PLOT_PNG_H
#define ATTN_CLI_PLOT_PNG_H

typedef struct plot_raster plot_raster;

plot_raster *plot_raster_new(int w, int h); /* white; NULL when out of memory */
void plot_raster_free(plot_raster *r);
void plot_raster_line(plot_raster *r, double x1, double y1, double x2, double y2,
                      const char *color, double width);
void plot_raster_marker(plot_raster *r, double x, double y, const char *color);
/* Dark grey text, glyphs scaled by `scale`; y is the baseline. */
void plot_raster_text(plot_raster *r, double x, double y, int scale, int anchor, int vertical,
                      const char *s);
/* Encode (libpng, 8-bit RGB) and write atomically: 0 or 1 (message printed). */
int plot_raster_write(plot_raster *r, const char *path);

#endif /* ATTN_CLI_PLOT_PNG_H */
