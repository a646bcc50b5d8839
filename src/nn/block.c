/* Transformer pieces: embeddings, feed-forward, residuals, the layer (see
 * block.h). */
#include "nn/block.h"

#include <string.h>

void attn__embedding_forward(attn_ctx *ctx, const attn__embedding *e, const attn__batch *bt,
                             const int32_t *const *ids, int64_t pos0, float *x) {
    const int64_t E = e->E, T = bt->T, N = bt->B * T;
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) if (N > 1)
    for (int64_t r = 0; r < N; r++) {
        const int64_t b = r / T, t = r % T;
        const int real = !bt->len || t < bt->len[b];
        const int32_t id = real ? ids[b][t] : 0; /* padding: any valid row */
        const float *we = e->tok + (int64_t)id * E;
        const float *pe = e->pos ? e->pos + (pos0 + t) * E : NULL, *te = e->type;
        float *xr = x + r * E;
        for (int64_t k = 0; k < E; k++) {
            float v = we[k];
            if (pe) v += pe[k];
            if (te) v += te[k];
            xr[k] = v;
        }
        if (e->ln_g)
            attn__layernorm_forward(xr, E, 1, E, e->ln_g, e->ln_b, e->eps, xr, E, NULL, NULL);
    }
}

void attn__ffn_forward(attn_ctx *ctx, const attn__ffn *f, const attn__batch *bt, const float *x,
                       float *h, float *y) {
    const int64_t E = f->E, I = f->I, N = bt->B * bt->T;
    attn__linear_forward_w(ctx, x, E, N, E, f->w1, f->w1_bf, f->b1, I, h, I);
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) if (N > 1)
    for (int64_t r = 0; r < N; r++)
        if (!attn__batch_padded(bt, r)) attn__ffn_activate(f, h + r * I, I);
    attn__linear_forward_w(ctx, h, I, N, I, f->w2, f->w2_bf, f->b2, E, y, E);
}

void attn__residual_layernorm(attn_ctx *ctx, const attn__batch *bt, int64_t E, float *x, float *y,
                              const float *g, const float *b, float eps) {
    const int64_t N = bt->B * bt->T;
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) if (N > 1)
    for (int64_t r = 0; r < N; r++) {
        if (attn__batch_padded(bt, r)) continue;
        float *xr = x + r * E, *yr = y + r * E;
        for (int64_t c = 0; c < E; c++)
            yr[c] += xr[c];
        attn__layernorm_forward(yr, E, 1, E, g, b, eps, xr, E, NULL, NULL);
    }
}

void attn__residual_add(attn_ctx *ctx, int64_t N, int64_t E, float *x, const float *y) {
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) if (N > 1)
    for (int64_t r = 0; r < N; r++)
        for (int64_t c = 0; c < E; c++)
            x[r * E + c] += y[r * E + c];
}

static void layernorm_rows(attn_ctx *ctx, int64_t N, int64_t E, const float *x, const float *g,
                           const float *b, float eps, float *y) {
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) if (N > 1)
    for (int64_t r = 0; r < N; r++)
        attn__layernorm_forward(x + r * E, E, 1, E, g, b, eps, y + r * E, E, NULL, NULL);
}

attn_status attn__layer_forward(attn_ctx *ctx, const attn__layer *L, const attn__batch *bt,
                                float *x, attn_tensor mask, attn__kv_cache *cache,
                                attn__layer_ws *ws) {
    const int64_t E = L->attn.E, N = bt->B * bt->T;
    attn__mha_block_args a;
    memset(&a, 0, sizeof a);
    a.B = bt->B, a.T = bt->T, a.kv_len = bt->len, a.mask = mask, a.cache = cache;
    a.qkv = ws->qkv, a.o = ws->o;
    float *y = ws->qkv; /* q | k | v are spent after attention: the branch output */
    if (!L->pre_ln) {
        a.x = x;
        attn_status st = attn__mha_block_attend(ctx, &L->attn, &a);
        if (st) return st;
        attn__mha_block_out(ctx, &L->attn, N, ws->o, y);
        attn__residual_layernorm(ctx, bt, E, x, y, L->ln1_g, L->ln1_b, L->eps);
        if (!L->ffn.w1 && !L->ffn.w1_bf) return ATTN_OK;
        attn__ffn_forward(ctx, &L->ffn, bt, x, ws->h, y);
        attn__residual_layernorm(ctx, bt, E, x, y, L->ln2_g, L->ln2_b, L->eps);
        return ATTN_OK;
    }
    /* pre-LN: every row is normalised (padded ones too) so the GEMMs never
     * read an unwritten row; LN1(x) goes to o, which attention overwrites
     * only after the projection GEMM has read it */
    layernorm_rows(ctx, N, E, x, L->ln1_g, L->ln1_b, L->eps, ws->o);
    a.x = ws->o;
    attn_status st = attn__mha_block_attend(ctx, &L->attn, &a);
    if (st) return st;
    attn__mha_block_out(ctx, &L->attn, N, ws->o, y);
    attn__residual_add(ctx, N, E, x, y);
    if (!L->ffn.w1 && !L->ffn.w1_bf) return ATTN_OK;
    layernorm_rows(ctx, N, E, x, L->ln2_g, L->ln2_b, L->eps, ws->o);
    attn__ffn_forward(ctx, &L->ffn, bt, ws->o, ws->h, y);
    attn__residual_add(ctx, N, E, x, y);
    return ATTN_OK;
}

size_t attn__enc_weights_floats(int64_t E, int64_t I) {
    const size_t e = (size_t)E, i = (size_t)I;
    return 3 * e * e + 3 * e + e * e + e + 2 * e + i * e + i + e * i + e + 2 * e;
}

float *attn__enc_weights_take(attn__enc_weights *w, float *p, int64_t E, int64_t I) {
    const size_t e = (size_t)E, i = (size_t)I;
#define TAKE(ptr, n) (w->ptr = p, p += (n))
    TAKE(wqkv, 3 * e * e);
    TAKE(bqkv, 3 * e);
    TAKE(wo, e * e);
    TAKE(bo, e);
    TAKE(ln1_g, e);
    TAKE(ln1_b, e);
    TAKE(wi, i * e);
    TAKE(bi, i);
    TAKE(wf, e * i);
    TAKE(bf, e);
    TAKE(ln2_g, e);
    TAKE(ln2_b, e);
#undef TAKE
    return p;
}

attn__layer attn__enc_layer(const attn__enc_weights *w, int64_t E, int64_t H, int64_t I, float eps,
                            int pre_ln, int qkv_bias) {
    attn__layer L;
    memset(&L, 0, sizeof L);
    L.attn.heads.H = H, L.attn.heads.Hkv = H, L.attn.heads.Dh = E / H;
    L.attn.E = E, L.attn.KV = E;
    L.attn.w_qkv = w->wqkv, L.attn.b_qkv = qkv_bias ? w->bqkv : NULL;
    L.attn.w_out = w->wo, L.attn.b_out = w->bo;
    L.ffn.E = E, L.ffn.I = I;
    L.ffn.w1 = w->wi, L.ffn.b1 = w->bi, L.ffn.w2 = w->wf, L.ffn.b2 = w->bf;
    L.ln1_g = w->ln1_g, L.ln1_b = w->ln1_b, L.ln2_g = w->ln2_g, L.ln2_b = w->ln2_b;
    L.eps = eps;
    L.pre_ln = pre_ln;
    return L;
}
