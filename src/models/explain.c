/* Explaining a BERT encoder (attn/explain.h): one text through the layers
 * with every head's probabilities rebuilt from the forward's lse, heads
 * gated before the output projection, and the model's output as heads or
 * tokens are taken away. The layer is the post-LN layer of nn/block.h
 * written out step by step, so the gate sits between attention and Wo:
 *   qkv = x Wqkv^T + bqkv;  o = attention(q, k, v);  o[:, head h] *= gate[l, h]
 *   x = LN1(x + o Wo^T + bo);  x = LN2(x + ffn(x))
 * (the same calls in the same order as attn__layer_forward, so with no gate
 * the numbers are attn_bert_embed's). */
#include "models/bert.h"
#include "nn/block.h"

#include <attn/explain.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

static attn_status check_text(attn_ctx *ctx, const attn_bert *m, const int32_t *ids, int64_t len) {
    if (!m) return attn_ctx_fail(ctx, ATTN_E_ARG, "model is NULL");
    if (len < 1 || len > m->cfg.max_position)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%lld tokens, must be in [1, max_position = %lld]",
                             (long long)len, (long long)m->cfg.max_position);
    if (!ids) return attn_ctx_fail(ctx, ATTN_E_ARG, "ids is NULL");
    for (int64_t t = 0; t < len; t++)
        if (ids[t] < 0 || ids[t] >= m->cfg.vocab_size)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "token %lld: id %d is outside [0, vocab_size = %lld)",
                                 (long long)t, ids[t], (long long)m->cfg.vocab_size);
    return ATTN_OK;
}

attn_status attn__bert_run_trace(attn_ctx *ctx, const attn_bert *m, const int32_t *ids, int64_t len,
                                 const float *gate, float *probs, float *embedding,
                                 float *qkv_trace) {
    attn_status st = check_text(ctx, m, ids, len);
    if (st) return st;
    const attn_bert_config *c = &m->cfg;
    const int64_t E = c->hidden_size, H = c->num_heads, Dh = E / H, T = len, NL = c->num_layers;
    if (gate)
        for (int64_t k = 0; k < NL * H; k++)
            if (!isfinite(gate[k]))
                return attn_ctx_fail(ctx, ATTN_E_ARG, "head gate %lld is not finite", (long long)k);
    float *x = attn__malloc((size_t)(T * E) * sizeof(float));
    float *qkv = attn__malloc((size_t)(T * 3 * E) * sizeof(float));
    float *o = attn__malloc((size_t)(T * E) * sizeof(float));
    float *h = attn__malloc((size_t)(T * c->intermediate_size) * sizeof(float));
    float *lse = attn__malloc((size_t)(H * T) * sizeof(float));
    if (!x || !qkv || !o || !h || !lse) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate the scratch of %lld tokens",
                           (long long)T);
        goto done;
    }
    const int32_t kvl = (int32_t)T;
    const attn__batch bt = {1, T, &kvl};
    const attn__embedding emb = {E,           m->word,     m->pos,           m->type,
                                 m->emb_ln_g, m->emb_ln_b, c->layer_norm_eps};
    attn__embedding_forward(ctx, &emb, &bt, &ids, 0, x);
    for (int64_t l = 0; l < NL && !st; l++) {
        const attn__layer L = attn__bert_layer_view(m, l);
        attn__mha_block_args a;
        memset(&a, 0, sizeof a);
        a.B = 1, a.T = T, a.x = x, a.kv_len = &kvl, a.qkv = qkv, a.o = o, a.lse = lse;
        if ((st = attn__mha_block_attend(ctx, &L.attn, &a))) break;
        if (qkv_trace) memcpy(qkv_trace + l * T * 3 * E, qkv, (size_t)(T * 3 * E) * sizeof(float));
        if (probs) { /* the same views attn__mha_block_attend attended through */
            attn__attend_args at;
            memset(&at, 0, sizeof at);
            at.B = 1, at.T = T, at.S = T, at.kv_len = &kvl, at.lse = lse;
            at.q = (attn__rows){qkv, T * 3 * E, 3 * E};
            at.k = (attn__rows){qkv + E, T * 3 * E, 3 * E};
            at.v = (attn__rows){qkv + 2 * E, T * 3 * E, 3 * E};
            at.o = (attn__rows){o, T * E, E};
            attn_sdpa_args s;
            attn__attend_sdpa_args(&L.attn.heads, &at, &s);
            for (int64_t hh = 0; hh < H && !st; hh++) {
                float *dst = probs + (l * H + hh) * T * T;
                st = attn_sdpa_probs(ctx, &s, 0, hh, 0,
                                     attn_tensor_make(dst, ATTN_F32, 2, (int64_t[]){T, T}));
            }
            if (st) break;
        }
        if (gate)
            for (int64_t hh = 0; hh < H; hh++) {
                const float g = gate[l * H + hh];
                if (g == 1.0f) continue;
                for (int64_t t = 0; t < T; t++)
                    for (int64_t d = 0; d < Dh; d++)
                        o[t * E + hh * Dh + d] *= g;
            }
        float *y = qkv; /* q | k | v are spent: the branch output */
        attn__mha_block_out(ctx, &L.attn, T, o, y);
        attn__residual_layernorm(ctx, &bt, E, x, y, L.ln1_g, L.ln1_b, L.eps);
        attn__ffn_forward(ctx, &L.ffn, &bt, x, h, y);
        attn__residual_layernorm(ctx, &bt, E, x, y, L.ln2_g, L.ln2_b, L.eps);
    }
    if (!st && embedding) attn__bert_pool(c, x, T, 0, T, embedding);
done:
    attn__free(x), attn__free(qkv), attn__free(o), attn__free(h), attn__free(lse);
    return st;
}

attn_status attn_bert_run_explained(attn_ctx *ctx, const attn_bert *m, const int32_t *ids,
                                    int64_t len, const float *head_gate, float *probs,
                                    float *embedding) {
    attn__ctx_clear(ctx);
    return attn__bert_run_trace(ctx, m, ids, len, head_gate, probs, embedding, NULL);
}

static double cosine(const float *a, const float *b, int64_t E) {
    double d = 0, na = 0, nb = 0;
    for (int64_t k = 0; k < E; k++) {
        d += (double)a[k] * b[k];
        na += (double)a[k] * a[k];
        nb += (double)b[k] * b[k];
    }
    return na > 0 && nb > 0 ? d / sqrt(na * nb) : 0.0;
}

static attn_status check_texts(attn_ctx *ctx, const attn_bert *m, int64_t n,
                               const int32_t *const *ids, const int64_t *len, const void *out) {
    if (!m) return attn_ctx_fail(ctx, ATTN_E_ARG, "model is NULL");
    if (n < 1 || !ids || !len || !out)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "need n >= 1 texts (got %lld) and non-NULL arrays",
                             (long long)n);
    for (int64_t i = 0; i < n; i++) {
        attn_status st = check_text(ctx, m, ids[i], len[i]);
        if (st)
            return attn_ctx_fail(ctx, st, "text %lld: %s", (long long)i, attn_ctx_last_error(ctx));
    }
    return ATTN_OK;
}

attn_status attn_bert_head_importance(attn_ctx *ctx, const attn_bert *m, int64_t n,
                                      const int32_t *const *ids, const int64_t *len,
                                      float *importance) {
    attn__ctx_clear(ctx);
    attn_status st = check_texts(ctx, m, n, ids, len, importance);
    if (st) return st;
    const int64_t E = m->cfg.hidden_size, NH = m->cfg.num_layers * m->cfg.num_heads;
    float *gate = malloc((size_t)NH * sizeof *gate);
    float *e = malloc((size_t)(2 * E) * sizeof *e);
    double *acc = calloc((size_t)NH, sizeof *acc);
    if (!gate || !e || !acc) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %lld heads", (long long)NH);
        goto done;
    }
    for (int64_t k = 0; k < NH; k++)
        gate[k] = 1.0f;
    for (int64_t i = 0; i < n && !st; i++) {
        st = attn__bert_run_trace(ctx, m, ids[i], len[i], NULL, NULL, e, NULL);
        for (int64_t k = 0; k < NH && !st; k++) {
            gate[k] = 0.0f;
            st = attn__bert_run_trace(ctx, m, ids[i], len[i], gate, NULL, e + E, NULL);
            gate[k] = 1.0f;
            acc[k] += 1.0 - cosine(e, e + E, E);
        }
    }
    for (int64_t k = 0; k < NH && !st; k++)
        importance[k] = (float)(acc[k] / (double)n);
done:
    free(gate), free(e), free(acc);
    return st;
}

typedef struct ranked {
    double key;
    int64_t i;
} ranked;

static int ranked_cmp(const void *x, const void *y) { /* ascending key, then index */
    const ranked *a = x, *b = y;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

attn_status attn_bert_prune_curve(attn_ctx *ctx, const attn_bert *m, int64_t n,
                                  const int32_t *const *ids, const int64_t *len,
                                  const float *importance, float *curve, int64_t *order) {
    attn__ctx_clear(ctx);
    attn_status st = check_texts(ctx, m, n, ids, len, curve);
    if (st) return st;
    if (!importance) return attn_ctx_fail(ctx, ATTN_E_ARG, "importance is NULL");
    const int64_t E = m->cfg.hidden_size, NH = m->cfg.num_layers * m->cfg.num_heads;
    float *gate = malloc((size_t)NH * sizeof *gate);
    float *e = malloc((size_t)(n + 1) * (size_t)E * sizeof *e);
    ranked *r = malloc((size_t)NH * sizeof *r);
    if (!gate || !e || !r) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %lld heads", (long long)NH);
        goto done;
    }
    for (int64_t k = 0; k < NH; k++)
        r[k] = (ranked){importance[k], k}, gate[k] = 1.0f;
    qsort(r, (size_t)NH, sizeof *r, ranked_cmp);
    if (order)
        for (int64_t k = 0; k < NH; k++)
            order[k] = r[k].i;
    for (int64_t i = 0; i < n && !st; i++)
        st = attn__bert_run_trace(ctx, m, ids[i], len[i], NULL, NULL, e + i * E, NULL);
    for (int64_t k = 0; k <= NH && !st; k++) {
        if (k > 0) gate[r[k - 1].i] = 0.0f;
        double s = 0;
        for (int64_t i = 0; i < n && !st; i++) {
            st = attn__bert_run_trace(ctx, m, ids[i], len[i], gate, NULL, e + n * E, NULL);
            s += cosine(e + i * E, e + n * E, E);
        }
        curve[k] = (float)(s / (double)n);
    }
done:
    free(gate), free(e), free(r);
    return st;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The output after deletion: w . e, or cos(e0, e) without w. */
static double deletion_output(const float *w, const float *e0, const float *e, int64_t E) {
    if (!w) return cosine(e0, e, E);
    double y = 0;
    for (int64_t c = 0; c < E; c++)
        y += (double)w[c] * e[c];
    return y;
}

/* The curve of one removal order rank[0..C) (content token indices 1..C).
 * Nothing removed is the full text (e0); everything removed leaves [CLS]
 * [SEP] whatever the order: computed once, in *empty (NaN until then). */
static attn_status deletion_one(attn_ctx *ctx, const attn_bert *m, const int32_t *ids, int64_t len,
                                const int64_t *rank, int64_t steps, const float *e0, const float *w,
                                float *e, int32_t *sub, uint8_t *gone, double *empty,
                                double *curve) {
    const int64_t C = len - 2, E = m->cfg.hidden_size;
    for (int64_t k = 0; k <= steps; k++) {
        const int64_t del = (int64_t)llround((double)k * (double)C / (double)steps);
        if (del == 0) {
            curve[k] += deletion_output(w, e0, e0, E);
            continue;
        }
        if (del == C && !isnan(*empty)) {
            curve[k] += *empty;
            continue;
        }
        memset(gone, 0, (size_t)len);
        for (int64_t r = 0; r < del; r++)
            gone[rank[r]] = 1;
        int64_t n = 0;
        for (int64_t t = 0; t < len; t++)
            if (!gone[t]) sub[n++] = ids[t];
        attn_status st = attn__bert_run_trace(ctx, m, sub, n, NULL, NULL, e, NULL);
        if (st) return st;
        const double v = deletion_output(w, e0, e, E);
        if (del == C) *empty = v;
        curve[k] += v;
    }
    return ATTN_OK;
}

attn_status attn_bert_deletion_curve(attn_ctx *ctx, const attn_bert *m, const int32_t *ids,
                                     int64_t len, const float *score, int64_t steps, int64_t random,
                                     uint64_t seed, const float *w, float *curve) {
    attn__ctx_clear(ctx);
    attn_status st = check_text(ctx, m, ids, len);
    if (st) return st;
    if (len < 2 || steps < 1 || !curve || (!score && random < 1))
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "deletion curve: need len >= 2 (got %lld), steps >= 1 (got %lld), "
                             "a curve, and a score or random >= 1 (got %lld)",
                             (long long)len, (long long)steps, (long long)random);
    const int64_t C = len - 2, E = m->cfg.hidden_size;
    float *e = malloc((size_t)(2 * E) * sizeof *e);
    int32_t *sub = malloc((size_t)len * sizeof *sub);
    uint8_t *gone = malloc((size_t)len);
    int64_t *rank = malloc((size_t)(C + 1) * sizeof *rank);
    ranked *r = malloc((size_t)(C + 1) * sizeof *r);
    double *acc = calloc((size_t)(steps + 1), sizeof *acc);
    if (!e || !sub || !gone || !rank || !r || !acc) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for a deletion curve");
        goto done;
    }
    st = attn__bert_run_trace(ctx, m, ids, len, NULL, NULL, e, NULL);
    const int64_t reps = score ? 1 : random;
    double empty = NAN;
    uint64_t s = seed;
    for (int64_t rep = 0; rep < reps && !st; rep++) {
        if (score) { /* decreasing score, ties: earlier first */
            for (int64_t t = 0; t < C; t++)
                r[t] = (ranked){-(double)score[t + 1], t + 1};
            qsort(r, (size_t)C, sizeof *r, ranked_cmp);
            for (int64_t t = 0; t < C; t++)
                rank[t] = r[t].i;
        } else { /* Fisher-Yates */
            for (int64_t t = 0; t < C; t++)
                rank[t] = t + 1;
            for (int64_t t = C - 1; t > 0; t--) {
                const int64_t j = (int64_t)(splitmix64(&s) % (uint64_t)(t + 1));
                const int64_t tmp = rank[t];
                rank[t] = rank[j], rank[j] = tmp;
            }
        }
        st = deletion_one(ctx, m, ids, len, rank, steps, e, w, e + E, sub, gone, &empty, acc);
    }
    for (int64_t k = 0; k <= steps && !st; k++)
        curve[k] = (float)(acc[k] / (double)reps);
done:
    free(e), free(sub), free(gone), free(rank), free(r), free(acc);
    return st;
}
