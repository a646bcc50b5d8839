/* The float64 oracle for attention: naive, materialised scores, the exact
 * semantics of DESIGN.md written as plainly as possible. Tests and `--ref`
 * only; O(S) memory per row. */
#include "ops/sdpa_bwd.h"

#include <math.h>
#include <stdlib.h>

void attn__ref_rope(const attn__sdpa_plan *p, int64_t pos, double *x, int inverse) {
    /* pair (a, c) of frequency f, angle pos * f, straight from libm */
    const int64_t half = p->rs.rot / 2;
    for (int64_t i = 0; i < half; i++) {
        double f = p->rs.freq ? (double)p->rs.freq[i]
                              : pow(p->rs.theta, -2.0 * (double)i / (double)p->rs.rot);
        double ang = (double)pos * f, cs = cos(ang), sn = inverse ? -sin(ang) : sin(ang);
        int64_t a = p->rs.interleaved ? 2 * i : i, c = p->rs.interleaved ? 2 * i + 1 : i + half;
        double xa = x[a], xc = x[c];
        x[a] = xa * cs - xc * sn;
        x[c] = xc * cs + xa * sn;
    }
}

/* Score of (b,h,i,j) in float64 with every modification, -inf if masked. If
 * dcap is not NULL it gets d(score)/d(scale*q.k): 1 - tanh^2 under softcap,
 * else 1 (the backward oracle's chain rule through the softcap). */
double attn__ref_score(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i, int64_t j,
                       double *dcap) {
    /* Every rule written per key, independently of ops/sdpa_mask (which
     * derives intervals and segments), so that the oracle catches its
     * mistakes. */
    const int64_t pos = i + p->shift, moff = b * p->msb + h * p->msh + i * p->mst + j;
    if (dcap) *dcap = 1.0;
    if (p->kv_len && j >= (int64_t)p->kv_len[b]) return -INFINITY;
    if (p->causal && j > pos) return -INFINITY;
    /* a global token (as key j, or as the query at position pos) lifts the
     * window and the layout, nothing else */
    const uint8_t *gt = p->gtok ? p->gtok + b * p->gtb : NULL;
    const int global = gt && (gt[j] || (pos >= 0 && pos < p->S && gt[pos]));
    if (!global && p->window && p->wl >= 0 && j < pos - p->wl) return -INFINITY;
    if (!global && p->window && p->wr >= 0 && j > pos + p->wr) return -INFINITY;
    if (p->mask_kind == ATTN__MASK_BOOL && !((const uint8_t *)p->mask)[moff]) return -INFINITY;
    if (p->kpm && p->kpm[b * p->kpb + j]) return -INFINITY; /* nonzero = padding key */
    if (!global && p->lay && !p->lay[h * p->lhs + (i / p->lbq) * p->lnkb + j / p->lbk])
        return -INFINITY;
    const float *q = p->q + b * p->qs[0] + h * p->qs[1] + i * p->qs[2];
    const float *k = p->k + b * p->ks[0] + (h / p->group) * p->ks[1] + j * p->ks[2];
    double s = 0.0;
    if (p->rope) {
        /* rotate copies of q_i and k_j (the oracle's rows, recomputed per pair) */
        double *qr = malloc((size_t)p->D * 2 * sizeof *qr), *kr = qr ? qr + p->D : NULL;
        if (!qr) return NAN;
        for (int64_t d = 0; d < p->D; d++)
            qr[d] = q[d], kr[d] = k[d];
        attn__ref_rope(p, attn__rope_qpos(p, b) + i, qr, 0);
        if (p->rope_k) attn__ref_rope(p, attn__rope_kpos(p, b) + j, kr, 0);
        for (int64_t d = 0; d < p->D; d++)
            s += qr[d] * kr[d];
        free(qr);
    } else {
        for (int64_t d = 0; d < p->D; d++)
            s += (double)q[d] * (double)k[d];
    }
    s *= (double)p->scale;
    if (p->softcap > 0.0f) {
        double t = tanh(s / (double)p->softcap);
        s = (double)p->softcap * t;
        if (dcap) *dcap = 1.0 - t * t;
    }
    if (p->mask_kind == ATTN__MASK_FLOAT) s += (double)((const float *)p->mask)[moff];
    if (p->alibi) s -= (double)p->alibi[h] * fabs((double)(i + p->shift - j));
    return s;
}

attn_status attn_sdpa_forward_ref(attn_ctx *ctx, const attn_sdpa_args *a) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    attn__sdpa_plan p;
    attn_status st = attn__sdpa_plan_make(ctx, a, 0, &p);
    if (st) return st;
    double *s = malloc((size_t)(p.S > 0 ? p.S : 1) * sizeof *s);
    double *acc = malloc((size_t)p.Dv * sizeof *acc);
    if (!s || !acc) {
        free(s);
        free(acc);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory in the oracle");
    }
    for (int64_t b = 0; b < p.B; b++)
        for (int64_t h = 0; h < p.H; h++)
            for (int64_t i = 0; i < p.T; i++) {
                double mx = -INFINITY;
                int nan = 0;
                for (int64_t j = 0; j < p.S; j++) {
                    s[j] = attn__ref_score(&p, b, h, i, j, NULL);
                    if (s[j] > mx) mx = s[j];
                    if (isnan(s[j])) nan = 1;
                }
                if (nan) mx = NAN; /* NaN scores poison the row */
                for (int64_t c = 0; c < p.Dv; c++)
                    acc[c] = 0.0;
                double l = 0.0;
                if (mx != -INFINITY && !nan) {
                    for (int64_t j = 0; j < p.S; j++) {
                        if (s[j] == -INFINITY) continue; /* masked keys never contribute */
                        double e = exp(s[j] - mx);
                        l += e;
                        if (p.dropout_p > 0.0f) e *= (double)attn__dropout_factor(&p, b, h, i, j);
                        const float *v = p.v + b * p.vs[0] + (h / p.group) * p.vs[1] + j * p.vs[2];
                        for (int64_t c = 0; c < p.Dv; c++)
                            acc[c] += e * (double)v[c];
                    }
                }
                float *o = p.out + b * p.os[0] + h * p.os[1] + i * p.os[2];
                /* no visible key: out = 0, lse = -inf */
                for (int64_t c = 0; c < p.Dv; c++)
                    o[c] = mx == -INFINITY ? 0.0f : (float)(acc[c] / l);
                if (p.lse)
                    p.lse[b * p.ls[0] + h * p.ls[1] + i * p.ls[2]] =
                        mx == -INFINITY ? -INFINITY : (float)(mx + log(l));
            }
    free(s);
    free(acc);
    return ATTN_OK;
}
