/* Gradient-weighted attention relevance (Chefer, Gur and Wolf, 2021,
 * "Generic Attention-model Explainability for Interpreting Bi-Modal and
 * Encoder-Decoder Transformers", the rule for self-attention encoders):
 *   R = I;  for each layer l, first to last:  R = R + mean_h (dy/dA_lh * A_lh)^+ R
 * for an output y = w . embedding. A forward saving what the backward needs
 * (the same calls as the fast path: attn__mha_block_attend, attn_sdpa_probs,
 * LayerNorm with its saved mean and rstd), then a backward through pooling,
 * LayerNorms, the feed-forward block, the output projection and attention
 * (written out per head from the probabilities: T x T per head is fine for
 * explaining one text), down to the first layer's input. */
#include "models/bert.h"
#include "nn/block.h"

#include <attn/explain.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct saved {        /* per layer, [T, width] row-major */
    float *xin, *qkv, *o, *p; /* layer input, q | k | v, attention output, probs [H, T, T] */
    float *u1, *m1, *r1, *x1; /* LN1 input, mean, rstd, output */
    float *hp, *u2, *m2, *r2; /* FFN pre-GELU, LN2 input, mean, rstd */
} saved;

attn_status attn__bert_relevance(attn_ctx *ctx, const attn_bert *m, const int32_t *ids, int64_t T,
                                 const float *w, float *relevance, float *y_out, float *cams,
                                 double *dgate) {
    const attn_bert_config *c = &m->cfg;
    const int64_t E = c->hidden_size, H = c->num_heads, Dh = E / H, I = c->intermediate_size,
                  NL = c->num_layers;
    const size_t TE = (size_t)(T * E), TI = (size_t)(T * I), TT = (size_t)(T * T);
    const size_t per = 8 * TE + (size_t)H * TT + 4 * (size_t)T + TI,
                 work = 8 * TE + 2 * TI + 4 * TT;
    float *arena = attn__malloc(((size_t)NL * per + work + TE) * sizeof(float));
    double *R = malloc(2 * TT * sizeof *R), *p = malloc((size_t)E * sizeof *p);
    saved *S = calloc((size_t)NL, sizeof *S);
    attn_status st = ATTN_OK;
    if (!arena || !R || !p || !S) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "relevance: out of memory for %lld tokens",
                           (long long)T);
        goto done;
    }
    float *a = arena;
#define TAKE(n) (a += (n), a - (n))
    for (int64_t l = 0; l < NL; l++) {
        saved *s = &S[l];
        s->xin = TAKE(TE), s->qkv = TAKE(3 * TE), s->o = TAKE(TE), s->p = TAKE((size_t)H * TT);
        s->u1 = TAKE(TE), s->m1 = TAKE((size_t)T), s->r1 = TAKE((size_t)T), s->x1 = TAKE(TE);
        s->hp = TAKE(TI), s->u2 = TAKE(TE), s->m2 = TAKE((size_t)T), s->r2 = TAKE((size_t)T);
    }
    float *x = TAKE(TE), *h = TAKE(TI);
    float *dx = TAKE(TE), *du = TAKE(TE), *dx1 = TAKE(TE), *dh = TAKE(TI), *dq = TAKE(3 * TE);
    float *ga = TAKE(TT), *ds = TAKE(TT), *dob = TAKE(TE), *lsebuf = TAKE(TE);
#undef TAKE
    /* ---- forward, saving ---- */
    const int32_t kvl = (int32_t)T;
    const attn__batch bt = {1, T, &kvl};
    const attn__embedding emb = {E,           m->word,     m->pos,           m->type,
                                 m->emb_ln_g, m->emb_ln_b, c->layer_norm_eps};
    attn__embedding_forward(ctx, &emb, &bt, &ids, 0, x);
    for (int64_t l = 0; l < NL && !st; l++) {
        const attn__layer L = attn__bert_layer_view(m, l);
        saved *s = &S[l];
        memcpy(s->xin, x, TE * sizeof(float));
        attn__mha_block_args ba;
        memset(&ba, 0, sizeof ba);
        ba.B = 1, ba.T = T, ba.x = x, ba.kv_len = &kvl, ba.qkv = s->qkv, ba.o = s->o;
        ba.lse = lsebuf; /* [H, T] fits: H <= E */
        if ((st = attn__mha_block_attend(ctx, &L.attn, &ba))) break;
        attn__attend_args at;
        memset(&at, 0, sizeof at);
        at.B = 1, at.T = T, at.S = T, at.kv_len = &kvl, at.lse = lsebuf;
        at.q = (attn__rows){s->qkv, T * 3 * E, 3 * E};
        at.k = (attn__rows){s->qkv + E, T * 3 * E, 3 * E};
        at.v = (attn__rows){s->qkv + 2 * E, T * 3 * E, 3 * E};
        at.o = (attn__rows){s->o, T * E, E};
        attn_sdpa_args sa;
        attn__attend_sdpa_args(&L.attn.heads, &at, &sa);
        for (int64_t hh = 0; hh < H && !st; hh++)
            st = attn_sdpa_probs(ctx, &sa, 0, hh, 0,
                                 attn_tensor_make(s->p + hh * TT, ATTN_F32, 2, (int64_t[]){T, T}));
        if (st) break;
        /* x1 = LN1(x + o Wo^T + bo), as attn__residual_layernorm */
        attn__mha_block_out(ctx, &L.attn, T, s->o, s->u1);
        for (size_t k = 0; k < TE; k++)
            s->u1[k] += x[k];
        attn__layernorm_forward(s->u1, E, T, E, L.ln1_g, L.ln1_b, L.eps, s->x1, E, s->m1, s->r1);
        /* x = LN2(x1 + gelu(x1 Wi^T + bi) Wf^T + bf), as attn__ffn_forward */
        attn__linear_forward(ctx, s->x1, E, T, E, L.ffn.w1, L.ffn.b1, I, s->hp, I);
        memcpy(h, s->hp, TI * sizeof(float));
        for (int64_t t = 0; t < T; t++)
            attn__gelu_forward(h + t * I, I);
        attn__linear_forward(ctx, h, I, T, I, L.ffn.w2, L.ffn.b2, E, s->u2, E);
        for (size_t k = 0; k < TE; k++)
            s->u2[k] += s->x1[k];
        attn__layernorm_forward(s->u2, E, T, E, L.ln2_g, L.ln2_b, L.eps, x, E, s->m2, s->r2);
    }
    if (st) goto done;
    /* ---- y = w . e, e = pool(x) (normalised if the model says so) ---- */
    {
        for (int64_t k = 0; k < E; k++) {
            double v;
            if (c->pooling == ATTN_POOL_CLS) {
                v = x[k];
            } else if (c->pooling == ATTN_POOL_MAX) {
                v = x[k];
                for (int64_t t = 1; t < T; t++)
                    v = fmax(v, (double)x[t * E + k]);
            } else {
                v = 0;
                for (int64_t t = 0; t < T; t++)
                    v += x[t * E + k];
                v /= (double)T;
            }
            p[k] = v;
        }
        double nrm = 0, y = 0, ew = 0;
        for (int64_t k = 0; k < E; k++)
            nrm += p[k] * p[k];
        nrm = c->normalize ? fmax(sqrt(nrm), 1e-12) : 1.0;
        for (int64_t k = 0; k < E; k++)
            y += w[k] * (p[k] / nrm), ew += (double)w[k] * (p[k] / nrm);
        if (y_out) *y_out = (float)y;
        /* de = w; dp = (w - e (e . w)) / |p| when normalised */
        memset(dx, 0, TE * sizeof(float));
        for (int64_t k = 0; k < E; k++) {
            const double dp = c->normalize ? (w[k] - (p[k] / nrm) * ew) / nrm : w[k];
            if (c->pooling == ATTN_POOL_CLS) {
                dx[k] = (float)dp;
            } else if (c->pooling == ATTN_POOL_MAX) {
                int64_t best = 0;
                for (int64_t t = 1; t < T; t++)
                    if (x[t * E + k] > x[best * E + k]) best = t;
                dx[best * E + k] = (float)dp;
            } else {
                for (int64_t t = 0; t < T; t++)
                    dx[t * E + k] = (float)(dp / (double)T);
            }
        }
    }
    /* ---- backward, last layer first; cams[l] = mean_h (dA * A)^+ ---- */
    for (int64_t l = NL - 1; l >= 0; l--) {
        const attn__layer L = attn__bert_layer_view(m, l);
        const saved *s = &S[l];
        attn__layernorm_backward(s->u2, E, T, E, L.ln2_g, s->m2, s->r2, dx, E, du, E, NULL, NULL);
        /* dW is not wanted, so the linear backwards never read their x */
        attn__linear_backward(ctx, s->hp, I, T, I, L.ffn.w2, E, du, E, dh, I, 0, NULL, NULL, 0);
        attn__gelu_backward(s->hp, dh, dh, (int64_t)TI);
        memcpy(dx1, du, TE * sizeof(float));
        attn__linear_backward(ctx, s->x1, E, T, E, L.ffn.w1, I, dh, I, dx1, E, 1, NULL, NULL, 0);
        attn__layernorm_backward(s->u1, E, T, E, L.ln1_g, s->m1, s->r1, dx1, E, du, E, NULL, NULL);
        /* du: gradient of the layer input through the residual, and of u1 */
        attn__linear_backward(ctx, s->o, E, T, E, L.attn.w_out, E, du, E, dob, E, 0, NULL, NULL, 0);
        if (dgate) /* dy/dgate[l, h] at gate 1: head h's output against its gradient */
            for (int64_t hh = 0; hh < H; hh++) {
                double g = 0;
                for (int64_t t = 0; t < T; t++)
                    for (int64_t d = 0; d < Dh; d++)
                        g += (double)dob[t * E + hh * Dh + d] * s->o[t * E + hh * Dh + d];
                dgate[l * H + hh] = g;
            }
        const double scale = 1.0 / sqrt((double)Dh);
        float *cl = cams + (size_t)l * TT;
        memset(cl, 0, TT * sizeof(float));
        memset(dq, 0, 3 * TE * sizeof(float));
        for (int64_t hh = 0; hh < H; hh++) {
            const float *A = s->p + hh * TT;
            const float *q = s->qkv + hh * Dh, *k = s->qkv + E + hh * Dh,
                        *v = s->qkv + 2 * E + hh * Dh;
            float *gq = dq + hh * Dh, *gk = dq + E + hh * Dh, *gv = dq + 2 * E + hh * Dh;
            for (int64_t i = 0; i < T; i++) {
                const float *doi = dob + i * E + hh * Dh;
                double rs = 0;
                for (int64_t j = 0; j < T; j++) {
                    double g = 0;
                    for (int64_t d = 0; d < Dh; d++)
                        g += (double)doi[d] * v[j * 3 * E + d];
                    ga[i * T + j] = (float)g;
                    rs += g * A[i * T + j];
                    const double ca = g * A[i * T + j];
                    if (ca > 0) cl[i * T + j] += (float)(ca / (double)H);
                }
                for (int64_t j = 0; j < T; j++)
                    ds[i * T + j] = (float)(A[i * T + j] * (ga[i * T + j] - rs));
            }
            for (int64_t i = 0; i < T; i++)
                for (int64_t j = 0; j < T; j++) {
                    const float aij = A[i * T + j], sij = (float)(ds[i * T + j] * scale);
                    const float *doi = dob + i * E + hh * Dh;
                    for (int64_t d = 0; d < Dh; d++) {
                        gv[j * 3 * E + d] += aij * doi[d];
                        gq[i * 3 * E + d] += sij * k[j * 3 * E + d];
                        gk[j * 3 * E + d] += sij * q[i * 3 * E + d];
                    }
                }
        }
        memcpy(dx, du, TE * sizeof(float));
        attn__linear_backward(ctx, s->xin, E, T, E, L.attn.w_qkv, 3 * E, dq, 3 * E, dx, E, 1, NULL,
                              NULL, 0);
    }
    /* ---- R = I; R += cam_l R, first layer to last ---- */
    {
        double *r = R, *t = R + TT;
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < T; j++)
                r[i * T + j] = i == j;
        for (int64_t l = 0; l < NL; l++) {
            const float *cl = cams + (size_t)l * TT;
            memcpy(t, r, TT * sizeof *t);
            for (int64_t i = 0; i < T; i++)
                for (int64_t k = 0; k < T; k++) {
                    const double v = cl[i * T + k];
                    if (v == 0) continue;
                    for (int64_t j = 0; j < T; j++)
                        t[i * T + j] += v * r[k * T + j];
                }
            double *sw = r;
            r = t, t = sw;
        }
        for (size_t k = 0; k < TT; k++)
            relevance[k] = (float)r[k];
    }
done:
    attn__free(arena);
    free(R), free(p), free(S);
    return st;
}

attn_status attn_bert_relevance(attn_ctx *ctx, const attn_bert *m, const int32_t *ids, int64_t len,
                                const float *w, float *relevance, float *y) {
    attn__ctx_clear(ctx);
    if (!m) return attn_ctx_fail(ctx, ATTN_E_ARG, "model is NULL");
    if (!w || !relevance) return attn_ctx_fail(ctx, ATTN_E_ARG, "w or relevance is NULL");
    if (len < 1 || len > m->cfg.max_position || !ids)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%lld tokens, must be in [1, max_position = %lld]",
                             (long long)len, (long long)m->cfg.max_position);
    for (int64_t t = 0; t < len; t++)
        if (ids[t] < 0 || ids[t] >= m->cfg.vocab_size)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "token %lld: id %d is outside [0, vocab_size = %lld)",
                                 (long long)t, ids[t], (long long)m->cfg.vocab_size);
    for (int64_t k = 0; k < m->cfg.hidden_size; k++)
        if (!isfinite(w[k]))
            return attn_ctx_fail(ctx, ATTN_E_ARG, "w[%lld] is not finite", (long long)k);
    const size_t TT = (size_t)(len * len);
    float *cams = malloc((size_t)m->cfg.num_layers * TT * sizeof *cams);
    if (!cams) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "relevance: out of memory");
    attn_status st = attn__bert_relevance(ctx, m, ids, len, w, relevance, y, cams, NULL);
    free(cams);
    return st;
}
