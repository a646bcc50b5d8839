/* Feature maps of the kernelized attention methods (src/approx/
 * approx_feature.c), one table per ISA family, held in the family's
 * descriptor (kernels/arch.h) so ATTN_ARCH applies. Each family uses the
 * exponential its softmax kernels use (scalar: libm expf; AVX2 and AVX-512:
 * the polynomial of vmath_avx2.h / vmath_avx512.h), so the feature maps
 * cost a few vector instructions per 8 or 16 features instead of a libm
 * call per feature.
 *
 * Linear attention's phi(x) = elu(x) + 1; the Performer's
 *   phi(x)_r = exp(u_r - h - c) * norm,  u_r = w_r . x',  h = |x'|^2 / 2
 * with the projection u computed by the caller (a GEMM) and c a shift
 * that cancels in the attention ratio. */
#ifndef ATTN_FEAT_KERNELS_H
#define ATTN_FEAT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Rows that a later call will read or write (the next chunk's), for the
 * causal kernel to ask for a share at a time, spread over its blocks of
 * rows (and the causal backward's bwd_query, a few lines per block of its
 * GEMMs): stream s is rows [0, n[s]) of w[s] floats at x[s], row stride
 * ld[s] (rows to be written too: a read request brings the line all the
 * same). The hardware prefetchers do not run ahead across a chunk's
 * arithmetic, so without this each chunk waited on its first touch of q,
 * k, v and the output. */
#define ATTN_FEAT_AHEAD 8
typedef struct attn_feat_ahead {
    const float *x[ATTN_FEAT_AHEAD];
    int64_t ld[ATTN_FEAT_AHEAD], n[ATTN_FEAT_AHEAD], w[ATTN_FEAT_AHEAD];
    int ns;
} attn_feat_ahead;

/* The lines of share g of ng of every stream of a (NULL: none) into
 * pl[0..max), their count returned; lines past max are asked for here.
 * The kernel asks for pl[] one at a time among its FMAs: a burst of
 * requests stalls on the core's miss buffers. */
static inline int attn__feat_ahead_lines(const attn_feat_ahead *a, int64_t g, int64_t ng,
                                         const char **pl, int max) {
    int k = 0;
    if (!a) return 0;
    for (int s = 0; s < a->ns; s++) {
        const int64_t r0 = a->n[s] * g / ng, r1 = a->n[s] * (g + 1) / ng;
        for (int64_t i = r0; i < r1; i++)
            for (int64_t d = 0; d < a->w[s]; d += 16) {
                const char *x = (const char *)(a->x[s] + i * a->ld[s] + d);
                if (k < max)
                    pl[k++] = x;
                else
                    __builtin_prefetch(x, 0, 2);
            }
    }
    return k;
}

/* What the backward kernels do with the float64 key sums acck, accv. */
enum {
    ATTN_FEAT_ADD = 0,     /* acck += dK, accv += dV1 */
    ATTN_FEAT_SET = 1,     /* acck = dK, accv = dV1 (the first contribution) */
    ATTN_FEAT_OUT = 2,     /* bwd_key: dphik = fp32(acck + dK), dv = fp32(accv + dV1) (the last) */
    ATTN_FEAT_OUT_ONLY = 3 /* bwd_key: dphik = fp32(dK), dv = fp32(dV1) (the only one) */
};

typedef struct attn_feat_kernels {
    /* y[i*F + d] = elu(x[i*ldx + d]) + 1 = x > 0 ? x + 1 : exp(x), i < n,
     * d < F. NaN stays NaN. colsum (unless NULL): colsum[d] += y[i*F + d],
     * rows in order (the key sum z of the state, while y is in registers). */
    void (*elu1)(const float *x, int64_t ldx, int64_t n, int64_t F, float *y, float *colsum);
    /* In place over u [n, F] (row stride F), x [n, D] rows of stride ldx:
     *   h_i = hs * sum_d x[i, d]^2 (hs = scale / 2),  e_i = max_r u[i, r] - h_i
     *   c_i = e_i (rowshift) or c = max_i e_i (one shift for the n rows)
     *   u[i, r] = exp(u[i, r] - h_i - c_i) * norm
     * A shift that is not finite (NaN or Inf inputs) is taken as 0 so the
     * non-finite values propagate. colsum as elu1's. Returns max_i e_i
     * (-inf when n = 0). */
    float (*perf_exp)(float *u, int64_t n, int64_t F, const float *x, int64_t ldx, int64_t D,
                      float hs, int rowshift, float norm, float *colsum);
    /* The attention ratio in place over rows o [n, Dv] (row stride ldo)
     * holding phi_i^T KV: den_i = phi[i*F ..] . z (F terms),
     * o[i, d] *= 1 / den_i (0 when den_i = 0). */
    void (*ratio)(float *o, int64_t ldo, int64_t n, int64_t Dv, const float *phi, int64_t F,
                  const float *z);
    /* The whole query side in one pass over rows i < n:
     *   o[i, :] = (sum_r phi[i*F + r] S[r*lds + :]) / (phi_i . z)
     * (0 when the denominator is 0): the product with the (F x Dv) state
     * kept in cache, the normaliser and the ratio without a round trip of
     * the numerators through memory. */
    void (*apply)(const float *phi, int64_t n, int64_t F, const float *S, int64_t lds,
                  const float *z, int64_t Dv, float *o, int64_t ldo);
    /* The key side's state of n rows: S[r*lds + d] = sum_j phi[j*F + r] v[j*ldv + d]
     * (r < F, d < Dv; overwritten), j in order. v is read from memory once
     * (prefetched ahead), then from cache. */
    void (*accum)(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv, int64_t Dv,
                  float *S, int64_t lds);
    /* The Performer's projection of rows x [n, D] (row stride ldx):
     * u[i*F + r] = s sum_d x[i*ldx + d] wt[d*F + r], wt = Omega^T [D, F]
     * (kept in cache: 4 rows a pass over it). */
    void (*proj)(const float *x, int64_t ldx, int64_t n, int64_t D, const float *wt, int64_t F,
                 float s, float *u);
    /* One chunk of causal attention in one pass (the diagonal block and
     * the prefix state, no GEMM calls), rows i < n:
     *   a_ij = e (phiq_i . phik_j) for j <= i (0 above the diagonal)
     *   o[i, :] = (phiq_i P[:, :Dv] + sum_{j<=i} a_ij v_j)
     *             / (phiq_i . P[:, Dv] + sum_{j<=i} a_ij)
     * (0 when the denominator is 0), P the [F, Dv+1] prefix state of row
     * stride lds with the normaliser in column Dv, phiq and phik [n, F], v
     * rows of stride ldv, e the chunk's weight. ws: at least
     * attn__feat_causal_ws(n, F) floats of scratch (phik transposed and the
     * masked block, in L1 for chunks of 64 rows). ahead (or NULL): rows
     * asked for a share per block of rows (attn__feat_ahead_lines). */
    void (*causal)(const float *phiq, const float *phik, int64_t n, int64_t F, float e,
                   const float *P, int64_t lds, const float *v, int64_t ldv, int64_t Dv, float *o,
                   int64_t ldo, float *ws, const attn_feat_ahead *ahead);
    /* A float64 running state: run[e] += w * st[e], then P[e] = (float)
     * run[e] unless P is NULL, e < n (the causal scans). */
    void (*fold)(double *run, const float *st, double w, int64_t n, float *P);
    /* The causal forward's key side of a chunk in one pass: the state
     * st = [phi^T V | zs] as accum computes it (rows of Dv1 = Dv + 1, the
     * column sums zs in column Dv), folded as fold does, acc[e] += w st[e],
     * and unless P is NULL P[e] = (float)(pre[e] + acc[e]), e < F Dv1.
     * Bits: those of accum then fold. st: F Dv1 floats of scratch (a
     * family may keep the state in registers instead). */
    void (*accfold)(const float *phi, int64_t n, int64_t F, const float *v, int64_t ldv, int64_t Dv,
                    const float *zs, double w, double *acc, const double *pre, float *P, float *st);
    /* The backward's Performer exponents in float64 (kernels/feat_bwd.inc):
     * e_ir = w_r . x'_i - |x'_i|^2 / 2 (x' = s x, wt = Omega^T [D, F]),
     * shifted by each row's max (rowshift) or the largest over the n rows,
     * into u as fp32 (<= 0: perf_exp with hs = 0 then exponentiates them
     * exactly shifted; a shift that is not finite is taken as 0). Returns
     * the largest exponent (as perf_exp). ws: attn__feat_proj64_ws(n, D, F)
     * doubles. */
    double (*proj64)(const float *x, int64_t ldx, int64_t n, int64_t D, const float *wt, int64_t F,
                     double s, int rowshift, float *u, double *ws);
    /* The backward of n query rows in float64 from fp32 phi_q [n, F], the
     * prefix (causal) or total state P [F, Dv1] and dout rows go (stride
     * ldgo), Dv1 = Dv + 1:
     *   num1 = phi_q P (+ A V1),  A = phi_q phi_k^T on j <= i (pk not NULL:
     *   causal, the chunk's own keys pk [n, F] and V1 = [V | 1] v1 [n, Dv1])
     *   dnum_i = dout_i / den_i, dden_i = -(dout_i . out_i) / den_i
     *   dphiq = (dnum1 P^T + dA phi_k, dA = dnum1 V1^T on j <= i) to fp32
     *   G = phi_q^T dnum1 (overwritten) and, causal, the diagonal block's
     *   acck [n, F] += dA^T phi_q, accv [n, Dv1] += A^T dnum1 (how:
     *   ATTN_FEAT_ADD, or ATTN_FEAT_SET: = instead of +=). dphiq NULL: G
     *   only (acck, accv unused).
     * ws: attn__feat_bwd_ws(n, F, Dv1, pk != NULL) doubles. ahead (or
     * NULL): rows asked for a few lines per block of the GEMMs, in stream
     * order, the rest at the end (attn_feat_ahead). */
    void (*bwd_query)(const float *phiq, int64_t n, int64_t F, const float *P, const float *pk,
                      const float *v1, int64_t Dv1, const float *go, int64_t ldgo, float *dphiq,
                      double *G, double *acck, double *accv, int how, double *ws,
                      const attn_feat_ahead *ahead);
    /* n key rows, their sums dK = V1 G^T [n, F] and dV1 = phi_k G [n, Dv1]
     * (float64), by how (below): into acck, accv, or with them (OUT) or
     * alone (OUT_ONLY) rounded into dphik [n, F] and the first Dv1 - 1
     * columns of dv (row stride lddv; both unused otherwise).
     * ws: attn__feat_bwdk_ws(F, Dv1) doubles. */
    void (*bwd_key)(const float *pk, const float *v1, int64_t n, int64_t F, int64_t Dv1,
                    const double *G, double *acck, double *accv, int how, float *dphik, float *dv,
                    int64_t lddv, double *ws);
    /* Linear attention's chain rule over rows i < n, d < F (fp32, one
     * rounding): dx[i*ldd + d] = dphi[i*F + d] * (x > 0 ? 1 : phi[i*F + d])
     * with x = x[i*ldx + d], phi = elu(x) + 1 (its derivative; NaN x gives
     * NaN through phi). */
    void (*elu1_back)(const float *x, int64_t ldx, int64_t n, int64_t F, const float *phi,
                      const float *dphi, float *dx, int64_t ldd);
    /* The Performer's chain rule over rows i < n: with x' = s x and
     * t_r = dphi[i*F + r] phi[i*F + r],
     *   dx[i*ldd + d] = s sum_r t_r (omega[r*D + d] - x'_d)
     *                 = s (sum_r t_r omega[r*D + d] - (sum_r t_r) x'_d)
     * the second form, a GEMM, each sum in float64 from the fp32 operands
     * (t exact). The two sums cancel where w_r is close to x' for the
     * features that dominate, but their float64 error, about
     * F 2^-53 sum_r |t_r| (|w_r,d| + |x'_d|), stays far below the fp32
     * rounding of x' alone (2^-24 |x'_d| sum_r |t_r|) that any fp32
     * evaluation carries. ws: attn__feat_perf_back_ws(F, D) doubles. */
    void (*perf_back)(const float *x, int64_t ldx, int64_t n, int64_t D, const float *phi,
                      const float *dphi, int64_t F, const float *omega, double s, float *dx,
                      int64_t ldd, double *ws);
} attn_feat_kernels;

/* accfold as accum, then fold, then the rounding of pre + acc: the form of
 * the families that do not fuse them. */
static inline void attn__feat_accfold_plain(const attn_feat_kernels *k, const float *phi, int64_t n,
                                            int64_t F, const float *v, int64_t ldv, int64_t Dv,
                                            const float *zs, double w, double *acc,
                                            const double *pre, float *P, float *st) {
    const int64_t Dv1 = Dv + 1;
    k->accum(phi, n, F, v, ldv, Dv, st, Dv1);
    for (int64_t r = 0; r < F; r++)
        st[r * Dv1 + Dv] = zs[r];
    k->fold(acc, st, w, F * Dv1, NULL);
    if (P)
        for (int64_t e = 0; e < F * Dv1; e++)
            P[e] = (float)(pre[e] + acc[e]);
}

/* Scratch of attn_feat_kernels.causal: z (F), phik^T (F x n16) and the
 * block (n x n16), n16 = n rounded up to 16 (every family's width). */
static inline int64_t attn__feat_causal_ws(int64_t n, int64_t F) {
    const int64_t n16 = (n + 15) / 16 * 16;
    return F + 16 + n16 * (F + n);
}

/* Scratch of bwd_query, in doubles (kernels/feat_bwd.inc: the states and
 * the chunk's operands as float64 rows padded to 8; causal: the n x n
 * diagonal blocks A and dA too; non-causal: blocks of 64 rows). */
static inline int64_t attn__feat_bwd_ws(int64_t n, int64_t F, int64_t Dv1, int causal) {
    const int64_t Fp = (F + 7) / 8 * 8, Dp = (Dv1 + 7) / 8 * 8, np = (n + 7) / 8 * 8;
    const int64_t nb = causal ? n : n < 64 ? n : 64;
    int64_t w = 2 * F * Dp + Dv1 * Fp + nb * (2 * Fp + 2 * Dp);
    if (causal) w += 2 * n * Fp + 2 * n * Dp + (F + Dv1) * np + 2 * n * np;
    return w + 16;
}

/* Scratch of bwd_key, in doubles: G and G^T padded, blocks of 64 rows. */
static inline int64_t attn__feat_bwdk_ws(int64_t F, int64_t Dv1) {
    const int64_t Fp = (F + 7) / 8 * 8, Dp = (Dv1 + 7) / 8 * 8;
    return Dv1 * Fp + F * Dp + 64 * (Dv1 + F + Fp + Dp) + 16;
}

/* Scratch of perf_back, in doubles: Omega padded, blocks of 64 rows. */
static inline int64_t attn__feat_perf_back_ws(int64_t F, int64_t D) {
    const int64_t Dp = (D + 7) / 8 * 8;
    return F * Dp + 64 * (F + Dp + 1) + 16;
}

/* Scratch of proj64, in doubles: Omega^T padded, x' of 64 rows, the n
 * rows' exponents and their maxima. */
static inline int64_t attn__feat_proj64_ws(int64_t n, int64_t D, int64_t F) {
    const int64_t Fp = (F + 7) / 8 * 8;
    return D * Fp + 64 * D + n * Fp + n + 16;
}

#endif /* ATTN_FEAT_KERNELS_H */
