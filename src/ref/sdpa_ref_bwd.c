/* The float64 oracle of the attention backward: naive, one materialised row
 * of probabilities at a time, the formulas written out plainly. It does not
 * use out or lse (it recomputes everything), but requires them like the fast
 * backward so both reject the same calls. Tests and `--ref` only. */
#include "ops/sdpa_bwd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double attn__sdpa_ref_loss(const attn__sdpa_plan *p, const float *dout, const int64_t *dos) {
    double loss = 0.0;
    double *s = malloc((size_t)(p->S > 0 ? p->S : 1) * sizeof *s);
    if (!s) return NAN;
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t h = 0; h < p->H; h++)
            for (int64_t i = 0; i < p->T; i++) {
                double mx = -INFINITY, l = 0.0;
                for (int64_t j = 0; j < p->S; j++) {
                    s[j] = attn__ref_score(p, b, h, i, j, NULL);
                    if (s[j] > mx) mx = s[j];
                }
                if (mx == -INFINITY) continue; /* out = 0 */
                for (int64_t j = 0; j < p->S; j++)
                    if (s[j] != -INFINITY) l += exp(s[j] - mx);
                const float *g = dout + b * dos[0] + h * dos[1] + i * dos[2];
                for (int64_t j = 0; j < p->S; j++) {
                    if (s[j] == -INFINITY) continue;
                    double pz = exp(s[j] - mx) / l;
                    if (p->dropout_p > 0.0f) pz *= (double)attn__dropout_factor(p, b, h, i, j);
                    const float *v = p->v + b * p->vs[0] + (h / p->group) * p->vs[1] + j * p->vs[2];
                    for (int64_t c = 0; c < p->Dv; c++)
                        loss += pz * (double)v[c] * (double)g[c];
                }
            }
    free(s);
    return loss;
}

attn_status attn_sdpa_backward_ref(attn_ctx *ctx, const attn_sdpa_args *a,
                                   const attn_sdpa_grads *g) {
    if (!ctx) return ATTN_E_ARG;
    attn__sdpa_plan p;
    attn__sdpa_gplan gp;
    attn_status st = attn__sdpa_bwd_plan(ctx, a, g, &p, &gp);
    if (st) return st;

    size_t nS = (size_t)(p.S > 0 ? p.S : 1);
    size_t nk = (size_t)(p.B * p.Hkv * p.S * p.D), nv = (size_t)(p.B * p.Hkv * p.S * p.Dv);
    size_t nm = gp.dmask ? (size_t)(gp.dmB * gp.dmH * gp.dmT * p.S) : 0;
    double *s = malloc(nS * sizeof *s), *dcap = malloc(nS * sizeof *dcap);
    double *pr = malloc(nS * sizeof *pr), *dpz = malloc(nS * sizeof *dpz);
    double *dq = malloc((size_t)p.D * sizeof *dq);
    double *dk = calloc(nk ? nk : 1, sizeof *dk), *dv = calloc(nv ? nv : 1, sizeof *dv);
    double *dm = calloc(nm ? nm : 1, sizeof *dm);
    double *qrot = malloc((size_t)p.D * 2 * sizeof *qrot), *krot = qrot ? qrot + p.D : NULL;
    if (!s || !dcap || !pr || !dpz || !dq || !dk || !dv || !dm || !qrot) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory in the backward oracle");
        goto done;
    }
    for (int64_t b = 0; b < p.B; b++)
        for (int64_t h = 0; h < p.H; h++)
            for (int64_t i = 0; i < p.T; i++) {
                const int64_t hk = h / p.group;
                const float *qi = p.q + b * p.qs[0] + h * p.qs[1] + i * p.qs[2];
                const float *gi = gp.dout + b * gp.dos[0] + h * gp.dos[1] + i * gp.dos[2];
                double mx = -INFINITY, l = 0.0;
                int nan = 0;
                for (int64_t j = 0; j < p.S; j++) {
                    s[j] = attn__ref_score(&p, b, h, i, j, &dcap[j]);
                    if (s[j] > mx) mx = s[j];
                    if (isnan(s[j])) nan = 1;
                }
                if (nan) mx = NAN; /* NaN scores poison the row, as in the forward */
                for (int64_t d = 0; d < p.D; d++)
                    dq[d] = 0.0, qrot[d] = qi[d];
                if (p.rope) attn__ref_rope(&p, attn__rope_qpos(&p, b) + i, qrot, 0);
                if (mx != -INFINITY) {
                    /* P = softmax(s);  dPz_j = Z_j * dot(dO_i, v_j) */
                    for (int64_t j = 0; j < p.S; j++) {
                        pr[j] = s[j] == -INFINITY ? 0.0 : exp(s[j] - mx);
                        l += pr[j];
                    }
                    double di = 0.0;
                    for (int64_t j = 0; j < p.S; j++) {
                        pr[j] /= l;
                        dpz[j] = 0.0;
                        if (s[j] == -INFINITY) continue;
                        const float *v = p.v + b * p.vs[0] + hk * p.vs[1] + j * p.vs[2];
                        for (int64_t c = 0; c < p.Dv; c++)
                            dpz[j] += (double)gi[c] * (double)v[c];
                        if (p.dropout_p > 0.0f)
                            dpz[j] *= (double)attn__dropout_factor(&p, b, h, i, j);
                        di += pr[j] * dpz[j]; /* D_i = rowsum(P ∘ dPz) */
                    }
                    for (int64_t j = 0; j < p.S; j++) {
                        if (s[j] == -INFINITY) continue;
                        double z =
                            p.dropout_p > 0.0f ? (double)attn__dropout_factor(&p, b, h, i, j) : 1.0;
                        double ds = pr[j] * (dpz[j] - di); /* dS = P ∘ (dPz - D_i) */
                        if (gp.dmask) {
                            int64_t bm = gp.dmB > 1 ? b : 0, hm = gp.dmH > 1 ? h : 0;
                            int64_t im = gp.dmT > 1 ? i : 0; /* summed over broadcast dims */
                            dm[((bm * gp.dmH + hm) * gp.dmT + im) * p.S + j] += ds;
                        }
                        double dsr = ds * dcap[j] * (double)p.scale; /* through softcap, scale */
                        const float *k = p.k + b * p.ks[0] + hk * p.ks[1] + j * p.ks[2];
                        double *dkj = dk + ((b * p.Hkv + hk) * p.S + j) * p.D;
                        double *dvj = dv + ((b * p.Hkv + hk) * p.S + j) * p.Dv;
                        for (int64_t d = 0; d < p.D; d++)
                            krot[d] = k[d];
                        if (p.rope_k) attn__ref_rope(&p, attn__rope_kpos(&p, b) + j, krot, 0);
                        /* gradients of the rotated rows (rotated back below) */
                        for (int64_t d = 0; d < p.D; d++) {
                            dq[d] += dsr * krot[d];
                            dkj[d] += dsr * qrot[d];
                        }
                        for (int64_t c = 0; c < p.Dv; c++)
                            dvj[c] += pr[j] * z * (double)gi[c];
                    }
                }
                float *o = gp.dq + b * gp.dqs[0] + h * gp.dqs[1] + i * gp.dqs[2];
                if (p.rope) attn__ref_rope(&p, attn__rope_qpos(&p, b) + i, dq, 1);
                for (int64_t d = 0; d < p.D; d++)
                    o[d] = (float)dq[d];
            }
    for (int64_t b = 0; b < p.B; b++)
        for (int64_t hk = 0; hk < p.Hkv; hk++)
            for (int64_t j = 0; j < p.S; j++) {
                float *ok = gp.dk + b * gp.dks[0] + hk * gp.dks[1] + j * gp.dks[2];
                float *ov = gp.dv + b * gp.dvs[0] + hk * gp.dvs[1] + j * gp.dvs[2];
                double *sk = dk + ((b * p.Hkv + hk) * p.S + j) * p.D;
                if (p.rope_k) attn__ref_rope(&p, attn__rope_kpos(&p, b) + j, sk, 1);
                const double *sv = dv + ((b * p.Hkv + hk) * p.S + j) * p.Dv;
                for (int64_t d = 0; d < p.D; d++)
                    ok[d] = (float)sk[d];
                for (int64_t c = 0; c < p.Dv; c++)
                    ov[c] = (float)sv[c];
            }
    if (gp.dmask)
        for (int64_t b = 0; b < gp.dmB; b++)
            for (int64_t h = 0; h < gp.dmH; h++)
                for (int64_t i = 0; i < gp.dmT; i++) {
                    float *o = gp.dmask + attn__dmask_off(&gp, b, h, i, 0);
                    for (int64_t j = 0; j < p.S; j++)
                        o[j] = (float)dm[((b * gp.dmH + h) * gp.dmT + i) * p.S + j];
                }
done:
    free(s), free(dcap), free(pr), free(dpz), free(dq), free(dk), free(dv), free(dm), free(qrot);
    return st;
}
