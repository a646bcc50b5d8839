/* A BERT encoder with synthetic weights, for the tests that need one
 * without a model directory (test_bert, test_explain). */
#include "at_bert.h"

#include <math.h>

attn_bert *at_bert_synthetic(attn_ctx *ctx, int64_t E, int64_t H, int64_t I, int64_t layers,
                             attn_pooling pool, int normalize, at_fill_fn fill) {
    attn_bert_config c = {.vocab_size = 53,
                          .hidden_size = E,
                          .num_layers = layers,
                          .num_heads = H,
                          .intermediate_size = I,
                          .max_position = 300,
                          .type_vocab_size = 2,
                          .layer_norm_eps = 1e-12f,
                          .pooling = pool,
                          .normalize = normalize,
                          .max_seq_length = 256};
    attn_bert *m;
    if (attn__bert_alloc(ctx, &c, &m) != ATTN_OK) return NULL;
    const size_t e = (size_t)E, in = (size_t)I;
    fill(m->word, 53 * e, 1.0, 0.0);
    fill(m->pos, 300 * e, 0.5, 0.0);
    fill(m->type, 2 * e, 0.5, 0.0);
    fill(m->emb_ln_g, e, 0.2, 1.0);
    fill(m->emb_ln_b, e, 0.2, 0.0);
    for (int64_t l = 0; l < layers; l++) {
        attn__bert_layer *L = &m->layers[l];
        /* larger q/k weights give peaked attention, as trained models have */
        fill(L->wqkv, 2 * e * e, 3.0 / sqrt((double)e), 0.0);
        fill(L->wqkv + 2 * e * e, e * e, 1.0 / sqrt((double)e), 0.0);
        fill(L->bqkv, 3 * e, 0.2, 0.0);
        fill(L->wo, e * e, 1.0 / sqrt((double)e), 0.0);
        fill(L->bo, e, 0.2, 0.0);
        fill(L->ln1_g, e, 0.2, 1.0);
        fill(L->ln1_b, e, 0.2, 0.0);
        fill(L->wi, in * e, 1.5 / sqrt((double)e), 0.0);
        fill(L->bi, in, 0.5, 0.0);
        fill(L->wf, e * in, 1.0 / sqrt((double)in), 0.0);
        fill(L->bf, e, 0.2, 0.0);
        fill(L->ln2_g, e, 0.2, 1.0);
        fill(L->ln2_b, e, 0.2, 0.0);
    }
    return m;
}
