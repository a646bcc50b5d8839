/* Test support: a BERT encoder with synthetic weights (prefix at_). */
#ifndef AT_BERT_H
#define AT_BERT_H

#include "models/bert.h"

#include <stddef.h>
#include <stdint.h>

/* Fills p[0..n) with offset + scale * (the caller's random draw). */
typedef void (*at_fill_fn)(float *p, size_t n, double scale, double offset);

/* A vocabulary of 53, 300 positions, 2 token types; weights from fill, the
 * query and key projections larger (peaked attention, as trained models
 * have). NULL if the allocation fails. Free with attn_bert_free. */
attn_bert *at_bert_synthetic(attn_ctx *ctx, int64_t E, int64_t H, int64_t I, int64_t layers,
                             attn_pooling pool, int normalize, at_fill_fn fill);

#endif
