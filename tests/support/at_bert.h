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

/* The naive encoders' LayerNorm (NAME##_ln, in place over E) and Linear
 * (NAME##_lin: y[M, N] = x[M, K] W^T + bias) in type R, shared by the tests
 * that rebuild the encoder in float64 and float32. */
#define AT_DEFINE_LN_LIN(R, NAME, SQRT)                                                            \
    static void NAME##_ln(R *x, int64_t E, const float *g, const float *b, R eps) {                \
        R mu = 0, var = 0;                                                                         \
        for (int64_t k = 0; k < E; k++)                                                            \
            mu += x[k];                                                                            \
        mu /= (R)E;                                                                                \
        for (int64_t k = 0; k < E; k++)                                                            \
            var += (x[k] - mu) * (x[k] - mu);                                                      \
        var /= (R)E;                                                                               \
        R rs = (R)1 / SQRT(var + eps);                                                             \
        for (int64_t k = 0; k < E; k++)                                                            \
            x[k] = (x[k] - mu) * rs * (R)g[k] + (R)b[k];                                           \
    }                                                                                              \
    static void NAME##_lin(const R *x, int64_t M, int64_t K, const float *W, const float *bias,    \
                           int64_t N, R *y) {                                                      \
        for (int64_t i = 0; i < M; i++)                                                            \
            for (int64_t o = 0; o < N; o++) {                                                      \
                R s = (R)bias[o];                                                                  \
                for (int64_t k = 0; k < K; k++)                                                    \
                    s += x[i * K + k] * (R)W[o * K + k];                                           \
                y[i * N + o] = s;                                                                  \
            }                                                                                      \
    }

#endif
