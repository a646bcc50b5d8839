/* plot.h's surface: the SVG renderer, and the dispatch to the PNG
 * rasteriser (plot_png.c). SVG elements are kept in a growing buffer so the
 * file is written in one go through the output-file rule. */
#include "plot.h"
#include "plot_png.h"

#include <attn/attn.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "cli_out.h"

struct plot {
    int kind, w, h;
    char *svg; /* PLOT_SVG: the elements so far */
    size_t len, cap;
    int oom;
    plot_raster *r; /* PLOT_PNG */
};

int plot_kind_of(const char *path) {
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/')) return -1;
    if (!strcasecmp(dot, ".svg")) return PLOT_SVG;
    if (!strcasecmp(dot, ".png")) return PLOT_PNG;
    return -1;
}

static void out(plot *p, const char *fmt, ...) {
    if (p->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(p->svg + p->len, p->cap - p->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            p->oom = 1;
            return;
        }
        if ((size_t)n < p->cap - p->len) {
            p->len += (size_t)n;
            return;
        }
        const size_t cap = 2 * p->cap + (size_t)n + 1;
        char *s = realloc(p->svg, cap);
        if (!s) {
            p->oom = 1;
            return;
        }
        p->svg = s, p->cap = cap;
    }
}

plot *plot_new(int kind, int w, int h) {
    plot *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->kind = kind, p->w = w, p->h = h;
    if (kind == PLOT_PNG) {
        p->r = plot_raster_new(w, h);
        if (!p->r) {
            free(p);
            return NULL;
        }
        return p;
    }
    p->cap = 4096;
    p->svg = malloc(p->cap);
    if (!p->svg) {
        free(p);
        return NULL;
    }
    p->svg[0] = '\0';
    out(p,
        "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
        "font-family='sans-serif'>\n<rect width='100%%' height='100%%' fill='white'/>\n",
        w, h);
    return p;
}

void plot_free(plot *p) {
    if (!p) return;
    free(p->svg);
    plot_raster_free(p->r);
    free(p);
}

void plot_line(plot *p, double x1, double y1, double x2, double y2, const char *color,
               double width) {
    if (p->r) {
        plot_raster_line(p->r, x1, y1, x2, y2, color, width);
        return;
    }
    out(p, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='%g'/>\n", x1,
        y1, x2, y2, color, width);
}

void plot_polyline(plot *p, int n, const double *x, const double *y, const char *color,
                   double width) {
    if (n <= 0) return;
    if (p->r) {
        for (int i = 0; i + 1 < n; i++)
            plot_raster_line(p->r, x[i], y[i], x[i + 1], y[i + 1], color, width);
        for (int i = 0; i < n; i++)
            plot_raster_marker(p->r, x[i], y[i], color);
        return;
    }
    out(p, "<polyline fill='none' stroke='%s' stroke-width='%g' points='", color, width);
    for (int i = 0; i < n; i++)
        out(p, "%.1f,%.1f ", x[i], y[i]);
    out(p, "'/>\n");
    for (int i = 0; i < n; i++)
        out(p, "<rect x='%.1f' y='%.1f' width='5' height='5' fill='%s'/>\n", x[i] - 2.5,
            y[i] - 2.5, color);
}

void plot_rect(plot *p, double x, double y, double w, double h, const char *color) {
    if (p->r) {
        plot_raster_line(p->r, x, y, x + w, y, color, 1);
        plot_raster_line(p->r, x + w, y, x + w, y + h, color, 1);
        plot_raster_line(p->r, x + w, y + h, x, y + h, color, 1);
        plot_raster_line(p->r, x, y + h, x, y, color, 1);
        return;
    }
    out(p, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' stroke='%s'/>\n", x, y,
        w, h, color);
}

void plot_text(plot *p, double x, double y, double size, int anchor, int vertical,
               const char *s) {
    if (p->r) {
        plot_raster_text(p->r, x, y, size >= 14 ? 2 : 1, anchor, vertical, s);
        return;
    }
    const char *a = anchor < 0 ? "start" : anchor > 0 ? "end" : "middle";
    out(p, "<text x='%.1f' y='%.1f' font-size='%g' text-anchor='%s'", x, y, size, a);
    if (vertical) out(p, " transform='rotate(-90 %.1f %.1f)'", x, y);
    out(p, ">");
    for (const char *c = s; *c; c++) /* the few characters XML reserves */
        if (*c == '<')
            out(p, "&lt;");
        else if (*c == '>')
            out(p, "&gt;");
        else if (*c == '&')
            out(p, "&amp;");
        else
            out(p, "%c", *c);
    out(p, "</text>\n");
}

static int put_svg(FILE *f, void *arg) {
    const plot *p = arg;
    if (fwrite(p->svg, 1, p->len, f) != p->len || fputs("</svg>\n", f) < 0)
        return attn_cli_error(1, "write failed");
    return 0;
}

int plot_write(plot *p, const char *path) {
    if (p->oom) return attn_cli_error(1, "%s: out of memory", path);
    if (p->r) return plot_raster_write(p->r, path);
    return attn_cli_write_to(path, put_svg, p);
}
