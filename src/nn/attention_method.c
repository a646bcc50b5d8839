/* attn__attend with another method than exact attention (attention.h,
 * attn__method): block-sparse layouts and the approximations of
 * efficient.h substituted inside a model's layers, and the attention each
 * key receives (token pruning). */
#include "nn/attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Sequence b of a alone: B = 1, its n real rows, no padding left. */
static attn__attend_args one_sequence(const attn__attend_args *a, int64_t b, int64_t n) {
    attn__attend_args o = *a;
    o.B = 1, o.T = n, o.S = n;
    o.q.data += b * a->q.bs, o.k.data += b * a->k.bs, o.v.data += b * a->v.bs;
    o.o.data += b * a->o.bs;
    o.kv_len = NULL, o.lse = NULL;
    memset(&o.probs, 0, sizeof o.probs);
    return o;
}

/* Attention FLOPs of a layout over n tokens, as attn_sdpa_flops counts a
 * pair: 2 (D + Dv) per computed (query, key), per head (a per-head layout
 * counts each head's own blocks). */
static double layout_flops(const attn_sdpa_layout *l, int64_t n, int64_t H, int64_t Dh) {
    double pairs = 0.0;
    const int64_t nl = l->per_head ? H : 1;
    for (int64_t h = 0; h < nl; h++)
        for (int64_t qb = 0; qb < l->nqb; qb++)
            for (int64_t kb = 0; kb < l->nkb; kb++)
                if (l->blocks[(h * l->nqb + qb) * l->nkb + kb])
                    pairs +=
                        (double)(ATTN_MIN(l->bq, n - qb * l->bq) * ATTN_MIN(l->bk, n - kb * l->bk));
    return pairs * 4.0 * (double)Dh * (double)(l->per_head ? 1 : H);
}

/* Head h of a [B, H, T, D] view (keys and values: their head h / group). */
static attn_tensor head_view(attn_tensor t, int64_t h) {
    t.data = (float *)t.data + h * t.stride[1];
    t.shape[1] = 1;
    return t;
}

/* received[b, j] = sum_h sum_{i < n_b} p[b, h, i, j], from the forward's lse
 * (attn_sdpa_probs: the forward's own numbers), summed in float64. */
static attn_status received(attn_ctx *ctx, const attn__heads *hd, const attn__attend_args *a,
                            const attn_sdpa_args *s, float *recv) {
    const int64_t T = a->T, S = a->S;
    float *p = malloc((size_t)(T * S) * sizeof *p);
    double *acc = malloc((size_t)S * sizeof *acc);
    attn_status st = p && acc ? ATTN_OK
                              : attn_ctx_fail(ctx, ATTN_E_NOMEM,
                                              "cannot allocate %lld x %lld attention probabilities",
                                              (long long)T, (long long)S);
    for (int64_t b = 0; !st && b < a->B; b++) {
        const int64_t n = a->kv_len ? a->kv_len[b] : S;
        for (int64_t j = 0; j < S; j++)
            acc[j] = 0.0;
        for (int64_t h = 0; !st && h < hd->H; h++) {
            st = attn_sdpa_probs(ctx, s, b, h, 0,
                                 attn_tensor_make(p, ATTN_F32, 2, (int64_t[]){T, S}));
            for (int64_t i = 0; !st && i < ATTN_MIN(n, T); i++)
                for (int64_t j = 0; j < S; j++)
                    acc[j] += p[i * S + j];
        }
        for (int64_t j = 0; j < S; j++)
            recv[b * S + j] = (float)acc[j];
    }
    free(p), free(acc);
    return st;
}

/* One sequence (B = 1, no padding) with a layout or an approximation;
 * with recv (the sequence's [n] slice of method.received) also the
 * attention each key receives under the method: a layout's own
 * probabilities (attn_sdpa_probs from its lse), an approximation's
 * attn_approx_received, summed over heads. */
static attn_status attend_one(attn_ctx *ctx, const attn__heads *hd, const attn__attend_args *a1,
                              uint8_t *blocks, float *recv) {
    const attn__method *m = hd->method;
    const int64_t n = a1->T;
    attn_sdpa_args s;
    attn__attend_sdpa_args(hd, a1, &s);
    if (m->kind == ATTN__METHOD_LAYOUT) {
        const int64_t nb = (n + m->block - 1) / m->block;
        attn_status st = ATTN_OK;
        for (int64_t h = 0; !st && h < (m->head_seeds ? hd->H : 1); h++) {
            attn_sdpa_layout_spec sp = m->spec;
            if (m->head_seeds) sp.seed = m->head_seeds[h];
            st = attn_sdpa_layout_build(ctx, &sp, n, n, m->block, m->block, blocks + h * nb * nb);
        }
        if (st) return st;
        attn_sdpa_layout lay = {blocks, m->block, m->block, nb, nb, m->head_seeds != NULL};
        s.layout = &lay;
        float *lse = NULL;
        if (recv) {
            if (!(lse = malloc((size_t)(hd->H * n) * sizeof *lse)))
                return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate the attention's lse");
            s.lse = attn_tensor_make(lse, ATTN_F32, 3, (int64_t[]){1, hd->H, n});
        }
        st = attn_sdpa_forward(ctx, &s);
        if (!st && m->flops) *m->flops += layout_flops(&lay, n, hd->H, hd->Dh);
        if (!st && recv) st = received(ctx, hd, a1, &s, recv);
        free(lse);
        return st;
    }
    /* the Performer with a draw per head: one call per head */
    const int64_t nh = m->approx == ATTN_APPROX_PERFORMER &&
                               (m->omega ? m->omega_stride > 0 : m->head_seeds != NULL)
                           ? hd->H
                           : 1;
    const int64_t group = hd->H / hd->Hkv;
    float *rh = NULL;
    if (recv && !(rh = malloc((size_t)(hd->H * n) * sizeof *rh)))
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate the attention received");
    attn_status st = ATTN_OK;
    for (int64_t h = 0; !st && h < nh; h++) {
        attn_approx_args ap;
        memset(&ap, 0, sizeof ap);
        ap.q = s.q, ap.k = s.k, ap.v = s.v, ap.out = s.out;
        if (nh > 1) {
            ap.q = head_view(s.q, h), ap.out = head_view(s.out, h);
            ap.k = head_view(s.k, h / group), ap.v = head_view(s.v, h / group);
        }
        ap.method = m->approx;
        if (m->approx != ATTN_APPROX_LINEAR) ap.scale = hd->scale;
        if (m->approx == ATTN_APPROX_PERFORMER) {
            ap.features = m->features;
            if (m->omega)
                ap.omega = m->omega + (nh > 1 ? h * m->omega_stride : 0);
            else
                ap.seed = nh > 1 ? m->head_seeds[h] : m->seed;
        }
        if (m->approx == ATTN_APPROX_NYSTROM) ap.landmarks = ATTN_MIN(m->landmarks, n);
        if (m->approx == ATTN_APPROX_TOPK) ap.topk = ATTN_MIN(m->topk, n);
        st = attn_approx_forward(ctx, &ap);
        if (!st && m->flops) *m->flops += attn_approx_flops(&ap, 0);
        if (!st && rh) st = attn_approx_received(ctx, &ap, rh + h * n);
    }
    for (int64_t j = 0; !st && rh && j < n; j++) {
        double acc = 0.0;
        for (int64_t h = 0; h < hd->H; h++)
            acc += rh[h * n + j];
        recv[j] = (float)acc;
    }
    free(rh);
    return st;
}

attn_status attn__attend_method(attn_ctx *ctx, const attn__heads *hd, const attn__attend_args *a) {
    const attn__method *m = hd->method;
    if (a->T != a->S || a->dropout_p != 0.0f || a->probs.data || a->mask.data ||
        a->key_padding_mask.data)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "another attention method: self-attention of a padded batch only "
                             "(no mask, dropout or probabilities)");
    if (m->kind == ATTN__METHOD_EXACT) {
        attn_sdpa_args s;
        attn__attend_sdpa_args(hd, a, &s);
        float *lse = NULL;
        if (m->received && !a->lse) {
            lse = malloc((size_t)(a->B * hd->H * a->T) * sizeof *lse);
            if (!lse)
                return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate the attention's lse");
            s.lse = attn_tensor_make(lse, ATTN_F32, 3, (int64_t[]){a->B, hd->H, a->T});
        }
        attn_status st = attn_sdpa_forward(ctx, &s);
        if (!st && m->flops) *m->flops += attn_sdpa_flops(&s);
        if (!st && m->received) st = received(ctx, hd, a, &s, m->received);
        free(lse);
        return st;
    }
    if (m->kind == ATTN__METHOD_APPROX &&
        (hd->causal || hd->window || hd->softcap != 0.0f || hd->rope.rot_dim))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "an approximation replaces plain softmax attention only (no causal, "
                             "window, softcap or rotary positions)");
    if (m->kind == ATTN__METHOD_LAYOUT && m->block < 1)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "layout block size %lld, must be >= 1",
                             (long long)m->block);
    uint8_t *blocks = NULL;
    if (m->kind == ATTN__METHOD_LAYOUT) {
        const int64_t nb = (a->T + m->block - 1) / m->block;
        if (!(blocks = malloc((size_t)((m->head_seeds ? hd->H : 1) * nb * nb) + 1)))
            return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate a %lld x %lld layout",
                                 (long long)nb, (long long)nb);
    }
    attn_status st = ATTN_OK;
    for (int64_t b = 0; !st && b < a->B; b++) {
        const int64_t n = a->kv_len ? a->kv_len[b] : a->T;
        float *ob = a->o.data + b * a->o.bs;
        for (int64_t t = n; t < a->T; t++) /* padded query rows: 0 */
            memset(ob + t * a->o.ld, 0, (size_t)(hd->H * hd->Dh) * sizeof(float));
        float *rb = m->received ? m->received + b * a->T : NULL;
        if (rb) /* padded keys receive nothing */
            for (int64_t j = ATTN_MAX(n, (int64_t)0); j < a->T; j++)
                rb[j] = 0.0f;
        if (n < 1) continue;
        const attn__attend_args a1 = one_sequence(a, b, n);
        st = attend_one(ctx, hd, &a1, blocks, rb);
    }
    free(blocks);
    return st;
}
