/* attn compare with a model (compare_model.c): real attention inputs taken
 * from all-MiniLM-L6-v2 (or any BERT directory) on given texts, and the
 * embedding-quality study (--quality). */
#ifndef ATTN_CLI_COMPARE_MODEL_H
#define ATTN_CLI_COMPARE_MODEL_H

#include "cli.h"

#include <stdint.h>
#include <stdio.h>

/* One layer's q, k, v rows of every token of every text, concatenated in
 * text order: rows [R, 3E], row r = q | k | v. */
typedef struct cmp_model {
    float *rows;
    int64_t R, E, H, Dh, texts;
} cmp_model;

/* Open dir (NULL: the default model), read the texts of input (one per line)
 * and keep layer `layer`'s q, k, v of every token (one thread: the caller
 * forks afterwards). Returns 0, or the exit status after printing the
 * error (1: bad input; 2: layer out of the model's range is bad input too,
 * reported as 1 since the model decides it). */
int cmp_model_open(cmp_model *m, const char *dir, const char *input, int layer);
void cmp_model_free(cmp_model *m);

/* q, k, v [H, T, Dh] each: token i is row i mod R (the texts' tokens
 * tiled until T), head h its columns [h Dh, (h + 1) Dh). */
void cmp_model_fill(const cmp_model *m, int64_t T, float *q, float *k, float *v);

/* --quality: embeddings with each method of `methods` (NULL: the default
 * list; names of bert_methods.h) against exact ones. Returns the exit
 * status. */
typedef struct cmp_quality_opts {
    const char *model, *input, *methods;
    const char *plot; /* optional: quality vs work and vs time, SVG */
    int threads, reps, json, cpu_time;
    uint64_t seed;
    const char *draws; /* optional: --draws shared|layer|head for the methods with
                        * random parts that name none (+draws-MODE) */
} cmp_quality_opts;
int cmp_quality(const cmp_quality_opts *o);

/* The default --quality method list (comma-separated). */
extern const char *const cmp_quality_default;

#endif
