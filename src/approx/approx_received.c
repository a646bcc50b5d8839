/* The attention each key receives under linear attention and the Performer
 * (attn_approx_received): the column sums of the implicit attention matrix
 *   P_ij = phi(q_i).phi(k_j) / z_i,  z_i = phi(q_i) . sum_{j' (<= i)} phi(k_j'),
 * without forming it: received_j = phi(k_j) . sum_{i (>= j)} phi(q_i) / z_i,
 * O((T + S) F D) per head. Plain float64 loops over the method's formula
 * with the same features (omega): for ranking tokens, not a hot path. The
 * Performer's shifts (one per query row, one per head for the keys) cancel
 * in P as they do in the forward; so does its 1/sqrt(m). A query whose z_i
 * is 0 (the forward's out = 0 row) adds nothing. */
#include "approx/approx.h"

#include <math.h>
#include <string.h>

/* phi of the n rows x (row stride ld) into u [n, F], in float64; with
 * rowshift each row exponentiated against its own largest exponent, else
 * against the largest of all n rows. */
static void phi64(const attn__approx_plan *p, const float *omega, const float *x, int64_t ld,
                  int64_t n, int rowshift, double *u) {
    const int64_t D = p->D, F = p->F;
    if (p->method == ATTN_APPROX_LINEAR) { /* elu(x) + 1 */
        for (int64_t i = 0; i < n; i++)
            for (int64_t d = 0; d < D; d++) {
                const double v = x[i * ld + d];
                u[i * F + d] = v > 0.0 ? v + 1.0 : exp(v);
            }
        return;
    }
    /* exponent w_r.x' - |x'|^2 / 2, x' = sqrt(scale) x */
    const double rs = sqrt((double)p->scale);
    double all = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * ld;
        double nn = 0.0, mx = -INFINITY;
        for (int64_t d = 0; d < D; d++)
            nn += (double)xi[d] * xi[d];
        for (int64_t r = 0; r < F; r++) {
            double w = 0.0;
            for (int64_t d = 0; d < D; d++)
                w += (double)omega[r * D + d] * xi[d];
            u[i * F + r] = rs * w - 0.5 * (double)p->scale * nn;
            mx = fmax(mx, u[i * F + r]);
        }
        if (rowshift)
            for (int64_t r = 0; r < F; r++)
                u[i * F + r] = exp(u[i * F + r] - mx);
        all = fmax(all, mx);
    }
    if (!rowshift)
        for (int64_t e = 0; e < n * F; e++)
            u[e] = exp(u[e] - all);
}

attn_status attn__approx_feature_received(attn_ctx *ctx, const attn__approx_plan *p,
                                          const float *omega, double *recv) {
    const int64_t T = p->T, S = p->S, F = p->F;
    double *pq = attn__malloc((size_t)(T * F) * sizeof(double));
    double *pk = attn__malloc((size_t)(S * F) * sizeof(double));
    double *acc = attn__malloc((size_t)F * sizeof(double));
    attn_status st = ATTN_OK;
    if (!pq || !pk || !acc) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory for the attention received",
                           attn_approx_name(p->method));
        goto done;
    }
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t h = 0; h < p->H; h++) {
            phi64(p, omega, ATTN__ROW(p->q, p->qs, b, h, 0), p->qs[2], T, 1, pq);
            phi64(p, omega, ATTN__ROW(p->k, p->ks, b, h / p->group, 0), p->ks[2], S, 0, pk);
            /* z_i, then pq row i becomes w_i = phi(q_i) / z_i (0 when z_i is 0) */
            memset(acc, 0, (size_t)F * sizeof *acc);
            if (!p->causal)
                for (int64_t j = 0; j < S; j++)
                    for (int64_t r = 0; r < F; r++)
                        acc[r] += pk[j * F + r];
            for (int64_t i = 0; i < T; i++) {
                double *wi = pq + i * F, z = 0.0;
                if (p->causal) /* T == S: the prefix sum of phi(k_j), j <= i */
                    for (int64_t r = 0; r < F; r++)
                        acc[r] += pk[i * F + r];
                for (int64_t r = 0; r < F; r++)
                    z += wi[r] * acc[r];
                const double inv = z > 0.0 ? 1.0 / z : 0.0;
                for (int64_t r = 0; r < F; r++)
                    wi[r] *= inv;
            }
            /* received_j = phi(k_j) . sum_i w_i (causal: the suffix sum i >= j) */
            double *rc = recv + (b * p->H + h) * S;
            memset(acc, 0, (size_t)F * sizeof *acc);
            if (!p->causal)
                for (int64_t i = 0; i < T; i++)
                    for (int64_t r = 0; r < F; r++)
                        acc[r] += pq[i * F + r];
            for (int64_t j = S - 1; j >= 0; j--) {
                if (p->causal)
                    for (int64_t r = 0; r < F; r++)
                        acc[r] += pq[j * F + r];
                double a = 0.0;
                for (int64_t r = 0; r < F; r++)
                    a += pk[j * F + r] * acc[r];
                rc[j] = a;
            }
        }
done:
    attn__free(pq), attn__free(pk), attn__free(acc);
    return st;
}
